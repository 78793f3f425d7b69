"""The domains of a mixture: level-1 GEM clusters or taxonomy leaves, and their weights.

A :class:`DomainSet` lists the domains in domain order (each with a stable, safe slug used
in every export format) and the domain of every document of the run. :func:`mix_domains`
computes the entropy-temperature weights over them with :func:`gem_app.mixing.weights.mixing_report`,
translating curator edits given by domain id (``--exclude 3,7``, ``--boost 2=1.5``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gem_app.core.gis import compute_gis
from gem_app.evaluate.compare import contingency_table, top_categories
from gem_app.mixing.weights import MixingReport, mixing_report
from gem_app.taxonomy.labels import LabelSet, cluster_labels
from gem_app.taxonomy.tree import TAXONOMY_FILE, Taxonomy

__all__ = [
    "Domain",
    "DomainSet",
    "cluster_domains",
    "domain_slug",
    "domains_from_run",
    "mix_domains",
    "run_taxonomy",
]


@dataclass
class Domain:
    """One domain of a mixture: a level-1 cluster or a taxonomy leaf.

    Attributes
    ----------
    id : str
        ``"k"`` for level-1 cluster k, ``"k.j"`` for a taxonomy child.
    name : str
        Stable, safe slug (``gem_03_linux-kernel``) used in every format and shard name.
    label : str
    terms : list of str
    parent : str or None
    level : int
    documents, tokens : int
        Documents (hard-assigned) and their tokens.
    gis : float
        Geometric Influence Score in nats.
    excluded : bool
        Excluded in the taxonomy (weight 0 in every mixture).
    top_categories : list of [str, float]
        Most frequent human categories with their token share in the domain.
    """

    id: str
    name: str
    label: str
    terms: list[str]
    parent: str | None
    level: int
    documents: int
    tokens: int
    gis: float
    excluded: bool = False
    top_categories: list = field(default_factory=list)


@dataclass
class DomainSet:
    """The domains of a run, in domain order, and the domain of every document.

    Attributes
    ----------
    domains : list of Domain
    document_domain : ndarray of shape (n_documents,), int64
        Index into ``domains`` of each document, aligned with the run's assignments.
    source : {"clusters", "taxonomy"}
    """

    domains: list[Domain]
    document_domain: np.ndarray
    source: str = "clusters"

    def __len__(self) -> int:
        return len(self.domains)

    @property
    def ids(self) -> list[str]:
        """Domain ids, in domain order."""
        return [d.id for d in self.domains]

    @property
    def tokens(self) -> np.ndarray:
        """Tokens per domain, shape (n_domains,), float64."""
        return np.array([d.tokens for d in self.domains], dtype=np.float64)

    @property
    def natural_shares(self) -> np.ndarray:
        """Token share of each domain, shape (n_domains,)."""
        tokens = self.tokens
        total = tokens.sum()
        return tokens / total if total > 0 else np.full(len(tokens), 1.0 / max(len(tokens), 1))

    @property
    def gis(self) -> np.ndarray:
        """GIS per domain, shape (n_domains,)."""
        return np.array([d.gis for d in self.domains], dtype=np.float64)

    def index(self, domain_id, where: str = "domain ids") -> int:
        """Position of a domain id (``3``, ``"3"`` or ``"3.1"``); ValueError if unknown."""
        key = str(domain_id).strip()
        for position, domain in enumerate(self.domains):
            if domain.id == key:
                return position
        shown = ", ".join(self.ids[:20]) + (", ..." if len(self.domains) > 20 else "")
        raise ValueError(f"unknown domain id {key!r} in {where}: the domains are {shown}")


# ----------------------------------------------------------------------------- domains
_SLUG_BAD = re.compile(r"[^a-z0-9]+")


def domain_slug(domain_id: str, label: str = "", *, width: int = 2, max_label: int = 40) -> str:
    """A stable, filesystem- and config-safe name for a domain.

    ``domain_slug("3", "Linux kernel", width=2) == "gem_03_linux-kernel"`` (accents are
    dropped: ``"Ünïcode"`` gives ``unicode``); a taxonomy
    child ``"3.1"`` gives ``"gem_03-01_..."``. Each id component is zero-padded to
    ``width`` digits, so the names sort in domain order and are unique when the ids are.

    Parameters
    ----------
    domain_id : str
        Dot-separated non-negative integers.
    label : str
        Human label; lower-cased, non-alphanumerics collapsed to ``-``, cut at ``max_label``.
    width : int
        Digits per id component.
    """
    parts = str(domain_id).split(".")
    if not all(part.isdigit() for part in parts):
        raise ValueError(
            f"domain id {domain_id!r} is not dot-separated integers (like '3' or '3.1')"
        )
    head = "gem_" + "-".join(part.zfill(width) for part in parts)
    ascii_label = unicodedata.normalize("NFKD", str(label)).encode("ascii", "ignore").decode()
    tail = _SLUG_BAD.sub("-", ascii_label.lower()).strip("-")[:max_label].strip("-")
    return f"{head}_{tail}" if tail else head


def _slug_width(ids: Iterable[str]) -> int:
    longest = max((len(part) for i in ids for part in str(i).split(".")), default=1)
    return max(2, longest)


def run_taxonomy(run):
    """The run folder's taxonomy (:class:`gem_app.taxonomy.tree.Taxonomy`), or None when it has none.

    ``run`` is a :class:`gem_app.storage.runs.FitRun` or a run folder.
    """
    folder = Path(getattr(run, "folder", run))
    if not (folder / TAXONOMY_FILE).is_file():
        return None
    return Taxonomy.load(folder)


def _group_categories(human, tokens: np.ndarray, groups: np.ndarray, n: int, top: int = 3):
    """Per group 0..n-1, its ``top`` human categories by token share (empty without labels)."""
    if human is None:
        return [[] for _ in range(n)]
    table = contingency_table(human, groups, tokens)
    return [top_categories(table[g], top) if g in table.columns else [] for g in range(n)]


def domains_from_run(run, taxonomy=None, *, n_terms: int = 8) -> DomainSet:
    """The domains of a fitted run: the taxonomy's leaves, or the level-1 clusters.

    Parameters
    ----------
    run : gem_app.storage.runs.FitRun
    taxonomy : gem_app.taxonomy.tree.Taxonomy, optional
        With a taxonomy, every leaf is a domain (excluded leaves included and flagged, so
        that every document has a domain); without one, each level-1 cluster is a domain,
        labelled by its top GIS terms (:func:`gem_app.taxonomy.labels.cluster_labels`) and scored
        with its cluster GIS (:func:`gem_app.core.gis.compute_gis`).
    n_terms : int
        Terms per cluster label (clusters only).

    Returns
    -------
    DomainSet
        ``document_domain`` is aligned with ``run.assignments``.
    """
    assignments = run.assignments
    tokens = assignments["tokens"].to_numpy(dtype=np.float64)
    human = assignments["label"] if "label" in assignments else None
    if taxonomy is not None:
        return _taxonomy_domains(taxonomy, tokens, human)
    model = run.model
    q = run.proba()
    rho = np.asarray(model.cluster_masses_, dtype=np.float64)
    gis = compute_gis(q, rho / rho.sum(), tokens).cluster
    labels = cluster_labels(
        run.frame["text"].tolist(),
        q,
        rho,
        tokens,
        n_terms=n_terms,
        n_docs=1,
        min_df=1 if len(run.frame) < 50 else 2,
    )
    return cluster_domains(run, labels, gis)


def cluster_domains(run, labels: LabelSet, cluster_gis) -> DomainSet:
    """The level-1 clusters of a run as domains, from their labels and cluster GIS.

    Parameters
    ----------
    run : gem_app.storage.runs.FitRun
    labels : LabelSet
        One label per cluster (:func:`gem_app.taxonomy.labels.cluster_labels`).
    cluster_gis : array-like of shape (K,)
        ``G_k`` in nats.

    Returns
    -------
    DomainSet
        ``document_domain`` is the run's hard cluster of each document.
    """
    assignments = run.assignments
    tokens = assignments["tokens"].to_numpy(dtype=np.float64)
    human = assignments["label"] if "label" in assignments else None
    n_clusters = int(run.model.n_clusters)
    cluster = assignments["cluster"].to_numpy(dtype=np.int64)
    documents = np.bincount(cluster, minlength=n_clusters)
    cluster_tokens = np.bincount(cluster, weights=tokens, minlength=n_clusters)
    top = _group_categories(human, tokens, cluster, n_clusters)
    ids = [str(k) for k in range(n_clusters)]
    width = _slug_width(ids)
    domains = [
        Domain(
            id=ids[k],
            name=domain_slug(ids[k], labels[k].label, width=width),
            label=labels[k].label,
            terms=list(labels[k].terms),
            parent=None,
            level=1,
            documents=int(documents[k]),
            tokens=int(round(cluster_tokens[k])),
            gis=float(cluster_gis[k]),
            top_categories=top[k],
        )
        for k in range(n_clusters)
    ]
    return DomainSet(domains, cluster, "clusters")


def _taxonomy_domains(taxonomy, tokens: np.ndarray, human) -> DomainSet:
    leaves = list(taxonomy.leaves())
    position = {str(node.id): i for i, node in enumerate(leaves)}
    leaf_of = np.asarray(taxonomy.document_leaf).astype(str)
    if leaf_of.shape[0] != tokens.shape[0]:
        raise ValueError(
            f"the taxonomy assigns {leaf_of.shape[0]} documents but the run has {tokens.shape[0]}"
        )
    codes = pd.Series(leaf_of).map(position)
    if codes.isna().any():
        row = int(np.flatnonzero(codes.isna().to_numpy())[0])
        raise ValueError(f"document row {row} is assigned to {leaf_of[row]!r}, which is not a leaf")
    document_domain = codes.to_numpy(dtype=np.int64)
    n = len(leaves)
    documents = np.bincount(document_domain, minlength=n)
    leaf_tokens = np.bincount(document_domain, weights=tokens, minlength=n)
    computed = _group_categories(human, tokens, document_domain, n)
    width = _slug_width(position)
    domains = []
    for i, node in enumerate(leaves):
        top = [[str(c), float(s)] for c, s in (getattr(node, "top_categories", None) or [])]
        parent = getattr(node, "parent", None)
        domains.append(
            Domain(
                id=str(node.id),
                name=domain_slug(str(node.id), node.label, width=width),
                label=str(node.label),
                terms=[str(t) for t in node.terms],
                parent=None if parent in (None, "root") else str(parent),
                level=int(node.level),
                documents=int(documents[i]),
                tokens=int(round(leaf_tokens[i])),
                gis=float(node.gis),
                excluded=bool(node.excluded),
                top_categories=top or computed[i],
            )
        )
    return DomainSet(domains, document_domain, "taxonomy")


# ----------------------------------------------------------------------------- mixing
def mix_domains(
    domains: DomainSet,
    *,
    temperature: float = 1.0,
    gis_strength: float = 0.0,
    max_epochs: float | None = None,
    budget: float | None = None,
    exclude: Iterable = (),
    boost: Mapping | None = None,
) -> MixingReport:
    """Entropy-temperature weights over the domains (:func:`gem_app.mixing.weights.mixing_report`).

    Parameters
    ----------
    domains : DomainSet
    temperature : float
        ``tau > 0``.
    gis_strength : float
        ``beta``; the domains' GIS tilt the utilities.
    max_epochs, budget : float, optional
        Epoch cap ``E`` and training tokens ``B`` (default: the corpus' tokens).
    exclude : iterable of domain ids
        Domains given weight 0 (taxonomy-excluded leaves are always excluded).
    boost : mapping {domain id: factor >= 0}, optional
        Curator multipliers ``m_k``.

    Returns
    -------
    gem_app.mixing.weights.MixingReport
        Arrays in domain order, ``labels`` the domain names.

    Raises
    ------
    ValueError
        Unknown domain ids, negative or non-finite factors, everything excluded, bad tau.
    """
    n = len(domains)
    multipliers = np.ones(n)
    for key, factor in dict(boost or {}).items():
        try:
            value = float(factor)
        except (TypeError, ValueError):
            raise ValueError(
                f"boost factor of domain {key!r} is not a number: {factor!r}"
            ) from None
        if not np.isfinite(value) or value < 0:
            raise ValueError(
                f"boost factor of domain {key!r} must be finite and >= 0, got {factor!r}"
            )
        multipliers[domains.index(key, "boost")] = value
    excluded = [domains.index(key, "exclude") for key in exclude]
    excluded += [i for i, d in enumerate(domains.domains) if d.excluded]
    return mixing_report(
        domains.tokens,
        labels=[d.name for d in domains.domains],
        temperature=temperature,
        gis=domains.gis,
        gis_strength=gis_strength,
        multipliers=multipliers,
        exclude=sorted(set(excluded)),
        tokens=domains.tokens,
        max_epochs=max_epochs,
        budget=budget,
    )
