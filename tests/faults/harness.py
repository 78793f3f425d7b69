"""Fault injection: run an operation in a child process, stop it at its n-th file-system
boundary, and classify what it left behind.

The boundaries are the calls of :func:`gem_app.utils.files.fault_point` (every atomic
write and rename, every folder swap, every workspace commit step). A traced run lists
them; then, for each boundary and each signal (SIGKILL, or SIGINT = Ctrl-C), the old state
is restored, the operation runs in a fresh child process that stops itself at that
boundary, and the result is classified:

- ``old`` / ``new``: exactly the state before / after an uninterrupted run;
- ``resumable``: a consistent intermediate state that the operation is designed to resume
  (``gem assign``: every shard its manifest lists is complete and verified);
- ``refused``: the consumers refuse it with a one-line error (a ValueError, exit 2);
- ``mixed-accepted``: anything else that a consumer accepts. The goal is none.

Each trial also checks that no process of the operation survives it (its workers carry a
tag in their environment) and, optionally, that a rerun completes to the new state and
leaves no temporary file behind.

Children are forked from a forkserver that has imported gem_app once, so a trial costs the
operation itself, not an interpreter start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gem_app.cli import main
from gem_app.export.document import build_mixture_document, read_mixture
from gem_app.export.domains import domains_from_run, mix_domains
from gem_app.export.shards import materialize
from gem_app.scale.assign import assign
from gem_app.scale.local_engine import hidden_main
from gem_app.storage.runs import fit_corpus, load_run
from gem_app.storage.workspace import Workspace
from gem_app.utils.files import FAULT_OWNER_ENV, FAULT_POINT_ENV, FAULT_TRACE_ENV, file_sha256

TAG_ENV = "GEM_FAULT_TAG"
SIGNALS = ("KILL", "INT")
TEMPORARY_MARKS = (".gem-build-", ".gem-old-", ".tmp", ".new-")
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload([__name__])


# ----------------------------------------------------------------------------- child processes
def _child(func: Callable[[Path], int], base: str, env: dict) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.environ.update(env)
    os.environ[FAULT_OWNER_ENV] = str(os.getpid())
    # Ctrl-C as in a terminal, even when the test runner was started in the background (a
    # non-interactive shell's `cmd &` starts it with SIGINT ignored, and children inherit that)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(func(Path(base)))


def run_child(func: Callable[[Path], int], base: Path, env: dict | None = None) -> int | None:
    """Run ``func(base)`` in a child process; its exit code (negative: killed by that signal)."""
    proc = _CONTEXT.Process(target=_child, args=(func, str(base), dict(env or {})))
    with hidden_main():  # the test runner's __main__ may be a Streamlit page (AppTest)
        proc.start()
    proc.join(600)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
    return proc.exitcode


def tagged_processes(tag: str) -> list[int]:
    """Live processes whose environment carries ``TAG_ENV=tag`` (Linux /proc)."""
    needle = f"{TAG_ENV}={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def orphans(tag: str, wait: float = 2.0) -> list[int]:
    """Processes of a finished trial still alive after ``wait`` seconds (they are then killed)."""
    deadline = time.monotonic() + wait
    alive = tagged_processes(tag)
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = tagged_processes(tag)
    for pid in alive:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return alive


# ----------------------------------------------------------------------------- states
def snapshot(path: Path) -> dict:
    """``{relative path: sha256}`` of every non-hidden file under ``path`` (a file: itself)."""
    if path.is_file():
        return {path.name: file_sha256(path)}
    if not path.is_dir():
        return {}
    return {
        str(p.relative_to(path)): file_sha256(p)
        for p in sorted(path.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    }


def temporaries(base: Path) -> list[str]:
    """Temporary files and folders left under ``base`` (not the locks, which stay)."""
    return sorted(
        str(p.relative_to(base))
        for p in base.rglob(".*")
        if any(mark in p.name for mark in TEMPORARY_MARKS)
    )


@dataclass
class Operation:
    """An operation under test and how to judge what it leaves.

    ``observe(base)`` describes the state (comparable with ``==``); ``accept(base)`` runs
    the consumers: it returns when they work and raises ValueError when they refuse.
    """

    name: str
    prepare: Callable[[Path], None]  # inputs, under root/inputs
    make_old: Callable[[Path], None]  # the old state, under base
    run: Callable[[Path], int]  # the operation, in a child process
    observe: Callable[[Path], object]
    accept: Callable[[Path], None]
    resumable: bool = False
    commands: Callable[[Path], list] | None = None  # gem commands that read the state


@dataclass
class Trial:
    operation: str
    point: int
    boundary: str
    signal: str
    exitcode: int | None
    state: str
    orphans: list = field(default_factory=list)
    leftovers: list = field(default_factory=list)
    recovered: bool | None = None
    commands_ok: bool | None = None  # every command exits 0 (old/new state) or 2 (refused)


def classify(op: Operation, base: Path, old, new) -> str:
    try:
        state = op.observe(base)
    except ValueError:
        return "refused"
    if state == old:
        return "old"
    if state == new:
        return "new"
    try:
        op.accept(base)
    except ValueError:
        return "refused"
    return "resumable" if op.resumable else "mixed-accepted"


class Sweep:
    """One operation prepared under ``root``: its old and new states and its boundaries."""

    def __init__(self, op: Operation, root: Path, *, reference: bool = True):
        self.op, self.root = op, Path(root)
        self.inputs, self.base, self.pristine = (self.root / n for n in ("inputs", "base", "old"))
        self.inputs.mkdir(parents=True, exist_ok=True)
        op.prepare(self.inputs)
        self.base.mkdir()
        op.make_old(self.base)
        shutil.copytree(self.base, self.pristine, symlinks=True)
        self.old = op.observe(self.base)
        self.new, self.boundaries = None, []
        if reference:  # the uninterrupted run: the new state and the boundaries, traced
            trace = self.root / "trace.txt"
            code = run_child(op.run, self.base, {FAULT_TRACE_ENV: str(trace)})
            if code != 0:
                raise RuntimeError(f"{op.name}: the uninterrupted run exited with {code}")
            self.new = op.observe(self.base)
            self.boundaries = [line.split("\t", 1)[1] for line in trace.read_text().splitlines()]

    def restore(self) -> None:
        shutil.rmtree(self.base)
        shutil.copytree(self.pristine, self.base, symlinks=True)

    def trial(
        self, point: int, sig: str = "KILL", *, rerun: bool = False, commands: bool = False
    ) -> Trial:
        """Stop the operation at boundary ``point`` (1-based) with ``sig``; classify the result.

        ``commands``: also run the operation's consumer commands (``gem mix``...) on the state
        left behind; ``rerun``: then run the operation again, to completion.
        """
        self.restore()
        tag = uuid.uuid4().hex
        env = {FAULT_POINT_ENV: f"{point}:{sig}", TAG_ENV: tag}
        code = run_child(self.op.run, self.base, env)
        result = Trial(
            self.op.name,
            point,
            self.boundaries[point - 1] if point <= len(self.boundaries) else "?",
            sig,
            code,
            classify(self.op, self.base, self.old, self.new),
            orphans(tag),
            temporaries(self.base),
        )
        if commands and self.op.commands is not None:
            expected = {"old": 0, "new": 0, "resumable": 0, "refused": 2}.get(result.state)
            codes = [run_child(_gem, self.base, {"GEM_ARGS": json.dumps(args)})
                     for args in self.op.commands(self.base)]  # fmt: skip
            result.commands_ok = all(code == expected for code in codes)
        if rerun:
            code = run_child(self.op.run, self.base)
            result.recovered = (
                code == 0 and self.op.observe(self.base) == self.new and not temporaries(self.base)
            )
        return result

    def run(
        self, points=None, signals=SIGNALS, *, rerun: bool = False, commands: bool = False
    ) -> list[Trial]:
        points = range(1, len(self.boundaries) + 1) if points is None else points
        return [self.trial(p, s, rerun=rerun, commands=commands) for p in points for s in signals]


def _gem(base: Path) -> int:
    """A consumer command (``GEM_ARGS``, JSON) in a child process."""
    return main(json.loads(os.environ["GEM_ARGS"]))


# ----------------------------------------------------------------------------- the inputs
def planted_corpus(folder: Path, n: int = 90, seed: int = 1) -> None:
    """``data.parquet`` (id, text, tokens) and ``emb.npy`` (6-d, three planted clusters)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, 6)) * 4
    vocab = [["alpha", "beta", "gamma"], ["red", "green", "blue"], ["cat", "dog", "bird"]]
    rows, X = [], []
    for i in range(n):
        k = i % 3
        text = " ".join(rng.choice(vocab[k], 5))
        rows.append({"id": i, "text": text, "tokens": int(rng.integers(10, 100))})
        X.append(centers[k] + rng.normal(size=6))
    pd.DataFrame(rows).to_parquet(folder / "data.parquet")
    np.save(folder / "emb.npy", np.asarray(X, dtype=np.float32))


