"""Everything a study trains and scores on, prepared once from a run folder.

The held-out split is stratified by the run's *clusters* (for taxonomy leaves, by cluster and
leaf, so that every leaf has held-out text), so studies of the same run with
``--domains clusters`` and ``--domains labels`` score the same held-out documents. Held-out
documents are left out of the tokenizer's training text and of every training stream. Scores
are pooled with the inverse of each stratum's held-out rate as document weight, so the overall
bits per byte is that of the run's natural document mix even when large clusters are capped
at ``heldout_max_docs``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gem_app.evaluate.proxy import (
    HeldOut,
    ProxyConfig,
    ProxyTokenizer,
    TokenStreams,
    bits_per_byte,
    build_heldout,
    build_streams,
    domain_caps,
    heldout_split,
    train_tokenizer,
)
from gem_app.study.config import StudyConfig
from gem_app.study.domains import StudyDomains, document_categories, study_domains

__all__ = ["StudyData", "prepare_study", "measure"]


@dataclass
class StudyData:
    """The prepared inputs of a study.

    Attributes
    ----------
    domains : StudyDomains
    proxy : ProxyConfig
    tokenizer : ProxyTokenizer
    streams : TokenStreams
        Training tokens per domain.
    heldout : HeldOut
    heldout_domain : ndarray of shape (H,), int64
    heldout_weight : ndarray of shape (H,)
        Inverse held-out rate of each document's stratum (cluster, or cluster and leaf).
    categories : list of str or None
        Human categories (None without a label column).
    heldout_category : ndarray of shape (H,) or None
    category_tokens : ndarray of shape (C, K) or None
        Training tokens of every category in every domain.
    caps : ndarray of shape (K,)
        Largest weight of each domain under the epoch cap.
    natural : ndarray of shape (K,)
        Token shares of the training streams (0 for excluded domains).
    byte_share : ndarray of shape (K,)
        Weighted held-out bytes of each domain (the ``overall`` target's weights).
    """

    domains: StudyDomains
    proxy: ProxyConfig
    tokenizer: ProxyTokenizer
    streams: TokenStreams
    heldout: HeldOut
    heldout_domain: np.ndarray
    heldout_weight: np.ndarray
    categories: list | None
    heldout_category: np.ndarray | None
    category_tokens: np.ndarray | None
    caps: np.ndarray
    natural: np.ndarray
    byte_share: np.ndarray


def _check_split(held: np.ndarray, domain: np.ndarray, domains: StudyDomains, min_bytes: int):
    k = len(domains)
    if not held.any():
        raise ValueError(
            f"no document of the run has at least {min_bytes} bytes of text: the run has no "
            "documents long enough for the held-out split"
        )
    held_count = np.bincount(domain[held], minlength=k)
    train_count = np.bincount(domain[~held], minlength=k)
    for j in range(k):
        if domains.excluded[j]:
            continue
        if held_count[j] == 0 or train_count[j] == 0:
            what = "held-out" if held_count[j] == 0 else "training"
            raise ValueError(
                f"domain {domains.ids[j]} ({domains.names[j]}) has no {what} document: the run "
                f"has too few documents of at least {min_bytes} bytes for the held-out split"
            )


def prepare_study(run, config: StudyConfig, tokenizer: ProxyTokenizer | None = None) -> StudyData:
    """Split, tokenize and stream a run for a study.

    Parameters
    ----------
    run : gem_app.storage.runs.FitRun
    config : StudyConfig
    tokenizer : ProxyTokenizer, optional
        A tokenizer saved by an earlier run of the same study; trained on the training
        documents when None.

    Raises
    ------
    ValueError
        Documents too short for the held-out split, a domain without held-out or training
        documents, or epoch caps that no mixture can meet.
    """
    proxy = config.proxy_config()
    domains = study_domains(run, config.domains)
    texts = run.frame["text"].astype(str).tolist()
    doc_bytes = np.array([len(t.encode("utf-8")) for t in texts], dtype=np.int64)
    domain = domains.document_domain
    strata = run.assignments["cluster"].to_numpy(dtype=np.int64)
    if domains.source == "taxonomy":  # leaves may split clusters: stratify by both
        strata = strata * len(domains) + domain
    held = heldout_split(
        strata,
        doc_bytes >= config.min_doc_bytes,
        share=config.heldout_share,
        max_docs=config.heldout_max_docs,
        random_state=config.seed,
    )
    _check_split(held, domain, domains, config.min_doc_bytes)
    train_rows = np.flatnonzero(~held)
    held_rows = np.flatnonzero(held)
    if tokenizer is None:
        tokenizer = train_tokenizer([texts[i] for i in train_rows], proxy.vocab_size)
    tokens = tokenizer.encode(texts)
    streams = build_streams(
        [tokens[i] for i in train_rows],
        train_rows,
        domain[train_rows],
        len(domains),
        eos_id=tokenizer.eos_id,
        vocab_size=tokenizer.vocab_size,
        doc_bytes=doc_bytes[train_rows],
    )
    heldout = build_heldout(
        [tokens[i] for i in held_rows], held_rows, doc_bytes[held_rows], eos_id=tokenizer.eos_id
    )
    per_stratum = np.bincount(strata)
    held_per_stratum = np.bincount(strata[held], minlength=per_stratum.size)
    weight = per_stratum[strata[held_rows]] / held_per_stratum[strata[held_rows]]
    heldout_domain = domain[held_rows]
    k = len(domains)
    byte_mass = np.bincount(heldout_domain, weights=weight * doc_bytes[held_rows], minlength=k)
    natural = np.where(domains.excluded, 0.0, streams.lengths)
    natural = natural / natural.sum()
    caps = domain_caps(
        streams.lengths,
        context=proxy.context,
        rows=proxy.steps * proxy.batch_size,
        max_epochs=config.max_epochs,
    )
    if caps[natural > 0].sum() < 1.0:
        raise ValueError(
            f"a proxy trains on {proxy.budget} tokens but the run's training text has "
            f"{int(streams.lengths.sum())} tokens: more than max_epochs={config.max_epochs:g} "
            "epochs; lower --steps or raise the epoch cap"
        )
    categories = heldout_category = category_tokens = None
    labels = document_categories(run)
    if labels is not None:
        categories, codes = np.unique(labels.to_numpy(dtype=str), return_inverse=True)
        categories = [str(c) for c in categories]
        heldout_category = codes[held_rows]
        lengths = np.array([tokens[i].size + 1 for i in train_rows], dtype=np.float64)
        category_tokens = np.zeros((len(categories), k))
        np.add.at(category_tokens, (codes[train_rows], domain[train_rows]), lengths)
    return StudyData(
        domains=domains,
        proxy=proxy,
        tokenizer=tokenizer,
        streams=streams,
        heldout=heldout,
        heldout_domain=heldout_domain,
        heldout_weight=weight,
        categories=categories,
        heldout_category=heldout_category,
        category_tokens=category_tokens,
        caps=caps,
        natural=natural,
        byte_share=byte_mass / byte_mass.sum(),
    )


def measure(data: StudyData, doc_nats) -> dict:
    """Bits per byte of one proxy from its held-out document losses (nats, shape (H,)).

    Returns
    -------
    dict
        ``bpb`` (list, per domain), ``overall_bpb`` (float) and ``category_bpb``
        ({category: float}, empty without labels); every value pooled with the documents'
        weights (see the module docstring).
    """
    nats = np.asarray(doc_nats, dtype=np.float64) * data.heldout_weight
    size = data.heldout.doc_bytes * data.heldout_weight
    k = len(data.domains)
    per_domain = bits_per_byte(nats, size, data.heldout_domain, k)
    overall = float(bits_per_byte(nats, size)[0])
    category = {}
    if data.categories is not None:
        values = bits_per_byte(nats, size, data.heldout_category, len(data.categories))
        category = {
            c: float(v) for c, v in zip(data.categories, values, strict=True) if np.isfinite(v)
        }
    return {
        "bpb": [float(v) if np.isfinite(v) else None for v in per_domain],
        "overall_bpb": overall,
        "category_bpb": category,
    }
