"""Time the w(tau) recompute of gem_app.mixing for K = 16, 256, 4096 clusters.

Goal (issue 4): under 5 ms at K = 4096 on the project's CPU. Usage::

    python bench/bench_mixing.py [--repeats 200] [--seed 0]

Prints one line per case: median and 95th-percentile time of ``mixture_weights`` (no caps,
with GIS tilt and multipliers, with epoch caps) and of ``mixing_report`` (caps).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from gem_app.mixing import mixing_report, mixture_weights

GOAL_MS_AT_4096 = 5.0


def _case_inputs(n_clusters: int, rng: np.random.Generator) -> dict:
    rho = rng.dirichlet(np.full(n_clusters, 0.5))
    tokens = rho * 1e9 * rng.uniform(0.5, 2.0, size=n_clusters)
    return {
        "rho": rho,
        "gis": rng.gamma(2.0, size=n_clusters),
        "multipliers": rng.uniform(0.5, 2.0, size=n_clusters),
        "tokens": tokens,
        "budget": 0.8 * 4.0 * tokens.sum(),
    }


def _time_ms(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times)), float(np.percentile(times, 95))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    worst_at_4096 = 0.0
    print(f"{'K':>6}  {'case':<22} {'median ms':>10} {'p95 ms':>8}")
    for n_clusters in (16, 256, 4096):
        x = _case_inputs(n_clusters, rng)
        cases = {
            "plain": lambda x=x: mixture_weights(x["rho"], temperature=3.0),
            "gis+multipliers": lambda x=x: mixture_weights(
                x["rho"],
                temperature=3.0,
                gis=x["gis"],
                gis_strength=0.5,
                multipliers=x["multipliers"],
            ),
            "epoch caps": lambda x=x: mixture_weights(
                x["rho"],
                temperature=30.0,
                tokens=x["tokens"],
                max_epochs=4.0,
                budget=x["budget"],
            ),
            "report (caps)": lambda x=x: mixing_report(
                x["rho"],
                temperature=30.0,
                tokens=x["tokens"],
                max_epochs=4.0,
                budget=x["budget"],
            ),
        }
        for label, fn in cases.items():
            median, p95 = _time_ms(fn, args.repeats)
            if n_clusters == 4096 and label != "report (caps)":
                worst_at_4096 = max(worst_at_4096, median)
            print(f"{n_clusters:>6}  {label:<22} {median:>10.3f} {p95:>8.3f}")
    verdict = "meets" if worst_at_4096 < GOAL_MS_AT_4096 else "MISSES"
    print(
        f"w(tau) at K=4096: worst median {worst_at_4096:.3f} ms, {verdict} the "
        f"{GOAL_MS_AT_4096:g} ms goal"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
