"""The GEM estimator: an entropy-regularised vMF mixture on the sphere, fitted by MM.

See docs/method.md for the objective

    J(q, mu, kappa) = (1/A) sum_i a_i sum_k q_ik [log f_k(x_i) + log pi_k]
                      + T (1/A) sum_i a_i H(q_i) + lambda H(rho)

and for why every half-step of the fit loop (:mod:`gem_app.core.mm_run`) can only increase it.
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin, OneToOneFeatureMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted

from gem_app.core import dual, mm, model_files
from gem_app.core.mm_run import MMRun
from gem_app.core.row_checks import check_embeddings, check_sample_weight
from gem_app.core.rows import chunk_rows, compute_dtype, prepare_rows, resolve_device
from gem_app.core.sphere import SphereTransform
from gem_app.core.threads import chunk_workers
from gem_app.utils.validation import NumberInterval, check_int

__all__ = ["GEM"]


class GEM(OneToOneFeatureMixin, TransformerMixin, ClusterMixin, BaseEstimator):
    """Geometric Entropy Mixing: a vMF mixture with a mixing-balance (entropy) regularizer.

    Parameters
    ----------
    n_clusters : int, default=8
        K, the number of clusters.
    balance : float, default=1.0
        lambda >= 0, weight of the entropy of the cluster masses H(rho).
        0 gives plain vMF-EM with a fixed prior; large values force equal masses.
    temperature : float, default=1.0
        T > 0, the assignment temperature (1: EM posteriors; towards 0: hard assignments).
    prior : array-like of shape (n_clusters,), default=None
        The fixed generative prior pi (normalised here); uniform when None.
    max_iter : int, default=100
        Maximum number of MM iterations.
    tol : float, default=1e-6
        Stop when the relative change of J between two q-steps is below tol.
    n_init : int, default=1
        Number of initialisations; the run with the highest final J is kept.
    init : {"k-means++", "random"} or array-like of shape (n_clusters, n_features)
        Initial mean directions (an array is taken in the corrected sphere coordinates).
    init_size : int or None, default=None
        Rows of the warm start (with ``init="k-means++"`` or ``"random"``): when it is at
        most half of the rows of positive weight, the MM algorithm first runs on this many
        rows drawn at random (to the tolerance max(tol, 1e-4)) and the iterations on all
        rows start from its parameters and dual, so a fit makes fewer passes over all
        rows. The seeds are drawn from at most max(40 n_clusters, 8192) of these rows.
        None: max(256 n_clusters, 10,000) rows (faiss trains k-means on 256 rows per
        centroid). Must be >= n_clusters; a value >= n_samples turns the warm start off.
    concentration : {"tied", "per-cluster"}, default="tied"
        One kappa shared by all clusters, or one kappa per cluster.
    center, whiten : bool
        The anisotropy correction of :class:`gem_app.core.sphere.SphereTransform` (rows
        with no direction left after it are refused, docs/method.md section 1).
    device : str or torch.device, default="auto"
        "auto" (the input tensor's device, else CUDA when available, else CPU), "cpu",
        "cuda", "cuda:N" or "mps" (see :func:`gem_app.core.rows.resolve_device`).
    random_state : int, numpy RandomState or Generator, or None
        Seeds the initialisation. An int gives the same fit every time; a RandomState or
        Generator is drawn from (successive fits differ), as in scikit-learn.
    callback : callable(iteration, objective), optional
        Called after every q-step (progress bars).

    Attributes
    ----------
    mean_directions_ : ndarray of shape (n_clusters, n_features)
    concentrations_ : ndarray of shape (n_clusters,)
    cluster_masses_ : ndarray of shape (n_clusters,)
        rho, the (token-)weighted share of each cluster under the final q.
    labels_ : ndarray of shape (n_samples,)
    objective_history_ : list of float
        J after the initial (mu, kappa)-step and after every half-step since; after a
        warm start (``init_size``) it starts with J after the first q-step on all rows.
    objective_ : float
        The final J.
    anisotropy_ : float
        R0, the length of the mean resultant of the input directions.
    transform_ : SphereTransform
    dual_ : ndarray of shape (n_clusters,)
        eta, the dual variables of the balance term (frozen for predict_proba).
    n_iter_ : int
    reseeded_ : list of (iteration, cluster)
        Empty clusters that were re-seeded.
    prior_ : ndarray of shape (n_clusters,)
        The normalised prior pi.
    converged_ : bool
    n_features_in_ : int
    """

    _parameter_constraints: dict = {
        "n_clusters": [NumberInterval(Integral, 1, None, closed="left")],
        "balance": [NumberInterval(Real, 0, None, closed="left")],
        "temperature": [NumberInterval(Real, 0, None, closed="neither")],
        "prior": ["array-like", None],
        "max_iter": [NumberInterval(Integral, 1, None, closed="left")],
        "tol": [NumberInterval(Real, 0, None, closed="left")],
        "n_init": [NumberInterval(Integral, 1, None, closed="left")],
        "init": [StrOptions({"k-means++", "random"}), "array-like"],
        "init_size": [NumberInterval(Integral, 1, None, closed="left"), None],
        "concentration": [StrOptions({"tied", "per-cluster"})],
        "center": ["boolean"],
        "whiten": ["boolean"],
        "device": [str, torch.device],
        "random_state": ["random_state", np.random.Generator],
        "callback": [callable, None],
    }

    def __init__(
        self,
        n_clusters=8,
        *,
        balance=1.0,
        temperature=1.0,
        prior=None,
        max_iter=100,
        tol=1e-6,
        n_init=1,
        init="k-means++",
        init_size=None,
        concentration="tied",
        center=True,
        whiten=False,
        device="auto",
        random_state=None,
        callback=None,
    ):
        self.n_clusters = n_clusters
        self.balance = balance
        self.temperature = temperature
        self.prior = prior
        self.max_iter = max_iter
        self.tol = tol
        self.n_init = n_init
        self.init = init
        self.init_size = init_size
        self.concentration = concentration
        self.center = center
        self.whiten = whiten
        self.device = device
        self.random_state = random_state
        self.callback = callback

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # ------------------------------------------------------------------ validation
    def _check_data_params(self, n_positive: int, n_features: int) -> None:
        """The parameter checks that depend on the data (the rest are the constraints)."""
        K = self.n_clusters
        if K > n_positive:
            raise ValueError(
                f"n_clusters={K} is larger than the number of valid rows "
                f"({n_positive} with a positive weight)"
            )
        if self.init_size is not None and self.init_size < K:
            raise ValueError(f"init_size={self.init_size} must be >= n_clusters={K}")
        if not isinstance(self.init, str):
            init = np.asarray(self.init, dtype=np.float64)
            if init.shape != (K, n_features):
                raise ValueError(
                    f"init array must have shape ({K}, {n_features}), got {init.shape}"
                )
            if not np.all(np.isfinite(init)) or np.any(np.linalg.norm(init, axis=1) == 0):
                raise ValueError("init array rows must be finite and non-zero")

    def _log_prior(self) -> np.ndarray:
        K = self.n_clusters
        if self.prior is None:
            return np.full(K, -np.log(K))
        prior = np.asarray(self.prior, dtype=np.float64)
        if prior.shape != (K,):
            raise ValueError(f"prior must have shape ({K},), got {prior.shape}")
        bad = np.flatnonzero(~np.isfinite(prior) | (prior <= 0))
        if len(bad):
            raise ValueError(f"prior must be finite and > 0; entry {bad[0]} is {prior[bad[0]]!r}")
        return np.log(prior / prior.sum())

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None, sample_weight=None):
        """Fit GEM to the rows of X.

        Parameters
        ----------
        X : ndarray or torch.Tensor of shape (n_samples, n_features)
            Embeddings (any norm; they are projected to the sphere). float32 input is
            computed in float32 (float64 accumulations), float64 (and integer) in float64.
        y : ignored
        sample_weight : array-like of shape (n_samples,), optional
            Masses a_i >= 0 (token counts), not all zero; 1 when None.

        Returns
        -------
        self : GEM
        """
        self._validate_params()
        X = check_embeddings(X, self, scan_rows=False)  # SphereTransform.fit scans the rows
        n, d = X.shape
        weight = check_sample_weight(sample_weight, n)
        self._check_data_params(int(np.count_nonzero(weight)), d)
        log_prior = self._log_prior()
        device = resolve_device(self.device, X)
        dtype = compute_dtype(X)
        with chunk_workers(device):  # one pool of worker threads for the whole fit
            transform = SphereTransform(center=self.center, whiten=self.whiten)
            transform.fit(X, sample_weight=weight)
            mean, whitening = transform.correction()
            rows = prepare_rows(
                X,
                weight,
                mean,
                whitening,
                device=device,
                dtype=dtype,
                chunk_size=chunk_rows(d, self.n_clusters, device),
                eps=transform.eps,
            )
            rng = np.random.default_rng(self.random_state)
            best = None
            for _ in range(self.n_init):
                result = MMRun(self, rows, weight, log_prior, device, dtype, rng).fit()
                if best is None or result["objective"] > best["objective"]:
                    best = result
        for key, value in best.items():
            setattr(self, f"{key}_", value)
        self.transform_ = transform
        self.anisotropy_ = float(transform.anisotropy_)
        if not best["converged"]:
            warnings.warn(
                f"GEM did not converge in max_iter={self.max_iter} iterations "
                f"(tol={self.tol}); increase max_iter",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    # ------------------------------------------------------------------ prediction
    def predict_proba(self, X):
        """Soft assignments q of new rows: the stored transform, parameters and frozen eta.

        Parameters
        ----------
        X : ndarray or torch.Tensor of shape (n_samples, n_features)

        Returns
        -------
        q : same kind as X, shape (n_samples, n_clusters)
            float64 for float64 input, else float32; rows sum to 1.
        """
        parts = [q for _, q in self.iter_proba(X)]
        q = torch.cat(parts) if parts else torch.zeros((0, self.n_clusters))
        if isinstance(X, torch.Tensor):
            return q.to(X.device)
        return q.cpu().numpy()

    def iter_proba(self, X, chunk_size=None):
        """Yield ``(row_slice, q_chunk)`` over X without holding all of q (torch chunks)."""
        check_is_fitted(self)
        X = check_embeddings(X, self, reset=False)
        n, d = X.shape
        device = resolve_device(self.device, X)
        dtype = compute_dtype(X)
        mean, whitening = self.transform_.correction()
        if chunk_size is None:
            chunk_size = chunk_rows(d, self.n_clusters, device)
        size = check_int(chunk_size, "chunk_size", minimum=1)
        scores = mm.ScoreMap(mm.Params.of_model(self), device=device, dtype=dtype)
        eta = torch.as_tensor(self.dual_, device=device, dtype=dtype)
        for start in range(0, n, size):
            stop = min(start + size, n)
            rows = prepare_rows(
                X[start:stop],
                np.ones(stop - start),
                mean,
                whitening,
                device=device,
                dtype=dtype,
                chunk_size=size,
                eps=self.transform_.eps,
            )
            q, _ = dual.soft_assignments(scores(rows, 0), eta, self.temperature)
            yield slice(start, stop), q

    def predict(self, X):
        """Index of the most probable cluster for each row, shape (n_samples,), int64."""
        labels = [torch.argmax(q, dim=1).cpu() for _, q in self.iter_proba(X)]
        return torch.cat(labels).numpy() if labels else np.zeros(0, dtype=np.int64)

    def transform(self, X):
        """The corrected points on the sphere x_i, as the fit sees them (same kind as X).

        The same points as ``self.transform_.transform(X)`` (one rule,
        :mod:`gem_app.core.correction`), computed in the fit's compute dtype.

        Returns
        -------
        x : ndarray or Tensor of shape (n_samples, n_features), unit rows
        """
        check_is_fitted(self)
        X = check_embeddings(X, self, reset=False)
        device = resolve_device(self.device, X)
        mean, whitening = self.transform_.correction()
        rows = prepare_rows(
            X,
            np.ones(X.shape[0]),
            mean,
            whitening,
            device=device,
            dtype=compute_dtype(X),
            chunk_size=chunk_rows(X.shape[1], self.n_clusters, device),
            eps=self.transform_.eps,
        )
        parts = [rows.points(j) for j in range(len(rows))]
        x = torch.cat(parts) if parts else torch.zeros(tuple(X.shape), dtype=compute_dtype(X))
        return x.to(X.device) if isinstance(X, torch.Tensor) else x.cpu().numpy()

    # ------------------------------------------------------------------ persistence
    def save(self, path, *, metadata=None):
        """Write ``path/model.safetensors`` and ``path/model.json`` (no pickle), atomically.

        ``metadata``: extra JSON-serialisable information stored under "metadata".
        """
        check_is_fitted(self)
        return model_files.save_model(self, path, metadata=metadata)

    @classmethod
    def load(cls, path):
        """Load a model written by :meth:`save` (checks format and shapes)."""
        return model_files.load_model(cls, path)
