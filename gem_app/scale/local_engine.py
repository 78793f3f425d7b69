"""The local engine of :mod:`gem_app.scale.assign`: shards in this process or in a set of
spawned worker processes, each loading the model once.

Workers die with the run. Each one asks the kernel for SIGKILL when its parent exits
(``prctl(PR_SET_PDEATHSIG)`` on Linux) and, everywhere, watches its parent from a thread;
each holds a shared lock on ``OUTDIR/.gem-assign-workers.lock`` for as long as it lives,
so that a new run on the same folder can wait until every worker of a killed run is gone
(:func:`gem_app.utils.files.folder_lock`). A worker that dies (out of memory, killed) fails
its shard with the reason; the others go on. When the run is interrupted (Ctrl-C, an
exception), its workers are interrupted (they remove their temporary file) and killed
if they do not stop within seconds, before it returns.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import types
from pathlib import Path

import torch

from gem_app.scale.assigner import Assigner, ModelSpec, assign_shard
from gem_app.scale.inputs import shard_stem
from gem_app.utils.files import folder_lock

__all__ = ["WORKERS_LOCK", "hidden_main", "run_local"]

WORKERS_LOCK = ".gem-assign-workers.lock"
_PR_SET_PDEATHSIG = 1
_POLL_S = 0.2
_STOP_S = 5.0  # how long interrupted workers get to clean up before they are killed


def die_with_parent(parent_pid: int) -> None:
    """End this process when ``parent_pid`` (its parent) exits, however the parent exits."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the request above
        os._exit(1)

    def watch() -> None:  # systems without PR_SET_PDEATHSIG
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="gem-parent-watch", daemon=True).start()


@contextlib.contextmanager
def hidden_main():
    """Start processes without making them import the caller's ``__main__``.

    A spawned process imports the parent's main script before it runs its target; the
    workers need nothing from it, and it may be a Streamlit page or a notebook that must
    not run again (or cannot be imported). Hidden while the processes start.
    """
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def _worker(index, spec: ModelSpec, columns, batch_size, tasks, events, parent_pid, lock) -> None:
    """A worker process: load the model once, then assign shards until told to stop."""
    die_with_parent(parent_pid)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the parent reports it, once
        _work(index, spec, columns, batch_size, tasks, events, lock)


def _work(index, spec: ModelSpec, columns, batch_size, tasks, events, lock) -> None:
    with folder_lock(lock, what="the workers lock", shared=True, timeout=60.0):
        if spec.threads:
            torch.set_num_threads(spec.threads)  # this worker process only
        try:
            assigner = Assigner(spec)
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
            events.put(("error", index, f"{type(exc).__name__}: {exc}"))
            return
        while (job := tasks.get()) is not None:
            path, out_path = job
            events.put(("start", index, path))
            record = assign_shard(
                path,
                out_path,
                assigner,
                columns,
                batch_size,
                lambda n: events.put(("progress", index, n)),
            )
            events.put(("done", index, (path, record)))


def run_local(todo, out_dir, spec, columns, batch_size, workers, on_record, progress):
    """Run shards in this process (workers == 1) or in spawned worker processes."""
    jobs = [(path, Path(out_dir) / f"{shard_stem(path)}.parquet") for path, _, _ in todo]
    if workers <= 1 or len(jobs) <= 1:
        assigner = Assigner(spec)
        for path, out_path in jobs:
            on_record(path, assign_shard(path, out_path, assigner, columns, batch_size, progress))
        return
    context = multiprocessing.get_context("spawn")
    tasks, events = context.Queue(), context.Queue()
    n_workers = min(workers, len(jobs))
    for job in jobs:
        tasks.put(job)
    for _ in range(n_workers):
        tasks.put(None)
    lock = str(Path(out_dir) / WORKERS_LOCK)
    procs = [
        context.Process(
            target=_worker,
            args=(i, spec, columns, batch_size, tasks, events, os.getpid(), lock),
            name=f"gem-assign-worker-{i}",
            daemon=True,
        )
        for i in range(n_workers)
    ]
    finished = False
    try:
        with hidden_main():
            for proc in procs:
                proc.start()
        _collect(jobs, procs, events, on_record, progress)
        finished = True
    finally:
        _stop(procs, interrupt=not finished)
        tasks.close()
        events.close()


def _stop(procs, *, interrupt: bool) -> None:
    """Let the workers end (``interrupt``: interrupt them, so they remove their temporary
    file), then kill those still running."""
    for proc in procs:
        if interrupt and proc.is_alive():
            with contextlib.suppress(OSError):
                os.kill(proc.pid, signal.SIGINT)
    deadline = time.monotonic() + _STOP_S
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()


def _collect(jobs, procs, events, on_record, progress) -> None:
    """Route worker events until every job has a record (a dead worker fails its shard)."""
    pending = {str(path): path for path, _ in jobs}
    current: dict[int, str] = {}
    exited: set[int] = set()  # workers seen exited at the previous empty poll
    while pending:
        try:
            kind, index, payload = events.get(timeout=_POLL_S)
        except queue.Empty:
            # a worker seen exited at the previous poll too has nothing left in the queue
            for index in exited & set(current):
                path = pending.pop(current.pop(index))
                on_record(path, _died(path, procs[index].exitcode))
            if len(exited) == len(procs):
                for key in list(pending):
                    on_record(pending[key], _died(pending.pop(key), None))
            exited = {i for i, proc in enumerate(procs) if proc.exitcode is not None}
            continue
        if kind == "error":
            raise ValueError(f"a worker could not load the model: {payload}")
        if kind == "start":
            current[index] = str(payload)
        elif kind == "progress":
            if progress is not None:
                progress(payload)
        elif kind == "done":
            path, record = payload
            current.pop(index, None)
            if str(path) in pending:
                on_record(pending.pop(str(path)), record)


def _died(path, exitcode) -> dict:
    reason = "no worker process was left" if exitcode is None else f"exit code {exitcode}"
    return {
        "input": str(path),
        "output": f"{shard_stem(path)}.parquet",
        "rows": 0,
        "rejected": 0,
        "status": "failed",
        "error": f"{Path(path).name}: the worker process died ({reason})",
    }
