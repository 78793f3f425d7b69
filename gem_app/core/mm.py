"""The MM (block-ascent) passes of GEM and its exact (mu, kappa)-step, on row chunks.

Notation follows docs/method.md. A pass computes the scores of a chunk
(:class:`ScoreMap`), the soft (or hard) assignments (:mod:`gem_app.core.dual`) and the
weighted resultants r_k = sum_i a_i q_ik x_i in float64; :func:`update_parameters` turns
them into new mean directions and concentrations.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from gem_app.core.dual import soft_assignments
from gem_app.core.rows import Rows
from gem_app.core.threads import chunk_workers, map_chunks
from gem_app.core.vmf import log_normalizer, solve_kappa

__all__ = [
    "KAPPA_MAX",
    "KAPPA_MIN",
    "SPARSE_MAX_DENSITY",
    "Params",
    "Resultants",
    "ScoreMap",
    "linear_term",
    "resultant_pass",
    "update_parameters",
]

KAPPA_MIN = 1e-3
KAPPA_MAX = 1e5
SPARSE_MAX_DENSITY = 0.0625  # on CPU, resultants as a sparse product up to this density of q

# torch warns once per process that its compressed-sparse-row layout is "beta"; the one
# operation used here (a CSR matrix times a dense one on the CPU) is tested against the GEMM.
warnings.filterwarnings(
    "ignore", message="Sparse CSR tensor support is in beta", category=UserWarning
)


@dataclass
class Params:
    """vMF parameters in float64 numpy: mean directions (K, d), concentrations (K,), log prior (K,)."""

    mean_directions: np.ndarray
    concentrations: np.ndarray
    log_prior: np.ndarray

    @classmethod
    def of_model(cls, model) -> Params:
        """The parameters of a fitted GEM (``mean_directions_``, ``concentrations_``, ``prior_``)."""
        return cls(model.mean_directions_, model.concentrations_, np.log(model.prior_))

    @property
    def bias(self) -> np.ndarray:
        """b_k = log C_d(kappa_k) + log pi_k, shape (K,)."""
        d = self.mean_directions.shape[1]
        return log_normalizer(d, self.concentrations) + self.log_prior


class ScoreMap:
    """s_ik = kappa_k mu_k . x_i + log C_d(kappa_k) + log pi_k for one parameter set, by chunk."""

    def __init__(self, params: Params, *, device, dtype):
        w = params.concentrations[:, None] * params.mean_directions
        self.weight_t = torch.as_tensor(w.T, device=device, dtype=dtype).contiguous()
        self.bias = torch.as_tensor(params.bias, device=device, dtype=dtype)

    def __call__(self, rows: Rows, j: int, out: torch.Tensor | None = None) -> torch.Tensor:
        if out is None:
            return torch.addmm(self.bias, rows.points(j), self.weight_t)
        return torch.addmm(self.bias, rows.points(j), self.weight_t, out=out)


@dataclass
class Resultants:
    """Sufficient statistics of a q-step for the (mu, kappa)-step, all float64 numpy.

    counts : (K,) n_k = sum_i a_i q_ik
    resultants : (K, d) r_k = sum_i a_i q_ik x_i
    labels : (N,) int64 argmax_k q_ik, or None when the pass did not form them
    row_lse : (N,) float64, logsumexp_k((s_ik + eta_k)/T): low values are badly fitted rows
    mean_lse : float
    second_moments : (K, K) or (K,) sum_i a_i q_i q_i^T / A (or its diagonal), when asked
    """

    counts: np.ndarray
    resultants: np.ndarray
    labels: np.ndarray
    row_lse: np.ndarray
    mean_lse: float
    second_moments: np.ndarray | None = None

    @property
    def masses(self) -> np.ndarray:
        return self.counts / self.counts.sum()


def resultant_pass(
    score_chunk,
    rows: Rows,
    eta: np.ndarray | None,
    temperature: float,
    *,
    hard: bool = False,
    labels: bool = False,
    second_moments: str | None = None,
    resultants: bool = True,
) -> Resultants:
    """One pass computing q (soft, or one-hot argmax when ``hard``) and the resultants r_k.

    ``score_chunk(j)`` returns the score chunk j (cached or freshly computed); it is
    called once per chunk, from the worker threads of :mod:`gem_app.core.threads` on the
    CPU. The hard labels argmax_k q_ik are formed only when ``labels`` (the last pass of a
    fit). ``second_moments`` "full" or "diag" also accumulates E_a[q q^T] (or its
    diagonal), for a Newton step on the dual. ``resultants=False`` skips the q^T x GEMM
    (the final pass needs only the masses and the labels; ``resultants`` is then zeros).
    """
    device, dtype = rows.device, rows.dtype
    eta_t = None if eta is None else torch.as_tensor(eta, device=device, dtype=dtype)

    def chunk_stats(j: int):
        s = score_chunk(j)
        K = s.shape[1]
        lab = None
        if hard:
            lab = torch.argmax(s, dim=1)
            q = torch.nn.functional.one_hot(lab, K).to(dtype)
            lse = s.amax(dim=1)
        else:
            shift = s.new_zeros(K) if eta_t is None else eta_t
            q, lse = soft_assignments(s, shift, temperature)
            lab = torch.argmax(q, dim=1) if labels else None
        a = rows.weight_c[j]
        counts = a @ q
        moments = r = None
        if second_moments == "diag" and not resultants:
            moments = a @ (q * q)
        if second_moments == "full" or resultants:
            aq = q.mul_(a[:, None]) if second_moments is None else q * a[:, None]
            aq_t = _transposed_weights(aq) if resultants else aq.T
            if second_moments == "full":
                moments = aq_t.matmul(q)  # sum_i a_i q_i q_i^T
            elif second_moments == "diag":
                moments = _diagonal_moments(aq_t, q, a)
            if resultants:
                r = aq_t.matmul(rows.points(j))  # r_k = sum_i a_i q_ik x_i
        return counts, moments, r, lab, lse

    with chunk_workers(device):
        parts = map_chunks(chunk_stats, len(rows))
    K = parts[0][0].shape[0]
    f64 = torch.float64
    counts = torch.zeros(K, dtype=f64, device=device)
    total_r = torch.zeros((K, rows.n_features), dtype=f64, device=device)
    moments = None
    if second_moments is not None:
        moments = torch.zeros((K, K) if second_moments == "full" else K, dtype=f64, device=device)
    for c, m, r, _, _ in parts:  # in chunk order: the sums do not depend on the schedule
        counts += c.to(f64)
        if moments is not None:
            moments += m.to(f64)
        if r is not None:
            total_r += r.to(f64)
    hard_labels = [p[3] for p in parts if p[3] is not None]
    lse_all = torch.cat([p[4] for p in parts]).to(f64).cpu().numpy()
    weights = torch.cat(rows.weight).cpu().numpy()
    return Resultants(
        counts=counts.cpu().numpy(),
        resultants=total_r.cpu().numpy(),
        labels=torch.cat(hard_labels).cpu().numpy().astype(np.int64) if hard_labels else None,
        row_lse=lse_all,
        mean_lse=float(weights @ lse_all) / rows.total_weight,
        second_moments=None if moments is None else moments.cpu().numpy() / rows.total_weight,
    )


def _transposed_weights(aq: torch.Tensor) -> torch.Tensor:
    """aq^T, shape (K, n): in compressed sparse rows on the CPU when q is sparse enough.

    q's terms below exp(-30) of a row's largest are exactly 0 (:func:`soft_assignments`),
    so at the concentrations of real embeddings most rows of q have one or two non-zero
    entries. When at most SPARSE_MAX_DENSITY of the entries are non-zero, aq^T times the
    points (the resultants) and times q (the second moments) are sparse products over
    the non-zeros instead of GEMMs over all K x n entries: 2-3x faster at the densities of
    real data, and the score GEMM of the other worker keeps the core's vector units. The
    CPU kernel sums each cluster's rows in a fixed order (deterministic); sparse and dense
    products agree up to rounding. Elsewhere (dense q, GPUs) it is the transposed view.

    Parameters
    ----------
    aq : Tensor of shape (n, K), a_i q_ik (>= 0)

    Returns
    -------
    Tensor of shape (K, n), sparse CSR or strided; ``.matmul`` works on both
    """
    if aq.device.type != "cpu" or aq.numel() == 0:
        return aq.T
    if int(torch.count_nonzero(aq)) > SPARSE_MAX_DENSITY * aq.numel():
        return aq.T  # counted first: the indices of a dense q would be 2 x 8 bytes per entry
    return _sparse_transpose(aq)


def _diagonal_moments(aq_t: torch.Tensor, q: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """sum_i a_i q_ik^2, shape (K,): over the non-zeros when ``aq_t`` is sparse.

    Parameters
    ----------
    aq_t : Tensor of shape (K, n), (a q)^T from :func:`_transposed_weights`
    q : Tensor of shape (n, K)
    a : Tensor of shape (n,), the masses
    """
    if aq_t.layout != torch.sparse_csr:
        return a @ (q * q)
    crow, rows = aq_t.crow_indices(), aq_t.col_indices()
    clusters = torch.repeat_interleave(torch.arange(q.shape[1], device=q.device), crow.diff())
    values = aq_t.values()
    return torch.zeros(q.shape[1], dtype=q.dtype, device=q.device).index_add_(
        0, clusters, values * q[rows, clusters]
    )


def _sparse_transpose(aq: torch.Tensor):
    """aq^T as a (K, n) compressed-sparse-row tensor, from aq's non-zeros.

    ``nonzero`` lists them in row order; a stable sort by cluster keeps each cluster's
    columns (rows of aq) ascending.
    """
    n, K = aq.shape
    rows, clusters = aq.nonzero(as_tuple=True)
    order = torch.argsort(clusters, stable=True)
    rows, clusters = rows[order], clusters[order]
    crow = torch.zeros(K + 1, dtype=torch.int64, device=aq.device)
    torch.cumsum(torch.bincount(clusters, minlength=K), 0, out=crow[1:])
    return torch.sparse_csr_tensor(crow, rows, aq[rows, clusters], size=(K, n))


def linear_term(params: Params, stats: Resultants, total_weight: float) -> float:
    """(1/A) sum_i a_i sum_k q_ik s_ik = (1/A) sum_k [kappa_k mu_k . r_k + n_k b_k]."""
    kappa_mu_r = np.einsum("kd,kd->k", params.mean_directions, stats.resultants)
    return float(
        (params.concentrations * kappa_mu_r + stats.counts * params.bias).sum() / total_weight
    )


def update_parameters(
    stats: Resultants, params: Params, *, tied: bool, empty_tol: float = 1e-10
) -> tuple[Params, list[int]]:
    """The exact (mu, kappa)-step, with empty clusters re-seeded at the worst-fit rows.

    Returns the new parameters and the list of re-seeded clusters. A re-seeded
    cluster takes the direction of an unclaimed badly fitted row (lowest
    log-partition) and the median concentration of the others.
    """
    d = stats.resultants.shape[1]
    norms = np.linalg.norm(stats.resultants, axis=1)
    total = stats.counts.sum()
    empty = np.flatnonzero(stats.counts <= empty_tol * total)
    mu = params.mean_directions.copy()
    alive = np.setdiff1d(np.arange(len(norms)), empty)
    directed = alive[norms[alive] > 0]  # a zero resultant (points that cancel) keeps its mu
    mu[directed] = stats.resultants[directed] / norms[directed, None]
    if tied:
        rbar = norms[alive].sum() / stats.counts[alive].sum()
        kappa = np.full(len(norms), float(solve_kappa(d, rbar)))
    else:
        kappa = params.concentrations.copy()
        kappa[alive] = solve_kappa(d, norms[alive] / stats.counts[alive])
    if len(empty) and len(alive):
        kappa[empty] = np.median(kappa[alive])
    kappa = np.clip(kappa, KAPPA_MIN, KAPPA_MAX)
    return Params(mu, kappa, params.log_prior), empty.tolist()
