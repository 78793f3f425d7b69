"""Chunk-parallel passes on the CPU: whole row chunks per thread instead of parallel kernels.

A pass of GEM over N rows is, per row chunk, two GEMMs and a dozen element-wise kernels.
With torch's intra-op parallelism each kernel is an OpenMP parallel region that ends at a
barrier, and when another process takes a core every barrier waits for the descheduled
thread (a scheduler time slice, milliseconds): on a shared 2-core machine a pass ran 4-8x
slower than on a quiet one. Here each worker thread runs whole chunks with intra-op
parallelism off, and the chunks are handed out one at a time: a descheduled worker holds up
only its own chunk while the others take the remaining ones. Results come back in chunk
order and every chunk is computed by one thread, so the outcome does not depend on the
schedule (same input, same result).

Thread policy (docs/performance.md). Nothing happens at import. Inside
:func:`chunk_workers` (entered by ``GEM.fit`` for the whole fit, and by each pass):

- the number of workers is torch's intra-op thread count at entry
  (``torch.get_num_threads()``: the available cores by default, or what the user chose with
  ``torch.set_num_threads`` / ``OMP_NUM_THREADS``), at most the CPUs this process may run on;
- torch's intra-op thread count is set to 1 (the workers are the parallelism) and restored
  on exit; nested and concurrent sessions share one pool and one save/restore (a counter);
- with one worker, or on a GPU, nothing changes and the chunks run in order on the caller.

While a session runs, torch work in *other* threads of the process runs single-threaded.

Memory: a chunk's temporaries are tens of MB (above glibc's initial mmap threshold, below
the 32 MB it rises to after the first frees), so the workers' malloc arenas keep them
after they are freed; on 1M x 384 rows with K = 256 this held 1.5 GiB more than the
live buffers at the peak. So the free pages of the malloc arenas go back to the system
(glibc's ``malloc_trim(0)``; nothing where the C library has no such call) after a chunk,
and after a pass, that leaves the process more than RETAINED_BYTES larger than at the
start of the pass. Releasing after every chunk made each chunk fault its temporaries in
again (11-13% of a pass) and cost k-means++ a release per centre; without any release
inside a pass the float64 dual statistics pass at 1M x 256 peaked 1.2 GiB higher.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

__all__ = ["available_cpus", "chunk_workers", "map_chunks", "worker_count"]

_lock = threading.Lock()
_local = threading.local()
_malloc_trim = None  # glibc's malloc_trim, looked up at the first session (False: none)
RETAINED_BYTES = 64 * 2**20  # growth in a pass above which the free memory is released
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class _Session:
    depth = 0
    saved_threads = 1
    pool: ThreadPoolExecutor | None = None


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def worker_count() -> int:
    """Workers of a new session: torch's intra-op threads, at most the available CPUs."""
    return max(1, min(torch.get_num_threads(), available_cpus()))


def _release_free_memory() -> None:
    """Give the free pages of the malloc arenas back to the system (glibc; else nothing)."""
    global _malloc_trim
    if _malloc_trim is None:
        _malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", None) or False
    if _malloc_trim:
        _malloc_trim(0)


def _resident_bytes() -> int | None:
    """The process's resident memory (``/proc/self/statm``); None where unknown."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return None


def _release_if_grown(start: int | None) -> None:
    """Release the free memory if the process grew RETAINED_BYTES past ``start`` (or unknown)."""
    now = _resident_bytes()
    if start is None or now is None or now > start + RETAINED_BYTES:
        _release_free_memory()


def _releasing(function, start: int | None):
    """``function`` followed by :func:`_release_if_grown` (``start``: size at the pass's start)."""

    def run(j):
        try:
            return function(j)
        finally:
            _release_if_grown(start)

    return run


def _mark_worker() -> None:
    _local.worker = True
    torch.set_num_threads(1)  # this thread's OpenMP/MKL setting (the global one is 1 already)


@contextlib.contextmanager
def chunk_workers(device="cpu"):
    """A session in which :func:`map_chunks` runs chunks on worker threads (CPU only).

    Parameters
    ----------
    device : str or torch.device
        Only ``"cpu"`` starts workers; on other devices the session does nothing.
    """
    if torch.device(device).type != "cpu" or getattr(_local, "worker", False):
        yield
        return
    with _lock:
        if _Session.depth == 0:
            workers = worker_count()
            _Session.saved_threads = torch.get_num_threads()
            if workers > 1:
                torch.set_num_threads(1)
                _Session.pool = ThreadPoolExecutor(
                    workers, thread_name_prefix="gem-chunks", initializer=_mark_worker
                )
        _Session.depth += 1
    try:
        yield
    finally:
        with _lock:
            _Session.depth -= 1
            if _Session.depth == 0:
                pool, _Session.pool = _Session.pool, None
                if pool is not None:
                    pool.shutdown(wait=True)
                    torch.set_num_threads(_Session.saved_threads)


def map_chunks(function, n_chunks: int) -> list:
    """``[function(j) for j in range(n_chunks)]``, on the session's workers when there are any.

    Chunks are handed out one at a time (a free worker takes the next); the list is in
    chunk order. The free memory of the malloc arenas goes back to the system after a chunk
    or after the pass when the process has grown by RETAINED_BYTES since the pass began
    (module docstring). Outside a session, from inside a worker, or for one chunk, it runs
    in order on the calling thread.
    """
    pool = _Session.pool
    if pool is None or n_chunks <= 1 or getattr(_local, "worker", False):
        return [function(j) for j in range(n_chunks)]
    start = _resident_bytes()
    release = _releasing(function, start)
    try:
        return list(pool.map(release, range(n_chunks)))
    finally:
        _release_if_grown(start)
