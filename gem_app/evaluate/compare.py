"""Clusters against a human taxonomy column: agreement metrics, aligned table, misalignments.

The information and pair-counting metrics (NMI, AMI, ARI, homogeneity, completeness,
V-measure) are scikit-learn's, computed per document. ``weights`` (e.g. token counts)
change only the table-based quantities: the contingency table, purity, inverse purity,
the Hungarian alignment and the misalignment shares.

Missing human values (None, NaN, pd.NA, empty or blank strings) form their own category
``"(missing)"``; every category is compared as a string.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn import metrics

__all__ = ["MISSING", "ComparisonResult", "compare_labels", "contingency_table", "top_categories"]

MISSING = "(missing)"


@dataclass
class ComparisonResult:
    """Agreement between cluster ids and a human taxonomy column.

    Attributes
    ----------
    table : DataFrame of shape (n_categories, n_clusters)
        Contingency table (document counts, or summed weights), categories x clusters.
    nmi, ami, ari, homogeneity, completeness, v_measure : float
        scikit-learn's metrics on document counts (``labels_true`` = human).
    purity : float
        ``(1/N) sum_k max_c n_ck``: the share in each cluster's majority category.
    inverse_purity : float
        ``(1/N) sum_c max_k n_ck``: the share of each category in its largest cluster.
    aligned_table : DataFrame
        ``table`` with rows and columns reordered so that the Hungarian one-to-one matches
        lie on the diagonal (largest first); unmatched rows/columns follow.
    alignment : DataFrame
        One row per match: category, cluster, mass, category_share, cluster_share.
    aligned_accuracy : float
        Matched mass over total mass.
    split_categories : list of dict
        Categories whose largest cluster holds less than ``threshold`` of them.
    mixed_clusters : list of dict
        Clusters whose largest category is less than ``threshold`` of them.
    n_documents : int
    weighted : bool
        Whether the table holds summed weights rather than document counts.
    threshold : float
    """

    table: pd.DataFrame
    nmi: float
    ami: float
    ari: float
    homogeneity: float
    completeness: float
    v_measure: float
    purity: float
    inverse_purity: float
    aligned_table: pd.DataFrame
    alignment: pd.DataFrame
    aligned_accuracy: float
    split_categories: list[dict[str, Any]] = field(default_factory=list)
    mixed_clusters: list[dict[str, Any]] = field(default_factory=list)
    n_documents: int = 0
    weighted: bool = False
    threshold: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (plain str / int / float / list)."""
        return {
            "n_documents": int(self.n_documents),
            "total_mass": float(self.table.to_numpy().sum()),
            "weighted": self.weighted,
            "threshold": self.threshold,
            "metrics": {
                name: float(getattr(self, name))
                for name in (
                    "nmi",
                    "ami",
                    "ari",
                    "homogeneity",
                    "completeness",
                    "v_measure",
                    "purity",
                    "inverse_purity",
                    "aligned_accuracy",
                )
            },
            "table": _table_dict(self.table),
            "aligned_table": _table_dict(self.aligned_table),
            "alignment": [
                {
                    "category": str(row.category),
                    "cluster": _plain(row.cluster),
                    "mass": float(row.mass),
                    "category_share": float(row.category_share),
                    "cluster_share": float(row.cluster_share),
                }
                for row in self.alignment.itertuples(index=False)
            ],
            "split_categories": self.split_categories,
            "mixed_clusters": self.mixed_clusters,
        }


def _plain(value):
    """numpy scalar -> Python scalar for JSON."""
    return value.item() if isinstance(value, np.generic) else value


def _table_dict(table: pd.DataFrame) -> dict[str, Any]:
    return {
        "categories": [str(c) for c in table.index],
        "clusters": [_plain(c) for c in table.columns],
        "values": table.to_numpy(dtype=float).tolist(),
    }


# ----------------------------------------------------------------------------- inputs


def _human_categories(human) -> np.ndarray:
    """Strings, with missing values (None, NaN, NA, blank) mapped to ``MISSING``."""
    series = pd.Series(human, dtype=object).reset_index(drop=True)
    missing = series.isna() | series.map(lambda v: isinstance(v, str) and not v.strip())
    out = series.where(~missing, MISSING).map(str)
    return out.to_numpy(dtype=object)


