"""Mixtures that Mix & Export starts from, besides the entropy temperature (no Streamlit here).

A :class:`BaseMixture` is a weight per domain chosen elsewhere: a study's recommended mixture
(Evaluate's "use this mixture") or a named mixture saved in the workspace. Mix & Export shows
it, lets the curator's per-domain multipliers, exclusions, epoch cap and budget act on it, and
exports it, through the same rule as every other mixture
(:func:`gem_app.export.domains.mix_domains`): with temperature 1 and no GIS tilt, the weights
are ``w_k ∝ natural_k * m_k`` under the caps, so the multipliers ``m_k = base_k / natural_k``
reproduce the base mixture exactly, and a curator factor ``f_k`` multiplies them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from gem_app.export.domains import DomainSet, mix_domains
from gem_app.mixing.weights import MixingReport

__all__ = ["BaseMixture", "base_from_document", "mix_from_base"]


@dataclass(frozen=True)
class BaseMixture:
    """Weights over the domains of one fit, to start Mix & Export from.

    Attributes
    ----------
    fit : str
        The fit's name.
    source : {"clusters", "taxonomy"}
        What the domains are.
    ids : tuple of str
        Domain ids, in the order of ``weights``.
    weights : ndarray of shape (n_domains,)
    label : str
        Where the mixture comes from ("study s1: recommended").
    """

    fit: str
    source: str
    ids: tuple
    weights: np.ndarray
    label: str

    def mismatch(self, fit: str, domains: DomainSet) -> str | None:
        """Why this mixture does not apply to ``domains`` of ``fit`` (None when it does)."""
        if fit != self.fit:
            return f"it was chosen for the fit {self.fit!r}"
        if domains.source != self.source:
            return f"it is over {self.source}, and the domains are now {domains.source}"
        if sorted(domains.ids) != sorted(self.ids):
            return "its domains differ from the current ones (the taxonomy changed)"
        return None

    def weights_for(self, domains: DomainSet) -> np.ndarray:
        """The weights in ``domains`` order (after :meth:`mismatch` returned None)."""
        by_id = dict(zip(self.ids, self.weights, strict=True))
        return np.array([by_id[i] for i in domains.ids], dtype=np.float64)


def base_from_document(fit: str, doc: Mapping, label: str) -> BaseMixture:
    """A :class:`BaseMixture` from a mixture document (``recommended.json``, a saved mixture)."""
    entries = doc["domains"]
    return BaseMixture(
        fit=fit,
        source=str(doc["mixing"]["domain_source"]),
        ids=tuple(str(d["id"]) for d in entries),
        weights=np.array([float(d["weight"]) for d in entries], dtype=np.float64),
        label=label,
    )


def mix_from_base(
    domains: DomainSet,
    base,
    *,
    boost: Mapping | None = None,
    exclude: Iterable = (),
    max_epochs: float | None = None,
    budget: float | None = None,
) -> MixingReport:
    """The mixing report of fixed base weights, with curator factors, exclusions and caps.

    Parameters
    ----------
    domains : DomainSet
    base : array-like of shape (n_domains,)
        Base weights (>= 0, not all 0), in domain order.
    boost : mapping {domain id: factor >= 0}, optional
        Curator factors on top of the base.
    exclude : iterable of domain ids
    max_epochs, budget : float, optional
        As in :func:`gem_app.export.domains.mix_domains`.

    Returns
    -------
    MixingReport
        ``weights`` equal to the normalised base when no factor, exclusion or cap acts.
    """
    base = np.asarray(base, dtype=np.float64)
    if base.shape != (len(domains),):
        raise ValueError(f"base weights have shape {base.shape}, expected ({len(domains)},)")
    if not np.all(np.isfinite(base)) or np.any(base < 0) or not base.sum() > 0:
        raise ValueError("base weights must be finite, >= 0 and not all 0")
    natural = domains.natural_shares
    ratio = np.divide(base, natural, out=np.zeros_like(base), where=natural > 0)
    factors = dict(boost or {})
    multipliers = {
        d: float(r) * float(factors.get(d, 1.0)) for d, r in zip(domains.ids, ratio, strict=True)
    }
    return mix_domains(
        domains,
        temperature=1.0,
        gis_strength=0.0,
        max_epochs=max_epochs,
        budget=budget,
        exclude=exclude,
        boost=multipliers,
    )
