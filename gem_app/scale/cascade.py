"""Agreement between student and teacher, and the cascade that sends unsure documents to
the teacher: the routing signal, its agreement/throughput curve and the default threshold
chosen on it.

Routing signals (all in [0, 1], higher = surer; a row is routed when below the threshold):
``"max"`` the top probability, ``"margin"`` top minus runner-up, ``"entropy"``
1 - H(p) / log K. bench/bench_cascade.py compares them; a student stores the one its
threshold is calibrated on (``Student.routing_``, ``"margin"`` by default) and ``gem
assign`` routes with it.
"""

from __future__ import annotations

import numpy as np
import torch

SIGNALS = ("max", "margin", "entropy")
#: How reports name each routing signal.
SIGNAL_NAMES = {
    "max": "the top probability",
    "margin": "the margin (top minus runner-up probability)",
    "entropy": "1 - normalised entropy",
}


# ---------------------------------------------------------------------------- routing
def confidence(proba, signal: str = "max") -> np.ndarray:
    """Per-row confidence of probabilities (N, K) under a routing signal, shape (N,).

    ``"max"``: max_k p_k; ``"margin"``: p_(1) - p_(2); ``"entropy"``: 1 - H(p) / log K
    (H in nats). All lie in [0, 1] and are 1 for a one-hot row.
    """
    if signal not in SIGNALS:
        raise ValueError(f"signal must be one of {', '.join(SIGNALS)}, got {signal!r}")
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"proba must have shape (N, K >= 2), got {p.shape}")
    if signal == "max":
        return p.max(axis=1)
    if signal == "margin":
        top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
        return top2[:, 1] - top2[:, 0]
    h = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)
    return 1.0 - h / np.log(p.shape[1])


def cascade_labels(student_proba, teacher, threshold: float, signal: str = "max"):
    """The cascade's answer: rows below ``threshold`` get the teacher's probabilities.

    Parameters
    ----------
    student_proba : ndarray (N, K)
    teacher : callable
        ``teacher(rows) -> (len(rows), K)`` probabilities of the routed rows (it is called
        once, with the routed row numbers in increasing order, and not at all if none).
    threshold : float in [0, 1]
    signal : see :func:`confidence`

    Returns
    -------
    (proba (N, K) float32, routed (N,) bool)
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    routed = confidence(student_proba, signal) < threshold
    out = np.array(student_proba, dtype=np.float32, copy=True)
    rows = np.flatnonzero(routed)
    if len(rows):
        answer = np.asarray(teacher(rows), dtype=np.float32)
        if answer.shape != (len(rows), out.shape[1]):
            raise ValueError(
                f"the teacher returned shape {answer.shape} for {len(rows)} routed rows "
                f"(expected ({len(rows)}, {out.shape[1]}))"
            )
        out[rows] = answer
    return out, routed


# ---------------------------------------------------------------------------- metrics
def agreement(student_proba, teacher_proba) -> float:
    """Share of rows whose most probable cluster is the same for both, in [0, 1]."""
    s, t = np.asarray(student_proba), np.asarray(teacher_proba)
    return float(np.mean(s.argmax(axis=1) == t.argmax(axis=1))) if len(s) else float("nan")


def mean_kl(teacher_proba, student_proba, eps=1e-12) -> float:
    """Mean over rows of KL(q_teacher || p_student) in nats (probabilities floored at eps)."""
    q = np.asarray(teacher_proba, dtype=np.float64)
    p = np.maximum(np.asarray(student_proba, dtype=np.float64), eps)
    terms = np.where(q > 0, q * (np.log(np.maximum(q, eps)) - np.log(p)), 0.0)
    return float(terms.sum(axis=1).mean())


def cascade_curve(confidence, agrees, thresholds=None, *, student_rate=None, teacher_rate=None):
    """Agreement and throughput of the cascade over confidence thresholds.

    A document whose student confidence (under a routing signal, see :func:`confidence`)
    is below the threshold is routed to encoder + teacher, which agrees with itself; the
    others keep the student's answer. With rates (documents/s) of the student and of encoder +
    teacher, the cascade rate is ``1 / (1/student_rate + routed/teacher_rate)`` (the
    student runs on every document).

    Parameters
    ----------
    confidence : ndarray of shape (N,)
    agrees : ndarray of bool, shape (N,)
        Whether the student's top cluster is the teacher's.
    thresholds : ndarray, default 0, 0.01, ..., 1

    Returns
    -------
    list of dict with keys threshold, routed_fraction, agreement, docs_per_s (None
    without rates)
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    agrees = np.asarray(agrees, dtype=bool)
    if thresholds is None:
        thresholds = np.round(np.linspace(0.0, 1.0, 101), 2)
    curve = []
    for t in thresholds:
        routed = confidence < t
        rate = None
        if student_rate and teacher_rate:
            rate = 1.0 / (1.0 / student_rate + routed.mean() / teacher_rate)
        curve.append(
            {
                "threshold": float(t),
                "routed_fraction": float(routed.mean()),
                "agreement": float(np.mean(agrees | routed)),
                "docs_per_s": rate,
            }
        )
    return curve


def choose_threshold(curve, target: float) -> float:
    """The lowest threshold of the curve whose agreement reaches target (else the highest)."""
    for point in sorted(curve, key=lambda p: p["threshold"]):
        if point["agreement"] >= target:
            return point["threshold"]
    return max(p["threshold"] for p in curve)


def choose_batch_size(device, width: int, nnz_per_row: int = 2048) -> int:
    """Texts per scoring batch: 2048 on CPU; on CUDA a quarter of the free memory.

    A row costs about ``nnz_per_row`` (index, weight) pairs (12 bytes each) plus its
    ``width``-wide activations (float32, a few copies); capped to [256, 65536].
    """
    device = torch.device(device)
    if device.type != "cuda":
        return 2048
    free, _ = torch.cuda.mem_get_info(device)
    per_row = 12 * nnz_per_row + 16 * (width + 384)
    return int(min(65536, max(256, free // 4 // per_row)))
