"""The manifest of a workspace run: the commit point that lists each file with its checksum.

``manifest.json`` holds ``{format_version, kind, name, created, updated, version,
parameters, files: {relative_path: {sha256, bytes}}}``; the run's files live in the
version folder it names. :func:`read_manifest` checks the document, :func:`file_problems`
the files against it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gem_app.storage.run_files import FileRecord, check_name, check_relpath, file_record

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "RunInfo",
    "WorkspaceCorruption",
    "file_problems",
    "read_manifest",
]

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class WorkspaceCorruption(ValueError):
    """A run whose manifest or files are missing or do not match their checksums.

    ``problems`` lists one human-readable line per bad file. A ``ValueError``: bad data
    on disk, reported by the CLI as a one-line error.
    """

    def __init__(self, kind: str, name: str, problems: list[str]):
        self.kind, self.name, self.problems = kind, name, list(problems)
        super().__init__(f"{kind}/{name} is corrupted: " + "; ".join(self.problems))


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


def read_manifest(run_dir: Path, kind: str, name: str) -> RunInfo:
    """The checked manifest of the run in ``run_dir`` (WorkspaceCorruption naming the problem).

    Raises FileNotFoundError when the run folder does not exist.
    """
    manifest = run_dir / MANIFEST
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no {kind} run named {name!r} in {run_dir.parent.parent}")
    if not manifest.is_file():
        raise WorkspaceCorruption(kind, name, [f"{MANIFEST}: missing"])
    try:
        raw = json.loads(manifest.read_text(encoding="utf-8"))
        files = {
            check_relpath(rel): FileRecord(str(rec["sha256"]), int(rec["bytes"]))
            for rel, rec in raw["files"].items()
        }
        version = check_name(str(raw["version"]), "version")
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
        raise WorkspaceCorruption(kind, name, [f"{MANIFEST}: describes {info.kind}/{info.name}"])
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


def file_problems(info: RunInfo) -> list[str]:
    """One line per file of the run that is missing or differs from its manifest record."""
    problems = []
    for rel, record in sorted(info.files.items()):
        target = info.path / rel
        try:
            actual = file_record(target)
        except OSError:
            problems.append(f"{rel}: missing")
            continue
        if actual.bytes != record.bytes:
            problems.append(f"{rel}: {actual.bytes} bytes, manifest says {record.bytes}")
        elif actual.sha256 != record.sha256:
            problems.append(f"{rel}: checksum mismatch (file altered)")
    return problems
