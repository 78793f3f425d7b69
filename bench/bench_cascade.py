"""The cascade's speed-up over encoder + teacher at several thresholds, routing signals and
numbers of teacher labels, measured side by side in one run.

Goal (issue 13): >= 5x faster than encoder + teacher at >= 97% agreement with the teacher.
Usage::

    python bench/bench_cascade.py                                   # the bundled sample
    python bench/bench_cascade.py --data /tmp/work/debian20k/debian_packages.parquet \\
        --embeddings /tmp/work/debian20k/embeddings.npy --heldout 4000 --labels 4000 8000 16000

Steps: fit the teacher (GEM K = 16 on the corpus's MiniLM embeddings); keep ``--heldout``
documents out; train a student on the first ``--labels`` documents of the rest (timed:
the distill time and teacher labels per second); on the held-out documents time the
student (featurise + score), the real encoder (``--encoder-sample`` texts with the offline
MiniLM, model loaded, no cache) and GEM's ``predict_proba``; then, for each routing signal
(max probability, margin, normalised entropy) print the curve (routed share, agreement,
speed-up = rate / encoder+teacher rate, with rate = 1 / (1/student + routed/teacher)).
Thresholds are *calibrated*: chosen on one half of the held-out rows (the lowest reaching
``--target``) and reported on the other half; the *oracle* row is the best the curve
allows on the evaluation half itself. Finally the cascade is *run* on the encoder sample
at the calibrated threshold of the student's own routing signal (``Student.routing_``, the
one ``gem assign`` routes on; student on all, encoder + GEM on the routed)
and its wall time compared with encoder + GEM on all of them, timed right before it (a
small sample on a shared machine: noisier than the rate-based speed-ups above).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from gem_app.core.gem import GEM
from gem_app.io.encoder import embed_texts
from gem_app.scale.cascade import (
    SIGNALS,
    agreement,
    cascade_curve,
    cascade_labels,
    choose_threshold,
    confidence,
)
from gem_app.scale.distill import timed_call
from gem_app.scale.student import Student

REPO = Path(__file__).resolve().parents[1]
THRESHOLDS = np.round(np.linspace(0.0, 1.0, 201), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO / "sample_data" / "debian_packages.parquet"))
    parser.add_argument("--embeddings", default=str(REPO / "sample_data" / "embeddings.npy"))
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--heldout", type=int, default=1000)
    parser.add_argument("--labels", type=int, nargs="+", default=[4000])
    parser.add_argument("--target", type=float, default=0.97)
    parser.add_argument("--encoder-sample", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the numbers to this file")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} (2 cores shared with other jobs)")

    frame = pd.read_parquet(args.data)
    X = np.load(args.embeddings).astype(np.float64)
    texts = frame["text"].tolist()
    teacher = GEM(args.k, random_state=args.seed).fit(X, sample_weight=frame["tokens"].to_numpy())
    q = teacher.predict_proba(X)
    order = np.random.default_rng(args.seed).permutation(len(texts))
    test, pool = np.sort(order[: args.heldout]), order[args.heldout :]
    calib, evaluate = test[::2], test[1::2]
    test_texts = [texts[i] for i in test]

    sample = [texts[i] for i in evaluate[: args.encoder_sample]]
    embed_texts(sample[:2])  # load the model outside the timing
    started = time.perf_counter()
    sample_X = embed_texts(sample)
    encode_s = time.perf_counter() - started
    gem_s = _seconds(lambda: teacher.predict_proba(np.asarray(sample_X, dtype=np.float32)))
    teacher_rate = len(sample) / (encode_s + gem_s)
    print(
        f"encoder + teacher: {len(sample)} texts, encoder {len(sample) / encode_s:.1f} docs/s, "
        f"GEM {len(sample) / gem_s:,.0f} docs/s -> {teacher_rate:.1f} docs/s"
    )
    results = {"teacher_docs_per_s": teacher_rate, "n_docs": len(texts), "runs": []}
    position = {row: j for j, row in enumerate(test)}
    for n_labels in args.labels:
        train = np.sort(pool[:n_labels])
        started = time.perf_counter()
        student = Student(random_state=args.seed).fit([texts[i] for i in train], q[train])
        fit_s = time.perf_counter() - started
        p, student_rate = timed_call(student.predict_proba, test_texts)
        run = {
            "labels": int(len(train)),
            "distill_s": fit_s,
            "labels_per_s": len(train) / fit_s,
            "heldout_agreement": agreement(p, q[test]),
            "student_docs_per_s": student_rate,
            "signals": {},
        }
        print(
            f"\n{len(train)} teacher labels: student trained in {fit_s:.1f} s "
            f"({len(train) / fit_s:,.0f} labels/s), held-out agreement "
            f"{run['heldout_agreement']:.3f}, student {student_rate:,.0f} docs/s "
            f"({student_rate / teacher_rate:,.0f}x encoder + teacher)"
        )
        rows_c = np.array([position[i] for i in calib])
        rows_e = np.array([position[i] for i in evaluate])
        agrees = p.argmax(1) == q[test].argmax(1)
        for signal in SIGNALS:
            c = confidence(p, signal)
            rates = {"student_rate": student_rate, "teacher_rate": teacher_rate}
            curve_c = cascade_curve(c[rows_c], agrees[rows_c], THRESHOLDS, **rates)
            curve_e = cascade_curve(c[rows_e], agrees[rows_e], THRESHOLDS, **rates)
            # calibrated as a student chooses its threshold_; the oracle chooses on curve_e
            at = _point(curve_e, choose_threshold(curve_c, args.target))
            oracle = _point(curve_e, choose_threshold(curve_e, args.target))
            run["signals"][signal] = {"calibrated": at, "oracle": oracle, "curve": curve_e}
            print(
                f"  {signal:>7}: calibrated threshold {at['threshold']:.3f} -> agreement "
                f"{at['agreement']:.3f}, {at['routed_fraction']:.1%} routed, speed-up "
                f"{at['docs_per_s'] / teacher_rate:.2f}x | oracle {oracle['routed_fraction']:.1%} "
                f"routed, {oracle['docs_per_s'] / teacher_rate:.2f}x"
            )
        own = student.routing_  # the signal gem assign routes this student on
        print(f"  curve ({own}, evaluation half), goal >= {args.target} at >= 5x:")
        print(f"  {'threshold':>9} {'routed':>7} {'agreement':>9} {'speed-up':>8}")
        for x in run["signals"][own]["curve"][::20]:
            print(
                f"  {x['threshold']:>9.2f} {x['routed_fraction']:>7.1%} {x['agreement']:>9.3f} "
                f"{x['docs_per_s'] / teacher_rate:>7.2f}x"
            )
        run["measured"] = _run_cascade(
            student, teacher, sample, sample_X, run["signals"][own]["calibrated"]["threshold"]
        )
        measured = run["measured"]
        print(
            f"  run on the {len(sample)} encoder-sample texts at {measured['threshold']:.3f}: "
            f"{measured['routed']} routed, {measured['seconds']:.2f} s vs encoder + teacher on "
            f"all {measured['baseline_seconds']:.2f} s (just before) = "
            f"{measured['baseline_seconds'] / measured['seconds']:.2f}x; "
            f"routed rows equal the teacher's: {measured['routed_exact']}"
        )
        results["runs"].append(run)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def _point(curve, threshold) -> dict:
    """The curve's point at ``threshold``."""
    return next(x for x in curve if x["threshold"] == threshold)


def _seconds(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def _run_cascade(student, teacher, texts, X_all, threshold) -> dict:
    """Time the cascade itself on ``texts``: student on all, encoder + GEM on the routed."""

    def ask_teacher(rows):
        return teacher.predict_proba(np.asarray(embed_texts([texts[i] for i in rows]), np.float32))

    started = time.perf_counter()  # encoder + teacher on all, right before (same load)
    teacher.predict_proba(np.asarray(embed_texts(texts), dtype=np.float32))
    baseline = time.perf_counter() - started
    started = time.perf_counter()
    proba, routed = cascade_labels(
        student.predict_proba(texts), ask_teacher, threshold, student.routing_
    )
    seconds = time.perf_counter() - started
    direct = teacher.predict_proba(np.asarray(X_all, dtype=np.float32))[routed]
    return {
        "threshold": threshold,
        "signal": student.routing_,
        "routed": int(routed.sum()),
        "seconds": seconds,
        "baseline_seconds": baseline,
        "routed_exact": bool(np.allclose(proba[routed], direct, atol=1e-5)),
    }


if __name__ == "__main__":
    main()
