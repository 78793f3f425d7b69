"""The app's non-UI logic: the workspace, the sample fit, and cached views of a fit.

Nothing here imports streamlit. The pages call these functions and draw the results.

- :func:`open_workspace` resolves the workspace (argument, ``$GEM_WORKSPACE``, ``./gem_workspace``).
- :func:`ensure_sample_fit` fits the bundled sample (found by :mod:`gem_app.app.bundle`;
  K=16, seed 0) into the workspace once (kind ``fits``), so a first launch shows real
  content without a click.
- :func:`fit_into_workspace` fits any corpus into a named run of the workspace.
- :func:`fit_view` returns a :class:`FitView` (gem_app.app.views): the loaded run and
  everything derived from it (q, labels, GIS, comparison, scores for the frozen q-step,
  map layouts), computed once per fit version and shared by every browser session
  (read-only arrays, guarded by locks). Slow derived results (labels, UMAP) are also
  written to a cache folder ``<workspace>/.cache/`` so an app restart reuses them.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

from filelock import FileLock

from gem_app.app.bundle import SAMPLE_DATA, SAMPLE_EMBEDDINGS
from gem_app.app.views import FitView
from gem_app.storage.runs import RUN_FILES, fit_corpus
from gem_app.storage.workspace import Workspace
from gem_app.taxonomy.build import build_taxonomy
from gem_app.taxonomy.tree import TAXONOMY_FILE, Taxonomy
from gem_app.utils.files import atomic_path

__all__ = [
    "SAMPLE_FIT",
    "cache_dir",
    "domains_key",
    "ensure_sample_fit",
    "fit_into_workspace",
    "fit_view",
    "list_fits",
    "open_workspace",
    "save_upload",
]

SAMPLE_FIT = "sample-debian-k16"
SAMPLE_PARAMS = {
    "n_clusters": 16,
    "random_state": 0,
    "label_col": "section",
    "tokens_col": "tokens",
}
_VIEWS: OrderedDict = OrderedDict()
_VIEWS_LOCK = threading.Lock()
_MAX_VIEWS = 3


def open_workspace(root=None) -> Workspace:
    """The workspace at ``root``, else ``$GEM_WORKSPACE``, else ``./gem_workspace``."""
    ws = Workspace(root)
    ws.root.mkdir(parents=True, exist_ok=True)
    return ws


def cache_dir(ws: Workspace, *parts: str) -> Path:
    """A folder under ``<workspace>/.cache`` (derived, re-computable results)."""
    folder = ws.root.joinpath(".cache", *parts)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def check_run_name(name: str) -> str:
    """A run name: letters, digits, '.', '_' and '-', at most 80 characters."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}", name):
        raise ValueError(
            f"run name {name!r} is not allowed: use 1-80 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def list_fits(ws: Workspace) -> list[str]:
    """Names of the fit runs in the workspace, the sample first, then newest first."""
    infos = sorted(ws.list("fits"), key=lambda info: info.updated, reverse=True)
    names = [info.name for info in infos]
    if SAMPLE_FIT in names:
        names.remove(SAMPLE_FIT)
        names.insert(0, SAMPLE_FIT)
    return names


def fit_into_workspace(
    ws: Workspace,
    name: str,
    data,
    *,
    n_clusters: int,
    embeddings=None,
    callback=None,
    embed_progress=None,
    **fit_params,
) -> str:
    """Fit GEM to ``data`` (see :func:`gem_app.storage.runs.fit_corpus`) and save it as ``fits/name``.

    The run is written to a temporary folder first and committed to the workspace only
    after the fit succeeded, so a failed fit leaves the workspace unchanged.

    Returns
    -------
    str, the run name
    """
    check_run_name(name)
    with tempfile.TemporaryDirectory(dir=cache_dir(ws, "tmp")) as tmp:
        fit = fit_corpus(
            data,
            tmp,
            n_clusters=n_clusters,
            embeddings=embeddings,
            cache_dir=cache_dir(ws, "embedding-cache"),
            embed_progress=embed_progress,
            callback=callback,
            **fit_params,
        )
        files = {rel: Path(tmp) / rel for rel in RUN_FILES if (Path(tmp) / rel).is_file()}
        parameters = {
            "data": str(Path(data).resolve()),
            "embeddings": None if embeddings is None else str(Path(embeddings).resolve()),
            "n_clusters": int(n_clusters),
            "n_documents": int(len(fit.frame)),
            **{k: v for k, v in fit_params.items() if isinstance(v, (int, float, str, type(None)))},
        }
        ws.save("fits", name, files, parameters=parameters)
    return name


def ensure_sample_fit(ws: Workspace, *, callback=None) -> str:
    """Fit the bundled sample into ``fits/sample-debian-k16`` unless it is already there.

    Two processes (or sessions) starting at once fit it only once (a file lock).
    """
    if ws.exists("fits", SAMPLE_FIT):
        return SAMPLE_FIT
    if not SAMPLE_DATA.is_file() or not SAMPLE_EMBEDDINGS.is_file():
        raise FileNotFoundError(
            f"the bundled sample is missing: {SAMPLE_DATA} / {SAMPLE_EMBEDDINGS}"
        )
    lock = FileLock(str(cache_dir(ws, "locks") / "sample-fit.lock"), timeout=900)
    with lock:
        if not ws.exists("fits", SAMPLE_FIT):
            params = dict(SAMPLE_PARAMS)
            fit_into_workspace(
                ws,
                SAMPLE_FIT,
                SAMPLE_DATA,
                embeddings=SAMPLE_EMBEDDINGS,
                callback=callback,
                **params,
            )
    return SAMPLE_FIT


def save_upload(ws: Workspace, filename: str, content: bytes) -> Path:
    """Store an uploaded file under ``<workspace>/uploads/<sha12>-<name>`` and return its path.

    The name keeps only safe characters and the extension; identical content is stored once.
    """
    suffix = "".join(Path(filename).suffixes[-1:]).lower()
    allowed = (".jsonl", ".ndjson", ".csv", ".parquet", ".npy")
    if suffix not in allowed:
        raise ValueError(
            f"{filename!r}: unsupported file type {suffix or '(none)'}; use one of {allowed}"
        )
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(filename).stem)[:60] or "upload"
    digest = hashlib.sha256(content).hexdigest()[:12]
    target = ws.root / "uploads" / f"{digest}-{stem}{suffix}"
    if not target.is_file():
        with atomic_path(target) as tmp:
            tmp.write_bytes(content)
    return target


