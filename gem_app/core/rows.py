"""The input rows as chunks of corrected points on the compute device, and their masses.

The corrected points x_i (on the sphere, anisotropy removed) are formed chunk by chunk in
the compute dtype and kept only when they fit a memory budget, so that the N x K score
matrix is the one large buffer of a fit.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

import numpy as np
import torch

from gem_app.core.correction import (
    NO_DIRECTION_EPS,
    correct_units,
    flagged_rows,
    may_have_no_direction,
    no_direction_message,
)
from gem_app.core.threads import chunk_workers, map_chunks

__all__ = [
    "POINT_CACHE_BYTES",
    "RowWeights",
    "Rows",
    "chunk_rows",
    "compute_dtype",
    "prepare_rows",
    "resolve_device",
]


_DEVICE_PATTERN = re.compile(r"cpu|mps|cuda(:[0-9]+)?")
_DEVICES = "'auto', 'cpu', 'cuda', 'cuda:N' (N = GPU index) or 'mps'"


def resolve_device(device: str | torch.device, X=None) -> torch.device:
    """The torch device a computation runs on.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` (the input's device for tensors, else CUDA when torch sees it, else
        CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    X : array or torch.Tensor, optional

    Raises
    ------
    ValueError
        For any other value (naming it and the accepted ones), and for a device that
        this machine does not have.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if isinstance(X, torch.Tensor):
            return X.device
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str) or not _DEVICE_PATTERN.fullmatch(device):
        raise ValueError(f"device={device!r} is not a known device; use {_DEVICES}")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} was asked for but torch sees no CUDA device")
        index = int(device[5:] or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r}: torch sees {torch.cuda.device_count()} CUDA device(s) "
                f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})"
            )
    if device == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device='mps' was asked for but torch sees no MPS (Apple GPU) device")
    return torch.device(device)


def compute_dtype(X) -> torch.dtype:
    """float64 input is computed in float64, everything else in float32."""
    dtype = X.dtype
    if dtype in (np.float64, torch.float64):
        return torch.float64
    return torch.float32


def chunk_rows(n_features: int, n_clusters: int, device: torch.device) -> int:
    """Rows per chunk: 2^22 (CPU) or 2^27 (GPU) elements in the widest chunk buffer.

    On the CPU each chunk is one task of a worker thread (:mod:`gem_app.core.threads`):
    16 MB of float32 keeps a chunk's buffers near the processor's caches and gives the
    workers enough chunks to balance (about 10 per 100,000 rows at d = 384). On a GPU
    large chunks keep the number of kernel launches per pass low.
    """
    budget = (2**27 if device.type == "cuda" else 2**22) // max(n_features, n_clusters, 1)
    return int(min(max(budget, 256), 1 << 20))


POINT_CACHE_BYTES = 2**30


class Rows:
    """The input rows as chunks of corrected points x_i on the compute device.

    x_i = normalize(L (u_i - m)) with u_i = e_i / ||e_i|| (m = 0 without centring,
    L = I without whitening), computed in the compute dtype. The points are cached
    when the input had to be copied anyway (another dtype or device) or when they
    take less than POINT_CACHE_BYTES; otherwise each pass recomputes them from the
    input rows, with the same arithmetic, so both paths give identical numbers (and each
    thread keeps the chunk it computed last: a pass that reads a chunk's points for the
    scores and again for the resultants computes them once).

    Parameters
    ----------
    X : ndarray or Tensor, shape (n_samples, n_features)
    sample_weight : ndarray, shape (n_samples,), float64
    mean : ndarray, shape (n_features,) or None
    whitening : ndarray, shape (n_features, n_features) or None
    eps : float
        The no-direction threshold of :func:`gem_app.core.correction.correct_units`.

    Raises
    ------
    ValueError
        When a row has no direction left after the correction (``||u_i - m||^2 <= eps``),
        with the message of :func:`gem_app.core.correction.no_direction_message`. The rows
        are checked in the pass that fills the cache; uncached, they are checked only when
        one can be flagged at all (``||u - m|| >= 1 - ||m||``,
        :func:`gem_app.core.correction.may_have_no_direction`), so that the set-up of a
        large fit does not read X once more just to find nothing.
    """

    def __init__(
        self, X, sample_weight, mean, whitening, *, device, dtype, chunk_size, eps=NO_DIRECTION_EPS
    ):
        self.X, self.device, self.dtype, self.eps = X, device, dtype, eps
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
        self._last = threading.local()  # (j, points) of the chunk a thread computed last
        keep = self._cache is not None

        def check(j: int):
            x, flags = self._compute(j)
            return (x if keep else None), flagged_rows(flags, self.bounds[j][0])

        anisotropy = 0.0 if mean is None else float(np.linalg.norm(mean))
        if not keep and (mean is None or not may_have_no_direction(anisotropy, eps)):
            return  # no row can be flagged: no pass over X to check them (see Raises)
        degenerate: list[int] = []
        with chunk_workers(device):
            for x, flagged in map_chunks(check, len(self.bounds)):
                degenerate += flagged
                if keep:
                    self._cache.append(x)
        if degenerate:
            raise ValueError(no_direction_message(degenerate, n, anisotropy))

    def __len__(self) -> int:
        return len(self.bounds)

    def _compute(self, j: int):
        a, b = self.bounds[j]
        chunk = self.X[a:b]
        if isinstance(chunk, np.ndarray) and not chunk.flags.writeable:
            # torch wraps read-only memory (a memmap) only with a warning, and silencing it
            # is not thread-safe: copy the chunk instead
            chunk = np.array(chunk)
        e = torch.as_tensor(chunk).to(device=self.device, dtype=self.dtype)
        units = e / torch.linalg.vector_norm(e, dim=1, keepdim=True)
        return correct_units(units, self.mean, self.whitening_t, self.eps)

    def points(self, j: int) -> torch.Tensor:
        """x for chunk j, shape (n_j, n_features), compute dtype (not to be modified)."""
        if self._cache is not None:
            return self._cache[j]
        last = getattr(self._last, "chunk", None)
        if last is not None and last[0] == j:
            return last[1]
        x = self._compute(j)[0]
        self._last.chunk = (j, x)
        return x

    def gather(self, indices, dtype=torch.float64) -> np.ndarray:
        """x for the given row indices as numpy, shape (len(indices), n_features).

        ``dtype``: float64 (default) or the compute dtype (no conversion; half the bytes
        in float32). The chunks holding the rows are read on the worker threads.
        """
        indices = np.asarray(indices, dtype=np.int64)
        starts = np.array([a for a, _ in self.bounds])
        which = np.searchsorted(starts, indices, side="right") - 1
        chunks = np.unique(which)
        out = torch.empty((len(indices), self.n_features), dtype=dtype)

        def take(t: int) -> None:
            j = int(chunks[t])
            pos = np.flatnonzero(which == j)
            local = torch.as_tensor(indices[pos] - starts[j], device=self.device)
            out[torch.as_tensor(pos)] = self.points(j).index_select(0, local).to("cpu", dtype)

        with chunk_workers(self.device):
            map_chunks(take, len(chunks))
        return out.numpy()


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


def prepare_rows(
    X, sample_weight, mean, whitening, *, device, dtype, chunk_size, eps=NO_DIRECTION_EPS
) -> Rows:
    """Chunk X into corrected points on ``device`` (see :class:`Rows`)."""
    return Rows(
        X,
        sample_weight,
        mean,
        whitening,
        device=device,
        dtype=dtype,
        chunk_size=chunk_size,
        eps=eps,
    )
