"""Mixing weights with an entropy temperature (METHOD.md section 6), plus RegMix and DoReMi helpers.

For cluster utilities ``u_k = log rho_k + beta z(G_k) + log m_k`` and caps ``c_k``
(``w_k * budget <= max_epochs * tokens_k``), the weights are

    w(tau) = argmax_{w in simplex, w <= c} sum_k w_k u_k + tau H(w)
           = min(c_k, exp((u_k - nu) / tau)),  nu such that sum_k w_k = 1.

The dual variable ``nu`` is found exactly in log space rather than by an iterative
bisection: the clusters are sorted by the level of ``nu`` at which they hit their
cap (the breakpoints of the decreasing function ``sum_k min(c_k, exp((u_k - nu)/tau))``),
one vectorised pass over the sorted breakpoints finds the bracket that a bisection
would converge to, i.e. the capped set, and the uncapped part is normalised exactly
with a softmax. Cost O(K log K); stable for ``tau`` from about 1e-3 to 1e3; the
weights sum to 1 to rounding error and never exceed their caps.

The maths is pure numpy float64; the only file reading is
:func:`read_excess_losses_csv`, a small helper for the DoReMi update.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.special import logsumexp

__all__ = [
    "MixingReport",
    "mixture_weights",
    "mixing_report",
    "entropy",
    "kl_divergence",
    "regmix_candidates",
    "doremi_update",
    "excess_losses_from_frame",
    "read_excess_losses_csv",
]

_CAP_FEASIBILITY_SLACK = 1e-12


# ----------------------------------------------------------------------------- validation
def _as_vector(values, name: str, size: int | None = None) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if size is not None and arr.shape[0] != size:
        raise ValueError(f"{name} has {arr.shape[0]} entries, expected {size} (one per cluster)")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{name} is not finite at cluster {int(bad[0])} (value {arr[bad[0]]})")
    return arr


def _natural_shares(rho) -> np.ndarray:
    rho = _as_vector(rho, "rho")
    if rho.size == 0:
        raise ValueError("rho is empty: need at least one cluster")
    negative = np.flatnonzero(rho < 0)
    if negative.size:
        k = int(negative[0])
        raise ValueError(f"rho is negative at cluster {k} (value {rho[k]})")
    total = rho.sum()
    if total <= 0:
        raise ValueError("rho sums to 0: no cluster has any mass")
    return rho / total


def _cluster_multipliers(multipliers, exclude: Iterable[int], n_clusters: int) -> np.ndarray:
    """Multipliers m_k >= 0 from an array, a {cluster: m} mapping or None; exclusions set 0."""
    if multipliers is None:
        m = np.ones(n_clusters)
    elif isinstance(multipliers, Mapping):
        m = np.ones(n_clusters)
        for key, value in multipliers.items():
            m[_cluster_index(key, n_clusters, "multipliers")] = float(value)
    else:
        m = np.asarray(multipliers, dtype=np.float64).copy()
        if m.shape != (n_clusters,):
            raise ValueError(f"multipliers has shape {m.shape}, expected ({n_clusters},)")
    bad = np.flatnonzero(~np.isfinite(m) | (m < 0))
    if bad.size:
        k = int(bad[0])
        raise ValueError(f"multiplier of cluster {k} must be finite and >= 0, got {m[k]}")
    for key in exclude:
        m[_cluster_index(key, n_clusters, "exclude")] = 0.0
    return m


def _cluster_index(key, n_clusters: int, where: str) -> int:
    if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
        raise ValueError(
            f"unknown cluster id {key!r} in {where}: ids are integers 0..{n_clusters - 1}"
        )
    if not 0 <= int(key) < n_clusters:
        raise ValueError(f"unknown cluster id {key!r} in {where}: ids are 0..{n_clusters - 1}")
    return int(key)


def _standardise(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """z-score of ``values`` over the clusters in ``mask`` (0 where the spread is 0)."""
    z = np.zeros_like(values)
    if mask.sum() == 0:
        return z
    sub = values[mask]
    spread = sub.std()
    if spread > 0:
        z[mask] = (sub - sub.mean()) / spread
    return z


def _epoch_caps(tokens, max_epochs, budget, n_clusters: int) -> tuple[np.ndarray, float | None]:
    """Caps c_k = E tokens_k / B (inf when no max_epochs) and the budget used."""
    if tokens is None:
        if max_epochs is not None:
            raise ValueError("max_epochs needs tokens (tokens per cluster) to set the caps")
        if budget is not None and budget <= 0:
            raise ValueError(f"budget must be > 0, got {budget}")
        return np.full(n_clusters, np.inf), budget
    tokens = _as_vector(tokens, "tokens", n_clusters)
    negative = np.flatnonzero(tokens < 0)
    if negative.size:
        k = int(negative[0])
        raise ValueError(f"tokens is negative at cluster {k} (value {tokens[k]})")
    if budget is None:
        budget = float(tokens.sum())
    if not np.isfinite(budget) or budget <= 0:
        raise ValueError(f"budget must be a finite number > 0, got {budget}")
    if max_epochs is None:
        return np.full(n_clusters, np.inf), float(budget)
    if not np.isfinite(max_epochs) or max_epochs <= 0:
        raise ValueError(f"max_epochs must be a finite number > 0, got {max_epochs}")
    return max_epochs * tokens / budget, float(budget)


# ----------------------------------------------------------------------------- the maths
def _capped_softmax(scores: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Solve ``w = min(c, exp(s - lam))`` with ``sum w = 1`` for finite scores ``s``.

    Parameters
    ----------
    scores : ndarray of shape (n,)
        ``s_k = u_k / tau`` for the active clusters (finite).
    caps : ndarray of shape (n,)
        Caps ``c_k > 0`` (``inf`` for none) with ``sum c >= 1``.

    Returns
    -------
    ndarray of shape (n,)
        Weights, ``w <= c`` and ``sum w = 1`` to rounding error.
    """
    n = scores.size
    with np.errstate(divide="ignore"):
        hit_level = scores - np.log(caps)  # cluster k is capped iff lam <= hit_level_k
    order = np.argsort(-hit_level, kind="stable")
    s_sorted, c_sorted, t_sorted = scores[order], caps[order], hit_level[order]
    # f(t_j) = sum_{i<=j} c_i + exp(LSE_{i>j} s_i - t_j); the capped set is {i < j*} with
    # j* the first j where f(t_j) > 1 (then lam* > t_j).
    suffix_lse = np.logaddexp.accumulate(s_sorted[::-1])[::-1]
    rest_lse = np.append(suffix_lse[1:], -np.inf)
    capped_mass = np.cumsum(np.where(np.isfinite(c_sorted), c_sorted, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        remaining = np.log(np.clip(1.0 - capped_mass, 0.0, None))
        over = (capped_mass >= 1.0) | (rest_lse - t_sorted > remaining) | ~np.isfinite(c_sorted)
    first = int(np.argmax(over)) if over.any() else n
    weights_sorted = np.empty(n)
    while True:
        weights_sorted[:first] = c_sorted[:first]
        if first == n:  # every cluster at its cap: sum c == 1 up to the feasibility slack
            weights_sorted /= weights_sorted.sum()
            break
        free = 1.0 - c_sorted[:first].sum()
        tail = s_sorted[first:]
        weights_sorted[first:] = free * np.exp(tail - logsumexp(tail))
        # Rounding can leave the boundary cluster a hair above its cap: cap it and redo.
        if weights_sorted[first] <= c_sorted[first]:
            break
        first += 1
    weights = np.empty(n)
    weights[order] = weights_sorted
    return weights


def mixture_weights(
    rho,
    *,
    temperature: float = 1.0,
    gis=None,
    gis_strength: float = 0.0,
    multipliers=None,
    exclude: Iterable[int] = (),
    tokens=None,
    max_epochs: float | None = None,
    budget: float | None = None,
) -> np.ndarray:
    """Entropy-temperature mixing weights ``w(tau)``, with GIS tilt, curator edits and epoch caps.

    Parameters
    ----------
    rho : array-like of shape (K,)
        Natural cluster shares (non-negative; normalised to sum 1). ``rho_k = 0`` gives ``w_k = 0``.
    temperature : float, default 1.0
        ``tau > 0``. ``tau = 1`` (no GIS tilt, multipliers or caps) returns ``rho``; large ``tau``
        tends to uniform (UniMax-like under caps), small ``tau`` to the arg-max.
    gis : array-like of shape (K,), optional
        Cluster GIS ``G_k``; standardised over the clusters with ``rho_k > 0``.
    gis_strength : float, default 0.0
        ``beta``, the weight of the standardised GIS in the utility.
    multipliers : array-like of shape (K,) or mapping {cluster id: m}, optional
        Curator multipliers ``m_k >= 0`` (utility ``+ log m_k``); 0 excludes a cluster.
    exclude : iterable of int
        Cluster ids (0..K-1) to exclude.
    tokens : array-like of shape (K,), optional
        Tokens available per cluster (needed for ``max_epochs``).
    max_epochs : float, optional
        ``E``: at most ``E`` passes over a cluster, ``w_k * budget <= E * tokens_k``.
    budget : float, optional
        ``B``, training tokens; defaults to the total of ``tokens``. Without ``max_epochs`` it
        sets no cap.

    Returns
    -------
    ndarray of shape (K,)
        Weights in the simplex, within the caps, summing to 1 to about 1e-15.

    Raises
    ------
    ValueError
        On bad input (naming the cluster or value), when every cluster is excluded, or when the
        caps are infeasible (``budget > max_epochs * tokens`` of the usable clusters).
    """
    if not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    if not np.isfinite(gis_strength):
        raise ValueError(f"gis_strength must be finite, got {gis_strength}")
    shares = _natural_shares(rho)
    n_clusters = shares.size
    m = _cluster_multipliers(multipliers, exclude, n_clusters)
    caps, budget = _epoch_caps(tokens, max_epochs, budget, n_clusters)
    populated = shares > 0
    active = populated & (m > 0) & (caps > 0)
    if not active.any():
        raise ValueError(
            "all clusters are excluded (zero multiplier, zero share or zero tokens): nothing to mix"
        )
    cap_total = caps[active].sum()
    if cap_total < 1.0 - _CAP_FEASIBILITY_SLACK:
        usable = float(np.asarray(tokens, dtype=np.float64)[active].sum())
        raise ValueError(
            f"infeasible epoch caps: budget {budget:g} tokens exceeds max_epochs {max_epochs:g} x "
            f"{usable:g} usable tokens = {max_epochs * usable:g}; raise max_epochs, lower the "
            "budget or include more clusters"
        )
    utility = np.log(shares[active]) + np.log(m[active])
    if gis is not None and gis_strength != 0.0:
        z = _standardise(_as_vector(gis, "gis", n_clusters), populated)
        utility = utility + gis_strength * z[active]
    weights = np.zeros(n_clusters)
    weights[active] = _capped_softmax(utility / temperature, caps[active])
    return weights


def entropy(p: np.ndarray) -> float:
    """Shannon entropy ``H(p) = -sum p log p`` in nats (0 log 0 = 0); ``p`` of shape (K,)."""
    p = np.asarray(p, dtype=np.float64)
    nz = p > 0
    return float(-(p[nz] * np.log(p[nz])).sum())


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """``KL(p || q)`` in nats for vectors of shape (K,); ``inf`` if ``p`` puts mass where ``q`` has none."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    nz = p > 0
    if np.any(q[nz] <= 0):
        return float("inf")
    return float((p[nz] * (np.log(p[nz]) - np.log(q[nz]))).sum())


@dataclass(frozen=True)
class MixingReport:
    """Chosen weights against natural shares, with tokens, epochs and diversity summaries.

    Arrays have shape (K,). ``tokens``, ``allocated_tokens`` and ``epochs`` are None when no
    tokens were given; ``epochs`` is ``inf`` where a cluster with no tokens gets weight.
    """

    natural_share: np.ndarray
    weights: np.ndarray
    entropy: float
    effective_domains: float
    kl_to_natural: float
    temperature: float
    gis_strength: float
    excluded: np.ndarray
    tokens: np.ndarray | None = None
    budget: float | None = None
    max_epochs: float | None = None
    allocated_tokens: np.ndarray | None = None
    epochs: np.ndarray | None = None
    labels: Sequence[str] | None = field(default=None)

    def to_frame(self) -> pd.DataFrame:
        """One row per cluster: share, weight, tokens, allocated tokens, epochs, excluded."""
        n = self.weights.size
        frame = pd.DataFrame(
            {
                "cluster": np.arange(n),
                "label": list(self.labels) if self.labels is not None else [""] * n,
                "natural_share": self.natural_share,
                "weight": self.weights,
                "excluded": self.excluded,
            }
        )
        if self.tokens is not None:
            frame["tokens"] = self.tokens
            frame["allocated_tokens"] = self.allocated_tokens
            frame["epochs"] = self.epochs
        return frame

    def summary(self) -> dict:
        """Scalars as a JSON-ready dict (entropy, exp(entropy), KL, parameters)."""
        return {
            "entropy": self.entropy,
            "effective_domains": self.effective_domains,
            "kl_to_natural": self.kl_to_natural,
            "temperature": self.temperature,
            "gis_strength": self.gis_strength,
            "budget": self.budget,
            "max_epochs": self.max_epochs,
        }


def mixing_report(rho, *, labels: Sequence[str] | None = None, **kwargs) -> MixingReport:
    """Compute :func:`mixture_weights` and summarise it; keyword arguments as there."""
    weights = mixture_weights(rho, **kwargs)
    shares = _natural_shares(rho)
    n = shares.size
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries, expected {n}")
    m = _cluster_multipliers(kwargs.get("multipliers"), kwargs.get("exclude", ()), n)
    tokens = kwargs.get("tokens")
    budget = kwargs.get("budget")
    allocated = epochs = None
    if tokens is not None:
        tokens = _as_vector(tokens, "tokens", n)
        budget = float(tokens.sum()) if budget is None else float(budget)
        allocated = weights * budget
        with np.errstate(divide="ignore", invalid="ignore"):
            epochs = np.where(allocated > 0, allocated / tokens, 0.0)
    h = entropy(weights)
    return MixingReport(
        natural_share=shares,
        weights=weights,
        entropy=h,
        effective_domains=float(np.exp(h)),
        kl_to_natural=kl_divergence(weights, shares),
        temperature=float(kwargs.get("temperature", 1.0)),
        gis_strength=float(kwargs.get("gis_strength", 0.0)),
        excluded=m == 0,
        tokens=tokens,
        budget=budget,
        max_epochs=kwargs.get("max_epochs"),
        allocated_tokens=allocated,
        epochs=epochs,
        labels=labels,
    )


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
    p = _natural_shares(prior)
    if int(n_candidates) != n_candidates or n_candidates < 1:
        raise ValueError(f"n_candidates must be a positive integer, got {n_candidates}")
    if not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    if not 0 < min_strength <= max_strength or not np.isfinite(max_strength):
        raise ValueError(
            f"need 0 < min_strength <= max_strength, got {min_strength} and {max_strength}"
        )
    if n_strengths < 1:
        raise ValueError(f"n_strengths must be >= 1, got {n_strengths}")
    support = np.flatnonzero(p > 0)
    if not 0 <= min_weight < 1.0 / support.size:
        raise ValueError(
            f"min_weight must be in [0, 1/{support.size}) for {support.size} populated clusters, "
            f"got {min_weight}"
        )
    bound = np.ones(p.size)
    if max_usage is not None:
        if not np.isfinite(max_usage) or max_usage <= 0:
            raise ValueError(f"max_usage must be a finite number > 0, got {max_usage}")
        if tokens is None:
            if budget is not None:
                raise ValueError("budget needs tokens (tokens per cluster)")
            bound = np.minimum(1.0, max_usage * p)
        else:
            caps, _ = _epoch_caps(tokens, max_usage, budget, p.size)
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
    w = _natural_shares(weights)
    excess = _as_vector(excess_losses, "excess_losses", w.size)
    if not np.isfinite(step_size) or step_size <= 0:
        raise ValueError(f"step_size must be a finite number > 0, got {step_size}")
    if not 0 <= smoothing <= 1:
        raise ValueError(f"smoothing must be in [0, 1], got {smoothing}")
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