def _cluster_ids(clusters) -> np.ndarray:
    """1-D integer cluster ids; a 2-D soft assignment is reduced by argmax."""
    arr = np.asarray(clusters)
    if arr.ndim == 2:
        if arr.shape[1] == 0:
            raise ValueError("clusters has 0 columns")
        bad = np.flatnonzero(~np.all(np.isfinite(arr), axis=1))
        if bad.size:
            raise ValueError(f"clusters row {bad[0]} holds NaN or Inf")
        return np.argmax(arr, axis=1).astype(np.int64)
    if arr.ndim != 1:
        raise ValueError(f"clusters must be 1-D ids or 2-D soft assignments, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)))
        if bad.size:
            raise ValueError(
                f"clusters[{bad[0]}] = {float(arr[bad[0]])} is not an integer cluster id"
            )
        return arr.astype(np.int64)
    if arr.dtype.kind not in "iub":
        raise ValueError(f"cluster ids must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _weights(weights, n: int) -> np.ndarray | None:
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"weights has shape {w.shape}, expected ({n},)")
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
    if bad.size:
        raise ValueError(f"weights[{bad[0]}] = {float(w[bad[0]])} is not a finite mass >= 0")
    if w.sum() <= 0:
        raise ValueError("weights sum to 0")
    return w


# ----------------------------------------------------------------------------- maths


def _contingency(
    human: np.ndarray, clusters: np.ndarray, weights: np.ndarray | None
) -> pd.DataFrame:
    categories, cat_idx = np.unique(human.astype(str), return_inverse=True)
    if MISSING in categories:  # "(missing)" last, for readability
        order = np.r_[np.flatnonzero(categories != MISSING), np.flatnonzero(categories == MISSING)]
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        categories, cat_idx = categories[order], rank[cat_idx]
    cluster_ids, clu_idx = np.unique(clusters, return_inverse=True)
    n_cols = cluster_ids.size
    flat = np.bincount(
        cat_idx * n_cols + clu_idx, weights=weights, minlength=categories.size * n_cols
    ).reshape(categories.size, n_cols)
    table = pd.DataFrame(
        flat,
        index=pd.Index(categories, name="category"),
        columns=pd.Index(cluster_ids, name="cluster"),
    )
    return table if weights is not None else table.astype(np.int64)


def contingency_table(human, groups, weights=None) -> pd.DataFrame:
    """Human categories x groups (clusters, leaves, domains): summed ``weights`` per cell.

    Parameters
    ----------
    human : array-like of shape (N,)
        Categories (missing values become :data:`MISSING`, listed last).
    groups : array-like of shape (N,)
        Group of each document (integers or strings).
    weights : array-like of shape (N,), optional
        Masses (tokens); document counts when None.

    Returns
    -------
    DataFrame of shape (n_categories, n_groups), index ``category``, columns the sorted groups.
    """
    groups = np.asarray(groups)
    return _contingency(_human_categories(human), groups, _weights(weights, len(groups)))


def top_categories(column: pd.Series, top: int = 3) -> list[list]:
    """The ``top`` categories of one group (a column of :func:`contingency_table`) by share.

    Returns
    -------
    list of [category (str), share of the group's total (float)], largest share first, ties
    by category name; empty when the group has no mass.
    """
    total = float(column.sum())
    if total <= 0:
        return []
    shares = column[column > 0] / total
    ranked = sorted(shares.items(), key=lambda item: (-item[1], str(item[0])))
    return [[str(category), float(share)] for category, share in ranked[:top]]


def _purity(table: np.ndarray) -> tuple[float, float]:
    """(purity, inverse purity) of a categories x clusters table."""
    total = table.sum()
    return float(table.max(axis=0).sum() / total), float(table.max(axis=1).sum() / total)


def _hungarian(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """One-to-one category/cluster matching of largest total mass (rectangular allowed)."""
    values = table.to_numpy(dtype=float)
    rows, cols = linear_sum_assignment(values, maximize=True)
    order = np.argsort(-values[rows, cols], kind="stable")
    rows, cols = rows[order], cols[order]
    row_order = np.r_[rows, np.setdiff1d(np.arange(values.shape[0]), rows)]
    col_order = np.r_[cols, np.setdiff1d(np.arange(values.shape[1]), cols)]
    aligned = table.iloc[row_order, col_order]
    row_sums, col_sums = values.sum(axis=1), values.sum(axis=0)
    alignment = pd.DataFrame(
        {
            "category": table.index[rows].astype(str),
            "cluster": table.columns[cols],
            "mass": values[rows, cols],
            "category_share": _safe_div(values[rows, cols], row_sums[rows]),
            "cluster_share": _safe_div(values[rows, cols], col_sums[cols]),
        }
    )
    return aligned, alignment, float(values[rows, cols].sum() / values.sum())


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den > 0)


def _spread(shares: pd.Series, min_share: float) -> list[dict[str, Any]]:
    shares = shares[shares >= min_share].sort_values(ascending=False, kind="stable")
    return [(_plain(key), float(val)) for key, val in shares.items()]


def _diffuse(groups, threshold: float, min_share: float, name: str, spread: str, key) -> list:
    """The groups (label, mass row) whose largest share is below ``threshold``, most diffuse first.

    Each becomes ``{name: key(label), "mass", "top_share", spread: [{other, "share"}]}``, where
    the spread lists the shares of at least ``min_share``.
    """
    other = "cluster" if spread == "clusters" else "category"
    found = []
    for label, row in groups:
        size = float(row.sum())
        if size <= 0:
            continue
        shares = row / size
        if shares.max() < threshold:
            found.append(
                {
                    name: key(label),
                    "mass": size,
                    "top_share": float(shares.max()),
                    spread: [
                        {other: o if other == "cluster" else str(o), "share": s}
                        for o, s in _spread(shares, min_share)
                    ],
                }
            )
    return sorted(found, key=lambda d: d["top_share"])


def _misalignments(
    table: pd.DataFrame, threshold: float, min_share: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Categories spread over clusters, and clusters mixing categories (with shares)."""
    split = _diffuse(table.iterrows(), threshold, min_share, "category", "clusters", str)
    mixed = _diffuse(table.items(), threshold, min_share, "cluster", "categories", _plain)
    return split, mixed


# ----------------------------------------------------------------------------- public API


def compare_labels(
    clusters, human, *, weights=None, threshold: float = 0.5, min_share: float = 0.05
) -> ComparisonResult:
    """Compare cluster ids with a human taxonomy column.

    Parameters
    ----------
    clusters : array-like of shape (N,) or (N, K)
        Integer cluster ids, or soft assignments reduced by argmax.
    human : array-like of shape (N,)
        Human category per document; missing values become ``"(missing)"``.
    weights : array-like of shape (N,), optional
        Document masses (tokens) for the table, purity, alignment and shares.
        The sklearn metrics always count documents.
    threshold : float in (0, 1]
        A category (cluster) is reported as split (mixed) when its largest share is
        below ``threshold``.
    min_share : float in [0, 1)
        Shares below this are left out of the misalignment report's lists.

    Returns
    -------
    ComparisonResult
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if not 0 <= min_share < 1:
        raise ValueError(f"min_share must be in [0, 1), got {min_share}")
    cluster_ids = _cluster_ids(clusters)
    categories = _human_categories(human)
    if cluster_ids.shape[0] != categories.shape[0]:
        raise ValueError(
            f"clusters has {cluster_ids.shape[0]} rows but the human column has {categories.shape[0]}"
        )
    if cluster_ids.shape[0] == 0:
        raise ValueError("nothing to compare: 0 documents")
    w = _weights(weights, cluster_ids.shape[0])
    table = _contingency(categories, cluster_ids, w)
    purity, inverse_purity = _purity(table.to_numpy(dtype=float))
    aligned, alignment, accuracy = _hungarian(table)
    split, mixed = _misalignments(table, threshold, min_share)
    homogeneity, completeness, v_measure = metrics.homogeneity_completeness_v_measure(
        categories, cluster_ids
    )
    return ComparisonResult(
        table=table,
        nmi=float(metrics.normalized_mutual_info_score(categories, cluster_ids)),
        ami=float(metrics.adjusted_mutual_info_score(categories, cluster_ids)),
        ari=float(metrics.adjusted_rand_score(categories, cluster_ids)),
        homogeneity=float(homogeneity),
        completeness=float(completeness),
        v_measure=float(v_measure),
        purity=purity,
        inverse_purity=inverse_purity,
        aligned_table=aligned,
        alignment=alignment,
        aligned_accuracy=accuracy,
        split_categories=split,
        mixed_clusters=mixed,
        n_documents=int(cluster_ids.shape[0]),
        weighted=w is not None,
        threshold=threshold,
    )
