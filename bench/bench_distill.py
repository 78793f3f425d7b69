"""``gem distill`` time, held-out agreement and training throughput (teacher labels per second),
and how time and memory grow with the number of labels.

Goal (issue 13): ``gem distill`` on 12,000 teacher labels in <= 2 minutes on 2 cores with
held-out agreement >= 0.80. Usage::

    python bench/bench_distill.py --data /tmp/work/debian20k/debian_packages.parquet \\
        --embeddings /tmp/work/debian20k/embeddings.npy --docs 15000 --grow 12000 48000 96000

Steps: fit a run (``gem fit``, K = 16) on the first ``--docs`` documents; time ``gem
distill RUN --out STUDENT`` end to end in this process (teacher labels, student training on
``(1 - holdout)`` of the documents, held-out agreement, the encoder timing sample, the
files); then, for each ``--grow`` count, train a student in a fresh process on that many
labels (the corpus's texts repeated, each copy with its own id word, labels from a teacher
fitted on the whole corpus here) and report its training time, labels/s and the growth of
its peak resident memory over the process's start (imports + texts).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

from gem_app.cli import main as gem
from gem_app.core.gem import GEM
from gem_app.scale.hashing import hash_features
from gem_app.scale.student import Student
from gem_app.scale.student_files import STUDENT_JSON

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO / "sample_data" / "debian_packages.parquet"))
    parser.add_argument("--embeddings", default=str(REPO / "sample_data" / "embeddings.npy"))
    parser.add_argument("--docs", type=int, default=None, help="first documents used")
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--encoder-sample", type=int, default=128)
    parser.add_argument("--grow", type=int, nargs="*", default=[], help="label counts")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--teacher-q", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-distill", action="store_true", help="only the --grow runs")
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(grow_child(args)))
        return
    print(f"load average {os.getloadavg()[0]:.1f} (2 cores shared with other jobs)")
    if not args.no_distill:
        bench_gem_distill(args)
    grow(args)


def bench_gem_distill(args) -> None:
    """Time ``gem distill`` end to end on a run fitted on the first ``--docs`` documents."""
    frame = pd.read_parquet(args.data)
    X = np.load(args.embeddings)
    if args.docs:
        frame, X = frame.iloc[: args.docs], X[: args.docs]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        frame.to_parquet(tmp / "corpus.parquet")
        np.save(tmp / "emb.npy", X)
        corpus = [str(tmp / "corpus.parquet"), "--embeddings", str(tmp / "emb.npy")]
        fit = ["fit", *corpus, "--k", str(args.k), "--tokens-col", "tokens", "--out"]
        assert gem([*fit, str(tmp / "run")]) == 0
        started = time.perf_counter()
        code = gem(
            [
                "distill",
                str(tmp / "run"),
                "--out",
                str(tmp / "student"),
                "--encoder-sample",
                str(args.encoder_sample),
            ]
        )
        seconds = time.perf_counter() - started
        assert code == 0
        metrics = json.loads((tmp / "student" / STUDENT_JSON).read_text())["metrics"]
    n_train = metrics["n_train"]
    print(
        f"\ngem distill: {len(frame)} documents, {n_train} teacher labels, "
        f"{metrics['n_heldout']} held out: {seconds:.1f} s end to end "
        f"(goal <= 120 s), held-out agreement {metrics['heldout_agreement']:.3f} (goal >= 0.80), "
        f"{n_train / seconds:,.0f} labels/s end to end"
    )


def grow(args) -> None:
    """Train students on ``--grow`` label counts, each in a fresh process."""
    if not args.grow:
        return
    full = pd.read_parquet(args.data)
    X = np.load(args.embeddings).astype(np.float64)
    teacher = GEM(args.k, random_state=0).fit(X, sample_weight=full["tokens"].to_numpy())
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "q.npy", teacher.predict_proba(X))
        for n in args.grow:
            flags = ["--data", args.data, "--teacher-q", str(Path(tmp) / "q.npy")]
            out = subprocess.run(
                [sys.executable, __file__, *flags, "--child", str(n)],
                capture_output=True,
                text=True,
                check=True,
            )
            _print_growth(json.loads(out.stdout.strip().splitlines()[-1]))


def _print_growth(r: dict) -> None:
    print(
        f"{r['labels']:>8} labels: fit {r['fit_s']:.1f} s (hashing about {r['features_s']:.1f} s), "
        f"{r['labels'] / r['fit_s']:,.0f} labels/s, {r['epochs']} epochs; peak of the fit's "
        f"numpy/scipy buffers {r['traced_peak_mb']:,.0f} MB = "
        f"{r['traced_peak_mb'] * 1024 / r['labels']:.1f} KB per label (+ the static vectors in "
        f"torch, 1.5 KB per label); process peak RSS {r['peak_rss_mb']:,.0f} MB"
    )


def grow_child(args) -> dict:
    """Train one student on ``args.child`` labels in this (fresh) process."""
    q = np.load(args.teacher_q)
    base = pd.read_parquet(args.data)["text"].tolist()
    rows = np.arange(args.child) % len(base)
    texts = [f"{base[r]} copy{i // len(base)}" for i, r in enumerate(rows)]
    started = time.perf_counter()
    hash_features(texts[:4096])  # the hashing share of the fit, from one chunk
    features_s = (time.perf_counter() - started) * len(texts) / min(len(texts), 4096)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    student = Student(random_state=0)
    tracemalloc.start()  # numpy and scipy report their buffers to tracemalloc
    started = time.perf_counter()
    student.fit(texts, q[rows])
    fit_s = time.perf_counter() - started
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return {
        "labels": int(args.child),
        "features_s": features_s,
        "fit_s": fit_s,
        "epochs": len(student.history_),
        "rss_before_mb": rss_before,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "traced_peak_mb": traced_peak,
    }


if __name__ == "__main__":
    main()
