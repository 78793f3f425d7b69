"""The input rows as chunks of corrected points on the compute device, and their masses.

The corrected points x_i (on the sphere, anisotropy removed) are formed chunk by chunk in
the compute dtype and kept only when they fit a memory budget, so that the N x K score
matrix is the one large buffer of a fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "POINT_CACHE_BYTES",
    "RowWeights",
    "Rows",
    "chunk_rows",
    "compute_dtype",
    "prepare_rows",
    "resolve_device",
]


def resolve_device(device: str | torch.device, X=None) -> torch.device:
    """``"auto"`` picks the input's device for tensors, else CUDA when torch sees it, else CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if isinstance(X, torch.Tensor):
            return X.device
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but torch sees no CUDA device")
    return torch.device(device)


def compute_dtype(X) -> torch.dtype:
    """float64 input is computed in float64, everything else in float32."""
    dtype = X.dtype
    if dtype in (np.float64, torch.float64):
        return torch.float64
    return torch.float32


def chunk_rows(n_features: int, n_clusters: int, device: torch.device) -> int:
    """Rows per chunk: 2^24 (CPU) or 2^27 (GPU) elements in the widest chunk buffer.

    Large chunks keep the number of small element-wise kernels per pass low; the buffers
    stay far below the N x K score cache (64 MB of float32 on CPU).
    """
    budget = (2**27 if device.type == "cuda" else 2**24) // max(n_features, n_clusters, 1)
    return int(min(max(budget, 256), 1 << 20))


POINT_CACHE_BYTES = 2**30


class Rows:
    """The input rows as chunks of corrected points x_i on the compute device.

    x_i = normalize(L (u_i - m)) with u_i = e_i / ||e_i|| (m = 0 without centring,
    L = I without whitening), computed in the compute dtype. The points are cached
    when the input had to be copied anyway (another dtype or device) or when they
    take less than POINT_CACHE_BYTES; otherwise each pass recomputes them from the
    input rows, with the same arithmetic, so both paths give identical numbers.

    Parameters
    ----------
    X : ndarray or Tensor, shape (n_samples, n_features)
    sample_weight : ndarray, shape (n_samples,), float64
    mean : ndarray, shape (n_features,) or None
    whitening : ndarray, shape (n_features, n_features) or None

    Raises
    ------
    ValueError
        When a row's corrected vector L(u_i - m) is zero (it has no direction).
    """

    def __init__(self, X, sample_weight, mean, whitening, *, device, dtype, chunk_size):
        self.X, self.device, self.dtype = X, device, dtype
        n, d = X.shape
        self.bounds = [(a, min(a + chunk_size, n)) for a in range(0, n, chunk_size)]
        self.mean = None if mean is None else torch.as_tensor(mean, device=device, dtype=dtype)
        self.whitening_t = (
            None
            if whitening is None
            else torch.as_tensor(whitening.T, device=device, dtype=dtype).contiguous()
        )
        self.weight = [
            torch.as_tensor(sample_weight[a:b], device=device, dtype=torch.float64)
            for a, b in self.bounds
        ]
        self.weight_c = [w.to(dtype) for w in self.weight]  # in the compute dtype, for GEMVs
        self.total_weight = float(np.sum(sample_weight))
        self.n_rows, self.n_features = n, d
        itemsize = torch.finfo(dtype).bits // 8
        copied = not (
            isinstance(X, np.ndarray | torch.Tensor)
            and device.type == "cpu"
            and X.dtype in (np.float32, np.float64, torch.float32, torch.float64)
        )
        self._cache = [] if copied or n * d * itemsize <= POINT_CACHE_BYTES else None
        degenerate: list[int] = []
        for j, (a, _) in enumerate(self.bounds):
            x, bad = self._compute(j)
            if bool(bad.any()):
                degenerate.extend((a + torch.nonzero(bad).flatten().cpu().numpy()).tolist())
            if self._cache is not None:
                self._cache.append(x)
        if degenerate:
            shown = ", ".join(str(i) for i in degenerate[:10])
            more = f" and {len(degenerate) - 10} more" if len(degenerate) > 10 else ""
            raise ValueError(
                f"rows {shown}{more} coincide with the mean direction, so they have no direction "
                "left after the anisotropy correction; remove them or use center=False"
            )

    def __len__(self) -> int:
        return len(self.bounds)

    def _compute(self, j: int):
        a, b = self.bounds[j]
        e = torch.as_tensor(self.X[a:b]).to(device=self.device, dtype=self.dtype)
        v = e / torch.linalg.vector_norm(e, dim=1, keepdim=True)
        if self.mean is not None:
            v.sub_(self.mean)
        if self.whitening_t is not None:
            v = v @ self.whitening_t
        norm = torch.linalg.vector_norm(v, dim=1, keepdim=True)
        bad = norm[:, 0] <= 1e-6
        return v.div_(norm), bad

    def points(self, j: int) -> torch.Tensor:
        """x for chunk j, shape (n_j, n_features), compute dtype."""
        return self._cache[j] if self._cache is not None else self._compute(j)[0]

    def gather(self, indices) -> np.ndarray:
        """x for the given row indices as float64 numpy, shape (len(indices), n_features)."""
        indices = np.asarray(indices, dtype=np.int64)
        starts = np.array([a for a, _ in self.bounds])
        which = np.searchsorted(starts, indices, side="right") - 1
        out = np.empty((len(indices), self.n_features))
        for j in np.unique(which):
            pos = np.flatnonzero(which == j)
            local = torch.as_tensor(indices[pos] - starts[j], device=self.device)
            out[pos] = self.points(int(j))[local].to(torch.float64).cpu().numpy()
        return out


@dataclass
class RowWeights:
    """Row masses a_i by chunk: all that the dual's passes need of the rows.

    :class:`Rows` has the same attributes; this stands alone for scores that were
    computed elsewhere (the app's frozen-geometry re-assignment).
    """

    weight: list  # float64 tensors, one per chunk
    weight_c: list  # the same in the compute dtype
    total_weight: float
    device: torch.device
    dtype: torch.dtype

    @classmethod
    def from_array(cls, weights: np.ndarray, bounds, *, device, dtype) -> RowWeights:
        chunks = [
            torch.as_tensor(weights[a:b], dtype=torch.float64, device=device) for a, b in bounds
        ]
        return cls(chunks, [w.to(dtype) for w in chunks], float(np.sum(weights)), device, dtype)


def prepare_rows(X, sample_weight, mean, whitening, *, device, dtype, chunk_size) -> Rows:
    """Chunk X into corrected points on ``device`` (see :class:`Rows`)."""
    return Rows(
        X, sample_weight, mean, whitening, device=device, dtype=dtype, chunk_size=chunk_size
    )
