"""From mixture weights to held-out loss: the regressors, the targets and their selection.

Each regressor predicts the bits per byte of every domain from the mixture weights, one law per
domain; a :class:`Target` turns the per-domain values into the number a study minimises (mean
over domains, worst domain, overall held-out text, or one domain).

- :class:`LogLinearRegressor`: ``log bpb_j = c_j + sum_k beta_jk w_k`` (Data Mixing Laws,
  OLMix), ridge on ``beta`` in float64, closed form. Smooth and convex in ``w``, so the
  regularised optimum can be solved exactly (:mod:`gem_app.evaluate.proxy.search`).
- :class:`BoostedRegressor`: one scikit-learn ``HistGradientBoostingRegressor`` per domain
  (RegMix used LightGBM), with leaves small enough for a few dozen proxies.

:func:`select_regressor` picks the one with the higher cross-validated Spearman correlation
between predicted and measured target (out-of-fold predictions), and refits it on every proxy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import spearmanr
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_limits

__all__ = [
    "TARGETS",
    "Target",
    "parse_target",
    "LogLinearRegressor",
    "BoostedRegressor",
    "RegressorChoice",
    "cross_val_predict_target",
    "select_regressor",
]

#: Target kinds (``domain:ID`` names one domain).
TARGETS = ("mean", "worst", "overall", "domain")


@dataclass(frozen=True)
class Target:
    """What a study minimises, as a function of per-domain bits per byte.

    Attributes
    ----------
    kind : {"mean", "worst", "overall", "domain"}
    weights : ndarray of shape (K,)
        Linear targets: ``target = bpb @ weights`` (``1/K``, held-out byte shares, or a unit
        vector); the worst domain uses ``max_j bpb_j`` instead.
    name : str
        ``"mean"``, ``"worst"``, ``"overall"`` or ``"domain:ID"``.
    scored : ndarray of bool, shape (K,)
        Domains with held-out text; the others never count (weight 0, left out of the max).
    """

    kind: str
    weights: np.ndarray = field(repr=False)
    name: str
    scored: np.ndarray = field(repr=False, default=None)

    def __call__(self, bpb) -> np.ndarray:
        """Target of per-domain bits per byte of shape (..., K) -> shape (...)."""
        bpb = np.asarray(bpb, dtype=np.float64)
        if bpb.shape[-1] != self.weights.size:
            raise ValueError(f"bpb has {bpb.shape[-1]} domains, the target {self.weights.size}")
        if self.kind == "worst":
            scored = np.ones(bpb.shape[-1], bool) if self.scored is None else self.scored
            return bpb[..., scored].max(axis=-1)
        return bpb @ self.weights


def parse_target(text: str, domain_ids, byte_share, scored=None) -> Target:
    """``"mean" | "worst" | "overall" | "domain:ID"`` over the domains ``domain_ids``.

    Parameters
    ----------
    text : str
    domain_ids : sequence of str
        Domain ids, in domain order (``domain:ID`` must name one of them).
    byte_share : array-like of shape (K,)
        Held-out bytes of each domain over all held-out bytes (the ``overall`` weights).
    scored : array-like of bool, shape (K,), optional
        Domains with held-out text (all by default).
    """
    ids = [str(i) for i in domain_ids]
    k = len(ids)
    scored = np.ones(k, bool) if scored is None else np.asarray(scored, dtype=bool)
    if scored.shape != (k,) or not scored.any():
        raise ValueError(f"scored must be {k} booleans, at least one True")
    text = str(text).strip()
    if text in ("mean", "worst"):
        return Target(text, scored / scored.sum(), text, scored)
    if text == "overall":
        share = np.asarray(byte_share, dtype=np.float64)
        if share.shape != (k,) or not np.isclose(share.sum(), 1.0):
            raise ValueError(f"byte_share must be {k} shares summing to 1")
        return Target("overall", share, "overall", scored)
    if text.startswith("domain:"):
        key = text.split(":", 1)[1].strip()
        if key not in ids:
            shown = ", ".join(ids[:20]) + (", ..." if k > 20 else "")
            raise ValueError(f"unknown domain {key!r} in target {text!r}: the domains are {shown}")
        if not scored[ids.index(key)]:
            raise ValueError(f"domain {key!r} of target {text!r} has no held-out text to score")
        unit = np.zeros(k)
        unit[ids.index(key)] = 1.0
        return Target("domain", unit, f"domain:{key}", scored)
    raise ValueError(f"unknown target {text!r}: expected mean, worst, overall or domain:ID")


def _check_xy(W, Y) -> tuple[np.ndarray, np.ndarray]:
    W = np.asarray(W, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if W.ndim != 2 or Y.ndim != 2 or W.shape[0] != Y.shape[0]:
        raise ValueError(f"need W of shape (n, K) and Y of shape (n, m), got {W.shape}, {Y.shape}")
    if W.shape[0] < 2:
        raise ValueError(f"need at least 2 mixtures to fit a regressor, got {W.shape[0]}")
    if not (np.all(np.isfinite(W)) and np.all(np.isfinite(Y))):
        raise ValueError("W and Y must be finite")
    return W, Y


# ----------------------------------------------------------------------------- log-linear
def _ridge_log_linear(W: np.ndarray, log_y: np.ndarray, alpha: float):
    """Intercepts (m,) and coefficients (K, m) of ``log_y ~ c + W beta`` (ridge on beta)."""
    w_mean = W.mean(axis=0)
    y_mean = log_y.mean(axis=0)
    Wc = W - w_mean
    gram = Wc.T @ Wc + alpha * np.eye(W.shape[1])
    coef = np.linalg.solve(gram, Wc.T @ (log_y - y_mean))
    return y_mean - w_mean @ coef, coef


class LogLinearRegressor:
    """Per-domain log-linear law ``y_j = exp(c_j + sum_k beta_jk w_k)``.

    Parameters
    ----------
    alpha : float, default 1e-4
        Ridge penalty on ``beta`` (the weights sum to 1, so ``c`` and a common shift of
        ``beta`` are not separately identified; the ridge picks the smallest ``beta``).

    Attributes
    ----------
    intercept_ : ndarray of shape (m,)
    coef_ : ndarray of shape (K, m)
    """

    name = "log-linear"

    def __init__(self, alpha: float = 1e-4):
        self.alpha = alpha

    def fit(self, W, Y) -> LogLinearRegressor:
        """Fit on weights ``W`` (n, K) and positive losses ``Y`` (n, m)."""
        W, Y = _check_xy(W, Y)
        if np.any(Y <= 0):
            raise ValueError("the log-linear law needs positive losses")
        if not np.isfinite(self.alpha) or self.alpha < 0:
            raise ValueError(f"alpha must be finite and >= 0, got {self.alpha}")
        self.intercept_, self.coef_ = _ridge_log_linear(W, np.log(Y), float(self.alpha))
        return self

    def predict(self, W) -> np.ndarray:
        """Predicted losses, shape (n, m)."""
        W = np.atleast_2d(np.asarray(W, dtype=np.float64))
        return np.exp(self.intercept_ + W @ self.coef_)


class BoostedRegressor:
    """One ``HistGradientBoostingRegressor`` per output column.

    Parameters
    ----------
    max_iter, learning_rate, max_leaf_nodes, min_samples_leaf : see scikit-learn
        Defaults sized for 20-200 training mixtures.
    random_state : int or None

    Attributes
    ----------
    estimators_ : list of HistGradientBoostingRegressor
    """

    name = "gbm"

    def __init__(
        self,
        max_iter: int = 200,
        learning_rate: float = 0.05,
        max_leaf_nodes: int = 8,
        min_samples_leaf: int = 3,
        random_state=None,
    ):
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.random_state = random_state

    def fit(self, W, Y) -> BoostedRegressor:
        """Fit one boosted model per column of ``Y`` (n, m) on ``W`` (n, K)."""
        W, Y = _check_xy(W, Y)
        with threadpool_limits(1, user_api="openmp"):  # tiny fits: threads only add overhead
            self.estimators_ = self._fit_all(W, Y)
        return self

    def _fit_all(self, W: np.ndarray, Y: np.ndarray) -> list:
        return [
            HistGradientBoostingRegressor(
                max_iter=self.max_iter,
                learning_rate=self.learning_rate,
                max_leaf_nodes=self.max_leaf_nodes,
                min_samples_leaf=self.min_samples_leaf,
                early_stopping=False,
                random_state=self.random_state,
            ).fit(W, Y[:, j])
            for j in range(Y.shape[1])
        ]

    def predict(self, W) -> np.ndarray:
        """Predicted losses, shape (n, m)."""
        W = np.atleast_2d(np.asarray(W, dtype=np.float64))
        with threadpool_limits(1, user_api="openmp"):
            return np.column_stack([est.predict(W) for est in self.estimators_])


def _make(name: str, random_state):
    if name == "log-linear":
        return LogLinearRegressor()
    if name == "gbm":
        return BoostedRegressor(random_state=random_state)
    raise ValueError(f"unknown regressor {name!r}: expected log-linear or gbm")


def cross_val_predict_target(
    name: str, W, Y, target: Target, *, n_splits: int = 5, random_state=None
) -> np.ndarray:
    """Out-of-fold predicted target of every mixture (shape (n,)), K-fold (shuffled)."""
    W, Y = _check_xy(W, Y)
    n = W.shape[0]
    folds = KFold(n_splits=min(n_splits, n), shuffle=True, random_state=random_state)
    predicted = np.empty(n)
    for train, test in folds.split(W):
        model = _make(name, random_state).fit(W[train], Y[train])
        predicted[test] = target(model.predict(W[test]))
    return predicted


@dataclass
class RegressorChoice:
    """The selected regressor, fitted on every mixture, and its cross-validation.

    Attributes
    ----------
    name : {"log-linear", "gbm"}
    model : LogLinearRegressor or BoostedRegressor
    cv_spearman : float
        Spearman correlation of the out-of-fold predicted target with the measured target.
    scores : dict
        ``{name: cv_spearman}`` of every candidate regressor.
    oof : ndarray of shape (n,)
        Out-of-fold predicted target of the selected regressor.
    n : int
        Mixtures it was fitted on.
    """

    name: str
    model: object
    cv_spearman: float
    scores: dict
    oof: np.ndarray
    n: int


def select_regressor(
    W, Y, target: Target, *, candidates=("log-linear", "gbm"), n_splits: int = 5, random_state=0
) -> RegressorChoice:
    """Fit each candidate regressor, keep the one with the best cross-validated Spearman.

    Ties (and a NaN correlation, e.g. constant predictions) go to the earlier candidate.

    Raises
    ------
    ValueError
        Fewer than 4 mixtures (cross-validation needs them).
    """
    W, Y = _check_xy(W, Y)
    if W.shape[0] < 4:
        raise ValueError(
            f"need at least 4 measured mixtures to choose a regressor, got {W.shape[0]}"
        )
    measured = target(Y)
    scores, oofs = {}, {}
    for name in candidates:
        oofs[name] = cross_val_predict_target(
            name, W, Y, target, n_splits=n_splits, random_state=random_state
        )
        rho = spearmanr(oofs[name], measured).statistic
        scores[name] = float(rho) if np.isfinite(rho) else float("nan")
    best = candidates[0]
    for name in candidates[1:]:
        if np.isfinite(scores[name]) and not scores[name] <= scores[best]:
            best = name
    return RegressorChoice(
        name=best,
        model=_make(best, random_state).fit(W, Y),
        cv_spearman=scores[best],
        scores=scores,
        oof=oofs[best],
        n=int(W.shape[0]),
    )
