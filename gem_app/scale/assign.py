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

One writer per folder: the manifest records who wrote the folder (the model's fingerprint
and the settings) from the first moment. A folder written with another model or other
settings, another tool's folder, or a non-empty folder without a manifest is refused
unless ``overwrite`` (which removes the outputs the old manifest lists). The run holds an
exclusive lock on ``OUTDIR/.gem-assign.lock``; its worker processes hold a shared lock on
``OUTDIR/.gem-assign-workers.lock`` and die with the run (see
:mod:`gem_app.scale.local_engine`), and a new run waits until every worker of a killed one
has exited, so it never races a survivor.

A shard that cannot be read (corrupt Parquet, missing text column) is recorded as
``failed`` with its name and the error; the other shards complete.

Engines: ``local`` (processes over shards, each loading the model once) and ``ray``
(:mod:`gem_app.scale.ray_engine`); both run :func:`assign_shard`, so their outputs are equal.
"""

from __future__ import annotations

import gzip
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from gem_app.core.rows import resolve_device
from gem_app.scale.assigner import Assigner, ModelSpec
from gem_app.scale.inputs import Columns, find_shards, shard_stem
from gem_app.scale.local_engine import WORKERS_LOCK, run_local
from gem_app.scale.ray_engine import run_ray
from gem_app.utils.files import (
    check_writable_dir,
    file_sha256,
    folder_lock,
    read_json,
    write_json,
)
from gem_app.utils.validation import check_real

__all__ = ["MANIFEST", "AssignResult", "Plan", "assign", "check_writable", "plan"]

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "gem-assign-manifest"
MANIFEST_VERSION = 1
LOCK = ".gem-assign.lock"
_SURVIVOR_WAIT_S = 120.0  # how long a new run waits for the workers of a killed one to exit


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
    return check_writable_dir(out_dir, "output directory")


def _previous_shards(out: Path, settings: dict, overwrite: bool) -> dict:
    """The shard entries of OUTDIR's manifest when it was written by this model and settings.

    Raises ValueError for another writer's folder (unless ``overwrite``: then the outputs
    listed by its manifest are removed and nothing is carried over).
    """
    path = out / MANIFEST
    entries = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    if not path.is_file():
        if entries and not overwrite:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise ValueError(
                f"output directory {out} is not empty and was not written by gem assign (no "
                f"{MANIFEST}; it holds {shown}); choose an empty folder or pass --overwrite"
            )
        return {}
    try:
        old = read_json(path, what="gem assign manifest")
    except ValueError:
        old = None
    ours = isinstance(old, dict) and old.get("format") == MANIFEST_FORMAT
    if ours and old.get("version") == MANIFEST_VERSION and old.get("settings") == settings:
        return dict(old.get("shards") or {})
    if not overwrite:
        if not ours:
            kind = old.get("kind", old.get("format")) if isinstance(old, dict) else None
            why = f"holds another tool's output ({MANIFEST} of kind {kind!r})"
        elif (old.get("settings") or {}).get("model_sha256") != settings["model_sha256"]:
            why = "was written by gem assign with another model"
        else:
            why = "was written by gem assign with other settings (threshold, columns, batch size)"
        raise ValueError(
            f"output directory {out} {why}; choose another --out, or pass --overwrite to "
            "replace its outputs"
        )
    if ours:
        for entry in (old.get("shards") or {}).values():
            name = Path(str(entry.get("output", ""))).name
            if name.endswith(".parquet"):
                (out / name).unlink(missing_ok=True)
    path.unlink()
    return {}


def plan(shards, out_dir, settings: dict, *, overwrite: bool = False) -> Plan:
    """Compare inputs with OUTDIR/manifest.json: finished shards are skipped, others redone.

    The manifest returned (written by :func:`assign` before any shard) keeps the finished
    shards of this writer that are not among ``shards``, so that it lists every output.
    """
    out = check_writable(out_dir)
    previous = _previous_shards(out, settings, overwrite)
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "settings": settings,
        "shards": {},
    }
    result = Plan(out, manifest)
    stems = {shard_stem(path) for path in shards}
    for stem, entry in previous.items():
        output = out / f"{stem}.parquet"
        if stem not in stems and entry.get("status") == "done" and output.is_file():
            manifest["shards"][stem] = entry
    for path in shards:
        stem = shard_stem(path)
        sha = file_sha256(path)
        entry = previous.get(stem)
        output = out / f"{stem}.parquet"
        if output.resolve() == Path(path).resolve():
            raise ValueError(f"{path} would be overwritten by its own output; choose another --out")
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
    overwrite=False,
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
    overwrite : replace the outputs of another writer in ``out_dir`` (see the module docstring)

    Returns
    -------
    AssignResult
    """
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if threshold is not None:
        threshold = check_real(threshold, "threshold", minimum=0.0, maximum=1.0)
    device = str(resolve_device(device))
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
    out = check_writable(out_dir)
    if not overwrite:
        _previous_shards(out, settings, overwrite)  # refuse another writer's folder untouched
    with folder_lock(out / LOCK, what=f"output directory {out} (another gem assign)"):
        with folder_lock(
            out / WORKERS_LOCK,
            what=f"output directory {out} (workers of a killed gem assign)",
            timeout=_SURVIVOR_WAIT_S,
        ):
            pass  # every worker of an earlier, killed run has exited
        work = plan(shards, out, settings, overwrite=overwrite)
        write_json(work.out_dir / MANIFEST, _sorted_manifest(work.manifest))  # the writer
        if start is not None:
            start(sum(n for _, _, n in work.todo))
        began = time.perf_counter()
        _run_engine(work, engine, spec, columns, batch_size, workers, address, progress)
    manifest = _sorted_manifest(work.manifest)
    return AssignResult(
        work.out_dir,
        manifest,
        [p for p, _, _ in work.todo],
        work.skipped,
        time.perf_counter() - began,
    )


def _run_engine(work: Plan, engine, spec, columns, batch_size, workers, address, progress):
    """Run the shards of ``work.todo``; the manifest is rewritten after each one and at the end."""
    manifest = work.manifest
    shas = {path: sha for path, sha, _ in work.todo}

    def on_record(path, record):
        record["input_sha256"] = shas[path]
        manifest["shards"][shard_stem(path)] = record
        write_json(work.out_dir / MANIFEST, _sorted_manifest(manifest))

    if engine == "local":
        run_local(work.todo, work.out_dir, spec, columns, batch_size, workers, on_record, progress)
    else:
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
    write_json(work.out_dir / MANIFEST, _sorted_manifest(manifest))


def _sorted_manifest(manifest: dict) -> dict:
    return {**manifest, "shards": dict(sorted(manifest["shards"].items()))}
