"""Training the student: a linear softmax regression in numpy, or the torch network.

The default student is linear (``hidden=0``): logits ``z = X W + S V + b`` of the tf-idf
hashed n-grams ``X`` (sparse, N x n_buckets) and the static vectors ``S`` (N x 384), trained
on soft targets ``T`` by mini-batch Adam on the cross-entropy ``-sum_k T_k log softmax(z)_k``.
Its gradient is explicit (``G = (softmax(z) - T) / B``; ``dW = X_b^T G``), and only the
rows of W whose buckets occur in the batch are touched (found with a mask, renumbered, and
updated by a lazy Adam as ``torch.optim.SparseAdam`` does), so a step costs two sparse-dense
products over the batch's non-zeros plus O(touched buckets x K): no autograd, no
sparse-gradient coalescing (what made the earlier ``EmbeddingBag`` + ``SparseAdam`` loop
cost minutes). :func:`train_network` keeps the torch path for a hidden layer.

Both stop early on the validation agreement with the teacher and keep the best epoch (for
the linear student: of the parameters averaged over epochs, see :func:`_average_into`).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse
from scipy.special import log_softmax, softmax

from gem_app.scale.student_net import StudentNet, batch_inputs

__all__ = [
    "linear_logits",
    "linear_net",
    "network_proba",
    "soft_targets",
    "train_linear",
    "train_network",
]


# ---------------------------------------------------------------------------- maths
def soft_targets(q: np.ndarray, temperature: float, chunk_rows: int = 4096) -> np.ndarray:
    """Training targets ``softmax(log q / temperature)`` per row, shape (N, K), float32.

    Computed in float64 by chunks of rows (the temporaries stay bounded; only the float32
    result grows with N).
    """
    out = np.empty(q.shape, dtype=np.float32)
    for start in range(0, len(q), chunk_rows):
        log_q = np.log(np.maximum(q[start : start + chunk_rows], 1e-300))
        out[start : start + chunk_rows] = softmax(log_q / temperature, axis=1)
    return out


def _adam_step(param, grad, m, v, step: int, lr: float, b1=0.9, b2=0.999, eps=1e-8) -> None:
    """One Adam update of ``param`` in place (Kingma & Ba, bias-corrected; as torch.optim.Adam).

    ``m`` and ``v`` are the first and second moment estimates (updated in place);
    ``step`` counts from 1.
    """
    m *= b1
    m += (1 - b1) * grad
    v *= b2
    v += (1 - b2) * grad * grad
    denom = np.sqrt(v / (1 - b2**step))
    denom += eps
    param -= (lr / (1 - b1**step)) * m / denom


def linear_logits(params, weights, static, rows=None, chunk_rows=4096) -> np.ndarray:
    """Logits ``X W + S V + b`` of some rows, shape (len(rows), K), float32.

    Parameters
    ----------
    params : list [W (n_buckets, K), V (static_dim, K) or None, b (K,)]
    weights : csr_matrix (N, n_buckets), or a stand-in whose ``weights[rows]`` is one
        (:class:`~gem_app.scale.feature_store.DiskCSR`)
    static : ndarray (N, static_dim), a stand-in (``DiskRows``), or None
    rows : ndarray of int or None (every row)
    chunk_rows : int
        Rows taken from ``weights`` and ``static`` at a time (bounded temporaries).
    """
    W, V, b = params
    rows = np.arange(weights.shape[0]) if rows is None else np.asarray(rows)
    out = [np.zeros((0, W.shape[1]), dtype=np.result_type(W, b))]
    for start in range(0, len(rows), chunk_rows):
        part = rows[start : start + chunk_rows]
        z = np.asarray(weights[part] @ W) + b
        if V is not None:
            z += static[part] @ V
        out.append(z)
    return np.concatenate(out)


def _batch_columns(X):
    """The n-gram buckets a batch touches, and the batch with its columns renumbered.

    Returns (cols (U,) sorted bucket ids, csr_matrix (B, U)): ``X[:, cols]`` without the
    untouched columns, found in O(nnz + n_buckets) (a mask, no sort); only the touched
    buckets' new numbers are written (no cumulative sum over every bucket per batch).
    """
    touched = np.zeros(X.shape[1], dtype=bool)
    touched[X.indices] = True
    cols = np.flatnonzero(touched)
    local = np.empty(X.shape[1], dtype=X.indices.dtype)  # read at touched buckets only
    local[cols] = np.arange(len(cols), dtype=X.indices.dtype)
    return cols, sparse.csr_matrix(
        (X.data, local[X.indices], X.indptr), shape=(X.shape[0], len(cols))
    )


def _linear_gradients(params, weights, static, targets, rows, alpha=0.0):
    """(loss, touched buckets, [dW of those rows, dV, db]) of the mean cross-entropy over
    ``rows`` plus ``alpha / 2 (||W_touched||^2 + ||V||^2)``.

    Only the buckets present in the batch have a non-zero gradient in W: it is returned
    for those rows only, (U, K). The L2 penalty reaches the rows of W the batch touches
    (a lazy penalty, as the lazy Adam below).
    """
    W, V, b = params
    cols, X = _batch_columns(weights[rows])
    W_cols = W[cols]
    z = np.asarray(X @ W_cols) + b
    S = None if V is None else static[rows]
    if S is not None:
        z += S @ V
    T = targets[rows]
    loss = float(-(T * log_softmax(z, axis=1)).sum(axis=1).mean())
    G = ((softmax(z, axis=1) - T) / len(rows)).astype(np.float32)
    dW = np.asarray(X.T @ G)
    dV = None if S is None else S.T @ G
    if alpha:
        loss += 0.5 * alpha * float(np.sum(W_cols * W_cols) + (0 if V is None else np.sum(V * V)))
        dW += alpha * W_cols
        if dV is not None:
            dV += alpha * V
    return loss, cols, [dW, dV, G.sum(axis=0)]


def _lazy_adam(params, grads, moments, cols, step: int, lr: float) -> None:
    """Adam on every parameter; for W (the first) only on the rows ``cols`` with a gradient.

    As ``torch.optim.SparseAdam``: the moments of rows absent from the batch are left as
    they are (a dense Adam would decay them and move those rows).
    """
    for i, (p, g, mv) in enumerate(zip(params, grads, moments, strict=True)):
        if p is None:
            continue
        if i == 0:
            rows, m, v = p[cols], mv[0][cols], mv[1][cols]
            _adam_step(rows, g, m, v, step, lr)
            p[cols], mv[0][cols], mv[1][cols] = rows, m, v
        else:
            _adam_step(p, g, mv[0], mv[1], step, lr)


def _average_into(average, params, epoch: int, beta: float = 0.5) -> None:
    """Average of the end-of-epoch parameters, in place: the first epoch's, then an
    exponential moving average with weight ``beta`` on the newest (Polyak-style averaging
    damps Adam's epoch-to-epoch jitter; measured on the sample and the planted set)."""
    beta = 1.0 if epoch == 0 else beta
    for a, p in zip(average, params, strict=True):
        if a is not None:
            a *= 1.0 - beta
            a += beta * p


# ---------------------------------------------------------------------------- training
def train_linear(data, train, val, schedule, rng, epochs=None):
    """Mini-batch Adam on the linear student; early stopping on ``val`` when given.

    Parameters
    ----------
    data : (weights csr (N, n_buckets) float32, static (N, d) float32 or None,
            targets (N, K) float32, teacher_top (N,) int); weights and static may be the
            on-disk stand-ins of :mod:`gem_app.scale.feature_store` (read a batch at a time)
    train, val : ndarray of int (val may be None: no early stopping)
    schedule : dict with epochs, batch_size, learning_rate, patience, alpha (L2 penalty)
    rng : numpy Generator (shuffles the training rows each epoch)
    epochs : int, optional
        Overrides ``schedule["epochs"]`` (the refit on every row).

    Returns
    -------
    (params [W, V, b] of the best epoch, history, best epoch, validation probabilities
    (len(val), K) of those params, or None without ``val``)
    """
    weights, static, targets, teacher_top = data
    K = targets.shape[1]
    params = [
        np.zeros((weights.shape[1], K), dtype=np.float32),
        None if static is None else np.zeros((static.shape[1], K), dtype=np.float32),
        np.zeros(K, dtype=np.float32),
    ]
    moments = [None if p is None else (np.zeros_like(p), np.zeros_like(p)) for p in params]
    average = [None if p is None else p.copy() for p in params]
    train = np.array(train)
    best, best_epoch, best_params, best_logits, stale, history, step = -1.0, 0, None, None, 0, [], 0
    batch = schedule["batch_size"]
    for epoch in range(epochs or schedule["epochs"]):
        total = 0.0
        for start in range(0, len(train), batch):
            rows = np.sort(train[start : start + batch])
            loss, cols, grads = _linear_gradients(
                params, weights, static, targets, rows, schedule["alpha"]
            )
            step += 1
            _lazy_adam(params, grads, moments, cols, step, schedule["learning_rate"])
            total += loss * len(rows)
        rng.shuffle(train)
        _average_into(average, params, epoch)
        if val is None:
            continue
        logits = linear_logits(average, weights, static, val)
        score = float(np.mean(logits.argmax(1) == teacher_top[val]))
        history.append(
            {"epoch": epoch + 1, "loss": total / len(train), "validation_agreement": score}
        )
        if score > best:
            best, best_epoch, stale = score, epoch + 1, 0
            best_params = [None if p is None else p.copy() for p in average]
            best_logits = logits
        else:
            stale += 1
            if stale >= schedule["patience"]:
                break
    p_val = None if best_logits is None else softmax(best_logits, axis=1)
    return (best_params or average), history, best_epoch, p_val


def linear_net(params) -> StudentNet:
    """The :class:`StudentNet` (``hidden=0``) computing the same logits as ``params``."""
    W, V, b = params
    net = StudentNet(W.shape[0], 0, W.shape[1], 0 if V is None else V.shape[0])
    with torch.no_grad():
        net.ngrams.weight.copy_(torch.from_numpy(W))
        if V is None:
            net.bias.copy_(torch.from_numpy(b))
        else:
            net.static.weight.copy_(torch.from_numpy(np.ascontiguousarray(V.T)))
            net.static.bias.copy_(torch.from_numpy(b))
    return net.eval()


def train_network(data, shape, seed, train, val, schedule, rng, epochs=None):
    """Adam on the torch :class:`StudentNet` with a hidden layer; early stopping on ``val``.

    Parameters
    ----------
    data : (weights csr, static (N, d) or None, targets torch (N, K), teacher_top, device);
        weights and static as in :func:`train_linear`
    shape : (n_buckets, hidden, K, static_dim)
    seed : int (the initial weights)

    Returns
    -------
    (network with the best validation weights, history, best epoch, its validation
    probabilities (len(val), K) float32, or None without ``val``)
    """
    weights, static, targets, teacher_top, device = data
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = StudentNet(*shape)
        torch.nn.init.normal_(net.ngrams.weight, std=0.05)
    net = net.to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=schedule["learning_rate"], foreach=True)
    train = np.array(train)
    best, best_epoch, best_state, best_proba, stale, history = -1.0, 0, None, None, 0, []
    for epoch in range(epochs or schedule["epochs"]):
        net.train()
        total = 0.0
        for start in range(0, len(train), schedule["batch_size"]):
            rows = np.sort(train[start : start + schedule["batch_size"]])
            logits = net(*batch_inputs(weights, static, rows, device))
            loss = -(targets[rows].to(device) * torch.log_softmax(logits, 1)).sum(1).mean()
            optimizer.zero_grad(set_to_none=False)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(rows)
        rng.shuffle(train)
        if val is None:
            continue
        p_val = network_proba(net, weights, static, val, device)
        score = float(np.mean(p_val.argmax(1) == teacher_top[val]))
        history.append(
            {"epoch": epoch + 1, "loss": total / len(train), "validation_agreement": score}
        )
        if score > best:
            best, best_epoch, stale = score, epoch + 1, 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            best_proba = p_val
        else:
            stale += 1
            if stale >= schedule["patience"]:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    return net.eval(), history, best_epoch, best_proba


def network_proba(net, weights, static, rows, device) -> np.ndarray:
    """Softmax outputs of ``net`` for some rows, shape (len(rows), K), float32 numpy."""
    K = net.head.out_features if net.head else net.ngrams.embedding_dim
    out = [np.zeros((0, K), dtype=np.float32)]
    with torch.no_grad():
        for start in range(0, len(rows), 4096):
            part = rows[start : start + 4096]
            logits = net(*batch_inputs(weights, static, part, device))
            out.append(torch.softmax(logits, 1).cpu().numpy())
    return np.concatenate(out)
