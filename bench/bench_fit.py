"""Seconds per MM iteration of GEM against faiss spherical k-means and sklearn Lloyd k-means.

Issue 2 goal: a GEM iteration costs at most 1.5x a faiss ``Kmeans(spherical=True)``
iteration on the same data and cores (both are GEMM-bound). Usage::

    python bench/bench_fit.py [--n 100000] [--d 384] [--k 64] [--iters 8] [--seed 0]
                              [--sample sample_data/embeddings.npy] [--skip-sample]

Two data sets, one run, same threads for every method:

* ``anisotropic``: ``--n`` rows of a synthetic vMF-like mixture with a common offset, so
  that the anisotropy R0 (length of the mean unit vector) is about 0.6, as for real
  sentence embeddings (see :func:`anisotropic_mixture`);
* ``sample``: the bundled 5,000 x 384 MiniLM embeddings (float16 -> float32).

Per-iteration times remove the initialisation: GEM from the timestamps of its
``callback`` (one call per q-step, so consecutive calls bracket one full MM iteration),
faiss and sklearn from two fits with different iteration counts (the difference of the
times over the difference of the iterations). GEM is also broken down into its parts
(score GEMM, dual passes, resultant pass, the rest) by wrapping gem_app.mm's functions.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gem_app import gem as gem_module
from gem_app import mm
from gem_app.gem import GEM

GOAL_RATIO_TO_FAISS = 1.5
ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- synthetic data
def anisotropic_mixture(
    n_samples: int,
    n_features: int,
    n_components: int,
    *,
    seed: int = 0,
    offset: float = 1.0,
    spread: float = 0.8,
    chunk_size: int = 65_536,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of an anisotropic vMF-like mixture, generated chunk by chunk in float32.

    Row i of component c is ``offset * m0 + mu_c + spread * g_i / sqrt(d)``, with m0 and
    mu_c random unit vectors and g_i standard normal, then normalised. Component sizes
    follow a Dirichlet(2) draw (unequal). The common offset makes the cloud anisotropic:
    R0 ~ offset / sqrt(offset^2 + 1 + spread^2) (0.62 for the defaults), and the cosine of
    two rows is ~0.76 within a component and ~0.38 across.

    Parameters
    ----------
    n_samples, n_features, n_components : int
    seed : int
        Everything (directions, sizes, every chunk) derives from it.
    out : ndarray of shape (n_samples, n_features), float32, optional
        Filled in place (so that a caller controls the only full-size buffer).

    Returns
    -------
    X : ndarray of shape (n_samples, n_features), float32, unit rows
    labels : ndarray of shape (n_samples,), int32, the generating component
    """
    rng = np.random.default_rng([seed, 0])
    common = _unit(rng.standard_normal(n_features))
    directions = _unit(rng.standard_normal((n_components, n_features)))
    shares = rng.dirichlet(np.full(n_components, 2.0))
    labels = rng.choice(n_components, size=n_samples, p=shares).astype(np.int32)
    if out is None:
        out = np.empty((n_samples, n_features), dtype=np.float32)
    if out.shape != (n_samples, n_features) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 of shape {(n_samples, n_features)}")
    scale = spread / np.sqrt(n_features)
    for j, start in enumerate(range(0, n_samples, chunk_size)):
        stop = min(start + chunk_size, n_samples)
        chunk_rng = np.random.default_rng([seed, 1, j])
        rows = chunk_rng.standard_normal((stop - start, n_features), dtype=np.float32)
        rows *= np.float32(scale)
        rows += directions[labels[start:stop]].astype(np.float32)
        rows += np.float32(offset) * common.astype(np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        out[start:stop] = rows
    return out, labels


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def anisotropy(X: np.ndarray, chunk_size: int = 65_536) -> float:
    """R0 = || mean of the unit rows ||, computed in float64 over row chunks."""
    total = np.zeros(X.shape[1])
    for start in range(0, len(X), chunk_size):
        rows = X[start : start + chunk_size].astype(np.float64)
        total += _unit(rows).sum(0)
    return float(np.linalg.norm(total / len(X)))
