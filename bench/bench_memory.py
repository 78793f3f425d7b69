"""Peak RAM of a GEM fit on N = 1,000,000 x d = 384 float32 rows with K = 256 (CPU).

Issue 2 goal: the fit peaks under 4 GB of RAM. Usage::

    python bench/bench_memory.py [--n 1000000] [--d 384] [--k 256] [--max-iter 2]
                                 [--balance 1.0] [--seed 0] [--json results.json]

The fit runs in a child process (a fresh interpreter: its RSS after imports is reported). The child
generates the rows chunk by chunk into one float32 buffer (the input, n*d*4 bytes), fits
``GEM(n_clusters=k, max_iter=..., tol=0)`` and reports:

* the peak resident set size (``VmHWM`` of the child; the parent checks it against
  ``getrusage(RUSAGE_CHILDREN).ru_maxrss``) and the peak minus the input size;
* a phase profile: a sampling thread reads ``VmRSS`` every few milliseconds, and the
  phases of the fit (sphere statistics, row preparation, each q-step's score matrix and
  dual solve, each resultant pass) are marked by wrapping gem_app's functions, so the
  largest RSS seen in each phase locates the peak.

With the defaults this takes several minutes on 2 cores (each MM iteration is a few
~100-200 GFLOP GEMMs plus the dual passes).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from bench_fit import anisotropic_mixture

from gem_app.core import dual, mm
from gem_app.core import gem as gem_module
from gem_app.core.gem import GEM
from gem_app.core.mm_run import MMRun
from gem_app.utils.files import write_json

GOAL_BYTES = 4 * 10**9
GIB = 2**30


def _status_kib(field: str) -> int:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM), in KiB."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


class PhaseTracker:
    """Sample RSS in a thread; ``mark(name)`` closes the current phase and opens ``name``.

    ``phases`` holds ``(name, seconds since start, max RSS in bytes during the phase)``.
    """

    def __init__(self, interval: float = 0.005, log=None):
        self.interval, self.log = interval, log
        self.phases: list[tuple[str, float, int]] = []
        self._name = "start"
        self._start = self._opened = time.perf_counter()
        self._max = _status_kib("VmRSS") * 1024
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            rss = _status_kib("VmRSS") * 1024
            with self._lock:
                self._max = max(self._max, rss)

    def mark(self, name: str) -> None:
        rss = _status_kib("VmRSS") * 1024
        with self._lock:
            peak = max(self._max, rss)
            self.phases.append((self._name, self._opened - self._start, peak))
        if self.log is not None:  # live progress (the child's stderr)
            print(
                f"{time.perf_counter() - self._start:8.1f} s  RSS {rss / GIB:6.3f} GiB  -> {name}",
                file=self.log,
                flush=True,
            )
        with self._lock:
            self._name, self._opened, self._max = name, time.perf_counter(), rss

    def close(self) -> None:
        self.mark("end")
        self._stop.set()
        self._thread.join()


def _instrument(tracker: PhaseTracker) -> None:
    """Mark the phases of a GEM fit by wrapping the functions its fit loop calls.

    The set-up (``gem.SphereTransform.fit``, ``gem.prepare_rows``), the warm start on a
    sample (``MMRun._warm_start``), the passes (``mm.resultant_pass``) and the dual's
    fallback solver and its statistics passes (``dual.solve_dual``,
    ``dual.assignment_stats``). Each name is looked up where the caller finds it, and a
    missing one is an error (the bench must follow the code).
    """

    def wrap(owner, name: str, label: str) -> None:
        original = getattr(owner, name)

        def wrapped(*args, **kwargs):
            tracker.mark(label)
            try:
                return original(*args, **kwargs)
            finally:
                tracker.mark(f"after {label}")

        setattr(owner, name, wrapped)

    wrap(gem_module.SphereTransform, "fit", "sphere statistics")
    wrap(gem_module, "prepare_rows", "prepare rows")
    wrap(MMRun, "_warm_start", "warm start on a sample")
    wrap(dual, "solve_dual", "dual solve (scores held)")
    wrap(dual, "assignment_stats", "dual statistics pass")
    wrap(mm, "resultant_pass", "resultant pass")


def child(args: argparse.Namespace) -> dict:
    """Generate the rows, fit GEM, return the measurements (runs in the child process)."""
    tracker = PhaseTracker(log=sys.stderr)
    tracker.mark("generate input")
    X = np.empty((args.n, args.d), dtype=np.float32)
    anisotropic_mixture(args.n, args.d, args.k, seed=args.seed, out=X)
    tracker.mark("after input")
    rss_with_input = _status_kib("VmRSS") * 1024
    _instrument(tracker)
    iteration_marks = []

    def on_iteration(iteration, objective):
        iteration_marks.append((iteration, time.perf_counter()))
        tracker.mark(f"iteration {iteration} done")

    started = time.perf_counter()
    model = GEM(
        n_clusters=args.k,
        max_iter=args.max_iter,
        tol=0.0,
        balance=args.balance,
        random_state=args.seed,
        device="cpu",
        callback=on_iteration,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: max_iter is deliberately small
        model.fit(X)
    fit_seconds = time.perf_counter() - started
    tracker.close()
    peak = _status_kib("VmHWM") * 1024
    return {
        "n": args.n,
        "d": args.d,
        "k": args.k,
        "max_iter": args.max_iter,
        "balance": args.balance,
        "seed": args.seed,
        "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "input_bytes": int(X.nbytes),
        "rss_with_input_bytes": rss_with_input,
        "peak_rss_bytes": peak,
        "peak_minus_input_bytes": peak - int(X.nbytes),
        "fit_seconds": fit_seconds,
        "n_iter": int(model.n_iter_),
        "anisotropy": float(model.anisotropy_),
        "phases": [
            {"phase": name, "start_s": round(t, 3), "max_rss_bytes": rss}
            for name, t, rss in tracker.phases
        ],
    }


def _report(result: dict, children_maxrss: int) -> str:
    lines = [
        f"GEM fit, N={result['n']:,} d={result['d']} K={result['k']} float32, "
        f"max_iter={result['max_iter']} tol=0 balance={result['balance']} "
        f"(torch {result['torch']}, {result['torch_threads']} threads, "
        f"{result['cpu_count']} cores"
        + (
            f", MALLOC_MMAP_THRESHOLD_={result['malloc_mmap_threshold']}"
            if result.get("malloc_mmap_threshold")
            else ""
        )
        + ")",
        f"  fit time            {result['fit_seconds']:8.1f} s  (R0 = {result['anisotropy']:.3f})",
        f"  input (float32)     {result['input_bytes'] / GIB:8.3f} GiB",
        f"  RSS with input      {result['rss_with_input_bytes'] / GIB:8.3f} GiB",
        f"  peak RSS (VmHWM)    {result['peak_rss_bytes'] / GIB:8.3f} GiB "
        f"({result['peak_rss_bytes'] / 1e9:.2f} GB)",
        f"  ru_maxrss children  {children_maxrss / GIB:8.3f} GiB",
        f"  peak - input        {result['peak_minus_input_bytes'] / GIB:8.3f} GiB",
        f"  goal: peak < {GOAL_BYTES / 1e9:.0f} GB -> "
        + ("MET" if result["peak_rss_bytes"] < GOAL_BYTES else "MISSED"),
        "  phase profile (max RSS while in the phase):",
    ]
    for phase in result["phases"]:
        lines.append(
            f"    {phase['start_s']:8.1f} s  {phase['max_rss_bytes'] / GIB:7.3f} GiB  "
            f"{phase['phase']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=384)
    parser.add_argument("--k", type=int, default=256)
    parser.add_argument("--max-iter", type=int, default=2)
    parser.add_argument("--balance", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    parser.add_argument(
        "--mmap-threshold",
        type=int,
        metavar="BYTES",
        help="run the child with glibc MALLOC_MMAP_THRESHOLD_=BYTES (buffers above it are "
        "mmapped and given back on free: tells heap fragmentation from live memory)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    command = [sys.executable, str(Path(__file__).resolve()), "--child"] + [
        arg for arg in (argv if argv is not None else sys.argv[1:]) if arg
    ]
    env = dict(os.environ)
    if args.mmap_threshold is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
    completed = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False, env=env)
    if completed.returncode != 0:
        print(f"the child process failed with exit code {completed.returncode}", file=sys.stderr)
        return completed.returncode
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    children_maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB
    result["children_ru_maxrss_bytes"] = children_maxrss
    print(_report(result, children_maxrss))
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
