"""Time of a whole GEM fit against faiss spherical k-means, quiet and under a competing load.

Issue 13 goals, on the project's 2-core CPU: a whole fit (set-up, seeding, iterations,
final pass) at an equal iteration count <= 1.5x faiss's whole train on the same rows; the
default fit (``GEM(n_clusters=K).fit(X)``, to its tolerance) <= 2x faiss's default train;
under a competing 2-thread load, GEM's slowdown within 1.5x of faiss's. Usage::

    python bench/bench_fit.py [--sizes 100000x64,1000000x256] [--iters 10] [--repeat 3,1]
                              [--load 2] [--per-iteration] [--json out.json]

For each size, ``--repeat`` rounds (one count, or one per size); in each round every
method runs once quiet and once while ``--load`` busy processes compete for the cores
(interleaved, so that both conditions see the same background). Reported: medians, the
machine's load average and the CPU the rest of the machine used meanwhile (from
/proc/stat, in cores). Methods:

* ``GEM default``: ``GEM(n_clusters=K, random_state=seed).fit(X)``, with its breakdown in
  exclusive seconds (:func:`whole_gem`: set-up = sphere statistics + corrected rows,
  seeding = k-means++, warm start = the MM run on the sample, initial pass = hard
  assignment + first (mu, kappa)-step without a warm start, iterations on all rows (also
  per iteration), final pass = the polished q-step with the labels), also as ratios to
  faiss's whole train at the equal iteration count;
* ``GEM n iterations``: the same with ``max_iter=--iters, tol=0``;
* ``faiss n iterations``: ``faiss.Kmeans(d, K, niter=--iters, spherical=True,
  max_points_per_centroid=N)`` (every row, as GEM);
* ``faiss defaults``: ``faiss.Kmeans(d, K, spherical=True)`` (25 iterations on a subsample
  of 256 rows per centroid), and the same followed by the labels of all rows.

``--per-iteration`` also times the steady-state iteration of GEM (lambda = 1 and 0), faiss
and scikit-learn's Lloyd k-means (the issue-2 measurement, :func:`time_gem`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import sklearn
import torch
from sklearn.cluster import KMeans

from gem_app.core import dual, mm
from gem_app.core import gem as gem_module
from gem_app.core.gem import GEM
from gem_app.core.mm_run import MMRun
from gem_app.core.sphere import SphereTransform
from gem_app.utils.files import write_json
from gem_app.utils.optional import require_faiss

GOAL_EQUAL_ITERS = 1.5
GOAL_DEFAULT = 2.0
GOAL_SLOWDOWN = 1.5
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
    follow a Dirichlet(2) draw (unequal). R0 ~ offset / sqrt(offset^2 + 1 + spread^2)
    (0.62 for the defaults).

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
        total += _unit(X[start : start + chunk_size].astype(np.float64)).sum(0)
    return float(np.linalg.norm(total / len(X)))


# --------------------------------------------------------------------------- the machine
def _busy_jiffies() -> int:
    with open("/proc/stat", encoding="ascii") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # minus idle and iowait


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def cpu_meter(record: dict):
    """Wall seconds, and the cores the rest of the machine kept busy meanwhile (/proc/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    busy, own, start = _busy_jiffies(), _own_cpu_seconds(), time.perf_counter()
    yield record
    wall = time.perf_counter() - start
    others = (_busy_jiffies() - busy) / tick - (_own_cpu_seconds() - own)
    record.update(seconds=wall, other_cores=max(0.0, others) / max(wall, 1e-9))
    record["load_average"] = os.getloadavg()[0]


@contextlib.contextmanager
def competing_load(processes: int):
    """``processes`` busy-looping Python processes for the duration (ended by their pid)."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        time.sleep(0.3 if procs else 0.0)
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()


# --------------------------------------------------------------------------- whole fits
@contextlib.contextmanager
def _wrapped(owner, name: str, wrapper):
    original = getattr(owner, name)
    setattr(owner, name, wrapper(original))
    try:
        yield
    finally:
        setattr(owner, name, original)


class PhaseTimer:
    """Exclusive wall seconds of the wrapped calls on the main thread, by phase label.

    A call inside another timed call is subtracted from the outer one (exclusive times).
    Inside a phase listed in ``absorbing`` only the labels in ``nested`` are timed
    separately: the warm start's own passes count as the warm start, its seeding as
    seeding.
    """

    def __init__(self, absorbing=("warm start",), nested=("seeding",)):
        self.seconds: dict = {}
        self.counts: dict = {}  # timed calls per label
        self._stack: list = []
        self._absorbing, self._nested = set(absorbing), set(nested)

    def wrap(self, label: str, when=lambda *a, **k: True):
        def wrapper(original):
            def timed(*args, **kwargs):
                inside = [entry[0] for entry in self._stack]
                absorbed = any(a in inside for a in self._absorbing) and label not in self._nested
                if (
                    threading.current_thread() is not threading.main_thread()
                    or absorbed
                    or not when(*args, **kwargs)
                ):
                    return original(*args, **kwargs)
                entry = [label, 0.0]
                self._stack.append(entry)
                start = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    elapsed = time.perf_counter() - start
                    self._stack.pop()
                    if self._stack:
                        self._stack[-1][1] += elapsed
                    self.seconds[label] = self.seconds.get(label, 0.0) + elapsed - entry[1]
                    self.counts[label] = self.counts.get(label, 0) + 1

            return timed

        return wrapper


def whole_gem(X, n_clusters: int, seed: int, **params) -> dict:
    """Wall time of ``GEM(n_clusters, random_state=seed, **params).fit(X)`` and its phases.

    Phases (exclusive seconds): set-up (sphere statistics and corrected rows), seeding
    (k-means++), warm start (the MM run on the sample, without its seeding), initial pass
    (the hard pass and first (mu, kappa)-step of a start without warm start), final pass
    (the polished q-step with the labels) and, for the rest of the fit, iterations on all
    rows (reported per iteration).
    """
    timer = PhaseTimer()
    final = timer.wrap("final pass", when=lambda *a, final=False, **k: final)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_wrapped(SphereTransform, "fit", timer.wrap("set-up")))
        stack.enter_context(_wrapped(gem_module, "prepare_rows", timer.wrap("set-up")))
        stack.enter_context(_wrapped(MMRun, "_initial_directions", timer.wrap("seeding")))
        stack.enter_context(_wrapped(MMRun, "_warm_start", timer.wrap("warm start")))
        stack.enter_context(_wrapped(MMRun, "_seeded_start", timer.wrap("initial pass")))
        stack.enter_context(_wrapped(MMRun, "_q_step", final))
        stack.enter_context(_wrapped(MMRun, "fit", timer.wrap("iterations")))
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")  # ConvergenceWarning with max_iter
        record: dict = {}
        with cpu_meter(record):
            model = GEM(n_clusters=n_clusters, random_state=seed, **params).fit(X)
    phases = {k: timer.seconds.get(k, 0.0) for k in PHASES}
    record.update(
        n_iter=int(model.n_iter_),
        converged=bool(model.converged_),
        objective=float(model.objective_),
        phases=phases,
        per_iteration=phases["iterations"] / max(model.n_iter_, 1),
    )
    return record


PHASES = ("set-up", "seeding", "warm start", "initial pass", "iterations", "final pass")


def whole_faiss(X, n_clusters: int, seed: int, *, niter=None, every_row=False, labels=False):
    """Wall time of ``faiss.Kmeans(spherical=True).train`` (defaults unless given)."""
    faiss = require_faiss()
    options = {"spherical": True, "seed": seed, "verbose": False}
    if niter is not None:
        options["niter"] = niter
    if every_row:
        options["max_points_per_centroid"] = len(X)
    record: dict = {}
    with cpu_meter(record):
        km = faiss.Kmeans(X.shape[1], n_clusters, **options)
        km.train(X)
        if labels:
            km.index.search(X, 1)
    record["n_iter"] = int(km.cp.niter)
    return record


def bench_whole(X, n_clusters: int, iters: int, seed: int, repeat: int, load: int) -> dict:
    """Every method ``repeat`` times, quiet and under ``load`` busy processes, interleaved."""
    methods = {
        "GEM default": lambda: whole_gem(X, n_clusters, seed),
        f"GEM {iters} iterations": lambda: whole_gem(X, n_clusters, seed, max_iter=iters, tol=0.0),
        f"faiss {iters} iterations": lambda: whole_faiss(
            X, n_clusters, seed, niter=iters, every_row=True
        ),
        "faiss defaults": lambda: whole_faiss(X, n_clusters, seed),
        "faiss defaults + labels": lambda: whole_faiss(X, n_clusters, seed, labels=True),
    }
    conditions = ["quiet"] + ([f"{load} busy processes"] if load else [])
    runs: dict = {c: {m: [] for m in methods} for c in conditions}
    for round_ in range(repeat):
        for condition in conditions:
            with competing_load(load if condition != "quiet" else 0):
                for name, run in methods.items():
                    runs[condition][name].append(run())
        print(f"  round {round_ + 1}/{repeat} done", flush=True)
    return runs


def _median(records: list, key: str) -> float:
    return float(np.median([r[key] for r in records]))


def summarize(runs: dict, iters: int) -> dict:
    """Medians per condition and method, the goal ratios and the slowdowns under load."""
    out: dict = {"conditions": {}}
    for condition, methods in runs.items():
        table = {}
        for name, records in methods.items():
            row = {k: _median(records, k) for k in ("seconds", "other_cores", "load_average")}
            row["n_iter"] = int(np.median([r["n_iter"] for r in records]))
            if "phases" in records[0]:
                row["phases"] = {
                    k: float(np.median([r["phases"].get(k, 0.0) for r in records]))
                    for k in records[0]["phases"]
                }
                row["per_iteration"] = _median(records, "per_iteration")
                row["objective"] = _median(records, "objective")
            table[name] = row
        t = {k: v["seconds"] for k, v in table.items()}
        table["ratios"] = {
            "equal_iterations": t[f"GEM {iters} iterations"] / t[f"faiss {iters} iterations"],
            "default": t["GEM default"] / t["faiss defaults"],
            "default_vs_faiss_with_labels": t["GEM default"] / t["faiss defaults + labels"],
        }
        out["conditions"][condition] = table
    conditions = list(out["conditions"])
    if len(conditions) == 2:
        quiet, loaded = (out["conditions"][c] for c in conditions)
        slow = {
            name: loaded[name]["seconds"] / quiet[name]["seconds"]
            for name in quiet
            if name != "ratios"
        }
        gem_slow = slow[f"GEM {iters} iterations"]
        faiss_slow = slow[f"faiss {iters} iterations"]
        out["slowdown"] = {**slow, "GEM / faiss": gem_slow / faiss_slow}
    return out


def format_whole(name: str, shape, n_clusters: int, r0: float, summary: dict, iters: int) -> str:
    lines = [f"\n{name}: N={shape[0]:,} d={shape[1]} K={n_clusters} R0={r0:.3f} (medians)"]
    for condition, table in summary["conditions"].items():
        ratios = table["ratios"]
        row0 = table["GEM default"]
        lines.append(
            f" {condition}: load average {row0['load_average']:.1f}, other processes "
            f"{row0['other_cores']:.2f} cores during GEM default"
        )
        lines.append(f"  {'method':<26} {'seconds':>8} {'n_iter':>6}  breakdown (seconds)")
        for method, row in table.items():
            if method == "ratios":
                continue
            parts = ""
            if "phases" in row:
                parts = ", ".join(f"{k} {v:.2f}" for k, v in row["phases"].items())
                parts += f", per iteration {row['per_iteration']:.3f}"
            lines.append(f"  {method:<26} {row['seconds']:8.2f} {row['n_iter']:6d}  {parts}")
        reference = table[f"faiss {iters} iterations"]["seconds"]
        for method in ("GEM default", f"GEM {iters} iterations"):
            phases = table[method]["phases"]
            shares = ", ".join(f"{k} {v / reference:.2f}" for k, v in phases.items())
            per = table[method]["per_iteration"] / (reference / iters)
            lines.append(
                f"  {method} as x faiss {iters}-iteration train: {shares}; "
                f"per iteration {per:.2f}x faiss's (its whole train / {iters})"
            )
        eq, de = ratios["equal_iterations"], ratios["default"]
        lines.append(
            f"  whole fit at {iters} iterations: {eq:.2f}x faiss (goal <= {GOAL_EQUAL_ITERS}: "
            f"{'MET' if eq <= GOAL_EQUAL_ITERS else 'MISSED'}); default fit: {de:.2f}x faiss "
            f"defaults (goal <= {GOAL_DEFAULT}: {'MET' if de <= GOAL_DEFAULT else 'MISSED'}), "
            f"{ratios['default_vs_faiss_with_labels']:.2f}x with faiss's labels"
        )
    if "slowdown" in summary:
        s = summary["slowdown"]
        lines.append(
            f"  slowdown under load ({iters} iterations): GEM {s[f'GEM {iters} iterations']:.2f}x, "
            f"faiss {s[f'faiss {iters} iterations']:.2f}x, ratio {s['GEM / faiss']:.2f} "
            f"(goal <= {GOAL_SLOWDOWN}: {'MET' if s['GEM / faiss'] <= GOAL_SLOWDOWN else 'MISSED'}); "
            f"GEM default {s['GEM default']:.2f}x, faiss defaults {s['faiss defaults']:.2f}x"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- per iteration
def time_gem(
    X, n_clusters: int, iters: int, seed: int, *, device="cpu", synchronize=None, **params
) -> dict:
    """Per-iteration seconds of a GEM fit from its callback timestamps, with a breakdown.

    Consecutive callbacks bracket one full MM iteration ((mu, kappa)-step, the pass over
    the rows, any dual solve); the first ``iters - 1`` intervals are averaged.

    Returns
    -------
    dict with ``seconds`` (per iteration), ``passes`` (dual statistics passes per
    iteration), ``parts`` (seconds per iteration in each wrapped function, and ``other``),
    ``n_iter``.
    """
    if iters < 2:
        raise ValueError(f"iters must be >= 2 to time one interval, got {iters}")
    sync = synchronize or (lambda: None)
    timer = PhaseTimer(absorbing=(), nested=())
    marks: list = []

    def on_iteration(iteration, objective):
        sync()
        marks.append((time.perf_counter(), dict(timer.seconds), dict(timer.counts)))

    labels = [
        (mm, "resultant_pass", "pass (scores, q, resultants)"),
        (dual, "solve_dual", "dual solve (fallback)"),
        (dual, "assignment_stats", "dual statistics pass"),
        (mm, "update_parameters", "(mu, kappa) step"),
    ]
    model = GEM(
        n_clusters=n_clusters,
        max_iter=iters,
        tol=0.0,
        random_state=seed,
        device=device,
        callback=on_iteration,
        **params,
    )
    with contextlib.ExitStack() as stack:
        for owner, name, label in labels:
            stack.enter_context(_wrapped(owner, name, timer.wrap(label)))
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")  # ConvergenceWarning: max_iter is deliberately small
        model.fit(X)
    (t0, s0, c0), (t1, s1, c1) = marks[0], marks[-1]
    count = len(marks) - 1
    per = (t1 - t0) / count
    parts = {k: (s1.get(k, 0.0) - s0.get(k, 0.0)) / count for k in s1}
    parts["other"] = per - sum(parts.values())
    passes = (c1.get("dual statistics pass", 0) - c0.get("dual statistics pass", 0)) / count
    return {"seconds": per, "passes": passes, "parts": parts, "n_iter": model.n_iter_}


def time_faiss(X: np.ndarray, n_clusters: int, iters: int, seed: int) -> dict:
    """faiss.Kmeans(spherical=True) seconds per iteration on every row (difference of two fits)."""
    short = whole_faiss(X, n_clusters, seed, niter=2, every_row=True)["seconds"]
    long = whole_faiss(X, n_clusters, seed, niter=2 + iters, every_row=True)["seconds"]
    return {"seconds": (long - short) / iters}


def time_sklearn(X: np.ndarray, n_clusters: int, iters: int, seed: int) -> dict:
    """sklearn KMeans(algorithm="lloyd") seconds per iteration (difference of two fits)."""

    def fit(max_iter: int) -> tuple[float, int]:
        km = KMeans(n_clusters, algorithm="lloyd", n_init=1, max_iter=max_iter, tol=0.0,
                    random_state=seed)  # fmt: skip
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            km.fit(X)
        return time.perf_counter() - start, int(km.n_iter_)

    (t_short, n_short), (t_long, n_long) = fit(2), fit(2 + iters)
    seconds = (t_long - t_short) / max(n_long - n_short, 1)
    if seconds <= 0:  # the two fits ran under different load: an upper bound instead
        return {"seconds": t_long / n_long, "note": "upper bound (whole fit / n_iter)"}
    return {"seconds": seconds}


def bench_iteration(X, n_clusters: int, iters: int, seed: int) -> list:
    rows = [("GEM (lambda=1, tied)", time_gem(X, n_clusters, iters, seed))]
    rows.append(("GEM (lambda=0: EM)", time_gem(X, n_clusters, iters, seed, balance=0.0)))
    rows.append(("faiss Kmeans spherical", time_faiss(X, n_clusters, iters, seed)))
    rows.append(("sklearn KMeans lloyd", time_sklearn(X, n_clusters, iters, seed)))
    return rows


def format_iteration(rows: list) -> str:
    reference = dict(rows)["faiss Kmeans spherical"]["seconds"]
    lines = [f"  {'method':<26} {'ms/iter':>9} {'x faiss':>8} {'passes':>7}  breakdown (ms/iter)"]
    for method, result in rows:
        parts = ", ".join(f"{k} {1e3 * v:.0f}" for k, v in result.get("parts", {}).items())
        passes = f"{result['passes']:7.1f}" if "passes" in result else " " * 7
        lines.append(
            f"  {method:<26} {1e3 * result['seconds']:9.1f} "
            f"{result['seconds'] / reference:8.2f} {passes}  {parts}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- driver
def machine_info() -> dict:
    faiss = require_faiss()
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "faiss": faiss.__version__,
        "faiss_threads": faiss.omp_get_max_threads(),
        "sklearn": sklearn.__version__,
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


def _size(text: str) -> tuple[int, int]:
    n, k = text.lower().split("x")
    return int(n), int(k)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000x64,1000000x256", help="NxK,NxK,...")
    parser.add_argument("--d", type=int, default=384)
    parser.add_argument("--iters", type=int, default=10, help="the equal iteration count")
    parser.add_argument("--repeat", default="3,1", help="rounds: one count, or one per size")
    parser.add_argument("--load", type=int, default=2, help="busy processes (0: quiet only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-iteration", action="store_true", help="also the issue-2 table")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    info = machine_info()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    results: dict = {"machine": info, "args": vars(args) | {"json": str(args.json)}, "sizes": {}}
    with warnings.catch_warnings():  # warm-up (imports, first allocations)
        warnings.simplefilter("ignore")
        warm = anisotropic_mixture(5_000, args.d, 8, seed=args.seed)[0]
        GEM(n_clusters=8, max_iter=2, random_state=0).fit(warm)
        whole_faiss(warm, 8, 0, niter=2)
    sizes = args.sizes.split(",")
    repeats = [int(r) for r in str(args.repeat).split(",")]
    if len(repeats) == 1:
        repeats *= len(sizes)
    if len(repeats) != len(sizes):
        parser.error(f"--repeat gives {len(repeats)} counts for {len(sizes)} sizes")
    for text, repeat in zip(sizes, repeats, strict=True):
        n, k = _size(text)
        X = anisotropic_mixture(n, args.d, k, seed=args.seed)[0]
        r0 = anisotropy(X)
        runs = bench_whole(X, k, args.iters, args.seed, repeat, args.load)
        summary = summarize(runs, args.iters)
        print(format_whole("anisotropic", X.shape, k, r0, summary, args.iters), flush=True)
        entry = {"r0": r0, "summary": summary, "runs": runs}
        if args.per_iteration:
            rows = bench_iteration(X, k, min(args.iters, 8), args.seed)
            print(format_iteration(rows), flush=True)
            entry["per_iteration"] = dict(rows)
        results["sizes"][text] = entry
        del X
    results["machine"]["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
