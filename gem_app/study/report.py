"""A study's results as documents and as the arrays its figures draw.

- :func:`seed_noise`: the seed noise of the bits per byte, from the mixtures that were trained
  with several seeds (each group's sample standard deviation, pooled over groups).
- :func:`study_document`: ``study.json`` (the keys of issue 11, nothing else).
- :func:`recommended_document`: ``recommended.json``, a canonical mixture document that
  ``gem export --from`` reads (clusters and taxonomy domains only).
- :func:`delta_table`, :func:`weights_table`, :func:`prediction_table`: what the Evaluate
  page draws (changes against natural, weights per mixture, predicted vs measured).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from gem_app.export.document import build_mixture_document
from gem_app.mixing.weights import MixingReport
from gem_app.utils.information import entropy, kl_divergence

__all__ = [
    "PROXY_KEYS",
    "mean_bpb",
    "seed_noise",
    "study_document",
    "recommended_document",
    "delta_table",
    "weights_table",
    "prediction_table",
]

#: The keys of a proxy in study.json.
PROXY_KEYS = ("name", "kind", "weights", "seed", "bpb", "overall_bpb", "category_bpb", "seconds")


def mean_bpb(bpb: Sequence) -> float:
    """Mean of the per-domain bits per byte over the domains that were scored (None skipped)."""
    values = np.array([np.nan if v is None else float(v) for v in bpb], dtype=np.float64)
    return float(np.nanmean(values))


def _mixture_key(proxy: Mapping) -> str:
    """Proxies of one mixture trained with different seeds share this key (name minus seed)."""
    name = str(proxy["name"])
    return name.rsplit("-s", 1)[0] if "-s" in name else name


def seed_noise(proxies: Sequence[Mapping]) -> dict:
    """Seed noise of the measured bits per byte.

    Mixtures trained with two or more seeds form groups; the standard deviation is
    ``sqrt(mean over groups of the sample variance)``.

    Returns
    -------
    dict
        ``overall_bpb_std``, ``mean_bpb_std`` (floats, None without repeated mixtures) and
        ``bpb_std`` (list, per domain) and ``groups`` (number of repeated mixtures).
    """
    groups: dict[str, list[Mapping]] = {}
    for proxy in proxies:
        groups.setdefault(_mixture_key(proxy), []).append(proxy)
    repeated = [g for g in groups.values() if len(g) >= 2]
    if not repeated:
        return {"overall_bpb_std": None, "mean_bpb_std": None, "bpb_std": None, "groups": 0}

    def pooled(values_of) -> np.ndarray:
        variances = [
            np.var(np.array([values_of(p) for p in g], dtype=float), axis=0, ddof=1)
            for g in repeated
        ]
        return np.sqrt(np.nanmean(np.array(variances, dtype=float), axis=0))

    per_domain = pooled(lambda p: [np.nan if v is None else v for v in p["bpb"]])
    return {
        "overall_bpb_std": float(pooled(lambda p: p["overall_bpb"])),
        "mean_bpb_std": float(pooled(lambda p: mean_bpb(p["bpb"]))),
        "bpb_std": [float(v) for v in per_domain],
        "groups": len(repeated),
    }


def study_document(
    domain_names: Sequence[str],
    proxies: Sequence[Mapping],
    regression: Mapping,
    recommended: Mapping,
) -> dict:
    """``study.json``: domains, proxies (each once), seed noise, regression, recommendation.

    Parameters
    ----------
    domain_names : sequence of str
    proxies : sequence of mapping
        Proxy records (extra keys are dropped; see :data:`PROXY_KEYS`).
    regression : mapping
        ``model``, ``cv_spearman``, ``n``.
    recommended : mapping
        ``weights``, ``predicted``, ``measured``.
    """
    names = [p["name"] for p in proxies]
    if len(set(names)) != len(names):
        raise ValueError("a study lists each proxy once")
    noise = seed_noise(proxies)
    return {
        "domains": list(domain_names),
        "proxies": [{key: p[key] for key in PROXY_KEYS} for p in proxies],
        "noise": {
            "overall_bpb_std": noise["overall_bpb_std"],
            "mean_bpb_std": noise["mean_bpb_std"],
        },
        "regression": {
            "model": regression.get("model"),
            "cv_spearman": regression.get("cv_spearman"),
            "n": int(regression.get("n", 0)),
        },
        "recommended": {
            "weights": [float(w) for w in recommended["weights"]],
            "predicted": recommended.get("predicted"),
            "measured": recommended.get("measured"),
        },
    }


def recommended_document(run, domain_set, weights) -> dict:
    """A canonical mixture document of ``weights`` over the export domains of a run.

    The weights are the study's (shares of training tokens); natural shares, tokens and
    epochs are the run's, at a budget of the run's tokens. ``tau`` is 1 and ``beta`` 0: the
    weights do not come from the entropy temperature.

    Parameters
    ----------
    run : gem_app.storage.runs.FitRun
    domain_set : gem_app.export.domains.DomainSet
    weights : array-like of shape (K,)
    """
    w = np.asarray(weights, dtype=np.float64)
    w = np.where(w > 0, w, 0.0)
    w = w / w.sum()
    w[np.argmax(w)] += 1.0 - float(np.sum(w))  # sum exactly 1 for the schema check
    natural = domain_set.natural_shares
    tokens = domain_set.tokens
    budget = float(tokens.sum())
    allocated = w * budget
    with np.errstate(divide="ignore", invalid="ignore"):
        epochs = np.where(tokens > 0, allocated / tokens, 0.0)
    excluded = np.array([d.excluded for d in domain_set.domains], dtype=bool)
    h = entropy(w)
    report = MixingReport(
        natural_share=natural,
        weights=w,
        entropy=h,
        effective_domains=float(np.exp(h)),
        kl_to_natural=kl_divergence(w, natural),
        temperature=1.0,
        gis_strength=0.0,
        excluded=excluded,
        tokens=tokens,
        budget=budget,
        max_epochs=None,
        allocated_tokens=allocated,
        epochs=epochs,
        labels=[d.name for d in domain_set.domains],
        multipliers=np.where(excluded, 0.0, 1.0),
    )
    return build_mixture_document(run, report, domains=domain_set)


# ----------------------------------------------------------------------------- views
def _main_seed(study: Mapping) -> int:
    return min(int(p["seed"]) for p in study["proxies"])


def _display_name(proxy: Mapping) -> str:
    return _mixture_key(proxy).removeprefix("anchor-")


def delta_table(study: Mapping, *, kinds=("anchor", "recommended", "doremi")) -> dict:
    """Change in bits per byte against the natural mixture, at the main seed.

    Returns
    -------
    dict
        ``mixtures`` (M names), ``domains`` (K names), ``delta`` (M x K list, ``None`` where
        not scored), ``sigma`` (K, per-domain seed noise or None) and ``overall_delta`` (M).
    """
    seed = _main_seed(study)
    at_seed = [p for p in study["proxies"] if int(p["seed"]) == seed]
    natural = next((p for p in at_seed if _display_name(p) == "natural"), None)
    if natural is None:
        raise ValueError("the study has no natural anchor at its main seed")
    base = np.array([np.nan if v is None else v for v in natural["bpb"]], dtype=float)
    rows = [p for p in at_seed if p["kind"] in kinds and p is not natural]
    delta = [
        [
            None if not np.isfinite(d) else float(d)
            for d in (np.array([np.nan if v is None else v for v in p["bpb"]], dtype=float) - base)
        ]
        for p in rows
    ]
    noise = seed_noise(study["proxies"])
    return {
        "mixtures": [_display_name(p) for p in rows],
        "domains": list(study["domains"]),
        "delta": delta,
        "sigma": noise["bpb_std"],
        "overall_delta": [float(p["overall_bpb"] - natural["overall_bpb"]) for p in rows],
    }


def weights_table(study: Mapping) -> dict:
    """Weights of the natural, current (when measured) and recommended mixtures per domain."""
    seed = _main_seed(study)
    out = {}
    for p in study["proxies"]:
        name = _display_name(p)
        if int(p["seed"]) == seed and name in ("natural", "current"):
            out[name] = list(p["weights"])
    out["recommended"] = list(study["recommended"]["weights"])
    return {"domains": list(study["domains"]), "weights": out}


def prediction_table(regression: Mapping) -> dict:
    """Out-of-fold predicted vs measured target of the regression's mixtures."""
    return {
        "names": list(regression.get("names", [])),
        "predicted": list(regression.get("oof", [])),
        "measured": list(regression.get("measured", [])),
        "cv_spearman": regression.get("cv_spearman"),
        "model": regression.get("model"),
    }
