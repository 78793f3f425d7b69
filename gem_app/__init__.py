"""GEM Studio: Geometric Entropy Mixing for LLM pre-training data curation."""

from gem_app.core.gem import GEM

__all__ = ["GEM"]
__version__ = "0.1.0"