def _fit(inputs: Path, out: Path, k: int, seed: int) -> None:
    fit_corpus(
        inputs / "data.parquet",
        out,
        n_clusters=k,
        embeddings=inputs / "emb.npy",
        tokens_col="tokens",
        random_state=seed,
    )


def _inputs(base: Path) -> Path:
    return base.parent / "inputs"


# ----------------------------------------------------------------------------- gem fit
def _fit_prepare(inputs: Path) -> None:
    planted_corpus(inputs)


def _fit_run(base: Path) -> int:
    inputs = _inputs(base)
    args = ["fit", str(inputs / "data.parquet"), "--embeddings", str(inputs / "emb.npy")]
    args += ["--tokens-col", "tokens", "--k", "4", "--seed", "1", "--out", str(base / "run")]
    return main(args)


def _fit_accept(base: Path) -> None:
    run = load_run(base / "run")
    domains_from_run(run)


FIT = Operation(
    "gem fit --out EXISTING",
    _fit_prepare,
    lambda base: _fit(_inputs(base), base / "run", 3, 0),
    _fit_run,
    lambda base: snapshot(base / "run"),
    _fit_accept,
    commands=lambda base: [
        ["mix", str(base / "run")],
        ["export", str(base / "run"), "--out", str(base.parent / "check.json")],
    ],
)


