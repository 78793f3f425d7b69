"""Mixture search strategies around GEM's weights: RegMix candidates and DoReMi updates.

- :func:`regmix_candidates`: Dirichlet draws around a temperature-scaled prior, rejected when
  they would repeat a cluster more than ``max_usage`` epochs (RegMix's candidate generator).
- :func:`doremi_update`: one exponentiated-gradient step on clipped excess losses (DoReMi),
  with the excess losses read from a ``domain,excess_loss`` table.

Pure numpy float64, except :func:`read_excess_losses_csv` which reads a small CSV.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from gem_app.mixing.weights import check_vector, epoch_caps, natural_shares
from gem_app.utils.validation import check_int, check_real

__all__ = [
    "regmix_candidates",
    "doremi_update",
    "excess_losses_from_frame",
    "read_excess_losses_csv",
]


# ----------------------------------------------------------------------------- RegMix
def regmix_candidates(
    prior,
    n_candidates: int,
    *,
    temperature: float = 2.0,
    min_strength: float = 0.1,
    max_strength: float = 5.0,
    n_strengths: int = 15,
    max_usage: float | None = 15.0,
    tokens=None,
    budget: float | None = None,
    min_weight: float = 2e-4,
    max_draws: int | None = None,
    random_state=None,
) -> np.ndarray:
    """RegMix-style candidate mixtures: Dirichlet draws around the temperature-scaled prior.

    Each candidate picks a strength ``s`` uniformly from ``n_strengths`` values on a log grid in
    ``[min_strength, max_strength]`` and draws ``w ~ Dirichlet(s * p)`` with
    ``p ∝ prior ** (1 / temperature)``. Weights below ``min_weight`` are set to 0 and the rest
    renormalised; a candidate is rejected if some ``w_k`` exceeds its usage bound
    ``min(1, max_usage * tokens_k / budget)`` (``max_usage * prior_k`` without tokens, as in
    RegMix, where the budget is the total of tokens).

    Parameters
    ----------
    prior : array-like of shape (K,)
        Natural shares (non-negative; normalised).
    n_candidates : int
        Number of accepted candidates to return.
    temperature : float, default 2.0
        Same convention as :func:`mixture_weights` (RegMix's ``TEMP = 0.5`` exponent is 2.0).
    max_usage : float or None, default 15.0
        Maximum epochs per cluster; None disables the rejection step.
    max_draws : int, optional
        Give up (ValueError) after this many draws; default ``1000 * n_candidates``.
    random_state : int, numpy Generator or None

    Returns
    -------
    ndarray of shape (n_candidates, K)
        Rows in the simplex; zero where the prior is zero.
    """
    p = natural_shares(prior)
    n_candidates = check_int(n_candidates, "n_candidates", minimum=1)
    check_real(temperature, "temperature", minimum=0, exclusive_minimum=True)
    if not 0 < min_strength <= max_strength or not np.isfinite(max_strength):
        raise ValueError(
            f"need 0 < min_strength <= max_strength, got {min_strength} and {max_strength}"
        )
    check_int(n_strengths, "n_strengths", minimum=1)
    support = np.flatnonzero(p > 0)
    if not 0 <= min_weight < 1.0 / support.size:
        raise ValueError(
            f"min_weight must be in [0, 1/{support.size}) for {support.size} populated clusters, "
            f"got {min_weight}"
        )
    bound = np.ones(p.size)
    if max_usage is not None:
        check_real(max_usage, "max_usage", minimum=0, exclusive_minimum=True)
        if tokens is None:
            if budget is not None:
                raise ValueError("budget needs tokens (tokens per cluster)")
            bound = np.minimum(1.0, max_usage * p)
        else:
            caps, _ = epoch_caps(tokens, max_usage, budget, p.size)
            bound = np.minimum(1.0, caps)
        if bound[support].sum() < 1.0:
            raise ValueError(
                f"max_usage {max_usage:g} is infeasible: the usage bounds sum to "
                f"{bound[support].sum():.4g} < 1"
            )
    rng = np.random.default_rng(random_state)
    alpha = p[support] ** (1.0 / temperature)
    alpha /= alpha.sum()
    grid = np.logspace(np.log10(min_strength), np.log10(max_strength), int(n_strengths))
    max_draws = 1000 * int(n_candidates) if max_draws is None else int(max_draws)
    accepted: list[np.ndarray] = []
    drawn = 0
    batch = max(64, 4 * int(n_candidates))
    while len(accepted) < n_candidates:
        if drawn >= max_draws:
            raise ValueError(
                f"only {len(accepted)} of {n_candidates} candidates accepted in {drawn} draws: "
                "raise max_usage, the strengths or max_draws"
            )
        size = min(batch, max_draws - drawn)
        strengths = grid[rng.integers(grid.size, size=size)]
        gammas = rng.gamma(strengths[:, None] * alpha[None, :])
        drawn += size
        totals = gammas.sum(axis=1)
        gammas = gammas[totals > 0] / totals[totals > 0, None]
        gammas[gammas < min_weight] = 0.0
        kept_totals = gammas.sum(axis=1)
        gammas = gammas[kept_totals > 0] / kept_totals[kept_totals > 0, None]
        ok = np.all(gammas <= bound[support][None, :], axis=1)
        accepted.extend(gammas[ok])
    out = np.zeros((int(n_candidates), p.size))
    out[:, support] = np.asarray(accepted[: int(n_candidates)])
    return out


# ----------------------------------------------------------------------------- DoReMi
def doremi_update(weights, excess_losses, *, step_size: float = 1.0, smoothing: float = 1e-3):
    """One DoReMi domain-weight update (exponentiated gradient on clipped excess losses).

    ``log a' = log a + step_size * max(excess, 0)``, normalised by a softmax, then mixed with
    the uniform distribution: ``w = (1 - smoothing) * a' + smoothing / K``.

    Parameters
    ----------
    weights : array-like of shape (K,)
        Current domain weights (non-negative; normalised).
    excess_losses : array-like of shape (K,)
        Per-domain excess loss (proxy minus reference); negative values count as 0.
    step_size : float, default 1.0
        DoReMi's ``reweight_eta``.
    smoothing : float, default 1e-3
        DoReMi's ``reweight_eps``, in [0, 1].

    Returns
    -------
    ndarray of shape (K,)
    """
    w = natural_shares(weights)
    excess = check_vector(excess_losses, "excess_losses", w.size)
    check_real(step_size, "step_size", minimum=0, exclusive_minimum=True)
    check_real(smoothing, "smoothing", minimum=0, maximum=1)
    with np.errstate(divide="ignore"):
        log_w = np.log(w) + step_size * np.maximum(excess, 0.0)
    log_w -= logsumexp(log_w)
    return (1.0 - smoothing) * np.exp(log_w) + smoothing / w.size


def excess_losses_from_frame(frame: pd.DataFrame, domains: Sequence[str]) -> np.ndarray:
    """Per-domain excess losses from a table with columns ``domain`` and ``excess_loss``.

    Returns an array of shape (len(domains),) in the order of ``domains``. Missing, extra,
    duplicated domains and non-numeric losses raise ValueError naming them.
    """
    missing_cols = {"domain", "excess_loss"} - set(frame.columns)
    if missing_cols:
        raise ValueError(
            f"excess-loss table lacks column(s) {sorted(missing_cols)}; has {list(frame.columns)}"
        )
    names = frame["domain"].astype(str).str.strip()
    duplicated = sorted(set(names[names.duplicated()]))
    if duplicated:
        raise ValueError(f"excess-loss table lists domain(s) more than once: {duplicated}")
    expected = [str(d) for d in domains]
    missing = [d for d in expected if d not in set(names)]
    extra = sorted(set(names) - set(expected))
    if missing or extra:
        raise ValueError(
            f"excess-loss table does not match the domains: missing {missing}, extra {extra}"
        )
    values = pd.to_numeric(frame["excess_loss"], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        row = int(bad[0])
        raise ValueError(
            f"excess_loss of domain {names.iloc[row]!r} (row {row}) is not a finite number: "
            f"{frame['excess_loss'].iloc[row]!r}"
        )
    by_name = dict(zip(names, values, strict=True))
    return np.array([by_name[d] for d in expected])


def read_excess_losses_csv(path: str | os.PathLike, domains: Sequence[str]) -> np.ndarray:
    """Read a CSV with columns ``domain,excess_loss``; see :func:`excess_losses_from_frame`."""
    frame = pd.read_csv(path, dtype={"domain": str}, keep_default_na=False)
    return excess_losses_from_frame(frame, domains)
