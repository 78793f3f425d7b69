"""Mixtures that Mix & Export starts from, besides the entropy temperature (no Streamlit here).

A :class:`BaseMixture` is a weight per domain chosen elsewhere: a study's recommended mixture
(Evaluate's "use this mixture") or a named mixture saved in the workspace. Mix & Export shows
it, lets the curator's per-domain multipliers, exclusions, epoch cap and budget act on it, and
exports it, through the same rule as every other mixture
(:func:`gem_app.export.domains.mix_domains`): with temperature 1 and no GIS tilt, the weights
are ``w_k ∝ natural_k * m_k`` under the caps, so the multipliers ``m_k = base_k / natural_k``
reproduce the base mixture exactly, and a curator factor ``f_k`` multiplies them.

A :class:`MixtureComparison` lines up several saved mixture documents over the same domains
(Mix & Export's "Compare saved mixtures", drawn by :func:`gem_app.viz.mixtures.mixtures_figure`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gem_app.export.domains import DomainSet, mix_domains
from gem_app.mixing.weights import MixingReport
from gem_app.utils.information import entropy, kl_divergence

__all__ = [
    "BaseMixture",
    "MixtureComparison",
    "base_from_document",
    "compare_documents",
    "mix_from_base",
    "saved_base",
]


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


def saved_base(doc: Mapping, name: str, *, fit: str, folder) -> BaseMixture:
    """A saved mixture document as a :class:`BaseMixture` of ``fit`` when it was saved from it.

    A mixture document names the assignments file of its run; when that file lies in
    ``folder`` (the run folder of ``fit``) the mixture is ``fit``'s, else it belongs to the fit
    whose folder holds it (and :meth:`BaseMixture.mismatch` will say so).
    """
    saved_from = Path(str(doc["assignments"]["path"])).parent
    owner = fit if saved_from == Path(folder).resolve() else saved_from.name
    return base_from_document(owner, doc, f"saved: {name}")


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


@dataclass(frozen=True)
class MixtureComparison:
    """Named mixtures over the same domains, with the numbers that tell them apart.

    Attributes
    ----------
    names : tuple of str, length M
    ids, labels : tuple of str, length D
        Domain ids and labels, in the first mixture's order.
    natural : ndarray of shape (D,)
        The domains' natural (token) shares, from the first mixture.
    weights : ndarray of shape (M, D)
    entropy, effective_domains, kl_to_natural : ndarray of shape (M,)
        ``H(w)``, ``exp H(w)`` and ``KL(w ‖ natural)`` in nats, recomputed from the weights.
    largest_epochs : ndarray of shape (M,)
        The most epochs of any domain at the mixture's budget (as saved).
    epoch_cap : ndarray of shape (M,)
        The mixture's epoch cap, NaN where it has none.
    budget : ndarray of shape (M,)
        Training tokens the weights are scaled to.
    """

    names: tuple
    ids: tuple
    labels: tuple
    natural: np.ndarray
    weights: np.ndarray
    entropy: np.ndarray
    effective_domains: np.ndarray
    kl_to_natural: np.ndarray
    largest_epochs: np.ndarray
    epoch_cap: np.ndarray
    budget: np.ndarray

    def figure_arguments(self) -> dict:
        """Keyword arguments of :func:`gem_app.viz.mixtures.mixtures_figure`."""
        return {
            "names": self.names,
            "domains": [
                f"{i}: {label[:16]}" for i, label in zip(self.ids, self.labels, strict=True)
            ],
            "weights": self.weights,
            "natural": self.natural,
            "entropy": self.entropy,
            "effective_domains": self.effective_domains,
            "kl_to_natural": self.kl_to_natural,
            "largest_epochs": self.largest_epochs,
            "epoch_cap": self.epoch_cap,
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per mixture: its summary numbers, then its weight per domain (columns by id)."""
        frame = pd.DataFrame(
            {
                "mixture": list(self.names),
                "entropy": self.entropy,
                "effective_domains": self.effective_domains,
                "kl_to_natural": self.kl_to_natural,
                "largest_epochs": self.largest_epochs,
                "epoch_cap": self.epoch_cap,
                "budget": self.budget,
            }
        )
        weights = pd.DataFrame(self.weights, columns=[f"w[{i}]" for i in self.ids])
        return pd.concat([frame, weights], axis=1)


def compare_documents(documents: Mapping) -> MixtureComparison:
    """Line up named mixture documents (validated, e.g. saved ones) over the same domains.

    Parameters
    ----------
    documents : mapping {name: mixture document}
        At least one; all over the same domain source and the same domain ids (any order).

    Returns
    -------
    MixtureComparison

    Raises
    ------
    ValueError
        No documents, or one whose domains differ from the first's (named).
    """
    if not documents:
        raise ValueError("choose at least one saved mixture to compare")
    names = [str(n) for n in documents]
    docs = list(documents.values())
    first = docs[0]
    ids = tuple(str(d["id"]) for d in first["domains"])
    source = first["mixing"]["domain_source"]
    weights, natural_m, epochs = [], [], []
    for name, doc in zip(names, docs, strict=True):
        by_id = {str(d["id"]): d for d in doc["domains"]}
        if doc["mixing"]["domain_source"] != source or sorted(by_id) != sorted(ids):
            raise ValueError(
                f"mixture {name!r} is over other domains than {names[0]!r} "
                f"({doc['mixing']['domain_source']}, {len(by_id)} domains against {source}, "
                f"{len(ids)}): compare mixtures of the same fit and taxonomy"
            )
        weights.append([float(by_id[i]["weight"]) for i in ids])
        natural_m.append([float(by_id[i]["natural_share"]) for i in ids])
        epochs.append(max(float(by_id[i]["epochs"]) for i in ids))
    weights = np.asarray(weights)
    natural_m = np.asarray(natural_m)
    h = np.array([entropy(w) for w in weights])
    cap = [doc["mixing"]["max_epochs"] for doc in docs]
    return MixtureComparison(
        names=tuple(names),
        ids=ids,
        labels=tuple(str(d["label"]) for d in first["domains"]),
        natural=natural_m[0],
        weights=weights,
        entropy=h,
        effective_domains=np.exp(h),
        kl_to_natural=np.array(
            [kl_divergence(w, nat) for w, nat in zip(weights, natural_m, strict=True)]
        ),
        largest_epochs=np.asarray(epochs),
        epoch_cap=np.array([np.nan if c is None else float(c) for c in cap]),
        budget=np.array([float(doc["mixing"]["budget"]) for doc in docs]),
    )
