"""GEM Studio: Geometric Entropy Mixing for LLM pre-training data curation.

The pipeline, one subpackage per stage (data flows down this list):

- :mod:`gem_app.io`: corpus files, embeddings, the offline encoder;
- :mod:`gem_app.core`: the sphere, vMF functions, the MM steps, the GEM estimator, GIS;
- :mod:`gem_app.storage`: run folders and the workspace;
- :mod:`gem_app.taxonomy`: labels and the hierarchy with its edit log;
- :mod:`gem_app.evaluate`: agreement with a human taxonomy, baselines, model selection;
- :mod:`gem_app.mixing`: entropy-temperature weights, RegMix and DoReMi;
- :mod:`gem_app.export`: mixture documents, training-stack formats, shards;
- :mod:`gem_app.scale`: the distilled student and streaming assignment (local or Ray);
- :mod:`gem_app.app` and :mod:`gem_app.viz`: the app's logic and its figures;
- :mod:`gem_app.cli`: the ``gem`` command.
"""

from gem_app.core.gem import GEM
from gem_app.version import __version__

__all__ = ["GEM", "__version__"]
