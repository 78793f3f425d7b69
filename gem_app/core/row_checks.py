"""Input checks for embeddings and masses: one rule for every estimator on the sphere.

:func:`check_embeddings` validates X (numpy or torch, any device) with scikit-learn's
messages (sparse, complex, empty, feature count), :func:`find_invalid_rows` lists the rows
that cannot be put on the sphere (NaN, Inf, all zeros), :func:`check_sample_weight` the
masses a_i. Rows are scanned in chunks, without a full copy of X.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse
from sklearn.utils.validation import validate_data

__all__ = [
    "as_matrix",
    "check_embeddings",
    "check_rows",
    "check_sample_weight",
    "describe_invalid",
    "find_invalid_rows",
    "invalid_in_chunk",
    "row_chunks",
]

_CHUNK_ELEMENTS = 1 << 22  # ~32 MiB of float64 per chunk


def row_chunks(n_rows: int, n_features: int):
    """Yield ``(start, stop)`` row ranges of about 2^22 elements each."""
    step = max(1, _CHUNK_ELEMENTS // max(n_features, 1))
    for start in range(0, n_rows, step):
        yield start, min(start + step, n_rows)


def as_matrix(X, name: str = "X"):
    """``X`` as a 2-D real numpy array or detached torch tensor (no copy when already one)."""
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


def check_embeddings(X, estimator, *, reset: bool = True, scan_rows: bool = True):
    """Validate embeddings for an estimator on the sphere; scikit-learn's messages.

    Parameters
    ----------
    X : array-like, DataFrame or torch.Tensor of shape (n_samples, n_features)
    estimator : estimator object
        Named in the messages. ``reset=True`` (``fit``) records ``n_features_in_`` (and
        ``feature_names_in_`` for a DataFrame) on it, as scikit-learn's ``validate_data``.
    reset : bool, default=True
        True for ``fit``: at least 1 row and 2 features (S^{d-1} needs d >= 2). False for
        prediction: any number of rows, the fitted number of features (and names).
    scan_rows : bool, default=True
        Refuse NaN, Inf and all-zero rows by number (False: the caller scans them).

    Returns
    -------
    ndarray or torch.Tensor of shape (n_samples, n_features)
        Floating point: tensors stay on their device; integer and boolean input becomes
        float64; object arrays are converted to float64 (a TypeError for non-numbers).
    """
    name = type(estimator).__name__
    original = X
    if sparse.issparse(X):
        raise ValueError(
            f"{name} got a sparse matrix, and sparse input is not supported: "
            "embeddings must be a dense array (X.toarray())"
        )
    if isinstance(X, torch.Tensor):
        X = X.detach()
        if X.is_complex():
            raise ValueError(f"Complex data not supported: X has dtype {X.dtype}")
        if not X.is_floating_point():
            X = X.to(torch.float64)
    else:
        X = np.asarray(X)
        if X.dtype == object:
            X = np.asarray(X, dtype=np.float64)
        if X.dtype.kind == "c":
            raise ValueError(f"Complex data not supported: X has dtype {X.dtype}")
        if X.dtype.kind in "biu":
            X = X.astype(np.float64)
        if X.dtype.kind != "f":
            raise ValueError(f"X has dtype {X.dtype}; a real numeric array is needed")
    shape = tuple(X.shape)
    if X.ndim != 2:
        raise ValueError(
            f"X must be 2-D (n_samples, n_features), got shape {shape}. Reshape your data: "
            "one sample is X.reshape(1, -1)"
        )
    if reset and shape[0] == 0:
        raise ValueError(
            f"X has 0 sample(s) (shape={shape}) while a minimum of 1 is required by "
            f"{name}: no rows to fit"
        )
    if reset and shape[1] < 2:
        raise ValueError(
            f"X has {shape[1]} feature(s) (shape={shape}) while a minimum of 2 is required by "
            f"{name}: points on the unit sphere need at least 2 dimensions (d >= 2; for "
            "d = 1 every unit vector is +1 or -1, so no direction is left)"
        )
    # the number of features (and their names, for a DataFrame), as scikit-learn does it
    validate_data(estimator, original, reset=reset, skip_check_array=True)
    if scan_rows:
        check_rows(X)
    return X


def invalid_in_chunk(chunk, offset: int) -> dict[int, str]:
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
    arr = as_matrix(X)
    invalid: dict[int, str] = {}
    for start, stop in row_chunks(arr.shape[0], arr.shape[1]):
        invalid.update(invalid_in_chunk(arr[start:stop], start))
    return invalid


def describe_invalid(invalid: dict[int, str], name: str = "X", shown: int = 5) -> str:
    """The message for :func:`find_invalid_rows`'s result: count, first rows, reasons."""
    items = list(invalid.items())
    listed = ", ".join(f"row {row} ({reason})" for row, reason in items[:shown])
    more = f", ... and {len(items) - shown} more" if len(items) > shown else ""
    return (
        f"{name} has {len(items)} row(s) that cannot be put on the unit sphere (NaN, inf or "
        f"all-zero values): {listed}{more}. Remove or repair them first."
    )


def check_rows(X, name: str = "X") -> None:
    """ValueError naming the rows of X that cannot be put on the sphere (NaN, Inf, zero)."""
    invalid = find_invalid_rows(X)
    if invalid:
        raise ValueError(describe_invalid(invalid, name))


def check_sample_weight(sample_weight, n_rows: int) -> np.ndarray:
    """Masses a_i >= 0 as float64, shape (n_rows,); ones when None.

    A zero weight removes the row from every statistic (scikit-learn's convention); at
    least one weight must be positive. ValueError naming the first bad row otherwise.
    """
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
    bad = np.flatnonzero(~(np.isfinite(weights) & (weights >= 0.0)))
    if bad.size:
        row = int(bad[0])
        raise ValueError(
            f"sample_weight[{row}] = {float(weights[row])!r}: weights must be finite and >= 0 "
            f"({bad.size} bad weight(s) in total)"
        )
    if n_rows and not weights.any():
        raise ValueError("sample_weight is zero for every row: at least one weight must be > 0")
    return weights
