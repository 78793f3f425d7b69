"""The natural order of category names: the one rule the map's colours and density layer share."""

from __future__ import annotations

__all__ = ["natural_key"]


def natural_key(text: str) -> tuple:
    """Sort key: integer-like names by value first ("2" before "10"), then the others by text."""
    return (0, int(text), "") if text.lstrip("-").isdigit() else (1, 0, text)
