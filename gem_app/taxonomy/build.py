"""Building a :class:`gem_app.taxonomy.tree.Taxonomy` from a fit run (levels, "auto", LLM names).

The tree itself and its edits are :class:`gem_app.taxonomy.tree.Taxonomy`.
"""

from __future__ import annotations

import numbers

import numpy as np

from gem_app.evaluate.selection import candidate_ks
from gem_app.taxonomy.labels import ClusterLabel, snippet
from gem_app.taxonomy.llm_labels import llm_labels
from gem_app.taxonomy.node import ROOT, Node
from gem_app.taxonomy.split import choose_k, fit_split, split_bic, split_from_model
from gem_app.taxonomy.tree import Taxonomy
from gem_app.utils.validation import check_int, is_int

__all__ = ["build_taxonomy"]

LEVEL2_MAX_AUTO_K = 12


def _parse_levels(levels, run_k: int) -> tuple:
    if levels is None:
        return (run_k,)
    if isinstance(levels, str):
        if levels.strip().lower() == "auto":
            return ("auto", "auto")
        levels = [part.strip() for part in levels.split(",")]
    if isinstance(levels, numbers.Integral):
        levels = (levels,)
    levels = tuple(levels)
    if not 1 <= len(levels) <= 2:
        raise ValueError(f"levels must give 1 or 2 levels (K1 or K1,K2), got {levels!r}")
    out = []
    for depth, value in enumerate(levels, start=1):
        if isinstance(value, str) and value.strip().lower() == "auto":
            out.append("auto")
            continue
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if not is_int(value):
            raise ValueError(f"level {depth}: K must be an integer or 'auto', got {value!r}")
        if value < 2:
            raise ValueError(f"level {depth}: K = {value}; a taxonomy level needs K >= 2")
        out.append(int(value))
    return tuple(out)


def _gem_params(run, balance, temperature) -> dict:
    model = run.model
    return {
        "balance": float(balance),
        "temperature": float(temperature),
        "concentration": model.concentration,
        "center": bool(model.center),
        "whiten": bool(model.whiten),
        "max_iter": int(model.max_iter),
        "tol": float(model.tol),
        "device": str(model.device),
    }


