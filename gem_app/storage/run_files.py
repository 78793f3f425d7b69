"""The files of a workspace run: safe names and relative paths, checksums, and writing one
file of a new version (see :mod:`gem_app.storage.workspace`)."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FileRecord",
    "FileSource",
    "check_name",
    "check_relpath",
    "file_record",
    "link_or_copy",
    "write_source",
]

_CHUNK = 1 << 20

#: What a file of a new version is made from: bytes, a file to copy, or a writer callable.
FileSource = bytes | bytearray | memoryview | os.PathLike | Callable[[Path], None]


@dataclass(frozen=True)
class FileRecord:
    """Checksum and size of one file of a run."""

    sha256: str
    bytes: int


def check_name(name: str, what: str = "name") -> str:
    """A run or file name that stays inside the workspace (ValueError naming ``what``)."""
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


def check_relpath(relpath: str) -> str:
    """A relative file path inside a run (components checked by :func:`check_name`)."""
    if not isinstance(relpath, str) or not relpath:
        raise ValueError(f"file path must be a non-empty string, got {relpath!r}")
    if os.path.isabs(relpath) or relpath.startswith(("/", "\\")) or "\\" in relpath:
        raise ValueError(f"file path {relpath!r} is outside the workspace (absolute or backslash)")
    for part in relpath.split("/"):
        check_name(part, what=f"file path {relpath!r} component")
    return relpath


def file_record(path: Path) -> FileRecord:
    """SHA-256 and size of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return FileRecord(sha256=digest.hexdigest(), bytes=size)


def write_source(source: FileSource, target: Path, relpath: str) -> None:
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


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link ``source`` to ``target`` (a copy where links are not possible)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
