"""The rules for one document's fields, shared by every reader (corpus files, input shards).

A text must be a non-empty, non-blank string; an id a string or an integer; a token count a
finite positive integer, given as a number or as its decimal text ("12", as CSV cells are).
Each check returns the reason a value is refused, or None. :func:`json_error` words a JSON
line's syntax error the same way for every reader.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np

__all__ = [
    "INT64_MAX",
    "INT_TEXT",
    "MISSING",
    "check_texts",
    "estimate_tokens",
    "id_problem",
    "json_error",
    "parse_token_count",
    "text_problem",
]

MISSING = object()  # a JSON object without the field (distinct from JSON null)
INT_TEXT = re.compile(r"[+-]?\d+")
INT64_MAX = np.iinfo(np.int64).max


def estimate_tokens(texts) -> np.ndarray:
    """Estimate token counts as ``ceil(len(text.encode("utf-8")) / 4)``, at least 1.

    Four UTF-8 bytes per token is the usual rule of thumb for English BPE tokenizers
    (GPT-2 / Llama families); it overestimates for CJK-heavy text, which is the safe
    side for epoch caps.

    Parameters
    ----------
    texts : iterable of str, length N

    Returns
    -------
    numpy.ndarray of int64, shape (N,)
    """
    counts = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"estimate_tokens: text {i} is {type(text).__name__}, not str")
        counts.append(max(1, -(-len(text.encode("utf-8")) // 4)))
    return np.asarray(counts, dtype=np.int64)


def id_problem(value, col):
    if value is MISSING or value is None or (isinstance(value, float) and math.isnan(value)):
        return f"missing id (column {col!r})"
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return f"invalid id {value!r} in column {col!r} (must be a string or an integer)"
    if isinstance(value, str) and not value.strip():
        return f"empty id in column {col!r}"
    return None


def text_problem(value, col):
    if value is MISSING:
        return f"missing text (no {col!r} field)"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"null text in column {col!r}"
    if not isinstance(value, str):
        return f"text is not a string: {type(value).__name__} in column {col!r}"
    if not value:
        return "empty text"
    if not value.strip():
        return "whitespace-only text"
    return None


def parse_token_count(value, col):
    """Return (count, None) for a finite positive integer, else (None, reason)."""
    number = value
    if isinstance(value, str):
        try:
            number = int(value) if INT_TEXT.fullmatch(value.strip()) else float(value)
        except ValueError:
            number = None
    if isinstance(number, float) and math.isfinite(number) and number.is_integer():
        number = int(number)
    if isinstance(number, (int, np.integer)) and not isinstance(number, bool):
        if 1 <= number <= INT64_MAX:
            return int(number), None
    shown = "missing" if value is MISSING else repr(value)
    return (
        None,
        f"invalid token count: {shown} in column {col!r} (must be a finite positive integer)",
    )


def json_error(exc: json.JSONDecodeError, text: str) -> str:
    """A readable reason for a JSON syntax error in ``text``: column, what, and NUL bytes.

    ``json``'s own messages end in " at" where they point at a position (``Unterminated
    string starting at``); a raw control character (a NUL, a tab) inside a string is named by
    its code point, with the escape that JSON expects instead.
    """
    what = exc.msg
    char = text[exc.pos] if 0 <= exc.pos < len(text) else ""
    if what == "Invalid control character at" and char:
        what = (
            f"raw control character U+{ord(char):04X} inside a string "
            f"(JSON needs it escaped as \\u{ord(char):04x})"
        )
    elif what.endswith(" at"):
        what = what[: -len(" at")] + " here"
    if char == "\x00" and "U+0000" not in what:
        what += " (a NUL byte: binary data or a corrupted file?)"
    return f"invalid JSON at column {exc.colno}: {what}"


def check_texts(texts) -> list[str]:
    """Texts as a list of str; ValueError naming the first row that is not one.

    Parameters
    ----------
    texts : iterable of str (a single str is refused: it would be read as characters)

    Returns
    -------
    list of str
    """
    if isinstance(texts, str):
        raise ValueError("texts must be a sequence of str, got a single str")
    texts = list(texts)
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"text at row {row} is {type(text).__name__}, not str")
    return texts
