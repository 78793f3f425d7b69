"""From measured proxies to a recommended mixture: the regressor, then the search.

:func:`fit_regression` chooses between the log-linear law and gradient boosting by
cross-validated Spearman (:func:`gem_app.evaluate.proxy.select_regressor`);
:func:`search_mixture` solves ``target + lambda KL(w || natural)`` exactly for the log-linear
law, or averages RegMix's top-k candidates for boosting, both within the epoch caps.
"""

from __future__ import annotations

import numpy as np

from gem_app.evaluate.proxy import (
    LogLinearRegressor,
    Target,
    project_to_caps,
    select_regressor,
    solve_kl,
    topk_average,
)
from gem_app.study.anchors import candidate_mixtures
from gem_app.study.config import StudyConfig
from gem_app.study.prepare import StudyData

__all__ = ["regression_data", "fit_regression", "search_mixture"]


def regression_data(records: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights ``W`` (n, K), per-domain bits per byte ``Y`` (n, K) and the scored domains (K,).

    Domains without held-out text (None in every record) get a placeholder 1.0: targets give
    them no weight.
    """
    W = np.array([r["weights"] for r in records], dtype=np.float64)
    Y = np.array([[np.nan if v is None else v for v in r["bpb"]] for r in records], dtype=float)
    scored = np.all(np.isfinite(Y), axis=0)
    Y[:, ~scored] = 1.0
    return W, Y, scored


def fit_regression(config: StudyConfig, target: Target, records: list[dict]):
    """The regressor chosen on ``records`` (main-seed proxies), and its regression.json part.

    Returns
    -------
    choice : gem_app.evaluate.proxy.RegressorChoice
    summary : dict
        ``model``, ``cv_spearman``, ``n``, ``scores``, and per proxy ``names``, out-of-fold
        predictions ``oof`` and ``measured`` target.
    """
    W, Y, _ = regression_data(records)
    choice = select_regressor(W, Y, target, random_state=config.seeds[0])
    summary = {
        "model": choice.name,
        "cv_spearman": choice.cv_spearman,
        "n": choice.n,
        "scores": choice.scores,
        "names": [r["name"] for r in records],
        "oof": [float(v) for v in choice.oof],
        "measured": [float(v) for v in target(Y)],
    }
    return choice, summary


def search_mixture(data: StudyData, config: StudyConfig, target: Target, records, choice):
    """Recommended weights: exact KL solve (log-linear law) or top-k averaging (boosting).

    Both searches run (the exact one on a log-linear law fitted for the purpose when boosting
    was chosen); the one matching the chosen regressor is returned.

    Returns
    -------
    weights : ndarray of shape (K,)
    predicted : float
        The chosen regressor's predicted target for ``weights``.
    details : dict
        ``search``, ``kl_penalty`` and both searches' weights and predictions.
    """
    W, Y, _ = regression_data(records)
    law = choice.model if choice.name == "log-linear" else LogLinearRegressor().fit(W, Y)
    exact = solve_kl(law, target, data.natural, data.caps, lam=config.kl_penalty)
    draws = candidate_mixtures(
        data, config.search_draws, max_epochs=config.max_epochs, seed=config.seeds[0] + 7919
    )
    topk, _ = topk_average(
        lambda X: target(choice.model.predict(X)), draws, top_k=min(config.top_k, len(draws))
    )
    topk = project_to_caps(topk, data.caps)
    search = "exact" if choice.name == "log-linear" else "topk"
    weights = exact if search == "exact" else topk

    def predicted(w):
        return float(target(choice.model.predict(w[None, :]))[0])

    details = {
        "search": search,
        "kl_penalty": config.kl_penalty,
        "exact": {"weights": exact.tolist(), "predicted": predicted(exact)},
        "topk": {"weights": topk.tolist(), "predicted": predicted(topk)},
    }
    return weights, predicted(weights), details