def fit_view(ws: Workspace, name: str):
    """The shared :class:`gem_app.app.views.FitView` of ``fits/name`` (cached per version)."""
    info = ws.load("fits", name, verify=False)
    key = (str(ws.root), name, info.files["model.safetensors"].sha256)
    with _VIEWS_LOCK:
        view = _VIEWS.get(key)
        if view is not None:
            _VIEWS.move_to_end(key)
            view.refresh(info)
            return view
    info = ws.load("fits", name)  # verify the checksums once per model
    digest = info.files["model.safetensors"].sha256[:16]
    view = FitView.open(name, info, cache_dir(ws, "fits", name, digest))
    with _VIEWS_LOCK:
        view = _VIEWS.setdefault(key, view)
        while len(_VIEWS) > _MAX_VIEWS:
            _VIEWS.popitem(last=False)
    return view


def env_flag(name: str, default: bool = True) -> bool:
    """A boolean environment switch ("0", "false", "off", "no" are false)."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("0", "false", "off", "no", "")


def domains_key(ws: Workspace, view) -> str:
    """What the fit's mixing domains are: its taxonomy file's checksum, ``""`` without one."""
    record = ws.load("fits", view.name, verify=False).files.get(TAXONOMY_FILE)
    return "" if record is None else record.sha256


def load_taxonomy(ws: Workspace, view):
    """The fit's saved taxonomy (``taxonomy.json`` in the fit run), or None."""
    info = ws.load("fits", view.name, verify=False)
    view.refresh(info)
    if TAXONOMY_FILE not in info.files:
        return None
    return Taxonomy.load(info.path, run=view.run)


def save_taxonomy(ws: Workspace, view, taxonomy) -> None:
    """Write the taxonomy's files into the fit run (a new, checksummed version)."""
    with tempfile.TemporaryDirectory(dir=cache_dir(ws, "tmp")) as tmp:
        taxonomy.save(tmp)
        files = {p.name: p for p in Path(tmp).iterdir() if p.is_file()}
        info = ws.update("fits", view.name, files)
    view.refresh(info)


def build_fit_taxonomy(ws: Workspace, view, levels):
    """Build (:func:`gem_app.taxonomy.build.build_taxonomy`) and save the fit's taxonomy."""
    taxonomy = build_taxonomy(view.run, levels)
    save_taxonomy(ws, view, taxonomy)
    return taxonomy


def edit_taxonomy(ws: Workspace, view, edit: dict):
    """Apply one edit (rename / merge / split / exclude), append it to the log and save."""
    taxonomy = load_taxonomy(ws, view)
    if taxonomy is None:
        raise ValueError("build the taxonomy first (Taxonomy page, 'Build taxonomy')")
    result = taxonomy.apply(edit, run=view.run)
    save_taxonomy(ws, view, taxonomy)
    return result
