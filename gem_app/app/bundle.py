"""Where the files that ship with GEM Studio are: the Streamlit UI and the bundled sample.

The repository keeps them at its top level, beside ``gem_app/`` (the design card's layout):
``pages/`` (the entry script ``pages/streamlit_app.py`` and the pages) and ``sample_data/``.
A wheel maps them into installed packages (``[tool.setuptools]`` in pyproject.toml):

- ``pages/`` becomes the package ``gem_studio_pages``, installed *beside* ``gem_app`` (the
  library never contains the UI);
- ``sample_data/`` becomes package data of the library, ``gem_app/sample_data/``.

Each path below is the installed one when it exists, else the source checkout's (an
editable install). Nothing is downloaded. Nothing here imports streamlit or the pages.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["APP_ENTRY", "PAGES_DIR", "SAMPLE_DATA", "SAMPLE_DIR", "SAMPLE_EMBEDDINGS"]

_LIBRARY = Path(__file__).resolve().parents[1]  # .../gem_app
_ROOT = _LIBRARY.parent  # site-packages (wheel) or the source checkout (editable install)


def _installed_or_checkout(installed: Path, checkout: Path) -> Path:
    return installed if installed.is_dir() else checkout


PAGES_DIR = _installed_or_checkout(_ROOT / "gem_studio_pages", _ROOT / "pages")
APP_ENTRY = PAGES_DIR / "streamlit_app.py"
SAMPLE_DIR = _installed_or_checkout(_LIBRARY / "sample_data", _ROOT / "sample_data")
SAMPLE_DATA = SAMPLE_DIR / "debian_packages.parquet"
SAMPLE_EMBEDDINGS = SAMPLE_DIR / "embeddings.npy"
