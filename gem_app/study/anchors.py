"""The mixtures every study measures, and RegMix's candidates around them.

Anchors (all within the epoch caps):

- ``natural``: token shares of the training text;
- ``uniform``: equal weights, capped (UniMax);
- ``current``: the curator's mixture (a mixture document, or the workspace's saved Mix &
  Export choice), when given;
- ``tau<T>``: GEM's entropy-temperature weights ``w(T)``
  (:func:`gem_app.mixing.weights.mixture_weights`, with the caps) for each temperature of the
  sweep;
- ``balanced``: every human category gets the same weight, spread over the domains in
  proportion to where its training tokens are (when the run has a label column).

Candidates are :func:`gem_app.mixing.strategies.regmix_candidates` around the natural shares
(prior softened to ``p^(1/2)``, Dirichlet strengths 0.1-5), rejected above the epoch caps.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from gem_app.evaluate.proxy import project_to_caps, window_counts
from gem_app.mixing.strategies import regmix_candidates
from gem_app.mixing.weights import mixture_weights
from gem_app.study.prepare import StudyData

__all__ = ["anchor_mixtures", "candidate_mixtures", "current_weights"]


def _capped(data: StudyData, weights) -> np.ndarray:
    w = np.where(data.natural > 0, np.asarray(weights, dtype=np.float64), 0.0)
    return project_to_caps(w, data.caps)


def anchor_mixtures(
    data: StudyData, temperatures, *, max_epochs: float, current=None
) -> dict[str, np.ndarray]:
    """Anchor name -> weights of shape (K,), in a fixed order.

    Parameters
    ----------
    data : StudyData
    temperatures : sequence of float
        The GEM sweep (1 is the natural mixture and is skipped).
    max_epochs : float
        The epoch cap behind ``data.caps``.
    current : array-like of shape (K,), optional
        The curator's mixture.
    """
    proxy = data.proxy
    anchors = {"natural": _capped(data, data.natural)}
    anchors["uniform"] = _capped(data, (data.natural > 0).astype(float))
    if current is not None:
        anchors["current"] = _capped(data, current)
    support = data.natural > 0
    for tau in temperatures:
        if float(tau) == 1.0:
            continue
        w = np.zeros(data.natural.size)
        w[support] = mixture_weights(
            data.natural[support],
            temperature=float(tau),
            tokens=window_counts(data.streams.lengths, proxy.context)[support],
            max_epochs=float(max_epochs),
            budget=float(proxy.steps * proxy.batch_size),
        )
        anchors[f"tau{float(tau):g}"] = w
    if data.category_tokens is not None:
        per_category = data.category_tokens * support[None, :]
        totals = per_category.sum(axis=1, keepdims=True)
        shares = np.divide(per_category, totals, out=np.zeros_like(per_category), where=totals > 0)
        present = (totals[:, 0] > 0).sum()
        anchors["balanced"] = _capped(data, shares.sum(axis=0) / max(present, 1))
    return anchors


def candidate_mixtures(data: StudyData, n: int, *, max_epochs: float, seed: int) -> np.ndarray:
    """``n`` RegMix candidates around the natural shares within the caps, shape (n, K).

    Raises
    ------
    ValueError
        The proxies read the training text so often that no candidate fits under the
        epoch cap; the message says how many steps leave room.
    """
    proxy = data.proxy
    windows = window_counts(data.streams.lengths, proxy.context)
    rows = proxy.steps * proxy.batch_size
    try:
        return regmix_candidates(
            data.natural,
            n,
            temperature=2.0,
            max_usage=max_epochs,
            tokens=windows,
            budget=float(rows),
            random_state=seed,
        )
    except ValueError as exc:
        reads = rows / max(int(windows.sum()), 1)
        roomy = max(1, int(max_epochs * windows.sum() / (4 * proxy.batch_size)))
        raise ValueError(
            f"{proxy.steps} steps read the training text {reads:.3g} times, too close to the "
            f"epoch cap of {max_epochs:g} for RegMix candidates to vary the mixture ({exc}); "
            f"use at most about {roomy} steps, more text, or a higher epoch cap"
        ) from exc


def current_weights(doc: Mapping, data: StudyData, assignments_sha256: str | None) -> np.ndarray:
    """The weights of a mixture document over the study's domains, in domain order.

    Raises
    ------
    ValueError
        The document was built on another run (assignments checksum), on other domains
        (clusters vs taxonomy, different ids), or the study uses label domains.
    """
    domains = data.domains
    if domains.source == "labels":
        raise ValueError(
            "a curator's mixture is over clusters or taxonomy leaves, not the label domains of "
            "--domains labels"
        )
    built_on = doc.get("assignments", {}).get("sha256")
    if assignments_sha256 is not None and built_on is not None and built_on != assignments_sha256:
        raise ValueError("the current mixture was built on another run (assignments differ)")
    source = doc.get("mixing", {}).get("domain_source")
    if source != domains.source:
        raise ValueError(
            f"the current mixture is over {source} but the study's domains are {domains.source}"
        )
    by_id = {str(d["id"]): float(d["weight"]) for d in doc["domains"]}
    if set(by_id) != set(domains.ids):
        missing = sorted(set(domains.ids) - set(by_id))
        extra = sorted(set(by_id) - set(domains.ids))
        raise ValueError(
            f"the current mixture's domains differ from the study's: missing {missing}, "
            f"extra {extra}"
        )
    return np.array([by_id[i] for i in domains.ids])
