"""Time the w(tau) recompute of gem_app.mixing.weights, and the export + materialization of a mixture.

Goal (issue 4): w(tau) under 5 ms at K = 4096 on the project's CPU. Usage::

    python bench/bench_mixing.py [--repeats 200] [--seed 0] [--documents 1000000] [--domains 64]

Prints one line per case: median and 95th-percentile time of ``mixture_weights`` (no caps,
with GIS tilt and multipliers, with epoch caps) and of ``mixing_report`` (caps). Then it
builds a mixture document over a synthetic 1,000,000-document assignment, writes it in every
export format, and materializes it (Parquet and JSONL shards, ids and full texts), printing
documents per second for each. ``--documents 0`` skips the export part.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from gem_app.export.document import mixture_document
from gem_app.export.domains import Domain, DomainSet, domain_slug, mix_domains
from gem_app.export.formats import FORMATS, write_mixture
from gem_app.export.shards import write_shards
from gem_app.mixing.weights import mixing_report, mixture_weights

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


def _synthetic_assignment(n_documents: int, n_domains: int, rng: np.random.Generator):
    """Domains, per-document domain, ids, tokens and a pool-backed text column."""
    shares = rng.dirichlet(np.full(n_domains, 2.0))
    document_domain = rng.choice(n_domains, size=n_documents, p=shares).astype(np.int64)
    tokens = rng.integers(20, 2000, size=n_documents).astype(np.int64)
    per_domain_docs = np.bincount(document_domain, minlength=n_domains)
    per_domain_tokens = np.bincount(document_domain, weights=tokens, minlength=n_domains)
    domains = [
        Domain(
            id=str(k),
            name=domain_slug(str(k), f"topic {k}"),
            label=f"topic {k}",
            terms=[f"t{k}"],
            parent=None,
            level=1,
            documents=int(per_domain_docs[k]),
            tokens=int(per_domain_tokens[k]),
            gis=float(rng.gamma(2.0)),
        )
        for k in range(n_domains)
    ]
    pool = pa.array([" ".join(f"w{(i * 7 + j) % 997}" for j in range(60)) for i in range(1000)])
    text_index = rng.integers(0, len(pool), size=n_documents)
    return DomainSet(domains, document_domain, "clusters"), tokens, pool, text_index


def _batches(domains: DomainSet, tokens, pool, text_index, content: str, batch_size: int = 65536):
    n = tokens.size
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        columns = {
            "id": pa.array(np.arange(start, stop, dtype=np.int64)),
            "tokens": pa.array(tokens[start:stop]),
            "domain": pa.array(domains.document_domain[start:stop]),
        }
        if content == "text":
            columns["text"] = pool.take(pa.array(text_index[start:stop]))
        yield pa.table(columns)


def bench_export(n_documents: int, n_domains: int, seed: int) -> None:
    """Export a synthetic n-document mixture in every format and materialize it."""
    rng = np.random.default_rng(seed)
    domains, tokens, pool, text_index = _synthetic_assignment(n_documents, n_domains, rng)
    start = time.perf_counter()
    report = mix_domains(domains, temperature=2.0, gis_strength=0.5, max_epochs=4.0)
    doc = mixture_document(
        domains,
        report,
        corpus={
            "name": "synthetic",
            "source": None,
            "documents": n_documents,
            "tokens": int(tokens.sum()),
            "tokens_estimated": False,
            "encoder": None,
            "anisotropy": None,
        },
        model={
            "n_clusters": n_domains,
            "balance": 1.0,
            "temperature": 1.0,
            "seed": seed,
            "objective": None,
            "concentration": "tied",
        },
        assignments={"path": None, "sha256": None, "documents": n_documents},
    )
    build_s = time.perf_counter() - start
    print(f"\nexport of a {n_documents:,}-document assignment over {n_domains} domains")
    print(f"  mixture document (weights + validation): {build_s * 1e3:.1f} ms")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        for fmt in FORMATS:
            write_mixture(doc, Path(tmp) / f"mixture.{fmt}", fmt, path_template="/data/{domain}")
        print(f"  all {len(FORMATS)} formats written: {(time.perf_counter() - start) * 1e3:.1f} ms")
        for fmt, content in (
            ("parquet", "ids"),
            ("jsonl", "ids"),
            ("parquet", "text"),
            ("jsonl", "text"),
        ):
            out = Path(tmp) / f"shards-{fmt}-{content}"
            start = time.perf_counter()
            manifest = write_shards(
                doc,
                _batches(domains, tokens, pool, text_index, content),
                out,
                format=fmt,
                content=content,
            )
            seconds = time.perf_counter() - start
            assert manifest["documents"] == n_documents and manifest["tokens"] == int(tokens.sum())
            size = sum(s["bytes"] for s in manifest["shards"]) / 2**20
            print(
                f"  materialize {fmt:<7} {content:<4}: {seconds:6.2f} s, "
                f"{n_documents / seconds:12,.0f} documents/s, {size:8.1f} MiB"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--documents", type=int, default=1_000_000, help="export benchmark size (0: skip)"
    )
    parser.add_argument("--domains", type=int, default=64)
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
    if args.documents > 0:
        bench_export(args.documents, args.domains, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
