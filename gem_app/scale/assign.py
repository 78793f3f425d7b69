"""Assign documents of any number of shards to GEM clusters, streaming, resumably.

Inputs: JSONL (``.jsonl``, ``.ndjson``, optionally ``.gz``) or Parquet shards, given as
a glob, a directory or a list of paths. Each shard is read in record batches and gives
one ``OUTDIR/<stem>.parquet`` with one row per input row (see :data:`OUTPUT_SCHEMA`):
assigned rows have ``status == "ok"``; bad rows (missing or empty text, non-UTF-8 or
malformed JSON line, bad token count, bad embedding) have ``status == "rejected"`` and a
``reason``. ``OUTDIR/manifest.json`` lists every shard with its input sha256, rows,
rejected rows, output sha256 and status.

Resume: a shard whose manifest entry is ``done`` with the same input checksum, the same
model and settings, and an output file with the recorded checksum is skipped; every
other shard (partial, failed, changed) is redone. Outputs are written atomically.

A shard that cannot be read (corrupt Parquet, missing text column) is recorded as
``failed`` with its name and the error; the other shards complete.

Engines: ``local`` (processes over shards, each loading the model once) and ``ray``
(:mod:`gem_app.scale.ray_engine`); both run :func:`assign_shard`, so their outputs are equal.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gem_app.utils.files import atomic_path, write_json
from gem_app.scale.inputs import (
    Columns,
    _id_text,
    _row_problem,
    file_sha256,
    find_shards,
    read_batches,
    shard_stem,
)

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
OUTPUT_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),
        ("id", pa.string()),
        ("cluster", pa.int32()),
        ("probability", pa.float32()),
        ("top3_clusters", pa.list_(pa.int32())),
        ("top3_probabilities", pa.list_(pa.float32())),
        ("tokens", pa.int64()),
        ("assigned_by", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
    ]
)


# ---------------------------------------------------------------------------- models
@dataclass
class ModelSpec:
    """What the workers load: a student folder and/or a GEM model folder (the teacher).

    ``model`` is a student folder (``student.json``) or a GEM folder (``model.json``).
    With a student and a ``teacher``, documents whose student confidence is below
    ``threshold`` (default: the student's) go to the teacher (cascade). The teacher
    reads embeddings from ``Columns.embeddings`` when given, else runs the offline encoder.
    """

    model: str
    teacher: str | None = None
    threshold: float | None = None
    device: str = "cpu"
    threads: int | None = None

    def checksum(self) -> str:
        digest = hashlib.sha256()
        for folder in (self.model, self.teacher):
            if folder is None:
                continue
            for name in ("student.json", "student.safetensors", "model.json", "model.safetensors"):
                path = Path(folder) / name
                if path.is_file():
                    digest.update(name.encode() + b"\0" + file_sha256(path).encode())
        return digest.hexdigest()


class Assigner:
    """The loaded model(s): ``proba(texts, embeddings) -> (q (n, K) float32, assigned_by)``."""

    def __init__(self, spec: ModelSpec):
        from gem_app.scale.distill import STUDENT_JSON, Student
        from gem_app.core.gem import GEM

        self.spec = spec
        model = Path(spec.model)
        if not model.is_dir():
            raise ValueError(f"{model}: model folder not found")
        self.student = self.teacher = None
        if (model / STUDENT_JSON).is_file():
            self.student = Student.load(model, device=spec.device)
            if spec.teacher is not None:
                self.teacher = GEM.load(spec.teacher)
        elif (model / "model.json").is_file():
            self.teacher = GEM.load(model)
        else:
            raise ValueError(f"{model}: neither student.json nor model.json (not a model folder)")
        if self.teacher is not None:
            self.teacher.device = spec.device
        if self.student and self.teacher and self.student.n_clusters_ != self.teacher.n_clusters:
            raise ValueError(
                f"the student has K = {self.student.n_clusters_} clusters but the teacher "
                f"{spec.teacher} has K = {self.teacher.n_clusters}"
            )
        self.threshold = (
            spec.threshold
            if spec.threshold is not None
            else (self.student.threshold_ if self.student and self.teacher else 0.0)
        )
        self.n_clusters = self.student.n_clusters_ if self.student else self.teacher.n_clusters

    @property
    def needs_embeddings(self) -> bool:
        return self.teacher is not None

    def proba(self, texts: list[str], embeddings=None):
        n = len(texts)
        by = np.full(n, "student" if self.student else "teacher", dtype=object)
        if self.student is not None:
            q = self.student.predict_proba(texts)
            routed = np.flatnonzero(q.max(axis=1) < self.threshold) if self.teacher else []
        else:
            q = np.zeros((n, self.n_clusters), dtype=np.float32)
            routed = np.arange(n)
        if len(routed):
            if embeddings is not None:
                X = np.stack([embeddings[i] for i in routed])
            else:
                from gem_app.io.encoder import embed_texts

                X = embed_texts([texts[i] for i in routed], device=self.spec.device)
            q[routed] = self.teacher.predict_proba(np.asarray(X, dtype=np.float32))
            by[routed] = "teacher"
        return q, by


# ---------------------------------------------------------------------------- one shard
def assign_shard(
    path, out_path, assigner: Assigner, columns: Columns, batch_size: int, progress=None
) -> dict:
    """Assign every row of one shard and write ``out_path`` atomically.

    Returns the manifest record of the shard (status "done" or "failed" with its error).
    """
    path = Path(path)
    record = {"input": str(path), "output": Path(out_path).name, "rows": 0, "rejected": 0}
    started = time.perf_counter()
    try:
        with atomic_path(out_path) as tmp, pq.ParquetWriter(tmp, OUTPUT_SCHEMA) as writer:
            for raw in read_batches(path, columns, batch_size):
                table = _assign_records(raw, assigner, columns)
                writer.write_table(table)
                record["rows"] += table.num_rows
                record["rejected"] += raw_rejected(table)
                if progress is not None:
                    progress(table.num_rows)
        record["output_sha256"] = file_sha256(out_path)
        record["status"] = "done"
    except (ValueError, OSError, UnicodeError, EOFError, pa.ArrowException) as exc:
        message = " ".join(str(exc).split())
        if path.name not in message:
            message = f"{path.name}: {message}"
        record.update(status="failed", error=message)
    record["seconds"] = round(time.perf_counter() - started, 3)
    return record


def raw_rejected(table: pa.Table) -> int:
    return int(np.sum(np.asarray(table.column("status").to_pylist()) == "rejected"))


def _assign_records(raw, assigner: Assigner, columns: Columns) -> pa.Table:
    n = len(raw)
    rows = np.array([r[0] for r in raw], dtype=np.int64)
    ids, reasons, tokens = [None] * n, [None] * n, [None] * n
    good, texts, embeddings = [], [], []
    needs = assigner.needs_embeddings and columns.embeddings is not None
    for i, (_, values, reason) in enumerate(raw):
        if values is not None and columns.id is not None:
            ids[i] = _id_text(values.get(columns.id))
        if reason is None:
            text, count, emb, reason = _row_problem(values, columns, needs)
        if reason is not None:
            reasons[i] = reason
            continue
        good.append(i)
        texts.append(text)
        tokens[i] = count
        embeddings.append(emb)
    cluster = [None] * n
    prob = [None] * n
    top_c, top_p, by = [None] * n, [None] * n, [None] * n
    if good:
        q, source = assigner.proba(texts, embeddings if needs else None)
        order = np.argsort(-q, axis=1, kind="stable")[:, :3]
        for j, i in enumerate(good):
            cluster[i] = int(order[j, 0])
            prob[i] = float(q[j, order[j, 0]])
            top_c[i] = [int(k) for k in order[j]]
            top_p[i] = [float(q[j, k]) for k in order[j]]
            by[i] = str(source[j])
    status = ["rejected" if r is not None else "ok" for r in reasons]
    return pa.table(
        {
            "row": rows,
            "id": ids,
            "cluster": cluster,
            "probability": prob,
            "top3_clusters": top_c,
            "top3_probabilities": top_p,
            "tokens": tokens,
            "assigned_by": by,
            "status": status,
            "reason": reasons,
        },
        schema=OUTPUT_SCHEMA,
    )


# ---------------------------------------------------------------------------- planning
@dataclass
class Plan:
    """Shards to run and shards already finished (skipped)."""

    out_dir: Path
    manifest: dict
    todo: list = field(default_factory=list)  # (path, sha256, n_rows_estimate)
    skipped: list = field(default_factory=list)


def check_writable(out_dir) -> Path:
    """Create ``out_dir`` if needed and check that a file can be written in it."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".gem-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ValueError(
            f"output directory {out} is not writable ({exc.strerror or exc})"
        ) from None
    return out


def plan(shards, out_dir, settings: dict) -> Plan:
    """Compare inputs with OUTDIR/manifest.json: finished shards are skipped, others redone."""
    out = check_writable(out_dir)
    previous = {}
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        try:
            old = json.loads(manifest_path.read_text(encoding="utf-8"))
            if old.get("settings") == settings and old.get("version") == MANIFEST_VERSION:
                previous = old.get("shards", {})
        except (json.JSONDecodeError, UnicodeDecodeError):
            previous = {}
    manifest = {
        "format": "gem-assign-manifest",
        "version": MANIFEST_VERSION,
        "settings": settings,
        "shards": {},
    }
    result = Plan(out, manifest)
    for path in shards:
        stem = shard_stem(path)
        sha = file_sha256(path)
        entry = previous.get(stem)
        output = out / f"{stem}.parquet"
        if (
            entry
            and entry.get("status") == "done"
            and entry.get("input_sha256") == sha
            and output.is_file()
            and file_sha256(output) == entry.get("output_sha256")
        ):
            manifest["shards"][stem] = entry
            result.skipped.append(path)
            continue
        for stale in out.glob(f".{stem}.parquet.*.tmp"):  # partial output of a killed run
            stale.unlink()
        result.todo.append((path, sha, estimate_rows(path)))
    return result


def estimate_rows(path) -> int:
    """Rows of a shard for the progress bar (Parquet metadata; JSONL newlines), 0 if unknown."""
    path = Path(path)
    try:
        if path.name.lower().endswith(".parquet"):
            return pq.ParquetFile(path).metadata.num_rows
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rb") as fh:
            return sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))
    except Exception:  # noqa: BLE001 - only an estimate; the shard's own read reports errors
        return 0


