"""Files: atomic writes, checksums and versioned JSON documents.

Atomic writes go to a temporary file in the same folder, then rename: a reader never sees
a half-written file, and an exception (or a killed process) between the temporary write
and the rename leaves the previous version intact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_open",
    "atomic_path",
    "file_sha256",
    "read_json",
    "read_versioned_json",
    "write_json",
]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The caller writes the temporary path with any library (numpy, pyarrow,
    safetensors). On an exception the temporary file is removed and ``path``
    keeps its previous content.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file for writing; it replaces ``path`` only if the block succeeds."""
    if "w" not in mode:
        raise ValueError(f"atomic_open writes only, got mode {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as fh:
            yield fh


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON, atomically (NaN and Infinity are refused)."""
    text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False)
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text + "\n")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def read_json(path: str | os.PathLike, *, what: str = "JSON file") -> Any:
    """The JSON value in ``path`` (UTF-8; NaN and Infinity refused).

    Raises
    ------
    ValueError
        Naming the file and ``what`` it should be: missing, not a file, not UTF-8, not JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file (expected a {what})")
    try:
        return json.loads(path.read_bytes().decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a {what} (not UTF-8 text at byte {exc.start})") from None
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"{path}: not a {what} (invalid JSON: {exc})") from None


def read_versioned_json(
    path: str | os.PathLike, *, kind: str, version: int, what: str
) -> dict[str, Any]:
    """A JSON object whose ``format`` is ``kind`` and ``format_version`` is ``version``.

    Parameters
    ----------
    path : path of the file
    kind : the expected ``format`` field (e.g. ``"gem-model"``)
    version : the ``format_version`` this build reads
    what : how the file is named in messages (e.g. ``"GEM model file"``)

    Raises
    ------
    ValueError
        Missing or unreadable file, not a JSON object, another format, another version.
    """
    doc = read_json(path, what=what)
    if not isinstance(doc, dict):
        raise ValueError(
            f"{path}: not a {what} (a JSON object is expected, found a {type(doc).__name__})"
        )
    if doc.get("format") != kind:
        raise ValueError(f"{path}: not a {what} (format {doc.get('format')!r}, expected {kind!r})")
    if doc.get("format_version") != version:
        raise ValueError(
            f"{path}: {what} format_version {doc.get('format_version')!r} is not supported; "
            f"this GEM Studio reads format_version {version}"
        )
    return doc
