"""The local engine of :mod:`gem_app.scale.assign`: shards in this process or in a pool of
spawned processes, each loading the model once."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import torch

from gem_app.scale.assigner import Assigner, ModelSpec, assign_shard
from gem_app.scale.inputs import shard_stem

__all__ = ["run_local"]

_WORKER: dict = {}


def _init_worker(spec: ModelSpec, queue=None) -> None:
    if spec.threads:
        torch.set_num_threads(spec.threads)  # this worker process only
    _WORKER["assigner"] = Assigner(spec)
    _WORKER["queue"] = queue


def _worker_shard(path, out_path, columns, batch_size) -> dict:
    queue = _WORKER.get("queue")
    progress = None if queue is None else queue.put
    return assign_shard(path, out_path, _WORKER["assigner"], columns, batch_size, progress)


def run_local(todo, out_dir, spec, columns, batch_size, workers, on_record, progress):
    """Run shards in this process (workers == 1) or in a spawn process pool."""
    jobs = [(path, Path(out_dir) / f"{shard_stem(path)}.parquet") for path, _, _ in todo]
    if workers <= 1 or len(jobs) <= 1:
        assigner = Assigner(spec)
        for path, out_path in jobs:
            on_record(path, assign_shard(path, out_path, assigner, columns, batch_size, progress))
        return
    context = multiprocessing.get_context("spawn")
    manager = context.Manager() if progress is not None else None
    queue = manager.Queue() if manager is not None else None
    try:
        with ProcessPoolExecutor(
            max_workers=min(workers, len(jobs)),
            mp_context=context,
            initializer=_init_worker,
            initargs=(spec, queue),
        ) as pool:
            pending = {
                pool.submit(_worker_shard, path, out_path, columns, batch_size): path
                for path, out_path in jobs
            }
            while pending:
                done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(queue, progress)
                for future in done:
                    on_record(pending.pop(future), future.result())
            _drain(queue, progress)
    finally:
        if manager is not None:
            manager.shutdown()


def _drain(queue, progress) -> None:
    while queue is not None and not queue.empty():
        progress(queue.get())
