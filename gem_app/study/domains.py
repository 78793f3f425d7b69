"""The domains a study mixes: GEM clusters, taxonomy leaves, or the run's human categories.

Clusters and taxonomy leaves come from :func:`gem_app.export.domains.domains_from_run`, so the
recommended mixture is a mixture document over the very domains ``gem export`` writes. Human
categories (``--domains labels``) are the run's label column with the smallest categories
merged into ``other`` so that there are as many domains as the run has clusters: GEM domains and
human domains can then be compared at the same count, on the same held-out text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from gem_app.evaluate.compare import MISSING
from gem_app.export.domains import DomainSet, domain_slug, domains_from_run, run_taxonomy

__all__ = ["OTHER", "StudyDomains", "study_domains", "document_categories", "merge_categories"]

#: The merged category of ``--domains labels``.
OTHER = "other"


@dataclass
class StudyDomains:
    """Domains of a study, in domain order.

    Attributes
    ----------
    ids : list of str
        ``"k"`` / ``"k.j"`` for clusters and taxonomy leaves, ``"k"`` for label domains.
    names : list of str
        Safe slugs (the domain names of exports and of ``study.json``).
    labels : list of str
        Human-readable labels.
    document_domain : ndarray of shape (n_documents,), int64
        Domain of every document of the run (aligned with its assignments).
    excluded : ndarray of bool, shape (K,)
        Domains that must keep weight 0 (excluded taxonomy leaves).
    source : {"clusters", "taxonomy", "labels"}
    domain_set : DomainSet or None
        The export's domains (None for label domains).
    """

    ids: list[str]
    names: list[str]
    labels: list[str]
    document_domain: np.ndarray
    excluded: np.ndarray
    source: str
    domain_set: DomainSet | None = None

    def __len__(self) -> int:
        return len(self.ids)


def document_categories(run) -> pd.Series | None:
    """The human category of every document of the run as strings, or None without labels.

    Missing values (None, NaN, blank) become ``"(missing)"``.
    """
    assignments = run.assignments
    if "label" not in assignments:
        return None
    raw = assignments["label"].astype(object)
    text = raw.where(raw.notna(), MISSING).astype(str).str.strip()
    return text.where(text != "", MISSING).reset_index(drop=True)


def merge_categories(categories, tokens, n_domains: int) -> tuple[list[str], np.ndarray]:
    """The ``n_domains - 1`` largest categories by tokens, the rest merged into ``other``.

    Parameters
    ----------
    categories : array-like of str, shape (n,)
    tokens : array-like of shape (n,)
    n_domains : int
        At least 2. With at most ``n_domains`` categories, each is its own domain.

    Returns
    -------
    names : list of str
        Category of each domain, largest first (``other`` last).
    document_domain : ndarray of shape (n,), int64
    """
    if n_domains < 2:
        raise ValueError(f"need at least 2 label domains, got {n_domains}")
    frame = pd.DataFrame({"c": np.asarray(categories).astype(str), "t": np.asarray(tokens, float)})
    totals = frame.groupby("c")["t"].sum()
    order = sorted(totals.index, key=lambda c: (-totals[c], c))
    if len(order) <= n_domains:
        kept = order
        merged = []
    else:
        kept = order[: n_domains - 1]
        merged = order[n_domains - 1 :]
    position = {c: i for i, c in enumerate(kept)}
    names = list(kept)
    if merged:
        label = OTHER if OTHER not in position else f"{OTHER} (merged)"
        for c in merged:
            position[c] = len(kept)
        names.append(label)
    return names, frame["c"].map(position).to_numpy(dtype=np.int64)


def study_domains(run, source: str = "clusters", *, n_label_domains: int | None = None):
    """The domains of ``run`` for a study.

    Parameters
    ----------
    run : gem_app.storage.runs.FitRun
    source : {"clusters", "taxonomy", "labels"}
    n_label_domains : int, optional
        Label domains (default: the run's number of clusters).

    Raises
    ------
    ValueError
        ``taxonomy`` without a taxonomy.json, ``labels`` without a label column.
    """
    if source in ("clusters", "taxonomy"):
        taxonomy = None
        if source == "taxonomy":
            taxonomy = run_taxonomy(run)
            if taxonomy is None:
                raise ValueError(
                    f"{run.folder} has no taxonomy.json: build one with `gem taxonomy` or use "
                    "--domains clusters"
                )
        domain_set = domains_from_run(run, taxonomy)
        return StudyDomains(
            ids=list(domain_set.ids),
            names=[d.name for d in domain_set.domains],
            labels=[d.label for d in domain_set.domains],
            document_domain=np.asarray(domain_set.document_domain, dtype=np.int64),
            excluded=np.array([d.excluded for d in domain_set.domains], dtype=bool),
            source=source,
            domain_set=domain_set,
        )
    if source != "labels":
        raise ValueError(f"unknown domains {source!r}: expected clusters, taxonomy or labels")
    categories = document_categories(run)
    if categories is None:
        raise ValueError(
            f"{run.folder} has no human label column: fit with --label-col to use --domains labels"
        )
    n = int(n_label_domains or run.model.n_clusters)
    names, document_domain = merge_categories(
        categories, run.assignments["tokens"].to_numpy(dtype=np.float64), max(2, n)
    )
    ids = [str(i) for i in range(len(names))]
    width = max(2, len(str(len(names) - 1)))
    slugs = ["label" + domain_slug(i, c, width=width)[3:] for i, c in zip(ids, names, strict=True)]
    return StudyDomains(
        ids=ids,
        names=slugs,
        labels=names,
        document_domain=document_domain,
        excluded=np.zeros(len(names), dtype=bool),
        source="labels",
    )
