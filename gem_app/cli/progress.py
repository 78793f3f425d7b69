"""Terminal progress bars for the CLI (tqdm, shown only on a terminal)."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int | None, desc: str, unit: str = "it"):
    """A tqdm bar on stderr, disabled when stderr is not a terminal."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not sys.stderr.isatty(), leave=False)


def counting_callback(bar):
    """progress(done, total) -> advances ``bar`` to ``done``."""

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return update
