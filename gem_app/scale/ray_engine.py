"""The Ray engine of :mod:`gem_app.scale.assign` (the ``scale`` extra: ``pip install "ray[data]"``).

A Ray Data dataset of shard descriptions goes through ``map_batches`` with a fixed pool
of actors (``ActorPoolStrategy(size=workers)``); each actor loads the model once and runs
:func:`gem_app.scale.assign.assign_shard` on whole shards: it reads the shard in record
batches, assigns and writes ``OUTDIR/<stem>.parquet`` atomically. The driver collects
the manifest records. Parallelism is per shard (not per Ray block) so that a shard's
output, resume checksum and per-row rejections are exactly those of the local engine.
On a multi-node cluster OUTDIR and the inputs must be on storage every node can reach
(a shared filesystem); see docs/scale.md.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import torch

from gem_app.scale.assigner import Assigner, ModelSpec, assign_shard
from gem_app.scale.inputs import Columns, shard_stem
from gem_app.utils.optional import require_ray


class _ShardActor:
    """Holds the model; assigns whole shards (one per call)."""

    def __init__(self, spec_json: str):
        spec = json.loads(spec_json)
        self.columns = Columns(**spec.pop("columns"))
        self.batch_size = spec.pop("batch_size")
        model = ModelSpec(**spec)
        if model.threads:
            torch.set_num_threads(model.threads)  # inside this actor's process only
        self.assigner = Assigner(model)

    def __call__(self, batch: dict) -> dict:
        records = []
        for path, out_path in zip(batch["path"], batch["out_path"], strict=True):
            record = assign_shard(path, out_path, self.assigner, self.columns, self.batch_size)
            records.append(json.dumps(record))
        return {"path": list(batch["path"]), "record": records}


def run_ray(
    todo,
    out_dir,
    spec: ModelSpec,
    columns: Columns,
    batch_size: int,
    workers: int,
    address,
    on_record,
    progress,
) -> None:
    """Run the shards of ``todo`` on Ray; ``on_record(path, record)`` for each one."""
    if not todo:
        return
    ray = require_ray()
    started_here = not ray.is_initialized()
    if started_here:
        kwargs = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": logging.WARNING,
        }
        if address is not None:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=workers, **kwargs)
    try:
        items = [
            {"path": str(path), "out_path": str(Path(out_dir) / f"{shard_stem(path)}.parquet")}
            for path, _, _ in todo
        ]
        payload = json.dumps(
            {**asdict(spec), "columns": columns.__dict__, "batch_size": batch_size}
        )
        dataset = ray.data.from_items(items, override_num_blocks=len(items))
        results = dataset.map_batches(
            _ShardActor,
            fn_constructor_args=(payload,),
            batch_size=1,
            num_cpus=1,
            compute=ray.data.ActorPoolStrategy(size=min(workers, len(items))),
            batch_format="numpy",
        )
        by_path = {str(path): path for path, _, _ in todo}
        for row in results.iter_rows():
            record = json.loads(row["record"])
            if progress is not None:
                progress(record.get("rows", 0))
            on_record(by_path[str(row["path"])], record)
    finally:
        if started_here:
            ray.shutdown()