# ---------------------------------------------------------------------------- engines
_WORKER: dict = {}


def _init_worker(spec: ModelSpec, queue=None) -> None:
    import torch

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
    import multiprocessing

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


@dataclass
class AssignResult:
    """Summary of an assignment run."""

    out_dir: Path
    manifest: dict
    ran: list
    skipped: list
    seconds: float

    @property
    def failed(self) -> list:
        return [s for s, e in self.manifest["shards"].items() if e.get("status") != "done"]

    @property
    def rows(self) -> int:
        return sum(e.get("rows", 0) for e in self.manifest["shards"].values())

    def summary(self) -> str:
        shards = self.manifest["shards"]
        rejected = sum(e.get("rejected", 0) for e in shards.values())
        done_rows = sum(
            shards[shard_stem(p)].get("rows", 0)
            for p in self.ran
            if shards[shard_stem(p)].get("status") == "done"
        )
        rate = done_rows / self.seconds if self.seconds > 0 else float("nan")
        lines = [
            f"assigned {len(shards)} shards to {self.out_dir}: {len(self.ran)} run, "
            f"{len(self.skipped)} already done (skipped), {len(self.failed)} failed; "
            f"{self.rows} rows ({rejected} rejected); {done_rows} rows in {self.seconds:.1f} s "
            f"({rate:.0f} docs/s)",
        ]
        for stem in self.failed:
            lines.append(f"  FAILED {stem}: {shards[stem].get('error')}")
        return "\n".join(lines)


