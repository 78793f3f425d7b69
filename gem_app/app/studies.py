"""Proxy studies of a fit as the app runs and keeps them (no Streamlit here).

**Where a study lives.** Inside its fit's workspace entry, under ``studies/<name>/`` of the
``fits/<fit>`` run (as the fit's ``taxonomy.json`` does): a study measures mixtures over one
fit's domains (its ``config.json`` records the fit's assignments checksum), so it belongs to the
fit and goes with it. A finished study is committed in **one** workspace update: every file of
the study folder (``study.json``, ``regression.json``, ``recommended.json``, ``config.json``,
``tokenizer.json``, ``proxies/*``) plus ``settings.json`` (the options and timings) appears in a
new, checksummed version of the fit at once, or not at all. A name is committed once; a study is
never partly replaced.

**While it runs.** The study trains in a scratch folder of the fit's cache,
``<workspace>/.cache/fits/<fit>/<model>/studies/<identity>/``, one per proxy identity (size,
steps, seeds, domains, split, epoch cap: :meth:`gem_app.study.config.StudyConfig.identity`).
:mod:`gem_app.study.store` writes every finished proxy there atomically, so a cancelled or
interrupted study resumes, and a new study with the same proxy settings (another target,
method or current mixture) reuses every proxy already measured.

**Jobs.** :func:`start_study` runs a :class:`gem_app.study.job.StudyJob` in a background
thread and keeps it in a registry of this process (one study per fit at a time), so its
progress survives page switches and browser reloads; :func:`running_study` finds it again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from gem_app.storage.run_files import file_record, link_or_copy
from gem_app.storage.workspace import Workspace, WorkspaceCorruption
from gem_app.study.config import StudyConfig
from gem_app.study.job import StudyJob
from gem_app.study.report import mean_bpb

__all__ = [
    "STUDIES_DIR",
    "RunningStudy",
    "SavedStudy",
    "check_study_name",
    "commit_study",
    "headline",
    "list_studies",
    "load_study",
    "running_study",
    "scratch_folder",
    "start_study",
    "trust",
]

STUDIES_DIR = "studies"
SETTINGS_FILE = "settings.json"
_SUMMARY = ("study.json", "regression.json", SETTINGS_FILE)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
_JOBS: dict[tuple[str, str], RunningStudy] = {}
_JOBS_LOCK = threading.Lock()


def check_study_name(name: str) -> str:
    """A study name: 1-80 letters, digits, '.', '_' or '-', starting with a letter or digit."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"study name {name!r} is not allowed: use 1-80 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


# ----------------------------------------------------------------------------- saved studies
@dataclass(frozen=True)
class SavedStudy:
    """A finished study as committed to the workspace.

    Attributes
    ----------
    name : str
    study : dict
        ``study.json`` (domains, proxies, noise, regression, recommended).
    regression : dict
        ``regression.json`` (out-of-fold predictions, searches).
    recommended : dict or None
        ``recommended.json``, a mixture document (None for label domains).
    settings : dict
        ``settings.json``: ``config`` (every option), ``current`` (the curator's mixture, by
        name), ``started``, ``finished``, ``seconds``, ``trained``, ``reused``.
    """

    name: str
    study: dict
    regression: dict
    recommended: dict | None
    settings: dict


def _prefix(name: str) -> str:
    return f"{STUDIES_DIR}/{check_study_name(name)}/"


def list_studies(ws: Workspace, fit: str) -> list[str]:
    """Names of the fit's committed studies, newest first."""
    info = ws.load("fits", fit, verify=False)
    names = {
        rel.split("/")[1]
        for rel in info.files
        if rel.startswith(f"{STUDIES_DIR}/") and rel.endswith(f"/{SETTINGS_FILE}")
    }

    def finished(name: str) -> float:
        try:
            settings = json.loads((info.path / _prefix(name) / SETTINGS_FILE).read_text("utf-8"))
            return float(settings.get("finished") or 0.0)
        except (OSError, ValueError, TypeError, AttributeError):
            return 0.0

    return sorted(names, key=lambda n: (-finished(n), n))


def load_study(ws: Workspace, fit: str, name: str) -> SavedStudy:
    """Read a committed study; its files are checked against the fit's manifest.

    Raises
    ------
    FileNotFoundError
        The fit has no study of that name.
    WorkspaceCorruption
        A file of the study is missing or altered.
    """
    info = ws.load("fits", fit, verify=False)
    prefix = _prefix(name)
    mine = {rel: rec for rel, rec in info.files.items() if rel.startswith(prefix)}
    if prefix + SETTINGS_FILE not in mine:
        raise FileNotFoundError(f"the fit {fit!r} has no study named {name!r}")
    problems = []
    for rel in (r for r in (prefix + s for s in (*_SUMMARY, "recommended.json")) if r in mine):
        try:
            actual = file_record(info.path / rel)
        except OSError:
            problems.append(f"{rel}: missing")
            continue
        if actual != mine[rel]:
            problems.append(f"{rel}: checksum mismatch (file altered)")
    if problems:
        raise WorkspaceCorruption("fits", fit, problems)

    def read(rel: str):
        return json.loads((info.path / prefix / rel).read_text(encoding="utf-8"))

    return SavedStudy(
        name=name,
        study=read("study.json"),
        regression=read("regression.json"),
        recommended=read("recommended.json") if prefix + "recommended.json" in mine else None,
        settings=read(SETTINGS_FILE),
    )


