"""GEM on a CUDA GPU: ms per MM iteration against spherical k-means and the hardware floor.

Issue 2 goal: N = 1,000,000, d = 384, K = 256 float32 rows on one card; a GEM iteration
costs at most 1.5x a spherical k-means iteration on the same card. Usage::

    python bench/gpu_bench.py [--n 1000000] [--d 384] [--k 256] [--iters 8] [--seed 0]
                              [--precision fp32|tf32|both] [--only NAME ...] [--json out.json]
    python bench/gpu_bench.py --device cpu --n 20000 --k 32   # a smoke test without a GPU

Without a CUDA device (and without ``--device cpu``) it prints "no CUDA device" and exits 0.

The measurements are the named functions of ``BENCHMARKS``, run in order on one shared
:class:`Context` (the rows live on the device once):

* ``hardware``: the card's GEMM rate (a large square ``torch.matmul``) and memory
  bandwidth (a large device-to-device copy), which give the floor of a GEM iteration:
  ``max(flops / rate, bytes / bandwidth)`` with ``flops = 4 N d K`` (the score GEMM
  ``X C^T`` and the resultant GEMM ``q^T X``) and ``bytes = 4 (2 N d + 2 N K)`` (X read
  by both GEMMs, the float32 score matrix written once and read once);
* ``kmeans``: spherical k-means in torch (assign by the argmax of ``X C^T``, update by
  ``index_add_`` and normalisation), the reference iteration;
* ``gem``: gem_app's GEM fit on the device tensor, per iteration from its callback
  timestamps, with the dual passes per iteration and a breakdown by part.

* ``predict_proba``: rows per second of ``GEM.predict_proba`` (the teacher's assignment);
* ``student``: documents per second of the distilled student (``gem_app.scale.student``; its
  hashing of the texts runs on the CPU, the network on the device).

More are registered with ``@benchmark("name")``; each takes the Context and returns a dict.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fit import time_gem  # noqa: E402  (bench/ is not a package)

GOAL_RATIO_TO_KMEANS = 1.5
BENCHMARKS: dict[str, Callable[[Context], dict]] = {}


def benchmark(name: str):
    """Register a measurement under ``name`` (run in registration order)."""

    def register(fn):
        BENCHMARKS[name] = fn
        return fn

    return register


@dataclass
class Context:
    """What every benchmark shares: the options, the device, the rows and earlier results."""

    n: int
    d: int
    k: int
    iters: int
    seed: int
    device: torch.device
    X: torch.Tensor | None = None
    results: dict = field(default_factory=dict)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def timed(ctx: Context, fn, repeats: int, warmup: int = 2) -> float:
    """Mean seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls, synchronised."""
    for _ in range(warmup):
        fn()
    ctx.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    ctx.synchronize()
    return (time.perf_counter() - start) / repeats


def anisotropic_rows(
    n, d, n_components, *, seed, device, offset=1.0, spread=0.8, chunk_size=262_144
) -> torch.Tensor:
    """Unit rows ``normalize(offset m0 + mu_c + spread g / sqrt(d))`` generated on ``device``.

    The same model as bench_fit.anisotropic_mixture (R0 ~ 0.62), drawn with torch's
    generator on the device so that a million rows take milliseconds.

    Returns
    -------
    X : Tensor of shape (n, d), float32, on ``device``
    """
    gen = torch.Generator(device=device).manual_seed(seed)
    common = torch.nn.functional.normalize(torch.randn(d, generator=gen, device=device), dim=0)
    directions = torch.nn.functional.normalize(
        torch.randn(n_components, d, generator=gen, device=device), dim=1
    )
    shares = np.random.default_rng(seed).dirichlet(np.full(n_components, 2.0))
    labels = torch.multinomial(
        torch.as_tensor(shares, dtype=torch.float32, device=device),
        n,
        replacement=True,
        generator=gen,
    )
    X = torch.empty((n, d), device=device)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        rows = torch.randn(stop - start, d, generator=gen, device=device) * (spread / d**0.5)
        rows += directions[labels[start:stop]] + offset * common
        X[start:stop] = torch.nn.functional.normalize(rows, dim=1)
    return X


# --------------------------------------------------------------------------- benchmarks
def gemm_rate(ctx: Context) -> float:
    """flop/s of a large square float32 torch.matmul at the current precision setting."""
    size = 8192 if ctx.device.type == "cuda" else 1024
    a = torch.randn(size, size, device=ctx.device)
    b = torch.randn(size, size, device=ctx.device)
    return 2 * size**3 / timed(ctx, lambda: torch.matmul(a, b), repeats=10)


def copy_bandwidth(ctx: Context) -> float:
    """byte/s of a large device-to-device copy, counting the read and the write."""
    elements = (1 << 28) if ctx.device.type == "cuda" else (1 << 24)  # 1 GiB / 64 MiB float32
    src = torch.empty(elements, device=ctx.device).uniform_()
    dst = torch.empty_like(src)
    return 2 * src.numel() * src.element_size() / timed(ctx, lambda: dst.copy_(src), repeats=10)


@benchmark("hardware")
def hardware(ctx: Context) -> dict:
    """GEMM rate and copy bandwidth of the device, and the floor of one GEM iteration."""
    rate, bandwidth = gemm_rate(ctx), copy_bandwidth(ctx)
    flops = 4.0 * ctx.n * ctx.d * ctx.k
    bytes_moved = 4.0 * (2 * ctx.n * ctx.d + 2 * ctx.n * ctx.k)
    floor = max(flops / rate, bytes_moved / bandwidth)
    return {
        "gemm_tflops": rate / 1e12,
        "bandwidth_gbps": bandwidth / 1e9,
        "iteration_flops": flops,
        "iteration_bytes": bytes_moved,
        "floor_ms": 1e3 * floor,
        "floor_bound": "GEMM" if flops / rate >= bytes_moved / bandwidth else "memory",
    }


def spherical_kmeans_step(X: torch.Tensor, centres: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """One spherical k-means iteration: hard assignment by argmax of X C^T, mean direction update.

    Parameters
    ----------
    X : Tensor (N, d), unit rows; centres : Tensor (K, d), unit rows

    Returns
    -------
    Tensor (K, d): the new centres (an empty cluster keeps its centre)
    """
    sums = torch.zeros_like(centres)
    for start in range(0, len(X), chunk_size):
        rows = X[start : start + chunk_size]
        labels = torch.argmax(rows @ centres.T, dim=1)
        sums.index_add_(0, labels, rows)
    norms = torch.linalg.vector_norm(sums, dim=1, keepdim=True)
    return torch.where(norms > 0, sums / norms.clamp_min(1e-30), centres)


@benchmark("kmeans")
def kmeans(ctx: Context) -> dict:
    """ms per spherical k-means iteration (the score matrix in chunks of GEM's size)."""
    from gem_app.core.rows import chunk_rows

    gen = torch.Generator(device="cpu").manual_seed(ctx.seed)
    start_rows = torch.randperm(ctx.n, generator=gen)[: ctx.k].to(ctx.device)
    state = {"centres": ctx.X[start_rows].clone()}
    chunk = chunk_rows(ctx.d, ctx.k, ctx.device)

    def step():
        state["centres"] = spherical_kmeans_step(ctx.X, state["centres"], chunk)

    seconds = timed(ctx, step, repeats=ctx.iters)
    return {"ms_per_iter": 1e3 * seconds}


@benchmark("gem")
def gem(ctx: Context) -> dict:
    """ms per GEM MM iteration (lambda = 1, tied kappa) on the device tensor."""
    from gem_app.core.gem import GEM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of the one-iteration warm-up
        GEM(n_clusters=ctx.k, max_iter=1, tol=0.0, random_state=ctx.seed).fit(ctx.X[:20_000])
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    result = time_gem(
        ctx.X, ctx.k, ctx.iters, ctx.seed, device=str(ctx.device), synchronize=ctx.synchronize
    )
    out = {
        "ms_per_iter": 1e3 * result["seconds"],
        "passes_per_iter": result["passes"],
        "parts_ms": {k: 1e3 * v for k, v in result["parts"].items()},
    }
    if ctx.device.type == "cuda":
        out["peak_gpu_gib"] = torch.cuda.max_memory_allocated(ctx.device) / 2**30
    reference = ctx.results.get("kmeans", {}).get("ms_per_iter")
    floor = ctx.results.get("hardware", {}).get("floor_ms")
    if reference:
        out["ratio_to_kmeans"] = out["ms_per_iter"] / reference
        out["goal_met"] = out["ratio_to_kmeans"] <= GOAL_RATIO_TO_KMEANS
    if floor:
        out["ratio_to_floor"] = out["ms_per_iter"] / floor
    return out


@benchmark("predict_proba")
def predict_proba(ctx: Context) -> dict:
    """Rows per second of GEM.predict_proba on the device (the teacher's assignment step)."""
    from gem_app.core.gem import GEM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GEM(n_clusters=ctx.k, max_iter=3, random_state=ctx.seed).fit(ctx.X[:50_000])
    model.device = str(ctx.device)
    seconds = timed(ctx, lambda: model.predict_proba(ctx.X), repeats=3, warmup=1)
    return {"rows_per_s": ctx.n / seconds, "ms_per_million_rows": 1e3 * seconds * 1e6 / ctx.n}


@benchmark("student")
def student(ctx: Context) -> dict:
    """Documents per second of the distilled student (gem_app.scale.student) on the device."""
    from gem_app.scale.student import Student

    rng = np.random.default_rng(ctx.seed)
    vocabulary = [f"w{i}" for i in range(5_000)]
    texts = [" ".join(rng.choice(vocabulary, size=60)) for _ in range(20_000)]
    teacher = rng.dirichlet(np.ones(ctx.k), size=len(texts))
    model = Student(epochs=1, refit=False, static_vectors=False, random_state=ctx.seed)
    model.fit(texts[:2_000], teacher[:2_000])
    model.to(str(ctx.device))
    seconds = timed(ctx, lambda: model.predict_proba(texts), repeats=2, warmup=1)
    return {"docs_per_s": len(texts) / seconds, "words_per_doc": 60}


# --------------------------------------------------------------------------- driver
def _set_precision(precision: str) -> None:
    allow = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow


def _format(name: str, result: dict) -> str:
    parts = []
    for key, value in result.items():
        if isinstance(value, dict):
            value = "{" + ", ".join(f"{k} {v:.2f}" for k, v in value.items()) + "}"
        elif isinstance(value, float):
            value = f"{value:.4g}"
        parts.append(f"{key}={value}")
    return f"  {name:<10} " + "  ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=384)
    parser.add_argument("--k", type=int, default=256)
    parser.add_argument("--iters", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument(
        "--precision",
        choices=("fp32", "tf32", "both"),
        default="both",
        help="matmul precision for every measurement (CUDA only)",
    )
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            f"no CUDA device: torch {torch.__version__} sees none, so there is nothing to "
            "measure (use --device cpu for a smoke test)"
        )
        return 0
    device = torch.device(args.device)
    ctx = Context(args.n, args.d, args.k, args.iters, args.seed, device)
    header = f"torch {torch.__version__}, device {device}"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        header += (
            f" ({props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda})"
        )
    else:
        header += f" ({torch.get_num_threads()} threads)"
    print(header)
    ctx.X = anisotropic_rows(args.n, args.d, args.k, seed=args.seed, device=device)
    r0 = float(
        torch.linalg.vector_norm(sum(c.double().sum(0) for c in ctx.X.split(200_000))) / args.n
    )
    print(f"rows: N={args.n:,} d={args.d} K={args.k} float32, R0={r0:.3f}, iters={args.iters}")
    precisions = ["fp32", "tf32"] if args.precision == "both" else [args.precision]
    if device.type != "cuda":
        precisions = ["fp32"]
    names = args.only or list(BENCHMARKS)
    everything = {
        "n": args.n,
        "d": args.d,
        "k": args.k,
        "r0": r0,
        "header": header,
        "by_precision": {},
    }
    for precision in precisions:
        if device.type == "cuda":
            _set_precision(precision)
        print(f"matmul precision {precision}:")
        ctx.results = {}
        for name in names:
            ctx.results[name] = BENCHMARKS[name](ctx)
            print(_format(name, ctx.results[name]), flush=True)
        everything["by_precision"][precision] = ctx.results
        gem_result = ctx.results.get("gem", {})
        if "ratio_to_kmeans" in gem_result:
            verdict = "MET" if gem_result["goal_met"] else "MISSED"
            print(
                f"  goal GEM <= {GOAL_RATIO_TO_KMEANS}x spherical k-means: {verdict} "
                f"({gem_result['ratio_to_kmeans']:.2f}x; "
                f"{gem_result.get('ratio_to_floor', float('nan')):.2f}x the floor)"
            )
    if args.json:
        from gem_app.utils.files import write_json

        write_json(args.json, everything)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