def assign(
    model,
    inputs,
    out_dir,
    *,
    teacher=None,
    threshold=None,
    engine="local",
    workers=None,
    address=None,
    batch_size=1024,
    text_col="text",
    id_col="id",
    tokens_col=None,
    embeddings_col=None,
    device="cpu",
    progress=None,
    start=None,
) -> AssignResult:
    """Assign every row of the input shards; write per-shard Parquet and the manifest.

    Parameters
    ----------
    model : path of a student folder or a GEM model/run folder
    inputs : glob, directory, file, or a list of them
    out_dir : output folder (created; must be writable)
    teacher : GEM folder for the cascade (with a student ``model``)
    threshold : cascade threshold (default: the student's)
    engine : {"local", "ray"}
    workers : processes (local) or actors (ray); default: CPU count (local), 2 (ray)
    address : Ray cluster address (``ray.init(address=...)``); None starts a local one
    batch_size : rows per record batch (identical batches on both engines)
    device : "cpu", "cuda" or "auto"
    progress : callable(n_rows_done_increment), optional
    start : callable(total_rows_estimate), optional, called once before the work

    Returns
    -------
    AssignResult
    """
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    columns = Columns(text_col, id_col, tokens_col, embeddings_col)
    if workers is None:
        workers = (os.cpu_count() or 1) if engine == "local" else 2
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    spec = ModelSpec(
        str(Path(model).resolve()),
        None if teacher is None else str(Path(teacher).resolve()),
        threshold,
        device,
        threads=1 if workers > 1 else None,
    )
    Assigner(spec)  # fail early (wrong version, missing folder) before any work
    shards = find_shards(inputs)
    settings = {
        "model_sha256": spec.checksum(),
        "threshold": threshold,
        "columns": columns.__dict__,
        "batch_size": batch_size,
    }
    work = plan(shards, out_dir, settings)
    if start is not None:
        start(sum(n for _, _, n in work.todo))
    manifest = work.manifest
    shas = {path: sha for path, sha, _ in work.todo}

    def on_record(path, record):
        record["input_sha256"] = shas[path]
        manifest["shards"][shard_stem(path)] = record
        write_json(work.out_dir / MANIFEST, _sorted_manifest(manifest))

    began = time.perf_counter()
    if engine == "local":
        run_local(work.todo, work.out_dir, spec, columns, batch_size, workers, on_record, progress)
    else:
        from gem_app.scale.ray_engine import run_ray

        run_ray(
            work.todo,
            work.out_dir,
            spec,
            columns,
            batch_size,
            workers,
            address,
            on_record,
            progress,
        )
    manifest = _sorted_manifest(manifest)
    write_json(work.out_dir / MANIFEST, manifest)
    return AssignResult(
        work.out_dir,
        manifest,
        [p for p, _, _ in work.todo],
        work.skipped,
        time.perf_counter() - began,
    )


def _sorted_manifest(manifest: dict) -> dict:
    return {**manifest, "shards": dict(sorted(manifest["shards"].items()))}
