"""Points on the unit hypersphere: the anisotropy correction as a fitted transform.

METHOD.md section 1: embeddings ``e_i`` become unit vectors ``u_i``, the
(weighted) mean resultant ``m`` is removed and the result is normalised again,
``x_i = normalize(u_i - m)``; ``R0 = ||m||`` measures the anisotropy.
"""

from __future__ import annotations

from numbers import Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from gem_app.core.correction import (
    NO_DIRECTION_EPS,
    correct_units,
    flagged_rows,
    may_have_no_direction,
    no_direction_message,
)
from gem_app.core.row_checks import (
    check_embeddings,
    check_sample_weight,
    describe_invalid,
    invalid_in_chunk,
    row_chunks,
)
from gem_app.core.threads import chunk_workers, map_chunks
from gem_app.utils.validation import NumberInterval

__all__ = ["SphereTransform"]

_EIGENVALUE_FLOOR = 1e-3  # whitening floor, relative to the mean eigenvalue
_STATE_VERSION = 1


def _unit_rows(chunk: torch.Tensor) -> torch.Tensor:
    """Rows divided by their Euclidean norm (float64; scaled first so nothing over/underflows)."""
    scaled = chunk / chunk.abs().amax(dim=1, keepdim=True)
    return scaled / torch.linalg.vector_norm(scaled, dim=1, keepdim=True)


def _zca_whitening(covariance: np.ndarray, floor: float = _EIGENVALUE_FLOOR) -> np.ndarray:
    """Symmetric (ZCA) map ``C^{-1/2}`` with eigenvalues floored at ``floor * mean eigenvalue``.

    Parameters
    ----------
    covariance : ndarray, shape (d, d), symmetric positive semi-definite

    Returns
    -------
    ndarray, shape (d, d)
    """
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    lowest = max(floor * float(np.mean(np.clip(eigenvalues, 0.0, None))), 1e-300)
    inv_sqrt = 1.0 / np.sqrt(np.maximum(eigenvalues, lowest))
    return (eigenvectors * inv_sqrt) @ eigenvectors.T


def _compute_device(arr) -> torch.device:
    """Where float64 statistics are computed: X's own device (CPU for numpy and for MPS)."""
    if torch.is_tensor(arr) and arr.device.type != "mps":
        return arr.device
    return torch.device("cpu")


def _as_float64(chunk, device: torch.device) -> torch.Tensor:
    """A float64 torch copy of a numpy or torch row chunk, on ``device``."""
    if torch.is_tensor(chunk):
        return chunk.to(device=device, dtype=torch.float64, copy=True)
    return torch.from_numpy(np.array(chunk, dtype=np.float64))


def _float64_chunks(arr, device: torch.device):
    """Yield ``(start, stop, original_chunk, float64 torch chunk on device)`` over row chunks."""
    for start, stop in row_chunks(arr.shape[0], arr.shape[1]):
        chunk = arr[start:stop]
        yield start, stop, chunk, _as_float64(chunk, device)


def _output_dtype(arr) -> torch.dtype:
    """float64 for float64 (and integer/bool) input, float32 for narrower floats."""
    if torch.is_tensor(arr):
        narrow = arr.is_floating_point() and arr.dtype != torch.float64
    else:
        narrow = arr.dtype.kind == "f" and arr.dtype != np.float64
    return torch.float32 if narrow else torch.float64


