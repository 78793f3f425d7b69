"""Distilling a fit run's GEM teacher into a text-only :class:`~gem_app.scale.student.Student`.

:func:`distill_run` labels the run's documents (or another corpus) with the teacher, trains
the student on a share of them and measures it on the rest: agreement, mean KL, speed of
student and of encoder + teacher, and the cascade curve over the student's routing signal
(``Student.routing_``, the one its threshold is on; ``docs/scale.md``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from gem_app.core.gem import GEM
from gem_app.io.corpus import load_corpus
from gem_app.io.embeddings import corpus_embeddings
from gem_app.io.encoder import embed_texts
from gem_app.scale.cascade import agreement, cascade_curve, confidence, mean_kl
from gem_app.scale.student import Student
from gem_app.storage.runs import load_run

__all__ = ["distill_run", "measure_rate", "timed_call"]


def timed_call(function, items):
    """``(function(items), items per second of that call)``."""
    start = time.perf_counter()
    result = function(items)
    seconds = time.perf_counter() - start
    return result, (len(items) / seconds if seconds > 0 else float("inf"))


def measure_rate(function, items, repeat: int = 1) -> float:
    """Items per second of ``function(items)`` (best of ``repeat`` timings)."""
    return max(timed_call(function, items)[1] for _ in range(repeat))


def distill_run(
    run_dir,
    out_dir,
    *,
    data=None,
    embeddings=None,
    text_col="text",
    id_col="id",
    holdout=0.2,
    encoder_sample=128,
    random_state=0,
    **student_params,
) -> dict:
    """Train a student on a fit run's teacher and write it to ``out_dir``.

    The teacher (the run's GEM) labels the run's documents, or those of ``data`` (with
    ``embeddings``, else the offline encoder embeds them). A random ``holdout`` share is
    kept out of training and gives the reported agreement, mean KL and cascade curve (over
    the confidence under ``student.routing_``, the signal of its threshold);
    ``encoder_sample`` texts are embedded with the real encoder to time encoder + teacher
    (0 skips it; the curve then has no docs_per_s).

    Returns
    -------
    dict of metrics (also stored in ``student.json``); ``routing`` names the signal that
    ``threshold`` and the curve's thresholds are on
    """
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be in (0, 1), got {holdout!r}")
    if data is None:
        run = load_run(run_dir)
        model, texts, X = run.model, run.frame["text"].tolist(), run.embeddings
    else:
        model = GEM.load(run_dir)
        corpus = load_corpus(data, text_col=text_col, id_col=id_col)
        frame, X, _ = corpus_embeddings(corpus, embeddings)
        texts = frame["text"].tolist()
    q = model.predict_proba(np.asarray(X, dtype=np.float64))
    rng = np.random.default_rng(random_state)
    order = rng.permutation(len(texts))
    n_test = max(1, int(round(holdout * len(texts))))
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    student = Student(random_state=random_state, **student_params)
    started = time.perf_counter()
    student.fit([texts[i] for i in train], q[train])
    train_seconds = time.perf_counter() - started
    test_texts = [texts[i] for i in test]
    p, student_rate = timed_call(student.predict_proba, test_texts)  # featurised once
    teacher_rate = None
    if encoder_sample:
        sample = test_texts[:encoder_sample]
        sample_X = np.asarray(X[test[: len(sample)]], dtype=np.float32)
        encode_rate = measure_rate(lambda t: embed_texts(t), sample)
        gem_rate = measure_rate(model.predict_proba, sample_X)
        teacher_rate = 1.0 / (1.0 / encode_rate + 1.0 / gem_rate)
    agrees = p.argmax(1) == q[test].argmax(1)
    curve = cascade_curve(
        confidence(p, student.routing_),
        agrees,
        student_rate=student_rate,
        teacher_rate=teacher_rate,
    )
    at_default = min(curve, key=lambda c: abs(c["threshold"] - student.threshold_))
    metrics = {
        "n_train": int(len(train)),
        "n_heldout": int(len(test)),
        "n_clusters": int(q.shape[1]),
        "train_seconds": train_seconds,
        "labels_per_s": len(train) / train_seconds if train_seconds > 0 else None,
        "heldout_agreement": agreement(p, q[test]),
        "heldout_mean_kl": mean_kl(q[test], p),
        "student_docs_per_s": student_rate,
        "teacher_docs_per_s": teacher_rate,
        "encoder_sample": int(encoder_sample),
        "threshold": student.threshold_,
        "routing": student.routing_,
        "cascade_agreement": at_default["agreement"],
        "cascade_routed_fraction": at_default["routed_fraction"],
        "cascade_docs_per_s": at_default["docs_per_s"],
        "heldout_cascade_curve": curve,
    }
    student.save(out_dir, metrics=metrics, metadata={"teacher": str(Path(run_dir).resolve())})
    return metrics
