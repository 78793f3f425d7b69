"""The curator's edits of a taxonomy, as functions of a :class:`~gem_app.taxonomy.tree.Taxonomy`.

Edits are JSON-able dicts, applied in order by :meth:`Taxonomy.apply` and kept in its log::

    {"op": "rename",  "node": id, "label": str}
    {"op": "merge",   "nodes": [ids with the same parent], "label": str (optional)}
    {"op": "split",   "node": id, "n": int, "seed": int}
    {"op": "exclude", "node": id, "excluded": bool}

Each function validates its edit (ValueError naming the node and the field), fills in
defaults (so that replaying the log gives the same tree) and changes the tree in place.
"""

from __future__ import annotations

import numpy as np

from gem_app.taxonomy.node import N_EXAMPLES, ROOT, Node, interleave, merged_terms
from gem_app.taxonomy.split import fit_split, resultant_concentration
from gem_app.utils.validation import is_int

__all__ = ["EDITS", "exclude", "merge", "rename", "split"]


def rename(taxonomy, edit) -> None:
    """``{"op": "rename", "node": id, "label": str}``: a curator's name for a node."""
    node = _edited_node(taxonomy, edit)
    label = edit.get("label")
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"rename of node {node.id!r} needs a non-empty 'label', got {label!r}")
    node.label, node.source = label.strip(), "curator"
    edit["label"] = node.label


def exclude(taxonomy, edit) -> None:
    """``{"op": "exclude", "node": id, "excluded": bool}``: flag a subtree (weight 0 in mixtures)."""
    node = _edited_node(taxonomy, edit)
    flag = edit.setdefault("excluded", True)
    if not isinstance(flag, bool):
        raise ValueError(f"exclude of node {node.id!r}: 'excluded' must be true or false")
    for sub in taxonomy.walk(node.id):
        sub.excluded = flag
    taxonomy.update_parent_exclusion(node.parent)


def merge(taxonomy, edit) -> str:
    """``{"op": "merge", "nodes": [ids], "label": str}``: siblings into one new node; its id."""
    ids = edit.get("nodes")
    if not isinstance(ids, list) or len(ids) < 2:
        raise ValueError(f"merge needs 'nodes': a list of at least 2 node ids, got {ids!r}")
    if len(set(map(str, ids))) != len(ids):
        raise ValueError(f"merge lists a node twice: {ids}")
    members = [taxonomy.node(i) for i in ids]
    if any(m.id == ROOT for m in members):
        raise ValueError("the root cannot be merged")
    parents = {m.parent for m in members}
    if len(parents) > 1:
        where = ", ".join(f"{m.id!r} (parent {m.parent!r})" for m in members)
        raise ValueError(f"merge needs nodes with the same parent; got {where}")
    parent = taxonomy.nodes[parents.pop()]
    label = edit.get("label")
    if label is not None and (not isinstance(label, str) or not label.strip()):
        raise ValueError(f"merge label must be a non-empty string, got {label!r}")
    new_id = taxonomy.new_child_id(parent.id)
    vectors = [taxonomy.resultants.get(m.id) for m in members]
    if all(v is not None for v in vectors):
        vector = np.sum([v[0].astype(np.float64) for v in vectors], axis=0)
        n_k = float(sum(v[1] for v in vectors))
        taxonomy.resultants[new_id] = (vector.astype(np.float32), n_k)
        concentration = float(resultant_concentration(vector, n_k))
    else:
        concentration = float(
            np.average(
                [m.concentration for m in members], weights=[m.tokens + 1e-12 for m in members]
            )
        )
    terms, scores = merged_terms(members, taxonomy.parameters.get("n_terms", 8))
    gis_label = ", ".join(terms[:3]) or f"cluster {new_id}"
    merged = Node(
        id=new_id,
        parent=parent.id,
        level=parent.level + 1,
        label=label.strip() if label else gis_label,
        terms=terms,
        term_scores=scores,
        concentration=concentration,
        gis=float(sum(m.gis for m in members)),
        excluded=all(m.excluded for m in members),
        examples=interleave([m.examples for m in members])[:N_EXAMPLES],
        gis_label=gis_label,
        source="curator" if label else "merge",
    )
    rows = np.concatenate([taxonomy.documents_of(m.id) for m in members])
    position = min(parent.children.index(m.id) for m in members)
    for m in members:
        taxonomy.remove_subtree(m.id)
    parent.children.insert(position, new_id)
    taxonomy.nodes[new_id] = merged
    taxonomy.document_leaf[rows] = new_id
    taxonomy.refresh_counts()
    return new_id


def split(taxonomy, edit) -> list[str]:
    """``{"op": "split", "node": id, "n": int, "seed": int}``: GEM inside a node; child ids."""
    node = _edited_node(taxonomy, edit)
    n = edit.get("n")
    if not is_int(n) or n < 2:
        raise ValueError(f"split of node {node.id!r} needs 'n' >= 2 clusters, got {n!r}")
    if node.id == ROOT:
        raise ValueError("the root cannot be split; build a new taxonomy with other levels")
    if n > node.documents:
        raise ValueError(
            f"split of node {node.id!r} into n = {n} clusters: it has only "
            f"{node.documents} documents"
        )
    seed = edit.setdefault("seed", taxonomy.parameters.get("random_state", 0))
    if not is_int(seed):
        raise ValueError(f"split of node {node.id!r}: 'seed' must be an integer, got {seed!r}")
    ctx = taxonomy.split_context()
    rows = taxonomy.documents_of(node.id)
    params = dict(taxonomy.parameters.get("gem_params", {}), random_state=int(seed))
    split = fit_split(ctx.X[rows], taxonomy.tokens[rows], int(n), **params)
    for child in list(node.children):
        taxonomy.remove_subtree(child)
    node.children = []
    new_ids = taxonomy.add_split(node.id, rows, split)
    for child in new_ids:
        taxonomy.nodes[child].excluded = node.excluded
    taxonomy.refresh_counts()
    return new_ids


def _edited_node(taxonomy, edit) -> Node:
    if "node" not in edit:
        raise ValueError(f"{edit.get('op')} edit needs a 'node' id")
    return taxonomy.node(edit["node"])


EDITS = {"rename": rename, "merge": merge, "split": split, "exclude": exclude}
