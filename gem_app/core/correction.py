"""The anisotropy correction x_i = normalize(L (u_i - m)) and its one rule for degenerate rows.

Used by :class:`gem_app.core.sphere.SphereTransform` (float64 statistics, the app and
vMF-EM) and :class:`gem_app.core.rows.Rows` (GEM's chunks in the compute dtype), so that
both map a row to the same point and refuse the same rows (docs/method.md section 1).

The rule: a row whose centred vector has ``||u_i - m||^2 <= eps`` has no direction left.
Since ``||u_i - m|| >= 1 - R0``, this happens only when (nearly) all rows point the same
way, e.g. a corpus of identical or empty texts; such rows are refused, by number, at
``fit`` and at ``transform``, never mapped somewhere arbitrary.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "NO_DIRECTION_EPS",
    "correct_units",
    "flagged_rows",
    "may_have_no_direction",
    "no_direction_message",
]

NO_DIRECTION_EPS = 1e-12  # squared norm of u_i - m under which a row has no direction


def correct_units(units: torch.Tensor, mean, whitening_t, eps: float = NO_DIRECTION_EPS):
    """Centre, whiten and renormalise unit rows; flag the rows with no direction left.

    Parameters
    ----------
    units : torch.Tensor of shape (n, d)
        Unit rows u_i (overwritten: the result is computed in place where possible).
    mean : torch.Tensor of shape (d,) or None
        The mean resultant m (None: no centring, and no row is degenerate).
    whitening_t : torch.Tensor of shape (d, d) or None
        The transpose of the whitening map L (None: L = I).
    eps : float
        Squared-norm threshold on u_i - m (before whitening, so the rule does not depend on L):
        a row is flagged when ||u_i - m|| <= sqrt(eps).

    Returns
    -------
    x : torch.Tensor of shape (n, d)
        Unit rows normalize(L (u_i - m)), same dtype and device (rows flagged in
        ``no_direction`` hold no meaningful value). Without centring and whitening the
        rows are renormalised, so that every path does the same arithmetic.
    no_direction : torch.Tensor of bool, shape (n,)
    """
    z = units if mean is None else units.sub_(mean)
    norm = torch.linalg.vector_norm(z, dim=1, keepdim=True)
    if mean is None:
        no_direction = torch.zeros(z.shape[0], dtype=torch.bool, device=z.device)
    else:
        no_direction = norm[:, 0] <= math.sqrt(eps)
    if whitening_t is not None:
        z = z @ whitening_t
        norm = torch.linalg.vector_norm(z, dim=1, keepdim=True)
    return z.div_(norm), no_direction


def no_direction_message(rows, n_rows: int, anisotropy: float, name: str = "X") -> str:
    """The message for rows with no direction left (row numbers, what it means, what to do).

    Parameters
    ----------
    rows : sequence of int
        The rows (global numbers), in order.
    n_rows : int
        Rows in X (a single sample is named as such).
    anisotropy : float
        R0 = ||m|| of the fitted correction.
    """
    rows = list(rows)
    shown = ", ".join(str(r) for r in rows[:10])
    more = f" and {len(rows) - 10} more" if len(rows) > 10 else ""
    alone = (
        " (with 1 sample, the mean direction is that sample's own direction)" if n_rows == 1 else ""
    )
    return (
        f"{name} has {len(rows)} row(s) with no direction left after the anisotropy "
        f"correction: row(s) {shown}{more}. They point in the mean direction of the data "
        f"(anisotropy R0 = {anisotropy:.6f}){alone}, which happens when all rows are (nearly) "
        "the same embedding, e.g. duplicated or empty texts. Deduplicate the corpus or "
        "remove these rows."
    )


def flagged_rows(no_direction: torch.Tensor, offset: int) -> list[int]:
    """Global row numbers of the rows flagged by :func:`correct_units` in a chunk at ``offset``."""
    if not bool(no_direction.any()):
        return []
    return (offset + np.flatnonzero(no_direction.cpu().numpy())).tolist()


def may_have_no_direction(anisotropy: float, eps: float = NO_DIRECTION_EPS) -> bool:
    """False when no unit row can be within sqrt(eps) of m: ||u - m|| >= 1 - R0 > sqrt(eps)."""
    return 1.0 - anisotropy <= math.sqrt(eps) * (1.0 + 1e-6)
