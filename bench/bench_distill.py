"""``gem distill`` time, held-out agreement and training throughput (teacher labels per second),
and how time and memory grow with the number of labels.

Goal (issue 13): ``gem distill`` on 12,000 teacher labels in <= 2 minutes on 2 cores with
held-out agreement >= 0.80. Usage::

    python bench/bench_distill.py --data /tmp/work/debian20k/debian_packages.parquet \\
        --embeddings /tmp/work/debian20k/embeddings.npy --docs 15000 --grow 12000 48000 96000

Steps: fit a run (``gem fit``, K = 16) on the first ``--docs`` documents; time ``gem
distill RUN --out STUDENT`` end to end in this process (teacher labels, student training on
``(1 - holdout)`` of the documents, held-out agreement, the encoder timing sample, the
files); then, for each ``--grow`` count and each ``--store`` (where the fit keeps its
features: ``memory`` or ``disk``, see gem_app/scale/feature_store.py), train a student in a
fresh process on that many labels (the corpus's texts repeated, each copy with its own id
word, labels from a teacher fitted on the whole corpus here) and report its training time,
labels/s, the peak of its numpy/scipy buffers (tracemalloc) and the growth of its peak
resident memory over the process's start (imports + texts + targets). ``--epochs`` caps the
student's epochs (default: its own, 15 with early stopping) to keep big sizes short::

    python bench/bench_distill.py --data /tmp/work/debian20k/debian_packages.parquet \
        --embeddings /tmp/work/debian20k/embeddings.npy --no-distill --grow 48000 96000 \
        --store disk memory --epochs 3
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
    parser.add_argument(
        "--store", nargs="*", default=["disk", "memory"], choices=["disk", "memory"]
    )
    parser.add_argument("--epochs", type=int, default=None, help="the student's epochs")
    parser.add_argument("--scratch-dir", default=None, help="where the disk store writes")
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
            for store in args.store:
                flags = ["--data", args.data, "--teacher-q", str(Path(tmp) / "q.npy")]
                flags += ["--store", store] + _optional(args)
                out = subprocess.run(
                    [sys.executable, __file__, *flags, "--child", str(n)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                _print_growth(json.loads(out.stdout.strip().splitlines()[-1]))


def _optional(args) -> list[str]:
    """The child's --epochs and --scratch-dir flags, when given."""
    flags = [] if args.epochs is None else ["--epochs", str(args.epochs)]
    return flags + ([] if args.scratch_dir is None else ["--scratch-dir", args.scratch_dir])


def _print_growth(r: dict) -> None:
    passes = r["label_passes"]
    where = "on disk" if r["store"] == "disk" else "in memory"
    print(
        f"{r['labels']:>8} labels, {r['store']:>6}: fit {r['fit_s']:.1f} s (hashing about "
        f"{r['features_s']:.1f} s), {r['labels'] / r['fit_s']:,.0f} labels/s, {r['epochs']} "
        f"epochs + refit ({passes:,.0f} labels through the trainer: "
        f"{passes / r['fit_s']:,.0f} labels/s of epoch); peak of the fit's numpy/scipy buffers "
        f"{r['traced_peak_mb']:,.0f} MB = {r['traced_peak_mb'] * 1024 / r['labels']:.2f} KB per "
        f"label; process peak RSS {r['peak_rss_mb']:,.0f} MB = {r['rss_before_mb']:,.0f} MB "
        f"at the fit's start (imports, texts, targets) + {r['peak_rss_mb'] - r['rss_before_mb']:,.0f}"
        f" MB in the fit; features {r['feature_kb_per_label']:.1f} KB per label "
        f"({r['feature_kb_per_label'] * r['labels'] / 2**20:,.2f} GB {where})"
    )


def grow_child(args) -> dict:
    """Train one student on ``args.child`` labels in this (fresh) process."""
    q = np.load(args.teacher_q)
    base = pd.read_parquet(args.data)["text"].tolist()
    rows = np.arange(args.child) % len(base)
    texts = [f"{base[r]} copy{i // len(base)}" for i, r in enumerate(rows)]
    targets = q[rows]
    started = time.perf_counter()
    sample = hash_features(texts[:4096])  # the hashing share of the fit, from one chunk
    features_s = (time.perf_counter() - started) * len(texts) / min(len(texts), 4096)
    # the store's layout: float32 data + int32 indices per non-zero, 384 float32 static
    feature_kb = (sample.nnz / sample.shape[0] * 8 + 384 * 4) / 1024
    del sample
    rss_before = _reset_peak_rss()
    kw = {} if args.epochs is None else {"epochs": args.epochs}
    student = Student(
        random_state=0, feature_store=args.store[0], scratch_dir=args.scratch_dir, **kw
    )
    tracemalloc.start()  # numpy and scipy report their buffers to tracemalloc
    started = time.perf_counter()
    student.fit(texts, targets)
    fit_s = time.perf_counter() - started
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    scores = [h["validation_agreement"] for h in student.history_]
    best_epoch = int(np.argmax(scores)) + 1  # the refit's epochs (the first best one)
    n_val = round(student.validation_fraction * len(texts))
    return {
        "labels": int(args.child),
        "store": args.store[0],
        "features_s": features_s,
        "fit_s": fit_s,
        "epochs": len(student.history_),
        "label_passes": len(scores) * (len(texts) - n_val) + best_epoch * len(texts),
        "rss_before_mb": rss_before,
        "peak_rss_mb": _peak_rss(),
        "traced_peak_mb": traced_peak,
        "feature_kb_per_label": feature_kb,
    }


def _reset_peak_rss() -> float:
    """Reset the process's peak RSS to its current RSS (Linux ``clear_refs``); return it, MB.

    Without a reset, the peak would still be that of the imports and the texts when the
    fit stays below it. Elsewhere: the peak so far (``getrusage``).
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _proc_status_mb("VmRSS")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_rss() -> float:
    """Peak resident memory of this process since the reset, MB."""
    try:
        return _proc_status_mb("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _proc_status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise OSError(f"no {field} in /proc/self/status")


if __name__ == "__main__":
    main()
