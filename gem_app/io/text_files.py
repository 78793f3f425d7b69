"""UTF-8 checks of text corpus files, with a message that says what the file is instead.

A file that is not UTF-8 is refused with the line, the byte offset and the byte, and a hint
from the file's first bytes: a UTF-16/32 byte-order mark, a compressed file or archive
(gzip, bzip2, xz, zstd, zip), a Parquet file under a text extension, or else "re-encode it
as UTF-8".
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["check_utf8", "not_utf8_message"]

# (leading bytes, what the file is, what to do); UTF-32 before UTF-16 (FF FE 00 00 starts with FF FE)
_SIGNATURES = (
    (b"\xff\xfe\x00\x00", "UTF-32 (little-endian byte-order mark)", "re-encode it as UTF-8"),
    (b"\x00\x00\xfe\xff", "UTF-32 (big-endian byte-order mark)", "re-encode it as UTF-8"),
    (b"\xff\xfe", "UTF-16 (little-endian byte-order mark)", "re-encode it as UTF-8"),
    (b"\xfe\xff", "UTF-16 (big-endian byte-order mark)", "re-encode it as UTF-8"),
    (b"\x1f\x8b", "gzip-compressed", "decompress it first"),
    (b"BZh", "bzip2-compressed", "decompress it first"),
    (b"\xfd7zXZ\x00", "xz-compressed", "decompress it first"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", "decompress it first"),
    (b"PK\x03\x04", "a zip archive", "extract it first"),
    (b"PAR1", "a Parquet file", "give it the .parquet extension"),
)


def _hint(head: bytes) -> str:
    for magic, what, todo in _SIGNATURES:
        if head.startswith(magic):
            return f"the file is {what}: {todo}"
    return "the file is in another encoding: re-encode it as UTF-8"


def not_utf8_message(path: Path, line: int, offset: int, byte: int) -> str:
    """One-line message for the first invalid UTF-8 byte of ``path`` (1-based ``line``)."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    return (
        f"{path}: not valid UTF-8 at line {line}, byte offset {offset} (byte 0x{byte:02x}); "
        f"{_hint(head)}"
    )


def check_utf8(path: Path, chunk_size: int = 1 << 20) -> None:
    """Raise ValueError (:func:`not_utf8_message`) at the first invalid UTF-8 byte of ``path``.

    The file is read in chunks of ``chunk_size`` bytes; a multi-byte character split between
    two chunks is carried over.
    """
    offset, line, carry = 0, 1, b""
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(chunk_size)
            data = carry + chunk
            if not data:
                return
            try:
                data.decode("utf-8")
                good = len(data)
            except UnicodeDecodeError as exc:
                truncated_tail = exc.reason == "unexpected end of data" and exc.end == len(data)
                if not (truncated_tail and chunk):
                    line += data.count(b"\n", 0, exc.start)
                    raise ValueError(
                        not_utf8_message(path, line, offset + exc.start, data[exc.start])
                    ) from None
                good = exc.start
            line += data.count(b"\n", 0, good)
            offset += good
            carry = data[good:]
