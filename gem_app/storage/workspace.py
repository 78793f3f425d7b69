"""A persistent, checksummed workspace for datasets, embeddings, fits, taxonomies and mixtures.

Layout (``root`` defaults to ``$GEM_WORKSPACE`` or ``./gem_workspace``)::

    root/<kind>/<name>/manifest.json        the commit point of the run
    root/<kind>/<name>/<version>/<files>    the files of the current version
    root/.locks/<kind>/<name>.lock          inter-process lock of the run

``manifest.json`` holds ``{format_version, kind, name, created, updated, version,
parameters, files: {relative_path: {sha256, bytes}}}``. A save writes a complete new
version folder, then replaces the manifest atomically, then removes the older version
folders. A crash (or an exception) at any point before the manifest is replaced leaves
the previous version loadable; a later save removes the orphaned folder. Every write of
a run happens under its file lock, so two processes writing at once neither corrupt nor
lose anything. :meth:`Workspace.load` verifies every checksum and raises
:class:`WorkspaceCorruption` naming each missing or altered file.

Paths handed out by :meth:`Workspace.path` point into the current version folder; a
later save of the same run deletes that folder, so open files rather than keep paths.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from gem_app.utils.files import write_json

__all__ = ["KINDS", "FORMAT_VERSION", "FileRecord", "RunInfo", "Workspace", "WorkspaceCorruption"]

KINDS = ("datasets", "embeddings", "fits", "taxonomies", "mixtures")
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_LOCK_TIMEOUT_S = 600.0
_CHUNK = 1 << 20

FileSource = bytes | bytearray | memoryview | os.PathLike | Callable[[Path], None]


class WorkspaceCorruption(Exception):
    """A run whose manifest or files are missing or do not match their checksums.

    ``problems`` lists one human-readable line per bad file.
    """

    def __init__(self, kind: str, name: str, problems: list[str]):
        self.kind, self.name, self.problems = kind, name, list(problems)
        super().__init__(f"{kind}/{name} is corrupted: " + "; ".join(self.problems))


@dataclass(frozen=True)
class FileRecord:
    """Checksum and size of one file of a run."""

    sha256: str
    bytes: int


@dataclass(frozen=True)
class RunInfo:
    """What a manifest says about a run; ``path`` is the folder holding its files."""

    kind: str
    name: str
    path: Path
    created: str
    updated: str
    version: str
    parameters: dict
    files: dict[str, FileRecord]
    format_version: int

    def file(self, relpath: str) -> Path:
        """Absolute path of one of the run's files (must be listed in the manifest)."""
        if relpath not in self.files:
            raise KeyError(f"{self.kind}/{self.name} has no file {relpath!r}")
        return self.path / relpath


# ----------------------------------------------------------------------------- helpers
def _check_name(name: str, what: str = "name") -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what} must be a non-empty string, got {name!r}")
    bad = (
        name in (".", "..")
        or name.startswith(".")
        or "/" in name
        or "\\" in name
        or os.path.isabs(name)
        or any(ord(ch) < 32 for ch in name)
        or name != name.strip()
    )
    if bad:
        raise ValueError(
            f"{what} {name!r} is not allowed: it would point outside the workspace "
            "(no path separators, '..', leading '.', absolute paths or control characters)"
        )
    if len(name) > 200:
        raise ValueError(f"{what} {name[:40]!r}... is longer than 200 characters")
    return name


def _check_relpath(relpath: str) -> str:
    if not isinstance(relpath, str) or not relpath:
        raise ValueError(f"file path must be a non-empty string, got {relpath!r}")
    if os.path.isabs(relpath) or relpath.startswith(("/", "\\")) or "\\" in relpath:
        raise ValueError(f"file path {relpath!r} is outside the workspace (absolute or backslash)")
    for part in relpath.split("/"):
        _check_name(part, what=f"file path {relpath!r} component")
    return relpath


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
    return kind


