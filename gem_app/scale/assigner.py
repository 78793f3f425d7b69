"""Assigning the rows of one input shard: the loaded model(s) and the per-shard output file.

:class:`Assigner` holds a student and/or a GEM teacher (cascade); :func:`assign_shard`
reads a shard in record batches, assigns every row (or rejects it with its reason) and
writes ``<stem>.parquet`` (:data:`OUTPUT_SCHEMA`) atomically. Both engines
(:mod:`gem_app.scale.local_engine`, :mod:`gem_app.scale.ray_engine`) run it, so their
outputs are equal.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gem_app.core.gem import GEM
from gem_app.io.encoder import embed_texts
from gem_app.scale.cascade import cascade_labels
from gem_app.scale.inputs import Columns, id_text, read_batches, row_problem
from gem_app.scale.student import Student
from gem_app.scale.student_files import STUDENT_JSON
from gem_app.utils.files import atomic_path, file_sha256

__all__ = ["OUTPUT_SCHEMA", "Assigner", "ModelSpec", "assign_shard", "rejected_rows"]

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


@dataclass
class ModelSpec:
    """What the workers load: a student folder and/or a GEM model folder (the teacher).

    ``model`` is a student folder (``student.json``) or a GEM folder (``model.json``).
    With a student and a ``teacher``, documents whose confidence under the student's
    routing signal (``Student.routing_``, e.g. the margin between its top two
    probabilities) is below ``threshold`` (default: the student's ``threshold_``) go to
    the teacher (cascade). The teacher reads embeddings from ``Columns.embeddings`` when
    given, else runs the offline encoder.
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
    """The loaded model(s): ``proba(texts, embeddings) -> (q (n, K) float32, assigned_by)``.

    ``threshold`` is on the student's routing signal (``student.routing_``); the routing
    rule itself is :func:`~gem_app.scale.cascade.cascade_labels`.
    """

    def __init__(self, spec: ModelSpec):
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
        """Cluster probabilities of ``texts`` and who assigned each row.

        Parameters
        ----------
        texts : list of str, length n
        embeddings : sequence of n embeddings (d,), optional
            Read by the teacher for the rows it answers (else the offline encoder runs).

        Returns
        -------
        (q (n, K) float32, assigned_by (n,) object array of "student" / "teacher")
        """
        n = len(texts)

        def ask_teacher(rows):
            if embeddings is not None:
                X = np.stack([embeddings[i] for i in rows])
            else:
                X = embed_texts([texts[i] for i in rows], device=self.spec.device)
            return self.teacher.predict_proba(np.asarray(X, dtype=np.float32))

        if self.student is None:
            q = np.zeros((n, self.n_clusters), dtype=np.float32)
            if n:
                q[:] = ask_teacher(np.arange(n))
            return q, np.full(n, "teacher", dtype=object)
        q = self.student.predict_proba(texts)
        if self.teacher is None:
            return q, np.full(n, "student", dtype=object)
        q, routed = cascade_labels(q, ask_teacher, self.threshold, self.student.routing_)
        return q, np.where(routed, "teacher", "student").astype(object)


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
                record["rejected"] += rejected_rows(table)
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


def rejected_rows(table: pa.Table) -> int:
    return int(np.sum(np.asarray(table.column("status").to_pylist()) == "rejected"))


def _assign_records(raw, assigner: Assigner, columns: Columns) -> pa.Table:
    n = len(raw)
    rows = np.array([r[0] for r in raw], dtype=np.int64)
    ids, reasons, tokens = [None] * n, [None] * n, [None] * n
    good, texts, embeddings = [], [], []
    needs = assigner.needs_embeddings and columns.embeddings is not None
    for i, (_, values, reason) in enumerate(raw):
        if values is not None and columns.id is not None:
            ids[i] = id_text(values.get(columns.id))
        if reason is None:
            text, count, emb, reason = row_problem(values, columns, needs)
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
