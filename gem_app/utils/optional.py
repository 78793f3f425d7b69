"""The optional heavy dependencies, each behind one guard that says what to install.

They are imported on first use only (each takes seconds to import, or is not installed
everywhere): Ray for the distributed engine, UMAP and HDBSCAN for map layouts and the
BERTopic-style baseline, faiss for the spherical k-means baseline, sentence-transformers
for the offline encoder.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = [
    "MissingDependency",
    "require_faiss",
    "require_hdbscan",
    "require_ray",
    "require_sentence_transformers",
    "require_umap",
]


class MissingDependency(ImportError, ValueError):
    """An optional dependency is not installed (a ValueError too: the CLI prints one line)."""


def _require(module: str, install: str, purpose: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(
            f"{purpose} needs {module!r}, which is not installed: {install}"
        ) from exc


def require_ray() -> ModuleType:
    """``ray`` (with Ray Data) for ``gem assign --engine ray``."""
    return _require("ray", 'pip install "gem-studio[scale]"  (or "ray[data]")', "the Ray engine")


def require_umap() -> ModuleType:
    """``umap`` (umap-learn) for UMAP map layouts and the BERTopic-style baseline."""
    return _require("umap", "pip install umap-learn", "the UMAP layout")


def require_hdbscan() -> ModuleType:
    """``hdbscan`` for the BERTopic-style baseline."""
    return _require("hdbscan", "pip install hdbscan", "the BERTopic-style baseline")


def require_faiss() -> ModuleType:
    """``faiss`` (faiss-cpu) for the spherical k-means baseline."""
    return _require("faiss", "pip install faiss-cpu", "the spherical k-means baseline")


def require_sentence_transformers() -> ModuleType:
    """``sentence_transformers`` with the hub switched off (the encoder is read from disk)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    return _require(
        "sentence_transformers", "pip install sentence-transformers", "the offline encoder"
    )
