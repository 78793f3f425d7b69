"""Files: atomic writes, whole-folder replacement, folder locks, checksums, versioned JSON.

Atomic writes go to a temporary file in the same folder, then rename: a reader never sees
a half-written file, and an exception (or a killed process) between the temporary write
and the rename leaves the previous version intact. :func:`replace_folder` does the same for
a folder of files that belong together (a run, a materialization): the new folder is built
beside the old one and exchanged with it in one ``renameat2(RENAME_EXCHANGE)`` call.

Every write/rename boundary calls :func:`fault_point`, the hook of the fault-injection
tests (``tests/faults``, ``bench/faults.py``): it does nothing unless the environment asks
the process to stop there.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "FAULT_POINT_ENV",
    "FAULT_TRACE_ENV",
    "atomic_open",
    "atomic_path",
    "check_writable_dir",
    "fault_point",
    "file_sha256",
    "folder_lock",
    "read_json",
    "read_versioned_json",
    "replace_folder",
    "write_json",
]

# ----------------------------------------------------------------------------- fault points
#: ``N`` or ``N:INT`` / ``N:KILL``: the process stops itself (SIGKILL by default) at the
#: N-th file-system boundary it reaches (1-based).
FAULT_POINT_ENV = "GEM_FAULT_POINT"
#: A file to which every boundary reached is appended, one ``N<TAB>name`` line each.
FAULT_TRACE_ENV = "GEM_FAULT_TRACE"
#: The process the two variables above are meant for; child processes (which inherit the
#: environment) stay quiet. Claimed by the first process that imports this module.
FAULT_OWNER_ENV = "GEM_FAULT_PID"
_fault_count: dict[int, int] = {}

if FAULT_POINT_ENV in os.environ or FAULT_TRACE_ENV in os.environ:
    os.environ.setdefault(FAULT_OWNER_ENV, str(os.getpid()))


def fault_point(name: str) -> None:
    """A file-system write or rename boundary named ``name`` (fault-injection hook).

    Does nothing unless :data:`FAULT_POINT_ENV` or :data:`FAULT_TRACE_ENV` is set and
    :data:`FAULT_OWNER_ENV` names this process. Then the boundary is counted, traced, and
    at the requested count the process sends itself SIGKILL (or SIGINT, which raises
    KeyboardInterrupt here).
    """
    if os.environ.get(FAULT_OWNER_ENV) != str(os.getpid()):
        return
    pid = os.getpid()
    count = _fault_count[pid] = _fault_count.get(pid, 0) + 1
    trace = os.environ.get(FAULT_TRACE_ENV)
    if trace:
        with open(trace, "a", encoding="utf-8") as fh:
            fh.write(f"{count}\t{name}\n")
    at, _, how = os.environ.get(FAULT_POINT_ENV, "").partition(":")
    if at.strip().isdigit() and int(at) == count:
        os.kill(pid, signal.SIGINT if how.strip().upper() == "INT" else signal.SIGKILL)
        time.sleep(1.0)  # SIGINT: KeyboardInterrupt is raised here, before the next write


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The caller writes the temporary path with any library (numpy, pyarrow,
    safetensors). On an exception the temporary file is removed and ``path``
    keeps its previous content. The temporary's name records its writer, so the
    temporaries of killed processes are removed by the next write into the same folder.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_dead_temporaries(target.parent)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.{_TMP}-{_owner_tag()}-", suffix=".tmp", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask)  # again: some writers replace the file (safetensors)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        fault_point(f"write {target.name}")
        os.replace(tmp, target)
        fault_point(f"rename {target.name}")
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


# ----------------------------------------------------------------------------- folders
_BUILD, _OLD, _TMP = "gem-build", "gem-old", "gem-tmp"
_swept: set[str] = set()  # folders whose dead temporaries this process removed already


def _sweep_dead_temporaries(folder: Path) -> None:
    """Remove the temporary files that killed processes left in ``folder`` (once per process)."""
    key = f"{os.getpid()}:{folder}"
    if key in _swept:
        return
    _swept.add(key)
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            name = entry.name
            if name.startswith(".") and f".{_TMP}-" in name and name.endswith(".tmp"):
                if _owner_dead(name[: -len(".tmp")]):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def check_writable_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``path`` if needed and check that a file can be written in it.

    Called before long work (embedding, fitting) so that an unwritable output is a one-line
    error at the start, not after hours.

    Raises
    ------
    ValueError
        Naming ``what``, the folder and the reason (a file in the way, no permission...).
    """
    folder = Path(path)
    try:
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "it is a file, not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".gem-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"{what} {folder} is not writable ({exc.strerror or exc})") from None
    return folder


