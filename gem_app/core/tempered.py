"""Passes of the q-step dual over tempered exponentials: no exp over the N x K scores per pass.

At a fixed temperature T, the soft memberships of the q-step factor as

    q_ik = softmax_k((s_ik + eta_k) / T) = E_ik b_k / Z_i,
    E_ik = exp((s_ik - max_k s_ik) / T),  b_k = exp((eta_k - max eta) / T),  Z_i = sum_k E_ik b_k,

so with E formed once per T, the statistics that the dual needs at any eta
(:class:`gem_app.core.dual.QStats`) are matrix products:

    rho        = b * (E^T (a / Z)) / A
    E[q q^T]   = diag(b) E^T diag(a / Z^2) E diag(b) / A
    mean lse   = (1/A) sum_i a_i (max_k s_ik / T + max eta / T + log Z_i).

E is formed in float64, in place (every entry lies in [0, 1], the row maximum is exactly 1),
so that a pass is as precise as :func:`gem_app.core.dual.assignment_stats` in its precise
mode. The second moments only steer
Newton steps: they come from a fixed, evenly strided sample of at most ``HESSIAN_ROWS``
documents (all of them below that), made consistent with the exact masses, so that a pass
costs two matrix-vector products over the N x K exponentials. ``Z_i >= b_k`` at the row's
best cluster k; when that underflows (``eta`` spread over more than ~700 T) a pass reports it
(None) and the caller falls back to the exp passes.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from gem_app.core.dual import FULL_NEWTON_MAX_K, QStats
from gem_app.core.threads import map_chunks

__all__ = ["CHUNK_ROWS", "HESSIAN_ROWS", "TemperedScores"]

CHUNK_ROWS = 16384
HESSIAN_ROWS = 16384
_Z_FLOOR = 1e-250
_EXP_FLOOR = -700.0  # exp(-700) ~ 1e-304: below, exactly 0 (no subnormal numbers)


class TemperedScores:
    """The tempered exponentials of one score matrix at one temperature, and passes over them.

    The rows are held in chunks of ``CHUNK_ROWS``; inside a
    :func:`gem_app.core.threads.chunk_workers` session (the caller's), the chunks are formed
    and passed over on its worker threads, with torch's intra-op parallelism off: on a shared
    machine an OpenMP barrier per kernel waits for descheduled threads (see
    :mod:`gem_app.core.threads`). Partial sums are added in chunk order (same input, same
    result).

    Parameters
    ----------
    scores : Tensor of shape (n_documents, n_clusters)
        Frozen scores (any float dtype), on the device the passes run on.
    weights : Tensor of shape (n_documents,), float64
        Document masses ``a_i > 0`` on the same device.
    temperature : float
        ``T > 0``.
    reuse : TemperedScores, optional
        A previous temperature's instance over the same scores: its float64 buffers are
        overwritten (a fresh N x K buffer per temperature costs its page faults).
    """

    def __init__(
        self,
        scores: torch.Tensor,
        weights: torch.Tensor,
        temperature: float,
        *,
        reuse: TemperedScores | None = None,
    ):
        self.temperature = float(temperature)
        n = scores.shape[0]
        self._bounds = [(a, min(a + CHUNK_ROWS, n)) for a in range(0, n, CHUNK_ROWS)]
        same = reuse is not None and reuse._bounds == self._bounds
        self._chunks = reuse._chunks if same else [None] * len(self._bounds)
        self._weights = [weights[a:b] for a, b in self._bounds]
        self._total = float(weights.sum())

        def build(j: int):
            a, b = self._bounds[j]
            out, top_lse = _tempered(scores[a:b], self.temperature, self._chunks[j])
            self._chunks[j] = out
            return top_lse

        self._top_lse = map_chunks(build, len(self._bounds))
        stride = max(1, -(-n // HESSIAN_ROWS))
        rows = torch.arange(0, n, stride, device=scores.device)
        self._sample_exponentials = torch.cat(
            [
                E.index_select(0, rows[(rows >= a) & (rows < b)] - a)
                for E, (a, b) in zip(self._chunks, self._bounds, strict=True)
            ]
        )
        self._sample_weights = weights.index_select(0, rows)

    def stats(self, eta: np.ndarray, *, full: bool | None = None) -> QStats | None:
        """rho(eta) and the mean log-partition (exact), the second moments (sampled).

        Parameters
        ----------
        eta : ndarray of shape (n_clusters,)
        full : bool, optional
            The (K, K) second moments (default for K <= FULL_NEWTON_MAX_K), else the diagonal.

        Returns
        -------
        QStats or None
            None when some ``Z_i`` underflowed. ``second_moments`` is the sample's
            ``E[q q^T]`` plus ``diag(rho - rho_sample)``: ``diag(masses) - second_moments`` is
            then the sample's own (positive semi-definite) curvature.
        """
        T = self.temperature
        K = self._chunks[0].shape[1]
        full = K <= FULL_NEWTON_MAX_K if full is None else full
        top = float(np.max(eta))
        device = self._chunks[0].device
        b = torch.as_tensor((np.asarray(eta, dtype=np.float64) - top) / T, device=device).exp_()

        def chunk(j: int):
            E, a = self._chunks[j], self._weights[j]
            Z = E @ b
            if not bool(Z.min() > _Z_FLOOR):
                return None
            return E.T @ (a / Z), a @ (self._top_lse[j] + Z.log())

        parts = map_chunks(chunk, len(self._chunks))
        if any(p is None for p in parts):
            return None
        masses = b * sum(p[0] for p in parts) / self._total
        mean_lse = float(sum(p[1] for p in parts)) / self._total + top / T
        q = self._sample_exponentials * b
        q /= q.sum(dim=1, keepdim=True)
        aq = q * (self._sample_weights / self._sample_weights.sum())[:, None]
        correction = masses - aq.sum(dim=0)
        if full:
            second = aq.T @ q + torch.diag(correction)
        else:
            second = (aq * q).sum(dim=0) + correction
        return QStats(masses.cpu().numpy(), second.cpu().numpy(), mean_lse)


def _tempered(scores: torch.Tensor, temperature: float, out: torch.Tensor | None):
    """exp((s - max_k s) / T) of one chunk in float64, in place in ``out`` when it fits.

    In float64: a float32 exp would make subnormal numbers, 10-100x slower on x86; entries
    below exp(-700) are exactly 0 for the same reason. Returns the row maxima over T.
    """
    f64 = torch.float64
    top = scores.amax(dim=1, keepdim=True)
    if out is None or out.shape != scores.shape or out.dtype != f64:
        out = torch.empty(scores.shape, dtype=f64, device=scores.device)
    out.copy_(scores).sub_(top.to(f64)).div_(temperature)
    out.clamp_(min=_EXP_FLOOR).exp_()
    torch.nn.functional.threshold_(out, math.exp(_EXP_FLOOR), 0.0)
    return out, top.squeeze(1).to(f64) / temperature
