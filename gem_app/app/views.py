"""A fit as the app sees it: the loaded run and its derived results, computed once.

:class:`FitView` is shared by every browser session (see :func:`gem_app.app.state.fit_view`):
its arrays are read-only and each lazy result is computed under a lock. Slow results
(cluster labels; the map layouts of :mod:`gem_app.app.layout`) are also cached on disk under
``<workspace>/.cache/fits/<name>/<model sha>/`` so an app restart reuses them.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from gem_app.app.density import category_codes
from gem_app.app.selection import documents_frame
from gem_app.core.gis import compute_gis
from gem_app.core.reassign import FrozenQStep, Reassignment, document_scores
from gem_app.evaluate.baselines import run_baseline
from gem_app.evaluate.compare import compare_labels, top_categories
from gem_app.export.domains import DomainSet, cluster_domains, domains_from_run
from gem_app.storage.runs import load_run
from gem_app.taxonomy.labels import ClusterLabel, LabelSet, cluster_labels
from gem_app.utils.files import write_json

__all__ = ["FitView"]


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


class FitView:
    """One fitted run and everything the pages derive from it.

    Attributes
    ----------
    name : str
    run : gem_app.storage.runs.FitRun
    cache : Path, the on-disk cache folder of this model
    """

    def __init__(self, name: str, run, cache: Path, version: str):
        self.name, self.run, self.cache, self.version = name, run, Path(cache), version
        self._lock = threading.RLock()
        self._reassigned: OrderedDict = OrderedDict()
        self._baselines: dict = {}

    @classmethod
    def open(cls, name: str, info, cache: Path) -> FitView:
        """Load the run of a workspace entry (``info``: its RunInfo); ``cache``: its cache folder."""
        return cls(name, load_run(info.path), cache, info.version)

    def refresh(self, info) -> None:
        """Point the run at the current version folder after a workspace update of the fit."""
        if info.version != self.version:
            with self._lock:
                self.run.folder = info.path
                self.version = info.version

    # ------------------------------------------------------------------ basics
    @property
    def model(self):
        return self.run.model

    @property
    def n_clusters(self) -> int:
        return int(self.run.model.n_clusters)

    @property
    def n_documents(self) -> int:
        return int(len(self.run.frame))

    @cached_property
    def weights(self) -> np.ndarray:
        """Tokens per document, float64 (N,)."""
        return _frozen(self.run.frame["tokens"].to_numpy(dtype=np.float64).copy())

    @cached_property
    def hard_labels(self) -> np.ndarray:
        return _frozen(self.run.assignments["cluster"].to_numpy(dtype=np.int64).copy())

    @cached_property
    def human(self) -> np.ndarray | None:
        """Human category per document (str), or None without a label column."""
        if "label" not in self.run.frame:
            return None
        return _frozen(self.run.frame["label"].astype(str).to_numpy())

    @cached_property
    def human_codes(self) -> tuple[np.ndarray, list[str]] | None:
        """(codes (N,), categories) of :attr:`human` (:func:`gem_app.app.density.category_codes`,
        computed once per fit: a sort of N strings), or None without a label column."""
        if self.human is None:
            return None
        codes, categories = category_codes(self.human)
        return _frozen(codes), categories

    @cached_property
    def masses(self) -> np.ndarray:
        rho = np.asarray(self.run.model.cluster_masses_, dtype=np.float64)
        return _frozen(rho / rho.sum())

    @cached_property
    def q(self) -> np.ndarray:
        """Soft assignments (N, K), float32."""
        with self._lock:
            return _frozen(self.run.proba())

    @cached_property
    def gis(self):
        """:class:`gem_app.core.gis.GISResult` (documents and clusters, no terms)."""
        return compute_gis(self.q, self.masses, self.weights)

    @cached_property
    def cluster_tokens(self) -> np.ndarray:
        return _frozen(
            np.bincount(self.hard_labels, weights=self.weights, minlength=self.n_clusters)
        )

    # ------------------------------------------------------------------ labels
    @cached_property
    def labels(self) -> LabelSet:
        """GIS labels of the clusters (cached on disk)."""
        path = self.cache / "labels.json"
        with self._lock:
            if path.is_file():
                try:
                    return _labels_from_dict(json.loads(path.read_text(encoding="utf-8")))
                except (ValueError, KeyError, TypeError):
                    pass  # stale or damaged cache: recompute
            labels = cluster_labels(
                self.run.frame["text"].tolist(),
                self.q,
                self.masses,
                self.weights,
                n_terms=8,
                n_docs=5,
                min_df=1 if self.n_documents < 50 else 2,
            )
            write_json(path, labels.to_dict())
            return labels

    @property
    def label_names(self) -> list[str]:
        return [c.label for c in self.labels]

    # ------------------------------------------------------------------ comparison
    @cached_property
    def comparison(self):
        """:class:`gem_app.evaluate.compare.ComparisonResult` against the human column (token-weighted), or None."""
        if self.human is None:
            return None
        return compare_labels(self.hard_labels, self.human, weights=self.weights)

    def baseline_comparisons(self, names=("kmeans", "vmf-em"), *, random_state=0) -> dict:
        """Agreement metrics of GEM and baseline clusterings with the human column.

        Returns
        -------
        dict of method name -> :class:`gem_app.evaluate.compare.ComparisonResult` (empty without labels)
        """
        if self.human is None:
            return {}
        results = {"GEM": self.comparison}
        with self._lock:
            for name in names:
                key = ("baseline", name, random_state)
                if key not in self._baselines:
                    fitted = run_baseline(
                        name,
                        self.run.embeddings,
                        self.n_clusters,
                        sample_weight=self.weights,
                        random_state=random_state,
                    )
                    self._baselines[key] = compare_labels(
                        fitted.labels, self.human, weights=self.weights
                    )
                results[name] = self._baselines[key]
        return results

    def domains(self, taxonomy=None, taxonomy_key: str = "") -> DomainSet:
        """The mixing domains (:func:`gem_app.export.domains.domains_from_run`), cached per
        taxonomy version; without a taxonomy, the clusters with this view's cached labels."""
        key = ("domains", taxonomy_key if taxonomy is not None else "")
        with self._lock:
            if key not in self._baselines:
                if taxonomy is None:
                    domains = cluster_domains(self.run, self.labels, self.gis.cluster)
                else:
                    domains = domains_from_run(self.run, taxonomy)
                self._baselines[key] = domains
            return self._baselines[key]

    # ------------------------------------------------------------------ frozen q-step
    @cached_property
    def scores(self) -> np.ndarray:
        """s_ik with the geometry frozen (N, K) float32 (see :mod:`gem_app.core.reassign`)."""
        with self._lock:
            return _frozen(document_scores(self.run.model, self.run.embeddings))

    @cached_property
    def frozen(self) -> FrozenQStep:
        """The sliders' q-step solver over :attr:`scores`, seeded with the fit's own dual."""
        with self._lock:
            model = self.run.model
            solver = FrozenQStep(self.scores, self.weights)
            solver.remember(model.temperature, model.balance, model.dual_)
            return solver

    def reassign(self, temperature: float, balance: float) -> Reassignment:
        """One exact q-step at (T, lambda), the last 8 results kept."""
        key = (round(float(temperature), 6), round(float(balance), 6))
        with self._lock:
            if key in self._reassigned:
                self._reassigned.move_to_end(key)
                return self._reassigned[key]
            result = self.frozen.solve(temperature, balance)
            self._reassigned[key] = result
            while len(self._reassigned) > 8:
                self._reassigned.popitem(last=False)
            return result

    # ------------------------------------------------------------------ documents
    def cluster_documents(self, cluster: int, query: str = "", limit: int = 50):
        """Documents of a cluster, most representative first (q_ik), filtered by a search string.

        Returns
        -------
        DataFrame with columns row, id, probability, tokens, [label], text
        """
        if not 0 <= cluster < self.n_clusters:
            raise ValueError(f"cluster must be in 0..{self.n_clusters - 1}, got {cluster}")
        frame = self.run.frame
        members = np.flatnonzero(self.hard_labels == cluster)
        if query.strip():
            texts = frame["text"].to_numpy()[members]
            hit = np.array([query.lower() in str(t).lower() for t in texts], dtype=bool)
            members = members[hit] if len(members) else members
        prob = self.q[members, cluster]
        order = members[np.argsort(-prob, kind="stable")][:limit]
        return documents_frame(frame, order, self.hard_labels, self.q).drop(columns="cluster")


