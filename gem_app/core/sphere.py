"""Points on the unit hypersphere: the anisotropy correction as a fitted transform.

METHOD.md section 1: embeddings ``e_i`` become unit vectors ``u_i``, the
(weighted) mean resultant ``m`` is removed and the result is normalised again,
``x_i = normalize(u_i - m)``; ``R0 = ||m||`` measures the anisotropy.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator

__all__ = ["SphereTransform", "check_rows", "check_sample_weight", "find_invalid_rows"]

_CHUNK_ELEMENTS = 1 << 22  # ~32 MiB of float64 per chunk
_EIGENVALUE_FLOOR = 1e-3  # whitening floor, relative to the mean eigenvalue
_STATE_VERSION = 1


# --------------------------------------------------------------------------- rows of X
def _as_matrix(X, name: str = "X"):
    """``X`` as a 2-D numpy array or detached torch tensor (no copy when already one)."""
    if isinstance(X, torch.Tensor):
        arr = X.detach()
        if arr.is_complex():
            raise ValueError(f"{name} has complex dtype {arr.dtype}; real embeddings are needed")
    else:
        arr = X if isinstance(X, np.ndarray) else np.asarray(X)
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"{name} has dtype {arr.dtype}; a real numeric array is needed")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows x features), got shape {tuple(arr.shape)}")
    return arr


def _row_chunks(n_rows: int, n_features: int):
    step = max(1, _CHUNK_ELEMENTS // max(n_features, 1))
    for start in range(0, n_rows, step):
        yield start, min(start + step, n_rows)


def _invalid_in_chunk(chunk, offset: int) -> dict[int, str]:
    """Rows of one chunk (numpy or torch) with NaN, Inf or all zeros, keyed by global row."""
    xp_isnan, xp_isinf = (
        (torch.isnan, torch.isinf) if torch.is_tensor(chunk) else (np.isnan, np.isinf)
    )
    floating = chunk.is_floating_point() if torch.is_tensor(chunk) else chunk.dtype.kind == "f"
    reasons: dict[int, str] = {}
    checks = [("zero vector", (chunk == 0).all(1))]
    if floating:
        checks = [
            ("contains NaN", xp_isnan(chunk).any(1)),
            ("contains Inf", xp_isinf(chunk).any(1)),
        ] + checks
    for reason, mask in checks:
        mask = mask.cpu().numpy() if torch.is_tensor(mask) else mask
        for row in np.flatnonzero(mask):
            reasons.setdefault(offset + int(row), reason)
    return dict(sorted(reasons.items()))


def find_invalid_rows(X) -> dict[int, str]:
    """Rows of ``X`` that cannot be put on the unit sphere.

    Parameters
    ----------
    X : ndarray or torch.Tensor, shape (N, d)

    Returns
    -------
    dict of int to str
        ``{row: reason}`` in row order; reasons are ``"contains NaN"``,
        ``"contains Inf"`` and ``"zero vector"`` (the first that applies).
        ``X`` is scanned in row chunks, without a full copy.
    """
    arr = _as_matrix(X)
    invalid: dict[int, str] = {}
    for start, stop in _row_chunks(arr.shape[0], arr.shape[1]):
        invalid.update(_invalid_in_chunk(arr[start:stop], start))
    return invalid


def _describe_invalid(invalid: dict[int, str], name: str = "X", shown: int = 5) -> str:
    items = list(invalid.items())
    listed = ", ".join(f"row {row} ({reason})" for row, reason in items[:shown])
    more = f", ... and {len(items) - shown} more" if len(items) > shown else ""
    return (
        f"{name} has {len(items)} row(s) that cannot be put on the unit sphere: "
        f"{listed}{more}. Remove or repair them first."
    )


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


def _float64_chunks(arr, device: torch.device):
    """Yield ``(start, stop, original_chunk, float64 torch chunk on device)`` over row chunks."""
    for start, stop in _row_chunks(arr.shape[0], arr.shape[1]):
        chunk = arr[start:stop]
        if torch.is_tensor(chunk):
            as64 = chunk.to(device=device, dtype=torch.float64, copy=True)
        else:
            as64 = torch.from_numpy(np.array(chunk, dtype=np.float64))
        yield start, stop, chunk, as64


def _output_dtype(arr) -> torch.dtype:
    """float64 for float64 (and integer/bool) input, float32 for narrower floats."""
    if torch.is_tensor(arr):
        narrow = arr.is_floating_point() and arr.dtype != torch.float64
    else:
        narrow = arr.dtype.kind == "f" and arr.dtype != np.float64
    return torch.float32 if narrow else torch.float64


def check_sample_weight(sample_weight, n_rows: int) -> np.ndarray:
    """Masses a_i as float64, shape (n_rows,): ones when None; ValueError naming a bad row."""
    if sample_weight is None:
        return np.ones(n_rows)
    if torch.is_tensor(sample_weight):
        sample_weight = sample_weight.detach().cpu().numpy()
    weights = np.asarray(sample_weight)
    if weights.shape != (n_rows,):
        raise ValueError(
            f"sample_weight must have shape ({n_rows},) (one weight per row of X), "
            f"got shape {weights.shape}"
        )
    if weights.dtype.kind not in "biuf":
        raise ValueError(f"sample_weight has dtype {weights.dtype}; numbers are needed")
    weights = weights.astype(np.float64)
    bad = np.flatnonzero(~(np.isfinite(weights) & (weights > 0.0)))
    if bad.size:
        row = int(bad[0])
        raise ValueError(
            f"sample_weight[{row}] = {float(weights[row])!r}: weights must be finite and > 0 "
            f"({bad.size} bad weight(s) in total)"
        )
    return weights


def check_rows(X, name: str = "X") -> None:
    """ValueError naming the rows of X that cannot be put on the sphere (NaN, Inf, zero)."""
    invalid = find_invalid_rows(X)
    if invalid:
        raise ValueError(_describe_invalid(invalid, name))


class SphereTransform(BaseEstimator):
    """Map embeddings to unit vectors with the anisotropy (mean resultant) removed.

    ``u_i = e_i / ||e_i||``; ``m = sum_i a_i u_i / sum_i a_i`` (``a`` = sample
    weights, default 1); ``R0 = ||m||`` is the anisotropy. Output rows are
    ``x_i = normalize(u_i - m)`` (``center=True``) or ``x_i = u_i``.
    With ``whiten=True`` the centred vectors are first multiplied by the ZCA map
    ``C^{-1/2}`` of their weighted covariance ``C`` (eigenvalues floored at
    1e-3 times the mean eigenvalue, so that degenerate directions are not
    blown up); with ``center=False`` ``C`` is the second moment of the ``u_i``.

    A row whose centred vector is numerically zero (``||u_i - m||^2 <= eps``,
    i.e. the point equals ``m``) has no direction; it falls back to ``u_i``.

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

    def __init__(self, *, center: bool = True, whiten: bool = False, eps: float = 1e-12):
        self.center = center
        self.whiten = whiten
        self.eps = eps

    # ------------------------------------------------------------------ fitting
    def _check_params(self) -> None:
        for name in ("center", "whiten"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if not (isinstance(self.eps, (int, float)) and 0.0 <= self.eps < 1.0):
            raise ValueError(f"eps must be a number in [0, 1), got {self.eps!r}")

    def fit(self, X, sample_weight=None) -> SphereTransform:
        """Estimate the mean resultant (and the whitening map) from ``X``.

        Parameters
        ----------
        X : ndarray or torch.Tensor, shape (N, d)
            Embeddings, ``N >= 1``, ``d >= 2``; no NaN/Inf/all-zero rows.
        sample_weight : array_like of shape (N,), optional
            Masses ``a_i > 0`` (e.g. tokens per document); default 1.

        Returns
        -------
        self
        """
        self._check_params()
        arr = _as_matrix(X)
        n_rows, n_features = arr.shape
        if n_features < 2:
            raise ValueError(
                f"X has {n_features} feature(s); putting rows on the unit sphere needs d >= 2 "
                "(for d = 1 every unit vector is +1 or -1, so no direction is left)"
            )
        if n_rows < 1:
            raise ValueError("X has no rows; at least one embedding is needed to fit")
        weights = None if sample_weight is None else check_sample_weight(sample_weight, n_rows)
        device = _compute_device(arr)
        total = torch.zeros(n_features, dtype=torch.float64, device=device)
        invalid: dict[int, str] = {}
        for start, stop, chunk, as64 in _float64_chunks(arr, device):
            invalid.update(_invalid_in_chunk(chunk, start))
            if invalid:
                continue
            units = _unit_rows(as64)
            if weights is not None:
                units = units * torch.from_numpy(weights[start:stop]).to(device)[:, None]
            total += units.sum(dim=0)
        if invalid:
            raise ValueError(_describe_invalid(invalid))
        total_weight = float(n_rows if weights is None else weights.sum())
        mean = total.cpu().numpy() / total_weight
        self.mean_ = mean
        self.anisotropy_ = float(np.linalg.norm(mean))
        self.n_features_in_ = int(n_features)
        self.whitening_ = None
        if self.whiten:
            self.whitening_ = _zca_whitening(self._second_moment(arr, weights, total_weight))
        return self

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
    def _check_fitted(self) -> None:
        if not hasattr(self, "mean_"):
            raise ValueError(
                "this SphereTransform is not fitted yet; call fit (or from_state) first"
            )

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
        self._check_fitted()
        arr = _as_matrix(X)
        if arr.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {arr.shape[1]} features but this SphereTransform was fitted on "
                f"{self.n_features_in_}"
            )
        is_tensor = torch.is_tensor(arr)
        out_dtype = _output_dtype(arr)
        if is_tensor:
            out = torch.empty(tuple(arr.shape), dtype=out_dtype, device=arr.device)
        else:
            out = torch.from_numpy(
                np.empty(arr.shape, dtype=np.float32 if out_dtype == torch.float32 else np.float64)
            )
        device = _compute_device(arr)
        shift = torch.from_numpy(self.mean_).to(device) if self.center else None
        whitening = (
            None if self.whitening_ is None else torch.from_numpy(self.whitening_).to(device)
        )
        invalid: dict[int, str] = {}
        for start, stop, chunk, as64 in _float64_chunks(arr, device):
            invalid.update(_invalid_in_chunk(chunk, start))
            if invalid:
                continue
            out[start:stop] = self._map_units(_unit_rows(as64), shift, whitening).to(
                out.device, out_dtype
            )
        if invalid:
            raise ValueError(_describe_invalid(invalid))
        return out if is_tensor else out.numpy()

    def _map_units(self, units: torch.Tensor, shift, whitening) -> torch.Tensor:
        """Centre, whiten and renormalise unit rows (float64); zero centred rows keep ``u``."""
        if shift is None and whitening is None:
            return units
        z = units if shift is None else units - shift
        degenerate = (z * z).sum(dim=1, keepdim=True) <= self.eps
        if whitening is not None:
            z = z @ whitening
        z = z / torch.linalg.vector_norm(z, dim=1, keepdim=True)
        return torch.where(degenerate, units, z)

    def fit_transform(self, X, sample_weight=None):
        """``fit(X, sample_weight).transform(X)``."""
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def correction(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(m, L)``: the mean resultant removed (None without centring), shape (d,), and the
        whitening map (None without whitening), shape (d, d); float64."""
        self._check_fitted()
        mean = np.asarray(self.mean_, dtype=np.float64) if self.center else None
        whitening = None if self.whitening_ is None else np.asarray(self.whitening_, np.float64)
        return mean, whitening

    # ------------------------------------------------------------------ persistence
    def get_state(self) -> dict:
        """Parameters and fitted attributes as plain Python / numpy values."""
        self._check_fitted()
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
            eps=float(state.get("eps", 1e-12)),
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