def _sha256_file(path: Path) -> FileRecord:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return FileRecord(sha256=digest.hexdigest(), bytes=size)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def _write_source(source: FileSource, target: Path, relpath: str) -> None:
    """Write one file of a new version (bytes, a file to copy, or a writer callable)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(source, (bytes, bytearray, memoryview)):
        with open(target, "wb") as fh:
            fh.write(source)
    elif isinstance(source, str):
        raise TypeError(
            f"file {relpath!r}: got a str; pass bytes (text.encode()) or a pathlib.Path to copy"
        )
    elif isinstance(source, os.PathLike):
        shutil.copyfile(source, target)
    elif callable(source):
        source(target)
        if not target.is_file():
            raise ValueError(f"file {relpath!r}: the writer did not create {target.name}")
    else:
        raise TypeError(f"file {relpath!r}: unsupported source of type {type(source).__name__}")
    with open(target, "rb") as fh:
        os.fsync(fh.fileno())


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


# ----------------------------------------------------------------------------- workspace
class Workspace:
    """Runs of each kind, saved atomically with a checksummed manifest.

    Parameters
    ----------
    root : str or path-like, optional
        Workspace folder; default ``$GEM_WORKSPACE`` or ``./gem_workspace``. Created on demand.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        if root is None:
            root = os.environ.get("GEM_WORKSPACE") or "gem_workspace"
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    # -- locations
    def _run_dir(self, kind: str, name: str) -> Path:
        return self.root / _check_kind(kind) / _check_name(name)

    def _lock(self, kind: str, name: str) -> FileLock:
        lock_dir = self.root / ".locks" / _check_kind(kind)
        lock_dir.mkdir(parents=True, exist_ok=True)
        return FileLock(str(lock_dir / f"{_check_name(name)}.lock"), timeout=_LOCK_TIMEOUT_S)

    def path(self, kind: str, name: str, relpath: str) -> Path:
        """Absolute path of ``relpath`` in the current version of a run (validated)."""
        info = self._read_manifest(kind, name)
        return info.path / _check_relpath(relpath)

    def exists(self, kind: str, name: str) -> bool:
        """Whether the run has a manifest."""
        return (self._run_dir(kind, name) / MANIFEST).is_file()

    # -- reading
    def _read_manifest(self, kind: str, name: str) -> RunInfo:
        run_dir = self._run_dir(kind, name)
        manifest = run_dir / MANIFEST
        if not run_dir.is_dir():
            raise FileNotFoundError(f"no {kind} run named {name!r} in {self.root}")
        if not manifest.is_file():
            raise WorkspaceCorruption(kind, name, [f"{MANIFEST}: missing"])
        try:
            raw = json.loads(manifest.read_text(encoding="utf-8"))
            files = {
                _check_relpath(rel): FileRecord(str(rec["sha256"]), int(rec["bytes"]))
                for rel, rec in raw["files"].items()
            }
            version = _check_name(str(raw["version"]), "version")
            info = RunInfo(
                kind=str(raw["kind"]),
                name=str(raw["name"]),
                path=run_dir / version,
                created=str(raw["created"]),
                updated=str(raw.get("updated", raw["created"])),
                version=version,
                parameters=dict(raw.get("parameters") or {}),
                files=files,
                format_version=int(raw["format_version"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise WorkspaceCorruption(kind, name, [f"{MANIFEST}: unreadable ({exc})"]) from exc
        if (info.kind, info.name) != (kind, name):
            raise WorkspaceCorruption(
                kind, name, [f"{MANIFEST}: describes {info.kind}/{info.name}"]
            )
        if info.format_version > FORMAT_VERSION:
            raise WorkspaceCorruption(
                kind,
                name,
                [
                    f"{MANIFEST}: format_version {info.format_version} is newer than "
                    f"this GEM Studio understands ({FORMAT_VERSION})"
                ],
            )
        return info

    def verify(self, kind: str, name: str) -> list[str]:
        """Check every file against the manifest; return one line per problem (empty: fine)."""
        try:
            info = self._read_manifest(kind, name)
        except WorkspaceCorruption as exc:
            return exc.problems
        problems = []
        for rel, record in sorted(info.files.items()):
            target = info.path / rel
            if not target.is_file():
                problems.append(f"{rel}: missing")
                continue
            actual = _sha256_file(target)
            if actual.bytes != record.bytes:
                problems.append(f"{rel}: {actual.bytes} bytes, manifest says {record.bytes}")
            elif actual.sha256 != record.sha256:
                problems.append(f"{rel}: checksum mismatch (file altered)")
        return problems

    def load(self, kind: str, name: str, *, verify: bool = True) -> RunInfo:
        """The run's manifest, after checking every checksum (unless ``verify=False``).

        Raises
        ------
        FileNotFoundError
            No such run.
        WorkspaceCorruption
            The manifest or a file is missing or altered; the message names each one.
        """
        info = self._read_manifest(kind, name)
        if verify:
            problems = self.verify(kind, name)
            if problems:
                raise WorkspaceCorruption(kind, name, problems)
        return info

    def list(self, kind: str | None = None) -> list[RunInfo]:
        """Runs of one kind (or all kinds), sorted by kind and name, without checksum checks.

        Runs whose manifest cannot be read are left out; :meth:`check` reports them.
        """
        infos = []
        for k in [_check_kind(kind)] if kind is not None else KINDS:
            for name in self._names(k):
                try:
                    infos.append(self._read_manifest(k, name))
                except (WorkspaceCorruption, FileNotFoundError):
                    continue
        return infos

    def check(self, kind: str | None = None) -> dict[tuple[str, str], list[str]]:
        """Verify every run; return ``{(kind, name): problems}`` for the broken ones."""
        broken = {}
        for k in [_check_kind(kind)] if kind is not None else KINDS:
            for name in self._names(k):
                problems = self.verify(k, name)
                if problems:
                    broken[(k, name)] = problems
        return broken

    def _names(self, kind: str) -> list[str]:
        folder = self.root / kind
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))

    # -- writing
    def save(
        self,
        kind: str,
        name: str,
        files: Mapping[str, FileSource],
        parameters: Mapping[str, Any] | None = None,
    ) -> RunInfo:
        """Create or replace a run as a whole.

        Parameters
        ----------
        files : mapping of relative path -> bytes, path-like (copied) or callable(path)
            A callable receives the target path and writes the file itself (``np.save``,
            ``DataFrame.to_parquet``...). Relative paths may contain ``/`` for sub-folders.
        parameters : mapping, optional
            JSON-serialisable parameters recorded in the manifest.
        """
        with self._lock(kind, name):
            return self._commit(kind, name, dict(files), parameters, carry_over=False)

    def update(
        self,
        kind: str,
        name: str,
        files: Mapping[str, FileSource],
        parameters: Mapping[str, Any] | None = None,
    ) -> RunInfo:
        """Add or replace some files of an existing run; the others are kept.

        ``parameters``, when given, are merged into the recorded ones.
        """
        with self._lock(kind, name):
            return self._commit(kind, name, dict(files), parameters, carry_over=True)

    def append_jsonl(
        self, kind: str, name: str, relpath: str, record: Mapping[str, Any]
    ) -> RunInfo:
        """Append one JSON record (one line) to a JSON-lines file of a run, under the lock.

        The run is created if needed. The file is rewritten into a new version, so the append is
        atomic and checksummed like any other write.
        """
        line = json.dumps(dict(record), ensure_ascii=False, allow_nan=False, sort_keys=True)
        _check_relpath(relpath)
        with self._lock(kind, name):
            previous = b""
            if self.exists(kind, name):
                info = self.load(kind, name)
                if relpath in info.files:
                    previous = (info.path / relpath).read_bytes()
                    if previous and not previous.endswith(b"\n"):
                        previous += b"\n"
            return self._commit(
                kind, name, {relpath: previous + line.encode() + b"\n"}, None, carry_over=True
            )

    def read_jsonl(self, kind: str, name: str, relpath: str) -> list[dict]:
        """All records of a JSON-lines file of a run (after verifying the run)."""
        info = self.load(kind, name)
        text = info.file(relpath).read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def delete(self, kind: str, name: str) -> None:
        """Remove a run (manifest first, so a half-deleted run is never loadable)."""
        run_dir = self._run_dir(kind, name)
        with self._lock(kind, name):
            if not run_dir.is_dir():
                raise FileNotFoundError(f"no {kind} run named {name!r} in {self.root}")
            manifest = run_dir / MANIFEST
            if manifest.exists():
                manifest.unlink()
            shutil.rmtree(run_dir)

    def _commit(
        self,
        kind: str,
        name: str,
        files: dict[str, FileSource],
        parameters: Mapping[str, Any] | None,
        *,
        carry_over: bool,
    ) -> RunInfo:
        """Write a new version folder, then the manifest (the commit), then drop old versions.

        Must be called with the run's lock held.
        """
        run_dir = self._run_dir(kind, name)
        for rel in files:
            _check_relpath(rel)
        if not files and not carry_over:
            raise ValueError(f"{kind}/{name}: a run needs at least one file")
        previous = self.load(kind, name) if carry_over and self.exists(kind, name) else None
        params = dict(previous.parameters) if previous is not None else {}
        params.update(dict(parameters or {}))
        try:
            json.dumps(params, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{kind}/{name}: parameters are not JSON-serialisable: {exc}") from exc

        version = f"v{_dt.datetime.now(_dt.timezone.utc):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"
        new_dir = run_dir / version
        new_dir.mkdir(parents=True)
        try:
            records: dict[str, FileRecord] = {}
            if previous is not None:
                for rel in previous.files:
                    if rel not in files:
                        _link_or_copy(previous.path / rel, new_dir / rel)
                        records[rel] = previous.files[rel]
            for rel, source in files.items():
                _write_source(source, new_dir / rel, rel)
                records[rel] = _sha256_file(new_dir / rel)
            now = _now()
            manifest = {
                "format_version": FORMAT_VERSION,
                "kind": kind,
                "name": name,
                "created": previous.created if previous is not None else now,
                "updated": now,
                "version": version,
                "parameters": params,
                "files": {
                    rel: {"sha256": rec.sha256, "bytes": rec.bytes}
                    for rel, rec in sorted(records.items())
                },
            }
            write_json(run_dir / MANIFEST, manifest)  # the commit point
        except BaseException:
            shutil.rmtree(new_dir, ignore_errors=True)
            if previous is None and not (run_dir / MANIFEST).exists():
                with contextlib.suppress(OSError):
                    run_dir.rmdir()  # a failed first save leaves no trace
            raise
        for stale in run_dir.iterdir():
            if stale.is_dir() and stale.name != version:
                shutil.rmtree(stale, ignore_errors=True)
        return self._read_manifest(kind, name)