def _labels_from_dict(data: dict) -> LabelSet:
    clusters = [ClusterLabel(**c) for c in data["clusters"]]
    return LabelSet(
        clusters=clusters,
        vocabulary_size=int(data["vocabulary_size"]),
        note=str(data.get("note", "")),
        parameters=dict(data.get("parameters", {})),
    )


def cluster_table(view: FitView):
    """One row per level-1 cluster: the flat hierarchy when no taxonomy was built.

    Columns id, parent, level, label, terms, documents, tokens, mass, kappa, gis, purity,
    top_categories (str).
    """
    K = view.n_clusters
    docs = np.bincount(view.hard_labels, minlength=K)
    purity = np.full(K, np.nan)
    top = [""] * K
    if view.comparison is not None:
        table = view.comparison.table  # categories x clusters (tokens)
        for k in range(K):
            if k in table.columns:
                best = top_categories(table[k])
                if best:
                    purity[k] = best[0][1]
                    top[k] = ", ".join(f"{c} {s:.0%}" for c, s in best)
    rows = [
        {
            "id": "root",
            "parent": "",
            "level": 0,
            "label": "corpus",
            "terms": "",
            "documents": int(docs.sum()),
            "tokens": float(view.cluster_tokens.sum()),
            "mass": 1.0,
            "kappa": np.nan,
            "gis": float(view.gis.cluster.sum()),
            "purity": float(np.nansum(purity * view.cluster_tokens) / view.cluster_tokens.sum())
            if view.comparison is not None
            else np.nan,
            "top_categories": "",
        }
    ]
    for k, label in enumerate(view.labels):
        rows.append(
            {
                "id": str(k),
                "parent": "root",
                "level": 1,
                "label": f"{k}: {label.label}",
                "terms": ", ".join(label.terms),
                "documents": int(docs[k]),
                "tokens": float(view.cluster_tokens[k]),
                "mass": float(view.cluster_tokens[k] / view.cluster_tokens.sum()),
                "kappa": float(view.model.concentrations_[k]),
                "gis": float(view.gis.cluster[k]),
                "purity": purity[k],
                "top_categories": top[k],
            }
        )
    return pd.DataFrame(rows)


def taxonomy_table(taxonomy):
    """One row per node of a :class:`gem_app.taxonomy.tree.Taxonomy` (same columns as cluster_table)."""
    rows = []
    for node in taxonomy.walk():
        cats = [list(c) for c in (node.top_categories or [])]
        rows.append(
            {
                "id": node.id,
                "parent": node.parent or "",
                "level": node.level,
                "label": node.label,
                "terms": ", ".join(node.terms),
                "documents": int(node.documents),
                "tokens": float(node.tokens),
                "mass": float(node.mass),
                "kappa": float(node.concentration),
                "gis": float(node.gis),
                "purity": float(cats[0][1]) if cats else np.nan,
                "top_categories": ", ".join(f"{c} {float(s):.0%}" for c, s in cats[:3]),
                "excluded": bool(node.excluded),
            }
        )
    return pd.DataFrame(rows)
