"""A persistent, checksummed workspace for fits, saved mixtures and proxy studies.

Layout (``root`` defaults to ``$GEM_WORKSPACE`` or ``./gem_workspace``)::

    root/<kind>/<name>/manifest.json        the commit point of the run
    root/<kind>/<name>/<version>/<files>    the files of the current version
    root/.locks/<kind>/<name>.lock          inter-process lock of the run

``manifest.json`` holds ``{format_version, kind, name, created, updated, version,
parameters, files: {relative_path: {sha256, bytes}}}``. A save writes a complete new
version folder, then replaces the manifest atomically (the commit), then removes the
version folders that are neither the new one nor the one it replaced. A crash (or an
exception) at any point before the manifest is replaced leaves the previous version
loadable; a later save removes the orphaned folder. Every write of a run happens under
its file lock, so two processes writing at once neither corrupt nor lose anything.
:meth:`Workspace.load` verifies every checksum and raises :class:`WorkspaceCorruption`
naming each missing or altered file.

Readers take no lock. A version folder never changes once committed, and a version that
a save replaces is kept for two minutes (and at least until the next save), so a reader
that has just read the manifest still finds its files; a reader that finds files missing
re-reads the manifest and, when a save committed meanwhile, verifies the newer version
instead of reporting corruption. A reader therefore sees the previous committed version
or a newer one, never a spurious corruption.

Paths handed out by :meth:`Workspace.path` point into the version current at the call;
that folder goes two minutes after a later save, so open files rather than keep paths.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock

from gem_app.storage.manifest import (
    FORMAT_VERSION,
    MANIFEST,
    RunInfo,
    WorkspaceCorruption,
    file_problems,
    read_manifest,
)
from gem_app.storage.run_files import (
    FileRecord,
    FileSource,
    check_name,
    check_relpath,
    file_record,
    link_or_copy,
    write_source,
)
from gem_app.utils.files import fault_point, write_json

__all__ = ["KINDS", "Workspace"]

KINDS = ("fits", "mixtures", "studies")
_LOCK_TIMEOUT_S = 600.0
_READ_ATTEMPTS = 50  # a reader overtaken by saves re-reads the manifest up to this often
_GRACE_S = 120.0  # superseded versions stay this long for readers that hold their paths


# ----------------------------------------------------------------------------- helpers
def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
    return kind


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


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
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(
                f"workspace {self.root} is a file, not a folder; pass a folder (--workspace "
                "or $GEM_WORKSPACE)"
            )

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    # -- locations
    def _run_dir(self, kind: str, name: str) -> Path:
        return self.root / _check_kind(kind) / check_name(name)

    def _lock(self, kind: str, name: str) -> FileLock:
        lock_dir = self.root / ".locks" / _check_kind(kind)
        lock_dir.mkdir(parents=True, exist_ok=True)
        return FileLock(str(lock_dir / f"{check_name(name)}.lock"), timeout=_LOCK_TIMEOUT_S)

    def path(self, kind: str, name: str, relpath: str) -> Path:
        """Absolute path of ``relpath`` in the current version of a run (validated)."""
        info = read_manifest(self._run_dir(kind, name), kind, name)
        return info.path / check_relpath(relpath)

    def exists(self, kind: str, name: str) -> bool:
        """Whether the run has a manifest."""
        return (self._run_dir(kind, name) / MANIFEST).is_file()

    # -- reading
    def verify(self, kind: str, name: str) -> list[str]:
        """Check every file against the manifest; return one line per problem (empty: fine)."""
        try:
            return self._verified(kind, name)[1]
        except WorkspaceCorruption as exc:
            return exc.problems

    def _verified(self, kind: str, name: str) -> tuple[RunInfo, list[str]]:
        """The manifest and the problems of its files, re-read while saves overtake us."""
        info = read_manifest(self._run_dir(kind, name), kind, name)
        for _ in range(_READ_ATTEMPTS):
            problems = file_problems(info)
            if not problems:
                return info, problems
            latest = read_manifest(self._run_dir(kind, name), kind, name)
            if latest.version == info.version:
                return info, problems
            info = latest  # a save committed a newer version meanwhile: check that one
        return info, problems

    def load(self, kind: str, name: str, *, verify: bool = True) -> RunInfo:
        """The run's manifest, after checking every checksum (unless ``verify=False``).

        Raises
        ------
        FileNotFoundError
            No such run.
        WorkspaceCorruption
            The manifest or a file is missing or altered; the message names each one.
        """
        if not verify:
            return read_manifest(self._run_dir(kind, name), kind, name)
        info, problems = self._verified(kind, name)
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
                    infos.append(read_manifest(self._run_dir(k, name), k, name))
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

    def delete(self, kind: str, name: str) -> None:
        """Remove a run (renamed away first, so a half-deleted run is never seen)."""
        run_dir = self._run_dir(kind, name)
        with self._lock(kind, name):
            if not run_dir.is_dir():
                raise FileNotFoundError(f"no {kind} run named {name!r} in {self.root}")
            trash = run_dir.parent / f".{name}.new-deleted-{uuid.uuid4().hex[:8]}"
            os.rename(run_dir, trash)
            shutil.rmtree(trash)

    @staticmethod
    def _remove_old_versions(run_dir: Path, keep: set[str]) -> None:
        """Remove version folders superseded more than ``_GRACE_S`` ago, except ``keep``.

        A version is superseded when the next one is written: the next folder's mtime.
        """
        folders = sorted(p for p in run_dir.iterdir() if p.is_dir())
        now = time.time()
        for stale, successor in zip(folders, folders[1:], strict=False):
            if stale.name in keep or now - successor.stat().st_mtime < _GRACE_S:
                continue
            fault_point(f"workspace {run_dir.parent.name}/{run_dir.name} remove old version")
            shutil.rmtree(stale, ignore_errors=True)

    def _current(self, kind: str, name: str) -> RunInfo | None:
        """The committed version (None: no run, or a manifest too damaged to name one)."""
        try:
            return read_manifest(self._run_dir(kind, name), kind, name)
        except (WorkspaceCorruption, FileNotFoundError):
            return None

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
            check_relpath(rel)
        if not files and not carry_over:
            raise ValueError(f"{kind}/{name}: a run needs at least one file")
        previous = self.load(kind, name) if carry_over and self.exists(kind, name) else None
        current = previous if previous is not None else self._current(kind, name)
        params = dict(previous.parameters) if previous is not None else {}
        params.update(dict(parameters or {}))
        try:
            json.dumps(params, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{kind}/{name}: parameters are not JSON-serialisable: {exc}") from exc

        version = f"v{_dt.datetime.now(_dt.timezone.utc):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"
        leftover = re.compile(re.escape(f".{name}.new-") + r"(deleted-)?[0-9a-f]{8}")
        for stale in run_dir.parent.iterdir() if run_dir.parent.is_dir() else []:
            if leftover.fullmatch(stale.name):  # a first save or a delete of a dead writer
                shutil.rmtree(stale, ignore_errors=True)
        first = not run_dir.is_dir()
        # a first save builds the whole run folder under a hidden name and renames it into
        # place, so that no reader ever sees a run folder without its manifest
        home = run_dir.parent / f".{name}.new-{uuid.uuid4().hex[:8]}" if first else run_dir
        new_dir = home / version
        new_dir.mkdir(parents=True)
        try:
            records: dict[str, FileRecord] = {}
            if previous is not None:
                for rel in previous.files:
                    if rel not in files:
                        link_or_copy(previous.path / rel, new_dir / rel)
                        records[rel] = previous.files[rel]
            for rel, source in files.items():
                write_source(source, new_dir / rel, rel)
                records[rel] = file_record(new_dir / rel)
            fault_point(f"workspace {kind}/{name} files written")
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
            write_json(home / MANIFEST, manifest)  # the commit point (of an existing run)
            if first:
                os.rename(home, run_dir)  # the commit point of a first save
                fault_point(f"workspace {kind}/{name} created")
        except BaseException:
            committed = self._current(kind, name)
            if committed is None or committed.version != version:  # else: interrupted just after
                shutil.rmtree(new_dir if not first else home, ignore_errors=True)
            raise
        self._remove_old_versions(run_dir, {version, current.version if current else version})
        return read_manifest(self._run_dir(kind, name), kind, name)