class SphereTransform(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Map embeddings to unit vectors with the anisotropy (mean resultant) removed.

    ``u_i = e_i / ||e_i||``; ``m = sum_i a_i u_i / sum_i a_i`` (``a`` = sample
    weights, default 1); ``R0 = ||m||`` is the anisotropy. Output rows are
    ``x_i = normalize(u_i - m)`` (``center=True``) or ``x_i = u_i``.
    With ``whiten=True`` the centred vectors are first multiplied by the ZCA map
    ``C^{-1/2}`` of their weighted covariance ``C`` (eigenvalues floored at
    1e-3 times the mean eigenvalue, so that degenerate directions are not
    blown up); with ``center=False`` ``C`` is the second moment of the ``u_i``.

    A row whose centred vector is numerically zero (``||u_i - m||^2 <= eps``) has no
    direction: ``fit`` and ``transform`` refuse it by row number
    (:mod:`gem_app.core.correction`, the rule GEM's fit uses too). Since
    ``||u_i - m|| >= 1 - R0``, this only happens when (nearly) all rows point one way.

    Parameters
    ----------
    center : bool, default True
        Subtract the mean resultant ``m`` before normalising.
    whiten : bool, default False
        Apply ZCA whitening to the (centred) unit vectors before normalising.
    eps : float, default 1e-12
        Squared-norm threshold under which a centred vector counts as zero.

    Attributes
    ----------
    mean_ : ndarray of shape (d,), float64
        Weighted mean resultant ``m`` of the unit vectors.
    anisotropy_ : float
        ``R0 = ||m||`` in ``[0, 1]``; near 1 when all embeddings share a cone.
    whitening_ : ndarray of shape (d, d) or None
        The symmetric whitening matrix, ``None`` unless ``whiten=True``.
    n_features_in_ : int
        ``d``.

    Notes
    -----
    ``fit`` and ``transform`` accept numpy arrays and torch tensors (any
    device). Statistics are accumulated in float64 over row chunks, so no
    full-size float64 copy of ``X`` is ever made. ``transform`` returns the
    same kind of array on the same device: float64 for float64 (and integer)
    input, float32 for float32/float16/bfloat16 input.
    """

    _parameter_constraints: dict = {
        "center": ["boolean"],
        "whiten": ["boolean"],
        "eps": [NumberInterval(Real, 0, 1, closed="left")],
    }

    def __init__(self, *, center: bool = True, whiten: bool = False, eps: float = NO_DIRECTION_EPS):
        self.center = center
        self.whiten = whiten
        self.eps = eps

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None, sample_weight=None) -> SphereTransform:
        """Estimate the mean resultant (and the whitening map) from ``X``.

        Parameters
        ----------
        X : ndarray or torch.Tensor, shape (N, d)
            Embeddings, ``N >= 1``, ``d >= 2``; no NaN/Inf/all-zero rows.
        y : ignored
        sample_weight : array_like of shape (N,), optional
            Masses ``a_i >= 0`` (e.g. tokens per document), not all zero; default 1.

        Returns
        -------
        self
        """
        self._validate_params()
        arr = check_embeddings(X, self, scan_rows=False)
        n_rows, n_features = arr.shape
        weights = None if sample_weight is None else check_sample_weight(sample_weight, n_rows)
        device = _compute_device(arr)

        def chunk_sum(bounds):
            start, stop = bounds
            chunk = arr[start:stop]
            as64 = _as_float64(chunk, device)
            norms = torch.linalg.vector_norm(as64, dim=1, keepdim=True)
            if bool(torch.isfinite(norms).all()) and bool((norms > 0).all()):
                units = as64.div_(norms)
            else:  # the overflow-safe path: NaN exactly for the NaN, Inf and all-zero rows
                units = _unit_rows(as64)
                if not bool(torch.isfinite(units[:, 0]).all()):
                    return invalid_in_chunk(chunk, start), None
            if weights is not None:
                units = units * torch.from_numpy(weights[start:stop]).to(device)[:, None]
            return {}, units.sum(dim=0)

        bounds = list(row_chunks(n_rows, n_features))
        with chunk_workers(device):
            parts = map_chunks(lambda j: chunk_sum(bounds[j]), len(bounds))
        invalid: dict[int, str] = {}
        total = torch.zeros(n_features, dtype=torch.float64, device=device)
        for bad, part in parts:  # in chunk order
            invalid.update(bad)
            if part is not None:
                total += part
        if invalid:
            raise ValueError(describe_invalid(invalid))
        total_weight = float(n_rows if weights is None else weights.sum())
        mean = total.cpu().numpy() / total_weight
        anisotropy = float(np.linalg.norm(mean))
        if self.center and may_have_no_direction(anisotropy, self.eps):
            self._refuse_rows_without_direction(arr, mean, anisotropy)
        self.mean_ = mean
        self.anisotropy_ = anisotropy
        self.whitening_ = None
        if self.whiten:
            self.whitening_ = _zca_whitening(self._second_moment(arr, weights, total_weight))
        return self

    def _refuse_rows_without_direction(self, arr, mean: np.ndarray, anisotropy: float) -> None:
        """ValueError naming the rows with ``||u_i - m||^2 <= eps`` (one more pass over X)."""
        device = _compute_device(arr)
        shift = torch.from_numpy(mean).to(device)
        rows: list[int] = []
        for start, _, _, as64 in _float64_chunks(arr, device):
            _, flags = correct_units(_unit_rows(as64), shift, None, self.eps)
            rows += flagged_rows(flags, start)
        if rows:
            raise ValueError(no_direction_message(rows, arr.shape[0], anisotropy))

    def _second_moment(self, arr, weights, total_weight: float) -> np.ndarray:
        """Weighted ``sum a_i z_i z_i^T / A`` of ``z_i = u_i - m`` (or ``u_i``), shape (d, d)."""
        device = _compute_device(arr)
        shift = torch.from_numpy(self.mean_).to(device) if self.center else None
        moment = torch.zeros((arr.shape[1],) * 2, dtype=torch.float64, device=device)
        for start, stop, _, as64 in _float64_chunks(arr, device):
            z = _unit_rows(as64)
            if shift is not None:
                z = z - shift
            weighted = (
                z
                if weights is None
                else z * torch.from_numpy(weights[start:stop]).to(device)[:, None]
            )
            moment += weighted.T @ z
        return moment.cpu().numpy() / total_weight

    # ------------------------------------------------------------------ transforming
    def transform(self, X):
        """Map rows of ``X`` to the unit sphere with the stored ``m`` (and whitening).

        Parameters
        ----------
        X : ndarray or torch.Tensor, shape (M, d)

        Returns
        -------
        ndarray or torch.Tensor, shape (M, d)
            Unit rows, same kind and device as ``X``; float64 for float64 or
            integer input, float32 otherwise.
        """
        check_is_fitted(self)
        arr = check_embeddings(X, self, reset=False, scan_rows=False)
        is_tensor = torch.is_tensor(arr)
        out_dtype = _output_dtype(arr)
        if is_tensor:
            out = torch.empty(tuple(arr.shape), dtype=out_dtype, device=arr.device)
        else:
            out = torch.from_numpy(
                np.empty(arr.shape, dtype=np.float32 if out_dtype == torch.float32 else np.float64)
            )
        device = _compute_device(arr)
        mean, whitening = self.correction()
        shift = None if mean is None else torch.from_numpy(mean).to(device)
        whitening_t = None if whitening is None else torch.from_numpy(whitening.T).to(device)
        invalid: dict[int, str] = {}
        degenerate: list[int] = []
        for start, stop, chunk, as64 in _float64_chunks(arr, device):
            invalid.update(invalid_in_chunk(chunk, start))
            if invalid:
                continue
            x, flags = correct_units(_unit_rows(as64), shift, whitening_t, self.eps)
            degenerate += flagged_rows(flags, start)
            out[start:stop] = x.to(out.device, out_dtype)
        if invalid:
            raise ValueError(describe_invalid(invalid))
        if degenerate:
            raise ValueError(no_direction_message(degenerate, arr.shape[0], self.anisotropy_))
        return out if is_tensor else out.numpy()

    def correction(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(m, L)``: the mean resultant removed (None without centring), shape (d,), and the
        whitening map (None without whitening), shape (d, d); float64."""
        check_is_fitted(self)
        mean = np.asarray(self.mean_, dtype=np.float64) if self.center else None
        whitening = None if self.whitening_ is None else np.asarray(self.whitening_, np.float64)
        return mean, whitening

    # ------------------------------------------------------------------ persistence
    def get_state(self) -> dict:
        """Parameters and fitted attributes as plain Python / numpy values."""
        check_is_fitted(self)
        return {
            "version": _STATE_VERSION,
            "center": bool(self.center),
            "whiten": bool(self.whiten),
            "eps": float(self.eps),
            "mean_": np.array(self.mean_, dtype=np.float64),
            "anisotropy_": float(self.anisotropy_),
            "whitening_": None
            if self.whitening_ is None
            else np.array(self.whitening_, dtype=np.float64),
            "n_features_in_": int(self.n_features_in_),
        }

    @classmethod
    def from_state(cls, state: dict) -> SphereTransform:
        """Rebuild a fitted transform from :meth:`get_state` output (arrays may be lists)."""
        missing = [k for k in ("center", "whiten", "mean_", "whitening_") if k not in state]
        if missing:
            raise ValueError(f"SphereTransform state is missing key(s) {missing}")
        if state.get("version", _STATE_VERSION) != _STATE_VERSION:
            raise ValueError(f"unsupported SphereTransform state version {state['version']!r}")
        model = cls(
            center=bool(state["center"]),
            whiten=bool(state["whiten"]),
            eps=float(state.get("eps", NO_DIRECTION_EPS)),
        )
        mean = np.asarray(state["mean_"], dtype=np.float64)
        if mean.ndim != 1 or mean.size < 2 or not np.isfinite(mean).all():
            raise ValueError(
                f"state['mean_'] must be a finite vector of length >= 2, got shape {mean.shape}"
            )
        d = mean.size
        whitening = state["whitening_"]
        if whitening is not None:
            whitening = np.asarray(whitening, dtype=np.float64)
            if whitening.shape != (d, d) or not np.isfinite(whitening).all():
                raise ValueError(
                    f"state['whitening_'] must be a finite ({d}, {d}) matrix, got shape {whitening.shape}"
                )
        if model.whiten != (whitening is not None):
            raise ValueError("state['whiten'] and state['whitening_'] disagree")
        model.mean_ = mean
        model.anisotropy_ = float(np.linalg.norm(mean))
        model.whitening_ = whitening
        model.n_features_in_ = d
        return model
