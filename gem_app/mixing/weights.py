"""Mixing weights with an entropy temperature (METHOD.md section 6).

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

The maths is pure numpy float64 and reads no files. RegMix candidates and the DoReMi
update live in :mod:`gem_app.mixing.strategies`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from gem_app.utils.information import entropy, kl_divergence
from gem_app.utils.validation import check_real

__all__ = [
    "MixingReport",
    "check_vector",
    "epoch_caps",
    "mixing_report",
    "mixture_weights",
    "natural_shares",
]

_CAP_FEASIBILITY_SLACK = 1e-12


# ----------------------------------------------------------------------------- validation
def check_vector(values, name: str, size: int | None = None) -> np.ndarray:
    """``values`` as a finite float64 vector of shape (size,); ValueError naming the bad entry."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if size is not None and arr.shape[0] != size:
        raise ValueError(f"{name} has {arr.shape[0]} entries, expected {size} (one per cluster)")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{name} is not finite at cluster {int(bad[0])} (value {arr[bad[0]]})")
    return arr


def natural_shares(rho) -> np.ndarray:
    """Non-negative masses of shape (K,) normalised to sum 1 (ValueError naming a bad cluster)."""
    rho = check_vector(rho, "rho")
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


def epoch_caps(tokens, max_epochs, budget, n_clusters: int) -> tuple[np.ndarray, float | None]:
    """Caps c_k = E tokens_k / B (inf when no max_epochs) and the budget used."""
    if tokens is None:
        if max_epochs is not None:
            raise ValueError("max_epochs needs tokens (tokens per cluster) to set the caps")
        if budget is not None:
            check_real(budget, "budget", minimum=0, exclusive_minimum=True)
        return np.full(n_clusters, np.inf), budget
    tokens = check_vector(tokens, "tokens", n_clusters)
    negative = np.flatnonzero(tokens < 0)
    if negative.size:
        k = int(negative[0])
        raise ValueError(f"tokens is negative at cluster {k} (value {tokens[k]})")
    if budget is None:
        budget = float(tokens.sum())
    check_real(budget, "budget", minimum=0, exclusive_minimum=True)
    if max_epochs is None:
        return np.full(n_clusters, np.inf), float(budget)
    check_real(max_epochs, "max_epochs", minimum=0, exclusive_minimum=True)
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
    check_real(temperature, "temperature", minimum=0, exclusive_minimum=True)
    check_real(gis_strength, "gis_strength")
    shares = natural_shares(rho)
    n_clusters = shares.size
    m = _cluster_multipliers(multipliers, exclude, n_clusters)
    caps, budget = epoch_caps(tokens, max_epochs, budget, n_clusters)
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
        z = _standardise(check_vector(gis, "gis", n_clusters), populated)
        utility = utility + gis_strength * z[active]
    weights = np.zeros(n_clusters)
    weights[active] = _capped_softmax(utility / temperature, caps[active])
    return weights


@dataclass(frozen=True)
class MixingReport:
    """Chosen weights against natural shares, with tokens, epochs and diversity summaries.

    Arrays have shape (K,). ``tokens``, ``allocated_tokens`` and ``epochs`` are None when no
    tokens were given; ``epochs`` is ``inf`` where a cluster with no tokens gets weight.
    ``multipliers`` are the curator multipliers ``m_k`` (0 for excluded clusters).
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
    multipliers: np.ndarray | None = None

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
    shares = natural_shares(rho)
    n = shares.size
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries, expected {n}")
    m = _cluster_multipliers(kwargs.get("multipliers"), kwargs.get("exclude", ()), n)
    tokens = kwargs.get("tokens")
    budget = kwargs.get("budget")
    allocated = epochs = None
    if tokens is not None:
        tokens = check_vector(tokens, "tokens", n)
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
        multipliers=m,
    )
