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
(score GEMM, dual passes, resultant pass, the rest) by wrapping gem_app.core.mm's functions.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gem_app.core import mm
from gem_app.core.gem import GEM

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


# --------------------------------------------------------------------------- GEM timing
@dataclass
class _Profile:
    """Exclusive seconds spent in wrapped gem_app.core.mm functions, and dual passes."""

    seconds: dict = field(default_factory=dict)
    passes: int = 0
    _stack: list = field(default_factory=list)

    def snapshot(self) -> dict:
        return {**self.seconds, "passes": self.passes}


@contextlib.contextmanager
def _profiled(profile: _Profile, synchronize=None):
    """Wrap the MM pieces of gem_app.core.mm with timers (nested calls are not counted twice)."""
    sync = synchronize or (lambda: None)
    originals = []

    def wrap(owner, name: str, label: str):
        original = getattr(owner, name)
        originals.append((owner, name, original))

        def wrapped(*args, **kwargs):
            sync()
            profile._stack.append(0.0)
            start = time.perf_counter()
            try:
                result = original(*args, **kwargs)
                sync()
            finally:
                elapsed = time.perf_counter() - start
                inner = profile._stack.pop()
                if profile._stack:
                    profile._stack[-1] += elapsed
                profile.seconds[label] = profile.seconds.get(label, 0.0) + elapsed - inner
            if label == "dual statistics pass":
                profile.passes += 1
            return result

        setattr(owner, name, wrapped)

    wrap(mm.ScoreMap, "__call__", "score GEMM")
    wrap(mm, "solve_dual", "dual solve (fallback/polish)")
    wrap(mm, "assignment_stats", "dual statistics pass")
    wrap(mm, "resultant_pass", "resultant pass")
    wrap(mm, "update_parameters", "(mu, kappa) step")
    try:
        yield profile
    finally:
        for owner, name, original in reversed(originals):
            setattr(owner, name, original)


def time_gem(
    X, n_clusters: int, iters: int, seed: int, *, device="cpu", synchronize=None, **params
) -> dict:
    """Per-iteration seconds of a GEM fit from its callback timestamps, with a breakdown.

    Consecutive callbacks bracket one full MM iteration ((mu, kappa)-step, score GEMM,
    dual solve, resultant pass); the first ``iters - 1`` such intervals are averaged.

    Returns
    -------
    dict with ``seconds`` (per iteration), ``passes`` (dual passes per iteration),
    ``parts`` (seconds per iteration in each wrapped function, plus ``other``), ``n_iter``.
    """
    if iters < 2:
        raise ValueError(f"iters must be >= 2 to time one interval, got {iters}")
    sync = synchronize or (lambda: None)
    marks: list[tuple[float, dict]] = []
    profile = _Profile()

    def on_iteration(iteration, objective):
        sync()
        marks.append((time.perf_counter(), profile.snapshot()))

    model = GEM(
        n_clusters=n_clusters,
        max_iter=iters,
        tol=0.0,
        random_state=seed,
        device=device,
        callback=on_iteration,
        **params,
    )
    with warnings.catch_warnings(), _profiled(profile, sync):
        warnings.simplefilter("ignore")  # ConvergenceWarning: max_iter is deliberately small
        model.fit(X)
    (t0, p0), (t1, p1) = marks[0], marks[-1]
    count = len(marks) - 1
    seconds = (t1 - t0) / count
    parts = {k: (p1.get(k, 0.0) - p0.get(k, 0.0)) / count for k in p1 if k != "passes"}
    parts["other"] = seconds - sum(parts.values())
    return {
        "seconds": seconds,
        "passes": (p1["passes"] - p0["passes"]) / count,
        "parts": parts,
        "n_iter": model.n_iter_,
    }


# --------------------------------------------------------------------------- references
def time_faiss(X: np.ndarray, n_clusters: int, iters: int, seed: int) -> dict | None:
    """faiss.Kmeans(spherical=True) seconds per iteration (difference of two fits)."""
    try:
        import faiss
    except ImportError:
        return None

    def fit_seconds(niter: int) -> float:
        km = faiss.Kmeans(
            X.shape[1],
            n_clusters,
            niter=niter,
            spherical=True,
            seed=seed,
            max_points_per_centroid=len(X),
            verbose=False,
        )  # no subsampling
        start = time.perf_counter()
        km.train(X)
        return time.perf_counter() - start

    fit_seconds(1)  # warm-up
    short, long = fit_seconds(2), fit_seconds(2 + iters)
    return {"seconds": (long - short) / iters}


