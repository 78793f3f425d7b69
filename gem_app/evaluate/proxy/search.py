"""Searching the simplex for the mixture a regressor predicts best, under the epoch caps.

- :func:`topk_average`: RegMix's search. Score many candidate mixtures with the regressor
  and average the ``k`` best. Candidates within the caps average to a mixture within them
  (the capped simplex is convex).
- :func:`solve_kl`: the exact optimum of OLMix's objective for the log-linear law,

      minimise  T(exp(c + beta^T w)) + lam * KL(w || p)
      over      w >= 0, sum w = 1, w <= caps,   w_k = 0 where p_k = 0,

  where ``T`` is the mean over domains, the byte-weighted overall, one domain (all linear:
  a sum of exponentials of affine functions, convex) or the worst domain (a maximum of
  convex functions, solved in epigraph form). With ``lam > 0`` the objective is strictly
  convex, so the optimum is unique; it is found with SLSQP from several feasible starts in
  float64, with analytic gradients.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize

from gem_app.evaluate.proxy.regress import LogLinearRegressor, Target

__all__ = ["topk_average", "solve_kl", "kl_objective", "project_to_caps"]

_FLOOR = 1e-12


def project_to_caps(weights, caps) -> np.ndarray:
    """``min(caps, w / z)`` with ``z`` such that the result sums to 1 (KL projection).

    Parameters
    ----------
    weights : array-like of shape (K,), non-negative, positive sum
    caps : array-like of shape (K,)
        ``inf`` for no cap; the capped support must hold at least 1.

    Returns
    -------
    ndarray of shape (K,)
    """
    w = np.asarray(weights, dtype=np.float64)
    caps = np.asarray(caps, dtype=np.float64)
    if w.shape != caps.shape or w.ndim != 1:
        raise ValueError(f"weights {w.shape} and caps {caps.shape} must be equal 1-D")
    if np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError("weights must be finite, non-negative and not all 0")
    support = w > 0
    if caps[support].sum() < 1.0 - 1e-12:
        raise ValueError(
            f"the epoch caps of the mixture's domains sum to {caps[support].sum():.4g} < 1: no "
            "mixture of them fits; raise max_epochs or lower the proxy steps"
        )
    out = w / w.sum()
    free = support.copy()
    for _ in range(w.size + 1):
        over = free & (out > caps)
        if not over.any():
            break
        out[over] = caps[over]
        free &= ~over
        rest = 1.0 - out[~free].sum()
        out[free] = w[free] / w[free].sum() * rest
    return out


def topk_average(
    predict: Callable[[np.ndarray], np.ndarray], candidates, *, top_k: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """Average of the ``top_k`` candidates with the lowest predicted target.

    Parameters
    ----------
    predict : callable((n, K) weights) -> (n,) predicted target
    candidates : array-like of shape (n, K)
    top_k : int

    Returns
    -------
    weights : ndarray of shape (K,)
    chosen : ndarray of shape (min(top_k, n),)
        Rows of ``candidates`` that were averaged.
    """
    candidates = np.asarray(candidates, dtype=np.float64)
    if candidates.ndim != 2 or candidates.shape[0] == 0:
        raise ValueError(f"need candidates of shape (n, K) with n >= 1, got {candidates.shape}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    scores = np.asarray(predict(candidates), dtype=np.float64)
    chosen = np.argsort(scores, kind="stable")[: int(top_k)]
    weights = candidates[chosen].mean(axis=0)
    return weights / weights.sum(), chosen


def kl_objective(w, law: LogLinearRegressor, target: Target, prior, lam: float) -> float:
    """``T(law(w)) + lam * KL(w || prior)`` for one mixture ``w`` of shape (K,)."""
    w = np.asarray(w, dtype=np.float64)
    prior = np.asarray(prior, dtype=np.float64)
    value = float(target(law.predict(w[None, :]))[0])
    nz = w > 0
    return value + lam * float(np.sum(w[nz] * np.log(w[nz] / prior[nz])))


def _starts(prior: np.ndarray, caps: np.ndarray, support: np.ndarray) -> list[np.ndarray]:
    uniform = support / support.sum()
    return [project_to_caps(prior, caps), project_to_caps(uniform, caps)]


def solve_kl(
    law: LogLinearRegressor, target: Target, prior, caps=None, *, lam: float = 0.05
) -> np.ndarray:
    """The mixture minimising predicted target + ``lam`` KL(w || prior) under the caps.

    Parameters
    ----------
    law : LogLinearRegressor
        Fitted on per-domain losses.
    target : Target
    prior : array-like of shape (K,)
        Natural shares (the KL anchor); domains with ``prior_k = 0`` get weight 0.
    caps : array-like of shape (K,), optional
        Largest weight of each domain (epoch caps); none when omitted.
    lam : float, default 0.05
        ``>= 0``; in units of the target (bits per byte) per nat.

    Returns
    -------
    ndarray of shape (K,)
    """
    prior = np.asarray(prior, dtype=np.float64)
    prior = prior / prior.sum()
    k = prior.size
    caps = np.full(k, np.inf) if caps is None else np.asarray(caps, dtype=np.float64)
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"lam must be a finite number >= 0, got {lam}")
    support = prior > 0
    idx = np.flatnonzero(support)
    c, B = law.intercept_, law.coef_[idx]  # (m,), (n, m)
    p = prior[idx]
    upper = np.minimum(1.0, caps[idx])
    bounds = [(_FLOOR, max(_FLOOR, u)) for u in upper]
    worst = target.kind == "worst"
    a = target.weights
    if worst and target.scored is not None:
        c, B = c[target.scored], B[:, target.scored]

    def expo(x):
        return np.exp(c + x @ B)  # (m,)

    def kl_terms(x):
        x = np.maximum(x, _FLOOR)
        return lam * float(np.sum(x * np.log(x / p))), lam * (np.log(x / p) + 1.0)

    if worst:

        def fun(z):
            kl, _ = kl_terms(z[:-1])
            return z[-1] + kl

        def jac(z):
            _, grad = kl_terms(z[:-1])
            return np.append(grad, 1.0)

        constraints = [
            {
                "type": "eq",
                "fun": lambda z: z[:-1].sum() - 1.0,
                "jac": lambda z: np.append(np.ones(idx.size), 0.0),
            },
            {
                "type": "ineq",
                "fun": lambda z: z[-1] - expo(z[:-1]),
                "jac": lambda z: np.column_stack([-(B * expo(z[:-1])).T, np.ones(B.shape[1])]),
            },
        ]
        bounds = bounds + [(None, None)]
    else:

        def fun(x):
            kl, _ = kl_terms(x)
            return float(expo(x) @ a) + kl

        def jac(x):
            _, grad = kl_terms(x)
            return B @ (expo(x) * a) + grad

        constraints = [
            {"type": "eq", "fun": lambda x: x.sum() - 1.0, "jac": lambda x: np.ones(idx.size)}
        ]
    best, best_value = None, np.inf
    for start in _starts(prior, caps, support):
        x0 = start[idx]
        if worst:
            x0 = np.append(x0, expo(x0).max())
        res = minimize(
            fun,
            x0,
            jac=jac,
            method="SLSQP",
            bounds=bounds,
            constraints=constraints,
            options={"maxiter": 500, "ftol": 1e-14},
        )
        x = np.clip(res.x[:-1] if worst else res.x, 0.0, upper)
        w = np.zeros(k)
        w[idx] = x / x.sum()
        w = project_to_caps(np.maximum(w, 0.0), caps) if np.any(w > caps) else w
        value = kl_objective(w, law, target, prior, lam)
        if value < best_value:
            best, best_value = w, value
    return best
