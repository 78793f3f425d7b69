"""Mixtures saved by name in the workspace (``mixtures/<name>/mixture.json``, checksummed)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from gem_app.export.document import read_mixture, validate_mixture_document
from gem_app.storage.workspace import Workspace

__all__ = [
    "MIXTURE_FILE",
    "check_export_name",
    "load_saved_mixture",
    "save_mixture",
    "saved_mixture_names",
]

MIXTURE_FILE = "mixture.json"


def check_export_name(name: str) -> str:
    """A workspace name for a mixture: no path separators, ``..``, leading dot or absolute path."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"mixture name must be a non-empty string, got {name!r}")
    if (
        "/" in name
        or "\\" in name
        or ".." in name
        or name.startswith(".")
        or os.path.isabs(name)
        or name != name.strip()
        or any(ord(ch) < 32 for ch in name)
    ):
        raise ValueError(
            f"mixture name {name!r} points outside the workspace: use a plain name without "
            "path separators, '..' or a leading '.'"
        )
    return name


def save_mixture(doc: Mapping, name: str, workspace=None):
    """Store ``doc`` as ``mixtures/<name>/mixture.json`` in the workspace; return its RunInfo."""
    check_export_name(name)
    doc = validate_mixture_document(doc)
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    text = json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    mixing = doc["mixing"]
    parameters = {
        "tau": mixing["tau"],
        "beta": mixing["beta"],
        "max_epochs": mixing["max_epochs"],
        "budget": mixing["budget"],
        "domains": len(doc["domains"]),
        "corpus": doc["corpus"]["name"],
    }
    return ws.save("mixtures", name, {MIXTURE_FILE: text.encode("utf-8")}, parameters)


def load_saved_mixture(name: str, workspace=None) -> dict:
    """Read back (checksums verified, schema validated) a mixture saved with :func:`save_mixture`."""
    check_export_name(name)
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    return read_mixture(ws.load("mixtures", name).file(MIXTURE_FILE))


def saved_mixture_names(workspace=None) -> list[str]:
    """The names of the mixtures saved in the workspace, sorted (manifests not verified)."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    return [info.name for info in ws.list("mixtures")]