def build_taxonomy(
    run,
    levels=None,
    *,
    balance: float = 1.0,
    temperature: float = 1.0,
    random_state: int = 0,
    n_terms: int = 8,
    max_auto_k: int = 32,
    llm=None,
    min_df=2,
    max_df=0.95,
) -> Taxonomy:
    """Build a one- or two-level taxonomy of a fit run.

    Level 1 is the run's own GEM clusters when ``K1`` equals the run's K (no refit),
    else a new GEM fit of the whole corpus. Level 2 fits GEM inside every level-1
    cluster on its documents (hard assignment); a cluster with fewer documents than
    ``K2`` gets ``min(K2, documents)`` children, and one with fewer than 2 stays a leaf.

    Parameters
    ----------
    run : FitRun
        From :func:`gem_app.storage.runs.fit_corpus` or :func:`gem_app.storage.runs.load_run`.
    levels : None, "auto", tuple of (int or "auto"), or str like "8,4"
        ``(K1,)`` or ``(K1, K2)``; None is ``(run K,)``; ``"auto"`` is
        ``("auto", "auto")``. An automatic level takes the K of lowest BIC over
        :func:`gem_app.evaluate.selection.candidate_ks` (level 2: the sum of the BICs of
        the level-1 clusters' fits, K at most 12); the curves are kept in
        ``Taxonomy.k_curves``.
    balance, temperature : float
        GEM parameters of the new fits (the other GEM parameters follow the run).
    random_state : int
        Seed of the new fits (and the default seed of split edits).
    n_terms : int
        Terms per node.
    max_auto_k : int
        Largest K that ``"auto"`` considers.
    llm : None, bool or dict
        Name nodes through :func:`gem_app.taxonomy.llm_labels.llm_labels` (True: configured
        from the environment; a dict: its keyword arguments). GIS labels stay when
        it is not configured or fails (``parameters["llm_message"]`` says why).
    min_df, max_df : int or float
        Vocabulary bounds (see :func:`gem_app.taxonomy.labels.build_vocabulary`).

    Returns
    -------
    Taxonomy
        Not yet saved: call ``taxonomy.save(run.folder)``.
    """
    check_int(n_terms, "n_terms", minimum=1)
    check_int(random_state, "random_state")
    run_k = int(run.model.n_clusters)
    levels = _parse_levels(levels, run_k)
    gem_params = _gem_params(run, balance, temperature)
    n_docs = len(run.frame)
    categories = run.frame["label"].to_numpy(dtype=object) if "label" in run.frame else None
    tokens = run.frame["tokens"].to_numpy(dtype=np.int64)
    parameters = {
        "levels_requested": list(levels),
        "balance": float(balance),
        "temperature": float(temperature),
        "random_state": int(random_state),
        "n_terms": int(n_terms),
        "max_auto_k": int(max_auto_k),
        "min_df": min_df,
        "max_df": max_df,
        "gem_params": gem_params,
    }
    root = Node(id=ROOT, parent=None, level=0, label="corpus", concentration=0.0)
    taxonomy = Taxonomy(
        {ROOT: root},
        np.full(n_docs, ROOT, dtype=object),
        run.frame["id"].to_numpy(),
        tokens,
        categories,
        parameters=parameters,
        run=run,
        folder=run.folder,
    )
    parameters = taxonomy.parameters
    ctx = taxonomy.split_context()
    parameters["vocabulary_size"] = int(ctx.terms.size)
    parameters["vocabulary_note"] = ctx.note
    X = run.embeddings
    weights = tokens.astype(np.float64)
    fit_params = dict(gem_params, random_state=int(random_state))

    # level 1
    own = None
    if levels[0] == run_k or (levels[0] == "auto" and run_k <= max_auto_k):
        own = split_from_model(run.model, X, labels=run.assignments["cluster"].to_numpy())
    if levels[0] == "auto":
        candidates = sorted(set(candidate_ks(n_docs, max_auto_k)) | ({run_k} if own else set()))
        split, taxonomy.k_curves[1] = choose_k(
            X, weights, candidates, fitted={run_k: own} if own else None, **fit_params
        )
    else:
        split = own if own is not None else fit_split(X, weights, levels[0], **fit_params)
    used = [split.n_clusters]
    level1 = taxonomy.add_split(ROOT, np.arange(n_docs), split)

    # level 2
    notes = []
    if len(levels) == 2:
        groups = {nid: taxonomy.documents_of(nid) for nid in sorted(level1, key=_id_key)}
        groups = {nid: rows for nid, rows in groups.items() if len(rows) >= 2}
        if levels[1] == "auto":
            k2, splits, taxonomy.k_curves[2] = _choose_level2(
                X, weights, groups, min(max_auto_k, LEVEL2_MAX_AUTO_K), fit_params, notes
            )
        else:
            k2 = levels[1]
            splits = {}
            for nid, rows in groups.items():
                try:
                    splits[nid] = fit_split(
                        X[rows], weights[rows], min(k2, len(rows)), **fit_params
                    )
                except ValueError as exc:
                    notes.append(f"node {nid} kept as a leaf: {exc}")
        for nid, sub in splits.items():
            taxonomy.add_split(nid, groups[nid], sub)
        used.append(k2)
    taxonomy.refresh_counts()
    parameters["levels"] = used
    parameters["notes"] = notes
    if llm:
        _name_with_llm(taxonomy, ctx, llm if isinstance(llm, dict) else {})
    taxonomy.rebase()
    return taxonomy


def _id_key(node_id: str) -> tuple:
    return tuple(int(p) if p.isdigit() else -1 for p in node_id.split("."))


def _choose_level2(X, weights, groups, max_k, fit_params, notes):
    """K2 of lowest total BIC over the level-1 clusters; returns (K2, splits, curve)."""
    largest = max((len(rows) for rows in groups.values()), default=0)
    candidates = candidate_ks(largest, max_k) if largest >= 2 else []
    if not candidates:
        notes.append("no level-1 cluster has 2 documents: no level 2")
        return None, {}, {}
    curve, best = {}, None
    for k in candidates:
        splits, total = {}, 0.0
        for nid, rows in groups.items():
            try:
                splits[nid] = fit_split(X[rows], weights[rows], min(k, len(rows)), **fit_params)
            except ValueError as exc:
                notes.append(f"K2 = {k}: node {nid} kept as a leaf: {exc}")
                continue
            total += split_bic(splits[nid], weights[rows])
        curve[int(k)] = float(total)
        if best is None or total < curve[best[0]]:
            best = (k, splits)
    return best[0], best[1], curve


def _name_with_llm(taxonomy, ctx, options: dict) -> None:
    nodes = [n for n in taxonomy.walk() if n.id != ROOT]
    clusters = [
        ClusterLabel(
            cluster=i,
            label=n.label,
            terms=list(n.terms),
            term_scores=list(n.term_scores),
            documents=[{"row": r, "score": 0.0, "text": snippet(ctx.texts[r])} for r in n.examples],
            mass=n.mass,
            gis_label=n.gis_label,
        )
        for i, n in enumerate(nodes)
    ]
    result = llm_labels(clusters, **options)
    for node, named in zip(nodes, result.clusters, strict=True):
        if named.source == "llm":
            node.label, node.source = named.label, "llm"
    taxonomy.parameters["llm_message"] = result.message