def time_sklearn(X: np.ndarray, n_clusters: int, iters: int, seed: int) -> dict:
    """sklearn KMeans(algorithm="lloyd") seconds per iteration (difference of two fits)."""
    from sklearn.cluster import KMeans

    def fit(max_iter: int) -> tuple[float, int]:
        km = KMeans(
            n_clusters=n_clusters,
            algorithm="lloyd",
            n_init=1,
            max_iter=max_iter,
            tol=0.0,
            random_state=seed,
        )
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            km.fit(X)
        return time.perf_counter() - start, int(km.n_iter_)

    fit(1)  # warm-up
    (t_short, n_short), (t_long, n_long) = fit(2), fit(2 + iters)
    if n_long <= n_short:
        raise RuntimeError("sklearn KMeans converged before the timing window; use more data")
    seconds = (t_long - t_short) / (n_long - n_short)
    if seconds <= 0:  # the two fits ran under different load: fall back to an upper bound
        return {"seconds": t_long / n_long, "note": "upper bound (whole fit / n_iter)"}
    return {"seconds": seconds}


# --------------------------------------------------------------------------- report
def machine_info() -> dict:
    info = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }
    with contextlib.suppress(ImportError):
        import faiss

        info["faiss"] = faiss.__version__
        info["faiss_threads"] = faiss.omp_get_max_threads()
    import sklearn

    info["sklearn"] = sklearn.__version__
    return info


def bench_dataset(name: str, X: np.ndarray, n_clusters: int, iters: int, seed: int) -> list:
    """Time every method on one data set; rows of (method, result dict)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of the one-iteration warm-up
        GEM(n_clusters=n_clusters, max_iter=1, tol=0.0, random_state=seed).fit(X[:2000])
    rows = [("GEM (lambda=1, tied)", time_gem(X, n_clusters, iters, seed))]
    rows.append(("GEM (lambda=0: EM, no dual)", time_gem(X, n_clusters, iters, seed, balance=0.0)))
    faiss_result = time_faiss(X, n_clusters, iters, seed)
    if faiss_result is not None:
        rows.append(("faiss Kmeans spherical", faiss_result))
    rows.append(("sklearn KMeans lloyd", time_sklearn(X, n_clusters, iters, seed)))
    return rows


def format_table(name: str, shape: tuple, n_clusters: int, r0: float, rows: list) -> str:
    reference = dict(rows).get("faiss Kmeans spherical")
    lines = [
        f"\n{name}: N={shape[0]:,} d={shape[1]} K={n_clusters} R0={r0:.3f}",
        f"  {'method':<28} {'ms/iter':>9} {'x faiss':>8} {'passes':>7}  breakdown (ms/iter)",
    ]
    for method, result in rows:
        ms = 1e3 * result["seconds"]
        ratio = f"{result['seconds'] / reference['seconds']:8.2f}" if reference else f"{'-':>8}"
        passes = f"{result['passes']:7.1f}" if "passes" in result else f"{'':>7}"
        parts = ", ".join(f"{k} {1e3 * v:.0f}" for k, v in result.get("parts", {}).items())
        note = f"  [{result['note']}]" if "note" in result else ""
        lines.append(f"  {method:<28} {ms:9.1f} {ratio} {passes}  {parts}{note}")
    if reference:
        gem_ratio = rows[0][1]["seconds"] / reference["seconds"]
        verdict = "MET" if gem_ratio <= GOAL_RATIO_TO_FAISS else "MISSED"
        lines.append(
            f"  goal GEM <= {GOAL_RATIO_TO_FAISS}x faiss per iteration: {verdict} "
            f"({gem_ratio:.2f}x)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=384)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--iters", type=int, default=8, help="timed iterations per method")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample", type=Path, default=ROOT / "sample_data" / "embeddings.npy")
    parser.add_argument("--skip-sample", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    info = machine_info()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    results = {"machine": info, "datasets": {}}
    datasets = [
        ("anisotropic", lambda: anisotropic_mixture(args.n, args.d, args.k, seed=args.seed)[0])
    ]
    if not args.skip_sample:
        datasets.append(
            ("sample", lambda: np.load(args.sample, allow_pickle=False).astype(np.float32))
        )
    for name, make in datasets:
        X = make()
        X /= np.linalg.norm(X, axis=1, keepdims=True)  # unit rows for faiss spherical
        r0 = anisotropy(X)
        rows = bench_dataset(name, X, args.k, args.iters, args.seed)
        print(format_table(name, X.shape, args.k, r0, rows), flush=True)
        results["datasets"][name] = {
            "shape": list(X.shape),
            "k": args.k,
            "r0": r0,
            "methods": dict(rows),
        }
    results["machine"]["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    print(f"load average after: {results['machine']['load_average_after']}")
    if args.json:
        from gem_app.utils.files import write_json

        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
