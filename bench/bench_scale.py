"""Documents per second: student vs. encoder + teacher, the cascade, and the assign engines.

Goals (issue 6), on the project's CPU: the student alone >= 50x faster than encoder +
teacher; the cascade >= 5x faster at >= 97% agreement. Usage::

    python bench/bench_scale.py [--encoder-sample 256] [--shards 4] [--copies 2]
                                [--ray] [--json results.json]

Steps: fit the teacher (GEM K = 16 on the sample's MiniLM embeddings); train the student on
80% of the sample; on the held-out 20% report agreement, mean KL and the cascade curve;
time the student (all held-out texts), the real encoder + teacher (``--encoder-sample``
texts embedded with the offline MiniLM, no cache), and the cascade rate at each threshold;
then write ``--shards`` JSONL shards (the sample's texts repeated ``--copies`` times) and
time ``gem_app.scale.assign`` with the local engine (1 and 2 workers) and, with ``--ray``, the Ray
engine (1 and 2 actors, a local Ray cluster; its start-up time is included).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from gem_app.core.gem import GEM
from gem_app.io.encoder import embed_texts
from gem_app.scale.assign import assign
from gem_app.scale.cascade import agreement, cascade_curve, confidence, mean_kl
from gem_app.scale.distill import measure_rate
from gem_app.scale.student import Student

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder-sample", type=int, default=256)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--ray", action="store_true", help="also time the Ray engine")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the numbers to this file")
    args = parser.parse_args()
    results: dict = {}

    frame = pd.read_parquet(REPO / "sample_data" / "debian_packages.parquet")
    X = np.load(REPO / "sample_data" / "embeddings.npy").astype(np.float64)
    texts = frame["text"].tolist()
    started = time.perf_counter()
    teacher = GEM(16, random_state=args.seed).fit(X, sample_weight=frame["tokens"].to_numpy())
    q = teacher.predict_proba(X)
    print(f"teacher GEM K = 16 fitted in {time.perf_counter() - started:.1f} s")

    order = np.random.default_rng(args.seed).permutation(len(texts))
    test, train = np.sort(order[:1000]), np.sort(order[1000:])
    started = time.perf_counter()
    student = Student(random_state=args.seed).fit([texts[i] for i in train], q[train])
    print(
        f"student trained on {len(train)} teacher labels in {time.perf_counter() - started:.1f} s "
        f"(threshold {student.threshold_:.2f})"
    )
    test_texts = [texts[i] for i in test]
    p = student.predict_proba(test_texts)
    student_rate = measure_rate(student.predict_proba, test_texts, repeat=3)

    sample = test_texts[: args.encoder_sample]
    encode_rate = measure_rate(lambda t: embed_texts(t), sample)
    gem_rate = measure_rate(
        teacher.predict_proba, X[test[: len(sample)]].astype(np.float32), repeat=3
    )
    teacher_rate = 1.0 / (1.0 / encode_rate + 1.0 / gem_rate)
    agrees = p.argmax(1) == q[test].argmax(1)
    curve = cascade_curve(
        confidence(p, student.routing_),  # the signal student.threshold_ is on
        agrees,
        student_rate=student_rate,
        teacher_rate=teacher_rate,
    )
    default = min(curve, key=lambda c: abs(c["threshold"] - student.threshold_))
    results.update(
        heldout_agreement=agreement(p, q[test]),
        heldout_mean_kl=mean_kl(q[test], p),
        student_docs_per_s=student_rate,
        encoder_docs_per_s=encode_rate,
        gem_docs_per_s=gem_rate,
        teacher_docs_per_s=teacher_rate,
        threshold=student.threshold_,
        cascade=default,
        curve=curve,
    )
    print(
        f"held-out agreement {results['heldout_agreement']:.3f}, mean KL "
        f"{results['heldout_mean_kl']:.3f} nats"
    )
    print(
        f"student {student_rate:,.0f} docs/s | encoder {encode_rate:,.1f} docs/s + GEM "
        f"{gem_rate:,.0f} docs/s = teacher {teacher_rate:,.1f} docs/s | student speed-up "
        f"{student_rate / teacher_rate:,.0f}x (goal 50x)"
    )
    print(
        f"cascade at {default['threshold']:.2f}: agreement {default['agreement']:.3f}, "
        f"{default['routed_fraction']:.1%} routed, {default['docs_per_s']:,.1f} docs/s, "
        f"speed-up {default['docs_per_s'] / teacher_rate:.1f}x (goal 5x at >= 0.97)"
    )
    print(f"{'threshold':>9} {'routed':>7} {'agreement':>9} {'docs/s':>10} {'speed-up':>8}")
    for c in curve[::5]:
        print(
            f"{c['threshold']:>9.2f} {c['routed_fraction']:>7.1%} {c['agreement']:>9.3f} "
            f"{c['docs_per_s']:>10.1f} {c['docs_per_s'] / teacher_rate:>7.1f}x"
        )

    results["engines"] = bench_engines(student, texts, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def bench_engines(student, texts, args) -> dict:
    numbers = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        student.save(tmp / "student")
        (tmp / "in").mkdir()
        rows = texts * args.copies
        per = -(-len(rows) // args.shards)
        for s in range(args.shards):
            with open(tmp / "in" / f"part{s:03d}.jsonl", "w", encoding="utf-8") as fh:
                for i, text in enumerate(rows[s * per : (s + 1) * per]):
                    fh.write(json.dumps({"id": f"{s}-{i}", "text": text}) + "\n")
        runs = [("local", 1), ("local", 2)] + ([("ray", 1), ("ray", 2)] if args.ray else [])
        for engine, workers in runs:
            out = tmp / f"out-{engine}-{workers}"
            started = time.perf_counter()
            result = assign(tmp / "student", tmp / "in", out, engine=engine, workers=workers)
            seconds = time.perf_counter() - started
            rate = result.rows / seconds
            numbers[f"{engine}-{workers}"] = rate
            print(
                f"assign engine={engine} workers={workers}: {result.rows} docs in {seconds:.1f} s "
                f"= {rate:,.0f} docs/s ({rate / workers:,.0f} per worker), "
                f"{len(result.failed)} failed"
            )
    return numbers


if __name__ == "__main__":
    main()