# ----------------------------------------------------------------------------- gem export
def _export_prepare(inputs: Path) -> None:
    planted_corpus(inputs)
    _fit(inputs, inputs / "run", 3, 0)
    run = load_run(inputs / "run")
    domains = domains_from_run(run)
    for name, tau in (("mix1.json", 1.0), ("mix2.json", 3.0)):
        report = mix_domains(domains, temperature=tau)
        doc = build_mixture_document(run, report, domains=domains, created="2024-01-01T00:00:00Z")
        (inputs / name).write_text(json.dumps(doc), encoding="utf-8")


def _export_args(base: Path, mixture: str, out: str) -> list[str]:
    inputs = _inputs(base)
    return ["export", str(inputs / "run"), "--from", str(inputs / mixture), "--out", out]


def verify_shards(folder: Path) -> None:
    """A consumer of a materialization: the manifest and every file it lists must agree."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise ValueError(f"{folder}: no manifest.json")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    listed = {"manifest.json", manifest["mixture"]}
    if file_sha256(folder / manifest["mixture"]) != manifest["mixture_sha256"]:
        raise ValueError(f"{folder}: mixture.json does not match the manifest")
    for shard in manifest["shards"]:
        listed.add(shard["path"])
        path = folder / shard["path"]
        if not path.is_file() or file_sha256(path) != shard["sha256"]:
            raise ValueError(f"{folder}: {shard['path']} does not match the manifest")
    extra = set(snapshot(folder)) - listed
    if extra:
        raise ValueError(f"{folder}: files not in the manifest: {sorted(extra)}")


def _export_run(base: Path) -> int:
    return main(_export_args(base, "mix2.json", str(base / "mix.json")))


def _materialize_run(base: Path) -> int:
    args = _export_args(base, "mix2.json", str(base.parent / "scratch.json"))
    return main([*args, "--materialize", str(base / "shards"), "--content", "text"])


EXPORT = Operation(
    "gem export --out EXISTING",
    _export_prepare,
    lambda base: (base / "mix.json").write_bytes((_inputs(base) / "mix1.json").read_bytes()),
    _export_run,
    lambda base: snapshot(base / "mix.json"),
    lambda base: read_mixture(base / "mix.json"),
    commands=lambda base: [
        [
            "export",
            str(_inputs(base) / "run"),
            "--from",
            str(base / "mix.json"),
            "--out",
            str(base.parent / "check.json"),
            "--format",
            "doremi",
        ],
    ],  # fmt: skip
)

MATERIALIZE = Operation(
    "gem export --materialize EXISTING",
    _export_prepare,
    lambda base: materialize(
        _inputs(base) / "run", read_mixture(_inputs(base) / "mix1.json"), base / "shards"
    ),
    _materialize_run,
    lambda base: snapshot(base / "shards"),
    lambda base: verify_shards(base / "shards"),
)


# ----------------------------------------------------------------------------- gem assign
def assign_shards(
    folder: Path, n_shards: int, rows: int, seed: int = 3, dim: int = 6, first: int = 0
) -> None:
    """Parquet shards (id, text, emb); ``dim = 6`` fits the model of ``planted_corpus``."""
    rng = np.random.default_rng(seed + first)
    for s in range(first, first + n_shards):
        X = rng.normal(size=(rows, dim)).astype(np.float32)
        ids = [f"s{s}-{i}" for i in range(rows)]
        table = pa.table({"id": ids, "text": [f"doc {i}" for i in ids], "emb": X.tolist()})
        pq.write_table(table, folder / f"shard{s}.parquet")


#: rows of each shard the killed run assigns: a worker needs seconds for one, so a survivor
#: of a killed run would still be at work when the orphan check looks
ASSIGN_ROWS = 30_000


def _assign_prepare(inputs: Path) -> None:
    planted_corpus(inputs)
    _fit(inputs, inputs / "run", 3, 0)
    (inputs / "shards").mkdir()
    assign_shards(inputs / "shards", 2, 200)  # done in the old state
    assign_shards(inputs / "shards", 4, ASSIGN_ROWS, first=2)  # the new work, two workers


def _assign_old(base: Path) -> None:
    inputs = _inputs(base)
    shards = [inputs / "shards" / f"shard{s}.parquet" for s in (0, 1)]
    assign(inputs / "run", shards, base / "out", workers=1, embeddings_col="emb", batch_size=256)


def _assign_run(base: Path) -> int:
    inputs = _inputs(base)
    args = ["assign", str(inputs / "run"), "--input", str(inputs / "shards")]
    args += ["--out", str(base / "out"), "--workers", "2", "--embeddings-col", "emb"]
    args += ["--batch-size", "256"]
    return main(args)


def _assign_observe(base: Path):
    """The finished shards the manifest lists, with their outputs' checksums."""
    path = base / "out" / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"shards": {}}
    return {
        stem: (entry.get("output_sha256"), entry.get("input_sha256"))
        for stem, entry in manifest["shards"].items()
        if entry.get("status") == "done"
    }


