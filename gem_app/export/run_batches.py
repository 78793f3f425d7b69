"""A run's documents as record batches tagged with their mixture domain (for the shards).

:func:`run_batches` streams ``id``, ``tokens``, ``domain`` (and ``text``) of a fitted run;
:func:`check_mixture_run` checks that a mixture document was built from that run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gem_app.export.domains import run_taxonomy
from gem_app.storage.runs import ASSIGNMENTS, load_run
from gem_app.taxonomy.tree import TAXONOMY_FILE
from gem_app.utils.files import file_sha256

__all__ = ["check_mixture_run", "run_batches"]


def _domain_lookup(doc: Mapping, run_folder: Path, n_rows: int, cluster: np.ndarray | None):
    """Domain index per document of the run (aligned with its assignments)."""
    position = {d["id"]: i for i, d in enumerate(doc["domains"])}
    if doc["mixing"]["domain_source"] == "taxonomy":
        taxonomy = run_taxonomy(run_folder)
        if taxonomy is None:
            raise ValueError(f"the mixture was built on a taxonomy but {run_folder} has none")
        leaf = pd.Series(np.asarray(taxonomy.document_leaf).astype(str)).map(position)
    else:
        leaf = pd.Series(np.asarray(cluster).astype(np.int64).astype(str)).map(position)
    if len(leaf) != n_rows:
        raise ValueError(f"the run assigns {len(leaf)} documents but has {n_rows}")
    if leaf.isna().any():
        row = int(np.flatnonzero(leaf.isna().to_numpy())[0])
        raise ValueError(f"document row {row} belongs to no domain of the mixture")
    return leaf.to_numpy(dtype=np.int64)


def check_mixture_run(doc: Mapping, run_folder) -> None:
    """The mixture document must have been built from this run (its assignments and taxonomy).

    Raises
    ------
    ValueError
        The run's assignments or taxonomy differ from those the mixture recorded (the
        mixture comes from another run, or the run was refit or relabelled since).
    """
    run_folder = Path(run_folder)
    expected = doc["assignments"].get("sha256")
    path = run_folder / ASSIGNMENTS
    if expected is not None and path.is_file() and file_sha256(path) != expected:
        raise ValueError(
            f"{path} is not the assignments file the mixture was built from (sha256 differs: "
            "the mixture comes from another run, or the run changed since the mixture was "
            "built); rebuild the mixture from this run"
        )
    expected = doc["assignments"].get("taxonomy_sha256")
    path = run_folder / TAXONOMY_FILE
    if expected is not None and path.is_file() and file_sha256(path) != expected:
        raise ValueError(
            f"{path} changed since the mixture was built (taxonomy edited); rebuild the mixture"
        )


def run_batches(run, doc: Mapping, *, content: str = "ids", batch_size: int = 65536):
    """Record batches (``id``, ``tokens``, ``domain`` [, ``text``]) of a run's documents.

    ``run`` is a :class:`gem_app.storage.runs.FitRun` or a run folder. For ``content="ids"`` and a
    folder, ``assignments.parquet`` is streamed without loading the model or the data.
    Returns ``(iterator, n_documents)``.
    """
    if isinstance(run, (str, Path)):
        folder = Path(run)
        check_mixture_run(doc, folder)
        if content == "ids":
            parquet = pq.ParquetFile(folder / ASSIGNMENTS)
            n_rows = parquet.metadata.num_rows
            cluster = parquet.read(columns=["cluster"]).column("cluster").to_numpy()
            domain = _domain_lookup(doc, folder, n_rows, cluster)

            def stream():
                offset = 0
                for batch in parquet.iter_batches(batch_size=batch_size, columns=["id", "tokens"]):
                    part = domain[offset : offset + batch.num_rows]
                    offset += batch.num_rows
                    yield pa.Table.from_batches([batch]).append_column("domain", pa.array(part))

            return stream(), n_rows
        run = load_run(folder)
    folder = Path(run.folder)
    check_mixture_run(doc, folder)
    assignments = run.assignments
    n_rows = len(assignments)
    domain = _domain_lookup(doc, folder, n_rows, assignments["cluster"].to_numpy())
    frame = pd.DataFrame(
        {"id": assignments["id"].to_numpy(), "tokens": assignments["tokens"].to_numpy()}
    )
    if content == "text":
        if not np.array_equal(run.frame["id"].to_numpy(), frame["id"].to_numpy()):
            raise ValueError("the run's documents and assignments are not aligned (ids differ)")
        frame.insert(1, "text", run.frame["text"].to_numpy())
    frame["domain"] = domain

    def stream():
        for start in range(0, n_rows, batch_size):
            yield pa.Table.from_pandas(frame.iloc[start : start + batch_size], preserve_index=False)

    return stream(), n_rows
