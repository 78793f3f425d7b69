"""A hierarchical taxonomy: GEM at level 1, GEM inside every level-1 cluster, curator edits.

A :class:`Taxonomy` is a tree of :class:`~gem_app.taxonomy.node.Node` s over the documents of a
fit run (:mod:`gem_app.storage.runs`) plus an ordered, JSON-able edit log: *base tree* (from
:func:`gem_app.taxonomy.build.build_taxonomy`) + *edits* (:meth:`Taxonomy.replay`).

Edits (dicts, applied in order by :meth:`Taxonomy.apply`)::

    {"op": "rename",  "node": id, "label": str}
    {"op": "merge",   "nodes": [ids with the same parent], "label": str (optional)}
    {"op": "split",   "node": id, "n": int, "seed": int}
    {"op": "exclude", "node": id, "excluded": bool}

Files in the run folder: ``taxonomy.json`` (format_version, parameters, k_curves, base
and current nodes, the edit log, resultants) and ``taxonomy_assignments.parquet``
(``id``, ``leaf``, ``base_leaf``), both written atomically.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from gem_app.core.gis import cluster_masses, compute_gis
from gem_app.evaluate.compare import contingency_table, top_categories
from gem_app.storage.runs import load_run, write_parquet
from gem_app.taxonomy.edits import EDITS
from gem_app.taxonomy.labels import representative_documents, select_terms
from gem_app.taxonomy.node import N_CATEGORIES, N_EXAMPLES, ROOT, Node
from gem_app.taxonomy.split import (
    SplitContext,
    SplitFit,
    resultant_concentration,
    soft_resultants,
)
from gem_app.utils.files import read_versioned_json, write_json

__all__ = [
    "ASSIGNMENTS_FILE",
    "FORMAT_VERSION",
    "TAXONOMY_FILE",
    "Taxonomy",
]

FORMAT_VERSION = 1
TAXONOMY_FILE = "taxonomy.json"
ASSIGNMENTS_FILE = "taxonomy_assignments.parquet"


class Taxonomy:
    """A tree of :class:`Node` over a run's documents, with a replayable edit log.

    Build one with :func:`build_taxonomy` or :meth:`load`; the constructor is internal.

    Attributes
    ----------
    nodes : dict of str to Node
        The current tree (use :meth:`walk` / :meth:`leaves` for display order).
    document_leaf : ndarray of shape (n_documents,), object (str)
        Leaf id of every document of the run, aligned with ``run.frame``.
    document_ids : ndarray of shape (n_documents,)
        The run's document ids, same order.
    edits : list of dict
        The ordered edit log (with defaults filled in).
    k_curves : dict of int to dict of int to float
        ``level -> {K: BIC}`` for the levels chosen by ``"auto"`` (lower is better).
    parameters : dict
        Build parameters: ``levels`` actually used, GEM parameters, vocabulary bounds, ...
    """

    def __init__(
        self,
        nodes,
        document_leaf,
        document_ids,
        tokens,
        categories=None,
        *,
        parameters=None,
        k_curves=None,
        next_index=None,
        resultants=None,
        run=None,
        folder=None,
        context=None,
    ):
        self.nodes: dict[str, Node] = dict(nodes)
        self.document_leaf = np.asarray(document_leaf, dtype=object).copy()
        self.document_ids = np.asarray(document_ids)
        self.tokens = np.asarray(tokens, dtype=np.int64)
        self._categories = None if categories is None else np.asarray(categories, dtype=object)
        self.parameters: dict[str, Any] = dict(parameters or {})
        self.k_curves: dict[int, dict[int, float]] = dict(k_curves or {})
        self._next_index: dict[str, int] = dict(next_index or {})
        self.resultants: dict[str, tuple[np.ndarray, float]] = dict(resultants or {})
        self.edits: list[dict] = []
        self._run, self.folder, self._context = run, folder, context
        self._base = self._snapshot()

    # -------------------------------------------------------------- navigation
    @property
    def root(self) -> Node:
        return self.nodes[ROOT]

    def node(self, node_id) -> Node:
        """The node ``node_id``; ValueError naming it when it does not exist."""
        if not isinstance(node_id, str) or node_id not in self.nodes:
            raise ValueError(f"taxonomy has no node {node_id!r}")
        return self.nodes[node_id]

    def children(self, node_id: str) -> list[Node]:
        return [self.nodes[c] for c in self.node(node_id).children]

    def walk(self, node_id: str = ROOT) -> list[Node]:
        """The subtree of ``node_id``, depth first in display order, itself first."""
        out, stack = [], [node_id]
        while stack:
            node = self.nodes[stack.pop()]
            out.append(node)
            stack.extend(reversed(node.children))
        return out

    def leaves(self) -> list[Node]:
        """Leaves in display order (excluded ones included; see ``Node.excluded``)."""
        return [n for n in self.walk() if n.is_leaf]

    def documents_of(self, node_id: str) -> np.ndarray:
        """Row indices (into the run's documents) of the node's subtree, int64."""
        leaves = {n.id for n in self.walk(self.node(node_id).id) if n.is_leaf}
        return np.flatnonzero(pd.Series(self.document_leaf).isin(leaves).to_numpy())

    # -------------------------------------------------------------- edits
    def apply(self, edit: dict, *, run=None):
        """Apply one edit, append it to the log, return the new node id(s).

        ``merge`` returns the merged node's id, ``split`` the list of new child ids,
        ``rename`` and ``exclude`` None. ``split`` needs the run: given here, held
        from :func:`build_taxonomy`, or loaded lazily from :attr:`folder`.
        """
        if not isinstance(edit, dict):
            raise ValueError(f"an edit must be a dict with an 'op', got {edit!r}")
        op = edit.get("op")
        if op not in EDITS:
            raise ValueError(f"unknown edit op {op!r}; expected one of {', '.join(EDITS)}")
        if run is not None:
            self._run, self._context = run, None
        edit = copy.deepcopy(edit)
        result = EDITS[op](self, edit)
        self.edits.append(edit)
        return result

    def replay(self, edits=None, *, run=None) -> Taxonomy:
        """A new Taxonomy: the base tree with ``edits`` (default: this log) applied."""
        edits = self.edits if edits is None else edits
        taxonomy = self.base()
        if run is not None:
            taxonomy._run, taxonomy._context = run, None
        for edit in edits:
            taxonomy.apply(edit)
        return taxonomy

    def base(self) -> Taxonomy:
        """The base tree (as built, without edits), sharing the run."""
        taxonomy = copy.copy(self)
        taxonomy._restore(self._base)
        taxonomy.edits = []
        return taxonomy

    # -------------------------------------------------------------- building blocks
    def _snapshot(self) -> dict:
        return {
            "nodes": {k: n.to_dict() for k, n in self.nodes.items()},
            "document_leaf": self.document_leaf.copy(),
            "next_index": dict(self._next_index),
            "resultants": dict(self.resultants),
        }

    def _restore(self, state: dict) -> None:
        self.nodes = {k: Node.from_dict(v) for k, v in state["nodes"].items()}
        self.document_leaf = state["document_leaf"].copy()
        self._next_index = dict(state["next_index"])
        self.resultants = dict(state["resultants"])

    def rebase(self) -> None:
        """Make the current tree the base tree (the building of the tree is not an edit)."""
        self._base = self._snapshot()

    def new_child_id(self, parent_id: str) -> str:
        """The next unused child id under ``parent_id`` (ids are never re-used)."""
        j = self._next_index.get(parent_id, 0)
        self._next_index[parent_id] = j + 1
        return str(j) if parent_id == ROOT else f"{parent_id}.{j}"

    def remove_subtree(self, node_id: str) -> None:
        """Delete a node and its descendants (their documents keep their stale leaf ids)."""
        node = self.nodes[node_id]
        for sub in self.walk(node_id):
            del self.nodes[sub.id]
            self.resultants.pop(sub.id, None)
        if node.parent is not None and node_id in self.nodes[node.parent].children:
            self.nodes[node.parent].children.remove(node_id)

    def update_parent_exclusion(self, parent_id) -> None:
        """A parent is excluded exactly when all of its children are, up to the root."""
        while parent_id is not None:
            parent = self.nodes[parent_id]
            parent.excluded = bool(parent.children) and all(
                self.nodes[c].excluded for c in parent.children
            )
            parent_id = parent.parent

    def split_context(self) -> SplitContext:
        """What splits need from the run (loaded lazily from :attr:`folder` when needed)."""
        if self._context is None:
            if self._run is None:
                if self.folder is None:
                    raise ValueError("a split needs the run: pass run= (no run folder is known)")
                self._run = load_run(self.folder)
            if len(self._run.frame) != len(self.document_leaf):
                raise ValueError(
                    f"the run has {len(self._run.frame)} documents but the taxonomy "
                    f"{len(self.document_leaf)}"
                )
            self._context = SplitContext(
                self._run,
                min_df=self.parameters.get("min_df", 2),
                max_df=self.parameters.get("max_df", 0.95),
            )
        return self._context

    def add_split(self, parent_id: str, rows: np.ndarray, split: SplitFit) -> list[str]:
        """Children of ``parent_id`` from a GEM split of its documents ``rows``."""
        ctx = self.split_context()
        parent = self.nodes[parent_id]
        weights = self.tokens[rows].astype(np.float64)
        rho = cluster_masses(split.q, weights)
        presence = ctx.presence[rows]
        gis = compute_gis(split.q, rho, weights, presence)
        vectors, n_k = soft_resultants(split.q, split.points, weights)
        kappa = resultant_concentration(vectors, n_k)
        examples, _ = representative_documents(
            split.q, split.points, split.model.mean_directions_, n_docs=N_EXAMPLES
        )
        by_term = sp.csc_matrix(presence)
        n_terms = self.parameters.get("n_terms", 8)
        ids = []
        for k in range(split.n_clusters):
            node_id = self.new_child_id(parent_id)
            chosen = select_terms(gis.term[:, k], ctx.terms, by_term, n_terms=n_terms)
            terms = [str(ctx.terms[t]) for t in chosen]
            gis_label = ", ".join(terms[:3]) or f"cluster {node_id}"
            self.nodes[node_id] = Node(
                id=node_id,
                parent=parent_id,
                level=parent.level + 1,
                label=gis_label,
                terms=terms,
                term_scores=[float(gis.term[t, k]) for t in chosen],
                concentration=float(kappa[k]),
                gis=float(gis.cluster[k]),
                examples=[int(rows[r]) for r in examples[k]],
                gis_label=gis_label,
            )
            self.resultants[node_id] = (vectors[k].astype(np.float32), float(n_k[k]))
            self.document_leaf[rows[split.labels == k]] = node_id
            ids.append(node_id)
        hard_tokens = np.bincount(split.labels, weights=weights, minlength=split.n_clusters)
        order = sorted(range(len(ids)), key=lambda k: (-hard_tokens[k], k))
        parent.children = [ids[k] for k in order]
        return parent.children

    def refresh_counts(self) -> None:
        """documents, tokens, mass and top_categories of every node from ``document_leaf``."""
        frame = pd.DataFrame({"leaf": self.document_leaf, "tokens": self.tokens})
        per_leaf = frame.groupby("leaf", sort=False)["tokens"].agg(["size", "sum"])
        table = None
        if self._categories is not None:
            table = contingency_table(self._categories, self.document_leaf.astype(str), self.tokens)
        columns: dict[str, pd.Series | None] = {}
        total = float(self.tokens.sum())
        for node in reversed(self.walk()):  # children before parents
            if node.is_leaf:
                docs = int(per_leaf["size"].get(node.id, 0))
                tokens = int(per_leaf["sum"].get(node.id, 0))
                column = None
                if table is not None and node.id in table.columns:
                    column = table[node.id]
            else:
                kids = [self.nodes[c] for c in node.children]
                docs, tokens = sum(k.documents for k in kids), sum(k.tokens for k in kids)
                parts = [columns[k.id] for k in kids if columns[k.id] is not None]
                column = sum(parts[1:], parts[0]) if parts else None
            columns[node.id] = column
            node.documents, node.tokens = docs, tokens
            node.mass = tokens / total if total > 0 else 0.0
            node.top_categories = (
                top_categories(column, N_CATEGORIES) if column is not None and tokens > 0 else []
            )
        self.nodes[ROOT].mass = 1.0

    # -------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        """The JSON document of ``taxonomy.json`` (without the per-document leaves)."""
        base_nodes = self._base["nodes"]
        resultants = {**self._base["resultants"], **self.resultants}
        return {
            "format": "gem-taxonomy",
            "format_version": FORMAT_VERSION,
            "parameters": self.parameters,
            "k_curves": {
                str(lv): {str(k): v for k, v in c.items()} for lv, c in self.k_curves.items()
            },
            "n_documents": int(len(self.document_leaf)),
            "nodes": [n.to_dict() for n in self.walk()],
            "next_index": self._next_index,
            "edits": copy.deepcopy(self.edits),
            "base": {"nodes": list(base_nodes.values()), "next_index": self._base["next_index"]},
            "resultants": {
                k: {"mass": m, "vector": v.tolist()} for k, (v, m) in resultants.items()
            },
        }

    def save(self, folder=None) -> Path:
        """Write ``folder/taxonomy.json`` and ``folder/taxonomy_assignments.parquet``."""
        folder = Path(folder if folder is not None else self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        frame = pd.DataFrame(
            {
                "id": self.document_ids,
                "leaf": self.document_leaf.astype(str),
                "base_leaf": self._base["document_leaf"].astype(str),
                "tokens": self.tokens,
            }
        )
        if self._categories is not None:
            frame["category"] = pd.Series(self._categories).astype(str).to_numpy()
        write_parquet(frame, folder / ASSIGNMENTS_FILE)
        write_json(folder / TAXONOMY_FILE, self.to_dict())
        self.folder = folder
        return folder

    @classmethod
    def load(cls, folder, *, run=None) -> Taxonomy:
        """Read a saved taxonomy; the run is re-read lazily, only when a split needs it."""
        folder = Path(folder)
        path = folder / TAXONOMY_FILE
        if not path.is_file() or not (folder / ASSIGNMENTS_FILE).is_file():
            raise ValueError(f"{folder} holds no taxonomy ({TAXONOMY_FILE} and {ASSIGNMENTS_FILE})")
        doc = read_versioned_json(
            path, kind="gem-taxonomy", version=FORMAT_VERSION, what="taxonomy file"
        )
        frame = pd.read_parquet(folder / ASSIGNMENTS_FILE)
        if len(frame) != doc["n_documents"]:
            raise ValueError(
                f"{folder / ASSIGNMENTS_FILE} has {len(frame)} rows, expected {doc['n_documents']}"
            )
        resultants = {
            k: (np.asarray(v["vector"], dtype=np.float32), float(v["mass"]))
            for k, v in doc["resultants"].items()
        }
        base_nodes = {n["id"]: Node.from_dict(n) for n in doc["base"]["nodes"]}
        taxonomy = cls(
            base_nodes,
            frame["base_leaf"].to_numpy(dtype=object),
            frame["id"].to_numpy(),
            frame["tokens"].to_numpy(),
            frame["category"].to_numpy(dtype=object) if "category" in frame else None,
            parameters=doc["parameters"],
            k_curves={
                int(lv): {int(k): float(v) for k, v in c.items()}
                for lv, c in doc["k_curves"].items()
            },
            next_index=doc["base"]["next_index"],
            resultants={k: v for k, v in resultants.items() if k in base_nodes},
            run=run,
            folder=folder,
        )
        taxonomy.nodes = {n["id"]: Node.from_dict(n) for n in doc["nodes"]}
        taxonomy.document_leaf = frame["leaf"].to_numpy(dtype=object)
        taxonomy._next_index = dict(doc["next_index"])
        taxonomy.resultants = {k: v for k, v in resultants.items() if k in taxonomy.nodes}
        taxonomy.edits = list(doc["edits"])
        return taxonomy

    def format_tree(self) -> str:
        """The tree as indented text lines (for the CLI)."""
        lines = [f"{'node':<10} {'docs':>6} {'mass':>7} {'kappa':>8} {'GIS':>6}  label"]
        for node in self.walk():
            indent = "  " * node.level
            flag = "  [excluded]" if node.excluded else ""
            lines.append(
                f"{indent + node.id:<10} {node.documents:>6} {node.mass:>7.3f} "
                f"{node.concentration:>8.1f} {node.gis:>6.3f}  {node.label}{flag}"
            )
        return "\n".join(lines)