def _assign_accept(base: Path) -> None:
    """The consumer: every finished shard's output must be the one the manifest records."""
    for stem, (output_sha, _) in _assign_observe(base).items():
        output = base / "out" / f"{stem}.parquet"
        if not output.is_file() or file_sha256(output) != output_sha:
            raise ValueError(f"{output} does not match the manifest")


ASSIGN = Operation(
    "gem assign --workers 2 (resume)",
    _assign_prepare,
    _assign_old,
    _assign_run,
    _assign_observe,
    _assign_accept,
    resumable=True,
)


# ----------------------------------------------------------------------------- workspace
def _workspace_files(version: str) -> dict:
    return {
        "model.json": json.dumps({"version": version}).encode(),
        "data/assignments.bin": hashlib.sha256(version.encode()).digest() * 4096,
    }


def _workspace_replace(base: Path) -> int:
    Workspace(base / "ws").save("fits", "run", _workspace_files("new"), {"v": "new"})
    return 0


def _workspace_first(base: Path) -> int:
    Workspace(base / "ws").save("fits", "first", _workspace_files("first"))
    return 0


def _workspace_observe(name: str):
    def observe(base: Path):
        ws = Workspace(base / "ws")
        if not ws.exists("fits", name):
            return None
        info = ws.load("fits", name)  # WorkspaceCorruption (a ValueError): refused
        return {rel: info.file(rel).read_bytes() for rel in info.files}

    return observe


WORKSPACE = Operation(
    "workspace save (replace)",
    lambda inputs: None,
    lambda base: Workspace(base / "ws").save("fits", "run", _workspace_files("old"), {"v": "old"}),
    _workspace_replace,
    _workspace_observe("run"),
    _workspace_observe("run"),
)

WORKSPACE_FIRST = Operation(
    "workspace save (first)",
    lambda inputs: None,
    lambda base: Workspace(base / "ws").save("fits", "run", _workspace_files("old")),
    _workspace_first,
    _workspace_observe("first"),
    _workspace_observe("first"),
)

OPERATIONS = (FIT, EXPORT, MATERIALIZE, ASSIGN, WORKSPACE, WORKSPACE_FIRST)
