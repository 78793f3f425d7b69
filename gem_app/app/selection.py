"""A selection on the Map, and the cluster exclusions and boosts it sends to Mix & Export.

The 2D map's points carry ``customdata = [row, cluster]`` (:mod:`gem_app.viz.maps`); a box,
lasso or click selection comes back from the browser as Plotly's selection event, and
:func:`selected_rows` reads the document rows out of it. :func:`selection_breakdown` counts
the selected documents per cluster and per human category for the Map's panel.

"Exclude these clusters" / "boost these clusters" build a :class:`ClusterAdjustments` (kept
in the session under :data:`gem_app.app.session_keys.MAP_ADJUST`), which Mix & Export applies
to its per-domain editor through :func:`adjust_editor`. The domains are the clusters, or the
leaves of a taxonomy; a cluster acts on **the domains whose tokens it holds the majority
of** (``T_dk / T_d > 1/2``): with clusters as domains that is exactly the cluster, a leaf
split off a cluster follows its cluster, a merged node follows the adjustment only when its
clusters that carry it hold most of its tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gem_app.utils.validation import check_real

__all__ = [
    "ClusterAdjustments",
    "adjust_editor",
    "documents_frame",
    "domain_adjustments",
    "selected_rows",
    "selection_breakdown",
]


def selected_rows(event) -> np.ndarray:
    """Document rows of a Plotly selection event (``customdata[0]`` of each point), sorted, unique.

    Parameters
    ----------
    event : mapping or None
        What ``st.plotly_chart(..., on_select="rerun")`` returns:
        ``{"selection": {"points": [{"customdata": [row, cluster], ...}, ...], ...}}``.
        Points without customdata (the cluster labels, search stars) are ignored.

    Returns
    -------
    ndarray of int64, shape (n_selected,)
    """
    points = ((event or {}).get("selection") or {}).get("points") or []
    rows = [int(p["customdata"][0]) for p in points if p.get("customdata") is not None]
    return np.unique(np.asarray(rows, dtype=np.int64))


def selection_breakdown(rows, clusters, human=None, n_clusters: int | None = None):
    """Selected documents per cluster and per human category.

    Parameters
    ----------
    rows : array-like of int, shape (m,), the selected document rows
    clusters : ndarray of int, shape (N,), hard cluster of every document
    human : ndarray of str, shape (N,), optional
    n_clusters : int, optional (default ``clusters.max() + 1``)

    Returns
    -------
    by_cluster : DataFrame with columns cluster, selected, cluster_size, share_of_cluster
        (clusters with a selected document, most selected first)
    by_category : DataFrame with columns category, selected, share (None without ``human``)
    """
    rows = np.asarray(rows, dtype=np.int64)
    clusters = np.asarray(clusters, dtype=np.int64)
    K = int(clusters.max()) + 1 if n_clusters is None else int(n_clusters)
    picked = np.bincount(clusters[rows], minlength=K)
    sizes = np.bincount(clusters, minlength=K)
    present = np.flatnonzero(picked)
    order = present[np.argsort(-picked[present], kind="stable")]
    by_cluster = pd.DataFrame(
        {
            "cluster": order,
            "selected": picked[order],
            "cluster_size": sizes[order],
            "share_of_cluster": picked[order] / np.maximum(sizes[order], 1),
        }
    )
    by_category = None
    if human is not None:
        counts = pd.Series(np.asarray(human)[rows]).value_counts()
        by_category = pd.DataFrame(
            {
                "category": counts.index.astype(str),
                "selected": counts.to_numpy(),
                "share": counts.to_numpy() / max(len(rows), 1),
            }
        )
    return by_cluster, by_category


def documents_frame(frame, rows, clusters, q, *, cluster_names=None, similarity=None):
    """The listed documents of a selection or a search, one row each, in ``rows`` order.

    Parameters
    ----------
    frame : DataFrame, the run's documents (id, text, tokens, [label])
    rows : array-like of int, shape (m,)
    clusters : ndarray of int, shape (N,), hard cluster of every document
    q : ndarray of shape (N, K), soft assignments
    cluster_names : sequence of str, length K, optional (shown instead of the ids)
    similarity : array-like of shape (m,), optional (a search's cosine)

    Returns
    -------
    DataFrame with columns row, cluster, probability (``q[row, cluster]``), [similarity],
    and the frame's id, label, tokens, text
    """
    rows = np.asarray(rows, dtype=np.int64)
    k = np.asarray(clusters)[rows]
    out = frame.iloc[rows][[c for c in ("id", "label", "tokens", "text") if c in frame]]
    out = out.reset_index(drop=True)
    if similarity is not None:
        out.insert(0, "similarity", np.asarray(similarity, dtype=np.float64))
    out.insert(0, "probability", np.asarray(q[rows, k], dtype=np.float64))
    out.insert(0, "cluster", k if cluster_names is None else [cluster_names[c] for c in k])
    out.insert(0, "row", rows)
    return out


@dataclass(frozen=True)
class ClusterAdjustments:
    """Clusters of one fit to exclude or boost on Mix & Export (sent from the Map).

    Attributes
    ----------
    fit : str
    excluded : frozenset of int
    boosted : mapping {cluster: factor > 0}
    """

    fit: str
    excluded: frozenset = frozenset()
    boosted: Mapping = field(default_factory=dict)

    def excluding(self, clusters: Iterable[int]) -> ClusterAdjustments:
        """These clusters excluded too (an exclusion replaces a boost)."""
        out = self.excluded | {int(k) for k in clusters}
        return ClusterAdjustments(
            self.fit, frozenset(out), {k: f for k, f in self.boosted.items() if k not in out}
        )

    def boosting(self, clusters: Iterable[int], factor: float) -> ClusterAdjustments:
        """These clusters multiplied by ``factor`` (replacing an earlier factor or exclusion)."""
        factor = check_real(factor, "boost factor", minimum=0.0, exclusive_minimum=True)
        ids = {int(k) for k in clusters}
        return ClusterAdjustments(
            self.fit, self.excluded - ids, {**self.boosted, **dict.fromkeys(ids, float(factor))}
        )

    @property
    def empty(self) -> bool:
        return not self.excluded and not self.boosted

    @property
    def summary(self) -> str:
        """ "excluded clusters 3, 5; boosted 7 ×2" (for captions)."""
        parts = []
        if self.excluded:
            parts.append("excluded clusters " + ", ".join(map(str, sorted(self.excluded))))
        if self.boosted:
            parts.append(
                "boosted " + ", ".join(f"{k} ×{f:g}" for k, f in sorted(self.boosted.items()))
            )
        return "; ".join(parts) or "nothing"


def domain_adjustments(adjustments: ClusterAdjustments, domains, clusters, tokens):
    """The per-domain exclusions and factors of cluster adjustments (majority-of-tokens rule).

    Parameters
    ----------
    adjustments : ClusterAdjustments
    domains : gem_app.export.domains.DomainSet
    clusters : ndarray of int, shape (N,), hard cluster of every document
    tokens : ndarray of float, shape (N,)

    Returns
    -------
    exclude : list of domain ids
    boost : dict {domain id: factor}
    """
    clusters = np.asarray(clusters, dtype=np.int64)
    tokens = np.asarray(tokens, dtype=np.float64)
    domain = np.asarray(domains.document_domain, dtype=np.int64)
    if clusters.shape != domain.shape or tokens.shape != domain.shape:
        raise ValueError(
            f"clusters {clusters.shape}, tokens {tokens.shape} and the domains' documents "
            f"{domain.shape} must align"
        )
    D = len(domains.ids)
    K = int(clusters.max()) + 1 if clusters.size else 0
    table = np.bincount(domain * K + clusters, weights=tokens, minlength=D * K).reshape(D, K)
    totals = table.sum(axis=1)
    share = np.divide(table, totals[:, None], out=np.zeros_like(table), where=totals[:, None] > 0)
    exclude, boost = [], {}
    for d, domain_id in enumerate(domains.ids):
        if sum(share[d, k] for k in adjustments.excluded if k < K) > 0.5:
            exclude.append(domain_id)
            continue
        top = int(np.argmax(share[d])) if K else -1
        if top in adjustments.boosted and share[d, top] > 0.5:
            boost[domain_id] = float(adjustments.boosted[top])
    return exclude, boost


def adjust_editor(frame, adjustments, fit: str, domains, clusters, tokens):
    """Mix & Export's per-domain editor table with the Map's adjustments applied.

    Parameters
    ----------
    frame : DataFrame with columns domain, multiplier, exclude (one row per domain)
    adjustments : ClusterAdjustments or None
        Ignored (the frame returned as is) when None, empty or for another fit.
    fit : str, the fit Mix & Export shows
    domains, clusters, tokens : as in :func:`domain_adjustments`

    Returns
    -------
    DataFrame, a copy: ``exclude`` set on the excluded domains, ``multiplier`` set to the factor
    on the boosted ones.
    """
    if adjustments is None or adjustments.empty or adjustments.fit != fit:
        return frame
    exclude, boost = domain_adjustments(adjustments, domains, clusters, tokens)
    out = frame.copy()
    ids = out["domain"].astype(str)
    out.loc[ids.isin(exclude), "exclude"] = True
    for domain_id, factor in boost.items():
        out.loc[ids == domain_id, "multiplier"] = factor
    return out