def _owner_tag() -> str:
    """``<host hash>-<pid>``: who is building a temporary folder (for stale-folder cleanup)."""
    host = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
    return f"{host}-{os.getpid()}"


def _owner_dead(name: str) -> bool:
    """Whether the process that made the temporary folder ``name`` is gone (same host only)."""
    parts = name.split("-")
    try:
        host, pid = parts[-3], int(parts[-2])
    except (IndexError, ValueError):
        return False
    if host != _owner_tag().split("-")[0] or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _clean_stale(target: Path) -> None:
    """Remove temporaries of dead writers of ``target``; restore an interrupted two-rename swap."""
    for stale in sorted(target.parent.glob(f".{target.name}.gem-*")):
        if not stale.is_dir() or not _owner_dead(stale.name):
            continue
        if stale.name.startswith(f".{target.name}.{_OLD}-") and not target.exists():
            os.rename(stale, target)  # the fallback swap died between its two renames
        else:
            shutil.rmtree(stale, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two folders (Linux renameat2); False where unsupported."""
    rename = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if rename is None:
        return False
    if rename(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _swap_in(build: Path, target: Path) -> Path | None:
    """Make ``build`` the folder ``target``; return where the previous content now is."""
    if not target.exists():
        try:
            os.rename(build, target)
            return None
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
    if not target.is_dir():
        raise ValueError(f"{target} is a file, not a folder")
    if _exchange(build, target):
        return build
    old = target.with_name(f".{target.name}.{_OLD}-{_owner_tag()}-{os.urandom(4).hex()}")
    os.rename(target, old)
    try:
        fault_point(f"moved old {target.name}")
        os.rename(build, target)
    except BaseException:
        os.rename(old, target)
        raise
    return old


@contextlib.contextmanager
def replace_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty folder beside ``path``; on success it replaces ``path`` as a whole.

    The caller writes every file of the new version into the yielded folder. When the
    block succeeds the two folders are exchanged in one atomic ``renameat2`` call (on
    systems without it: two renames, and an interrupted pair is restored by the next
    writer), then the previous content is removed. On an exception, or a killed process,
    ``path`` keeps its previous content; temporary folders left by dead processes are
    removed by the next call for the same ``path``.
    """
    target = Path(path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(target)
    build = Path(
        tempfile.mkdtemp(prefix=f".{target.name}.{_BUILD}-{_owner_tag()}-", dir=target.parent)
    )
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(build, 0o777 & ~umask)  # mkdtemp makes 0700 folders; give the usual permissions
    old = None
    try:
        yield build
        fault_point(f"swap {target.name}")
        old = _swap_in(build, target)
        fault_point(f"swapped {target.name}")
    finally:
        for leftover in (build, old):
            if leftover is not None and leftover != target:
                shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def folder_lock(
    path: str | os.PathLike, *, what: str, shared: bool = False, timeout: float = 0.0
) -> Iterator[None]:
    """Hold an advisory lock on the file ``path`` (created) for the block.

    The lock is an ``flock`` on an open file: the kernel releases it when the holder exits,
    however it exits, so a lock is never left behind by a killed process.

    Parameters
    ----------
    what : how the locked thing is named in the error message
    shared : take a shared lock (several holders) instead of an exclusive one
    timeout : seconds to wait for the lock (0: fail at once)

    Raises
    ------
    ValueError
        When the lock is still held by another process after ``timeout`` seconds.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                    who = f" (pid {holder})" if holder.isdigit() else ""
                    raise ValueError(
                        f"{what} is in use by another process{who}; wait for it to finish"
                    ) from None
                time.sleep(0.05)
        if not shared:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)
