"""The exact q-step of GEM: soft assignments q(eta) and the convex dual over eta.

With scores s_ik (:class:`gem_app.core.mm.ScoreMap`), the q-step's maximiser is
``q_ik = softmax_k((s_ik + eta_k) / T)`` where eta minimises the smooth convex dual

    g(eta) = T (1/A) sum_i a_i logsumexp_k((s_ik + eta_k)/T) + lambda logsumexp_k(-eta_k/lambda)

(docs/method.md). Everything here works on score chunks in torch and statistics in
float64 numpy.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy import optimize
from scipy.special import softmax

from gem_app.core.rows import Rows
from gem_app.core.threads import chunk_workers, map_chunks
from gem_app.utils.information import entropy, kl_divergence

__all__ = [
    "FULL_NEWTON_MAX_K",
    "QStats",
    "assignment_stats",
    "duality_gap",
    "newton_step",
    "objective",
    "soft_assignments",
    "solve_dual",
]


@dataclass
class QStats:
    """Weighted statistics of one soft assignment q = softmax((s + eta)/T), all float64.

    masses : (K,) rho_k = sum_i a_i q_ik / A
    second_moments : (K, K) sum_i a_i q_i q_i^T / A, or its diagonal (K,) when K is large
    mean_lse : float, (1/A) sum_i a_i logsumexp_k((s_ik + eta_k)/T)
    """

    masses: np.ndarray
    second_moments: np.ndarray
    mean_lse: float

    def objective(self, eta: np.ndarray, temperature: float, balance: float) -> float:
        return objective(self.masses, self.mean_lse, eta, temperature, balance)

    def dual(self, eta: np.ndarray, temperature: float, balance: float) -> float:
        """g(eta) = T mean_lse + lambda logsumexp(-eta / lambda)."""
        v = -eta / balance
        top = v.max()
        return float(temperature * self.mean_lse + balance * (top + np.log(np.exp(v - top).sum())))


def soft_assignments(s: torch.Tensor, eta_t: torch.Tensor, temperature: float):
    """q = softmax((s + eta)/T) by row and its log-partition (s is not modified).

    Returns
    -------
    q : Tensor of shape (n, K), the dtype of s
    lse : Tensor of shape (n,), float64
        logsumexp_k((s_ik + eta_k)/T), formed as max_k s_ik / T + logsumexp_k((s_ik -
        max_k s_ik + eta_k)/T): the large row maximum is kept exact, so that the rounding
        of float32 scores near |s| ~ 1e3 does not depend on eta (J compared across
        q-steps at one set of parameters is then precise to ~1e-7 / row, not ~1e-5).
    """
    top_s = s.amax(dim=1, keepdim=True)
    z = s - top_s
    z.add_(eta_t)
    if temperature != 1.0:
        z.div_(temperature)
    top = z.amax(dim=1, keepdim=True)
    # Terms below exp(floor) of the row's largest are set to exactly 0: they are far below
    # the dtype's resolution, and as tiny q they would make subnormal numbers in exp and in
    # the q^T x GEMM, which x86 processors compute 10-100x slower.
    floor = -30.0 if z.dtype != torch.float64 else -600.0
    z.sub_(top).clamp_(min=floor - 50.0).exp_()  # clamped: exp stays clear of subnormals
    torch.nn.functional.threshold_(z, math.exp(floor), 0.0)
    total = z.sum(dim=1, keepdim=True)
    z.div_(total)
    f64 = torch.float64
    lse = top_s.to(f64).div_(temperature).add_((top + total.log()).to(f64)).squeeze(1)
    return z, lse


FULL_NEWTON_MAX_K = 256


def assignment_stats(
    scores,
    rows: Rows,
    eta: np.ndarray,
    temperature: float,
    *,
    precise: bool = True,
    full: bool | None = None,
) -> QStats:
    """rho(eta), the second moments and the mean log-partition from score chunks.

    ``scores`` is any iterable of the (n_j, K) chunks in order: cached, or a generator
    that computes (and caches) them, so that the statistics are formed while each chunk
    is still in the processor's cache.

    ``precise``: evaluate q in float64 (the dual solver compares values of g that differ by
    far less than float32 resolution near its optimum); otherwise in the scores' dtype, with
    float64 accumulation (enough for one Newton step). ``full``: form the (K, K) second
    moment (a K x N x K GEMM per pass); default K <= FULL_NEWTON_MAX_K, else its diagonal.
    """
    K = len(eta)
    full = K <= FULL_NEWTON_MAX_K if full is None else full
    device = rows.device
    dtype = torch.float64 if precise else rows.dtype
    eta_t = torch.as_tensor(eta, device=device, dtype=dtype)
    weights = rows.weight if precise else rows.weight_c
    f64 = torch.float64

    def chunk_stats(s, j: int):
        a = weights[j]
        q, lse = soft_assignments(s.to(dtype), eta_t, temperature)
        masses, lse_sum = (a @ q).to(f64), rows.weight[j] @ lse
        if full:  # the Hessian only steers Newton steps: the compute dtype is precise enough
            qc = q.to(rows.dtype)
            return masses, lse_sum, (qc * a.to(rows.dtype)[:, None]).T.matmul(qc).to(f64)
        return masses, lse_sum, (a @ (q * q)).to(f64)

    if isinstance(scores, list | tuple):  # cached chunks: on the worker threads
        with chunk_workers(device):
            parts = map_chunks(lambda j: chunk_stats(scores[j], j), len(scores))
    else:  # a generator that computes (and caches) the chunks: in order
        parts = [chunk_stats(s, j) for j, s in enumerate(scores)]
    if len(parts) != len(weights):
        raise ValueError(f"got {len(parts)} score chunks for {len(weights)} row chunks")
    masses = torch.zeros(K, dtype=f64, device=device)
    squares = torch.zeros((K, K) if full else K, dtype=f64, device=device)
    lse_sum = torch.zeros((), dtype=f64, device=device)
    for m, lse, sq in parts:  # in chunk order
        masses += m
        lse_sum += lse
        squares += sq
    A = rows.total_weight
    return QStats((masses / A).cpu().numpy(), (squares / A).cpu().numpy(), float(lse_sum) / A)


def newton_step(eta: np.ndarray, stats: QStats, temperature: float, balance: float) -> np.ndarray:
    """One Newton step on the dual g from ``eta`` (stats = q(eta)'s statistics).

    Uses the full Hessian when ``stats.second_moments`` is (K, K), else its diagonal; the
    step is taken in the subspace sum(eta) = 0 (g is invariant to a common shift).
    """
    K = len(eta)
    beta = softmax(-eta / balance)
    grad = stats.masses - beta
    second = stats.second_moments
    if second.ndim == 2:
        hessian = (np.diag(stats.masses) - second) / temperature
        hessian += (np.diag(beta) - np.outer(beta, beta)) / balance
        hessian = 0.5 * (hessian + hessian.T) + 1.0 / K  # lift the all-ones null direction
        try:
            step = np.linalg.solve(hessian, -grad)
        except np.linalg.LinAlgError:
            step = -grad / np.maximum(np.diag(hessian), 1e-300)
    else:
        curvature = (stats.masses - second) / temperature + beta * (1 - beta) / balance
        step = -grad / np.maximum(curvature, 1e-300)
    new = eta + step
    return new - new.mean()


def solve_dual(
    scores: list,
    rows: Rows,
    eta: np.ndarray,
    temperature: float,
    balance: float,
    *,
    floor: float,
    gap_tol: float,
    max_passes: int = 500,
) -> tuple[np.ndarray, QStats, int]:
    """Minimise the convex dual g(eta) over cached scores; return eta and q(eta)'s statistics.

    g(eta) = T (1/A) sum_i a_i logsumexp_k((s_ik + eta_k)/T) + lambda logsumexp(-eta/lambda)
    has gradient rho(eta) - beta(eta), beta = softmax(-eta / lambda), and Hessian
    (diag(rho) - E[q q^T]) / T + (diag(beta) - beta beta^T) / lambda, all from one pass
    over the scores. g is invariant to a common shift of eta; the penalty
    (sum eta)^2 / (2K) fixes the shift without moving the minimiser. It is minimised by
    scipy's trust-region Newton ("trust-exact", K <= FULL_NEWTON_MAX_K) or L-BFGS-B: a
    trust region copes with nearly hard assignments (small T), where g is almost
    piecewise linear and plain Newton steps overshoot.

    The duality gap of eta is g(eta) - J(q(eta)) = lambda KL(rho(eta) || beta(eta)).
    The solve is tightened until the gap is below ``gap_tol`` and J(q(eta)) >= ``floor``
    (the objective before this q-step, so that J never decreases), or ``max_passes``
    passes were spent.

    Returns
    -------
    eta : ndarray (K,), stats : QStats of q(eta), passes : int
    """
    K = len(eta)
    cache: dict[bytes, QStats] = {}

    def stats_at(v: np.ndarray) -> QStats:
        key = v.tobytes()
        if key not in cache:
            cache.clear() if len(cache) > 8 else None
            cache[key] = assignment_stats(scores, rows, v, temperature)
        return cache[key]

    passes = [0]

    def value_and_grad(v):
        st = stats_at(v)
        passes[0] += 1
        beta = softmax(-v / balance)
        shift = v.sum()
        return st.dual(v, temperature, balance) + shift**2 / (2 * K), st.masses - beta + shift / K

    def hessian(v):
        st = stats_at(v)
        beta = softmax(-v / balance)
        second = st.second_moments
        h = (np.diag(st.masses) - second) / temperature
        h += (np.diag(beta) - np.outer(beta, beta)) / balance + 1.0 / K
        return 0.5 * (h + h.T)

    eta = np.asarray(eta, dtype=np.float64) - np.mean(eta)
    full = K <= FULL_NEWTON_MAX_K
    gtol = None
    while True:
        stats = stats_at(eta)
        gap = duality_gap(stats.masses, eta, balance)
        if gtol is None:
            # gap ~ (lambda/2) sum_k (rho_k - beta_k)^2 / beta_k: a gradient this small meets gap_tol
            beta_min = softmax(-eta / balance).min()
            gtol = float(np.sqrt(2.0 * gap_tol * beta_min / (balance * K)))
        if (gap <= gap_tol and stats.objective(eta, temperature, balance) >= floor) or (
            passes[0] >= max_passes or gtol < 1e-15
        ):
            return eta, stats, passes[0]
        budget = max(max_passes - passes[0], 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # precision-loss notes near the optimum
            if full:
                result = optimize.minimize(
                    value_and_grad,
                    eta,
                    jac=True,
                    hess=hessian,
                    method="trust-exact",
                    options={"gtol": gtol, "maxiter": budget},
                )
            else:
                result = optimize.minimize(
                    value_and_grad,
                    eta,
                    jac=True,
                    method="L-BFGS-B",
                    options={"gtol": gtol, "ftol": 0.0, "maxiter": budget, "maxfun": budget},
                )
        eta = result.x - result.x.mean()
        gtol *= 1e-3


def objective(masses, mean_lse: float, eta, temperature: float, balance: float) -> float:
    """J(q(eta)) = T mean_lse - rho . eta + lambda H(rho), from one pass's statistics.

    (docs/method.md: sum_k q_ik s_ik + T H(q_i) = T logsumexp_k((s_ik + eta_k)/T) - q_i . eta.)
    """
    return float(temperature * mean_lse - masses @ eta + balance * entropy(masses))


def duality_gap(masses, eta, balance: float) -> float:
    """g(eta) - J(q(eta)) = lambda KL(rho(eta) || softmax(-eta / lambda)); 0 when lambda = 0."""
    if balance == 0.0:
        return 0.0
    return balance * kl_divergence(masses, softmax(-np.asarray(eta) / balance))