def commit_study(ws: Workspace, fit: str, name: str, folder, settings: dict) -> None:
    """Commit a finished study folder into ``fits/<fit>`` as ``studies/<name>/`` (one update).

    Every regular file of ``folder`` (hidden files and the lock left out) is hard-linked (or
    copied) into the new version, with ``settings.json`` beside them.

    Raises
    ------
    ValueError
        The folder holds no ``study.json``, or the fit already has a study of this name.
    """
    prefix = _prefix(name)
    folder = Path(folder)
    if not (folder / "study.json").is_file():
        raise ValueError(f"{folder} holds no finished study (no study.json)")
    files = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not any(part.startswith(".") for part in rel.split("/")):
            files[prefix + rel] = lambda target, source=path: link_or_copy(source, target)
    text = json.dumps(settings, indent=2, sort_keys=True, allow_nan=False) + "\n"
    files[prefix + SETTINGS_FILE] = text.encode("utf-8")
    if name in list_studies(ws, fit):
        raise ValueError(f"the fit {fit!r} already has a study named {name!r}; choose another name")
    ws.update("fits", fit, files)


# ----------------------------------------------------------------------------- running studies
def scratch_folder(cache: Path, config: StudyConfig) -> Path:
    """The resumable working folder of studies with ``config``'s proxy identity.

    Parameters
    ----------
    cache : Path
        The fit's cache folder (:attr:`gem_app.app.views.FitView.cache`, one per model).
    """
    identity = json.dumps(config.identity(), sort_keys=True)
    return Path(cache) / STUDIES_DIR / hashlib.sha256(identity.encode()).hexdigest()[:16]


@dataclass
class RunningStudy:
    """A study job of a fit, under its name.

    Attributes
    ----------
    name : str
    fit : str
    job : gem_app.study.job.StudyJob
    current : str or None
        What the curator's mixture was (for the settings).
    """

    name: str
    fit: str
    job: StudyJob
    current: str | None = None

    @property
    def running(self) -> bool:
        return self.job.running

    def snapshot(self) -> dict:
        """The job's snapshot (state, fraction, message, error, seconds) plus the name."""
        return {**self.job.snapshot(), "name": self.name}

    def cancel(self) -> None:
        self.job.cancel()


def running_study(ws: Workspace, fit: str) -> RunningStudy | None:
    """The fit's latest study job of this process (running or finished), or None."""
    with _JOBS_LOCK:
        return _JOBS.get((str(ws.root), fit))


def start_study(
    ws: Workspace,
    view,
    name: str,
    config: StudyConfig,
    *,
    current: dict | None = None,
    current_label: str | None = None,
) -> RunningStudy:
    """Start a study of the fit shown by ``view`` in a background thread.

    When it finishes it is committed to the workspace (:func:`commit_study`); cancelled or
    failed, its finished proxies stay in the scratch folder for the next start.

    Parameters
    ----------
    ws : Workspace
    view : gem_app.app.views.FitView
    name : str
        The study's name in the fit (new).
    config : StudyConfig
    current : dict, optional
        The curator's mixture document (an anchor of the study).
    current_label : str, optional
        How to name it in the settings.

    Raises
    ------
    ValueError
        A bad or taken name, or a study of this fit is still running.
    """
    check_study_name(name)
    if name in list_studies(ws, view.name):
        raise ValueError(
            f"the fit {view.name!r} already has a study named {name!r}; choose another name"
        )
    key = (str(ws.root), view.name)
    with _JOBS_LOCK:
        previous = _JOBS.get(key)
        if previous is not None and previous.running:
            raise ValueError(
                f"the study {previous.name!r} of this fit is still running; wait for it or "
                "cancel it first"
            )
        folder = scratch_folder(view.cache, config)
        started = time.time()

        def commit(result) -> None:
            settings = {
                "name": name,
                "config": config.to_dict(),
                "current": current_label,
                "started": started,
                "finished": time.time(),
                "seconds": time.time() - started,
                "trained": list(result.trained),
                "reused": list(result.reused),
            }
            commit_study(ws, view.name, name, result.folder, settings)

        run = dataclasses.replace(view.run)  # a later refresh of the view does not move it
        job = StudyJob(run, folder, config, current=current, on_done=commit)
        entry = RunningStudy(name, view.name, job, current_label)
        _JOBS[key] = entry
        job.start()
    return entry


# ----------------------------------------------------------------------------- what the page says
def headline(study: dict) -> dict:
    """The recommended mixture against natural at the study's main seed (bits per byte).

    Returns
    -------
    dict
        ``natural`` and ``recommended`` (each ``{"overall", "mean"}`` or None when missing),
        ``delta_overall`` and ``delta_mean`` (recommended - natural, None when either is
        missing), and the seed noise ``sigma_overall``, ``sigma_mean`` (None without repeats).
    """
    proxies = study.get("proxies") or []
    seed = min((int(p["seed"]) for p in proxies), default=0)

    def at_seed(kind: str, prefix: str):
        for p in proxies:
            if int(p["seed"]) == seed and p["kind"] == kind and p["name"].startswith(prefix):
                return {"overall": float(p["overall_bpb"]), "mean": mean_bpb(p["bpb"])}
        return None

    natural = at_seed("anchor", "anchor-natural-")
    recommended = at_seed("recommended", "recommended-") or at_seed("doremi", "doremi-")
    both = natural is not None and recommended is not None
    noise = study.get("noise") or {}
    return {
        "natural": natural,
        "recommended": recommended,
        "delta_overall": recommended["overall"] - natural["overall"] if both else None,
        "delta_mean": recommended["mean"] - natural["mean"] if both else None,
        "sigma_overall": noise.get("overall_bpb_std"),
        "sigma_mean": noise.get("mean_bpb_std"),
    }


def trust(cv_spearman) -> str:
    """How far to trust the regressor, from its cross-validated Spearman correlation."""
    if cv_spearman is None:
        return "no regressor"
    if cv_spearman >= 0.7:
        return "good"
    if cv_spearman >= 0.4:
        return "fair"
    return "weak"
