"""Proxy studies of a fitted run: which mixture trains a better (tiny) language model.

A study trains proxies (:mod:`gem_app.evaluate.proxy`) on anchor mixtures and RegMix
candidates over a run's domains, fits a regressor from weights to held-out bits per byte,
searches for the best mixture under the epoch caps (or runs DoReMi), then trains and measures
that recommendation. It writes ``STUDY/study.json`` and ``STUDY/recommended.json`` (a
canonical mixture document for ``gem export --from``) and resumes after an interruption.

- :mod:`~gem_app.study.config`: the options and their identity;
- :mod:`~gem_app.study.domains`: clusters, taxonomy leaves or human categories;
- :mod:`~gem_app.study.prepare`: split, tokenizer, streams, scoring;
- :mod:`~gem_app.study.anchors`: anchors, candidates, the curator's current mixture;
- :mod:`~gem_app.study.store`: the study folder;
- :mod:`~gem_app.study.runner`: :func:`run_study`;
- :mod:`~gem_app.study.report`: study.json, recommended.json, what the figures draw;
- :mod:`~gem_app.study.job`: a cancellable background job for the app.
"""

from gem_app.study.config import DOMAIN_SOURCES, METHODS, StudyConfig
from gem_app.study.job import StudyJob
from gem_app.study.report import (
    delta_table,
    prediction_table,
    seed_noise,
    weights_table,
)
from gem_app.study.runner import StudyProgress, StudyResult, run_study
from gem_app.study.store import StudyFolder

__all__ = [
    "DOMAIN_SOURCES",
    "METHODS",
    "StudyConfig",
    "StudyFolder",
    "StudyJob",
    "StudyProgress",
    "StudyResult",
    "delta_table",
    "prediction_table",
    "run_study",
    "seed_noise",
    "weights_table",
]
