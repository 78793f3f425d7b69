"""The nodes of a taxonomy (:class:`gem_app.taxonomy.tree.Taxonomy`).

Node ids: the root is ``"root"``, level-1 cluster ``k`` is ``"k"``, its children
``"k.j"``. Ids are never re-used: a merge creates the next free index under the parent
(``"16"`` after ``"0".."15"``), a split creates ``"<node>.<j>"`` with fresh ``j``.

Per node (see :class:`Node`): ``documents`` and ``tokens`` count the documents whose
leaf is in the node's subtree (hard assignment, ``document_leaf``); ``mass`` is the
token share of the whole corpus (so leaf masses sum to 1); ``concentration`` is the
vMF maximum-likelihood ``kappa`` of the node's soft resultant
``r = sum_i a_i q_ik x_i`` (in the coordinates of the GEM split that created it; with
``concentration="per-cluster"`` it equals GEM's own kappa); ``gis`` is ``G_k`` of that
split (:mod:`gem_app.core.gis`), in nats; ``terms`` are the node's top terms by term GIS
within its parent's split (vocabulary built once for the whole corpus).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["N_CATEGORIES", "N_EXAMPLES", "ROOT", "Node", "interleave", "merged_terms"]

ROOT = "root"
N_CATEGORIES = 5  # top human categories kept per node
N_EXAMPLES = 3  # representative documents kept per node


@dataclass
class Node:
    """One node of the taxonomy.

    Attributes
    ----------
    id : str
        ``"root"``, ``"k"`` (level 1), ``"k.j"`` (level 2), ...
    parent : str or None
        None for the root only.
    level : int
        0 for the root, 1 for the clusters of the corpus, 2 for the clusters inside them.
    label : str
        Display name (GIS label, LLM name or the curator's rename).
    terms : list of str
        Top terms by term GIS within the parent's split, best first.
    documents, tokens : int
        Documents and tokens of the subtree (hard assignment).
    mass : float
        Token share of the whole corpus.
    concentration : float
        vMF kappa of the node (see the module docstring).
    gis : float
        ``G_k`` of the split the node belongs to, in nats (0 for the root). A merged
        node gets the sum of its members' ``G_k``, an upper bound of the merged
        column's ``G_k`` (merging clusters cannot increase ``I(X; Z)``).
    excluded : bool
        Curator flag; a parent is excluded when all of its children are.
    top_categories : list of [str, float]
        Most common human categories and their token shares, when the run has a label
        column.
    children : list of str
        Child ids in display order (largest mass first when created).
    term_scores : list of float
        ``G(t, k)`` of ``terms``, in nats.
    examples : list of int
        Representative documents (rows of the run), best first.
    gis_label : str
        The label from terms alone (kept through renames).
    source : str
        ``"gis"``, ``"llm"``, ``"curator"`` or ``"merge"``: where ``label`` came from.
    """

    id: str
    parent: str | None
    level: int
    label: str
    terms: list[str] = field(default_factory=list)
    documents: int = 0
    tokens: int = 0
    mass: float = 0.0
    concentration: float = 0.0
    gis: float = 0.0
    excluded: bool = False
    top_categories: list[list] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    term_scores: list[float] = field(default_factory=list)
    examples: list[int] = field(default_factory=list)
    gis_label: str = ""
    source: str = "gis"

    @property
    def is_leaf(self) -> bool:
        return not self.children

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Node:
        known = {f.name for f in fields(cls)}
        missing = {"id", "parent", "level", "label"} - set(data)
        if missing:
            raise ValueError(f"taxonomy node {data.get('id', '?')!r} lacks {sorted(missing)}")
        return cls(**{k: copy.deepcopy(v) for k, v in data.items() if k in known})


def interleave(lists) -> list:
    """The items of several lists, round robin (first of each, then second of each, ...)."""
    out = []
    for i in range(max((len(x) for x in lists), default=0)):
        out.extend(x[i] for x in lists if i < len(x))
    return out


def merged_terms(members, n_terms: int) -> tuple[list[str], list[float]]:
    """The members' terms by decreasing score, de-duplicated, ``n_terms`` at most."""
    pairs = sorted(
        ((s, t) for m in members for t, s in zip(m.terms, m.term_scores, strict=False)),
        key=lambda st: (-st[0], st[1]),
    )
    terms, scores = [], []
    for s, t in pairs:
        if t not in terms:
            terms.append(t)
            scores.append(float(s))
    return terms[:n_terms], scores[:n_terms]
