"""The study folder: one file per finished proxy, written atomically, so a study resumes.

Layout of ``STUDY/``::

    config.json             run fingerprint + identity of the proxies (written first)
    tokenizer.json          the proxies' tokenizer (written before any proxy)
    proxies/NAME.npy        held-out document losses (nats) of a finished proxy
    proxies/NAME.safetensors  weights of proxies that a later stage needs (DoReMi references)
    proxies/NAME.json       the proxy's record; written last, it marks the proxy finished
    doremi/round-R.json     DoReMi weights of round R
    regression.json, study.json, recommended.json

Every file is written to a temporary name and renamed (:mod:`gem_app.utils.files`), so a
``kill -9`` leaves each file old or new, never half-written; a proxy whose record is missing
is simply trained again. One process at a time holds the folder (a lock file). A folder made
for another run, or for proxies of another size, schedule, seed, domain source or split, is
refused rather than mixed.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock, Timeout
from safetensors.torch import load_file, save_file

from gem_app.evaluate.proxy import ProxyTokenizer
from gem_app.utils.files import (
    atomic_open,
    atomic_path,
    read_json,
    read_versioned_json,
    write_json,
)

__all__ = ["FORMAT_VERSION", "StudyFolder", "state_dict_of"]

FORMAT = "gem-study"
FORMAT_VERSION = 1
CONFIG = "config.json"
TOKENIZER = "tokenizer.json"
PROXIES = "proxies"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


def _check_name(name: str) -> str:
    if not _NAME.match(name) or ".." in name:
        raise ValueError(f"invalid proxy name {name!r}")
    return name


class StudyFolder:
    """A study's folder on disk.

    Parameters
    ----------
    path : str or path-like
    """

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"StudyFolder({str(self.path)!r})"

    # -- ownership
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder for this process; another holder makes this a ValueError."""
        self.path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.path / ".lock"), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise ValueError(f"another process is running the study in {self.path}") from None
        try:
            yield
        finally:
            lock.release()

    def check_owner(self, run: dict, identity: dict) -> bool:
        """Whether the folder already holds this study (False: new or empty); writes nothing.

        Parameters
        ----------
        run : dict
            ``{"folder": ..., "assignments_sha256": ...}`` of the run studied.
        identity : dict
            :meth:`gem_app.study.config.StudyConfig.identity`.

        Raises
        ------
        ValueError
            The folder holds another run's study, a study with other proxies, or files that are
            not a study's.
        """
        config = self.path / CONFIG
        if not config.is_file():
            if self.path.is_dir() and any(not p.name.startswith(".") for p in self.path.iterdir()):
                raise ValueError(
                    f"{self.path} is not empty and is not a study folder; choose another --out"
                )
            return False
        saved = read_versioned_json(
            config, kind=FORMAT, version=FORMAT_VERSION, what="study configuration"
        )
        theirs = saved.get("run") or {}
        if theirs.get("assignments_sha256") != run.get("assignments_sha256"):
            raise ValueError(
                f"{self.path} is a study of another run ({theirs.get('folder')}); choose another "
                "--out"
            )
        recorded = saved.get("identity") or {}
        differ = sorted(
            k for k in set(identity) | set(recorded) if identity.get(k) != recorded.get(k)
        )
        if differ:
            raise ValueError(
                f"{self.path} holds proxies made with other settings ({', '.join(differ)}); rerun "
                "with the same settings or choose another --out"
            )
        return True

    def claim(self, run: dict, identity: dict) -> None:
        """Record the run and the proxies' identity (after :meth:`check_owner`)."""
        if not self.check_owner(run, identity):
            config = {"format": FORMAT, "format_version": FORMAT_VERSION}
            write_json(self.path / CONFIG, {**config, "run": run, "identity": identity})

    # -- tokenizer
    def load_tokenizer(self) -> ProxyTokenizer | None:
        """The saved tokenizer, or None before the first run."""
        path = self.path / TOKENIZER
        if not path.is_file():
            return None
        return ProxyTokenizer.from_json(path.read_text(encoding="utf-8"))

    def save_tokenizer(self, tokenizer: ProxyTokenizer) -> None:
        """Write the tokenizer (atomically)."""
        with atomic_open(self.path / TOKENIZER, "w", encoding="utf-8") as fh:
            fh.write(tokenizer.to_json())

    # -- proxies
    def _proxy(self, name: str, suffix: str) -> Path:
        return self.path / PROXIES / f"{_check_name(name)}{suffix}"

    def record(self, name: str) -> dict | None:
        """The record of a finished proxy (with its losses on disk), or None."""
        path = self._proxy(name, ".json")
        if not path.is_file() or not self._proxy(name, ".npy").is_file():
            return None
        return read_json(path, what="proxy record")

    def losses(self, name: str) -> np.ndarray:
        """Held-out document losses (nats) of a finished proxy, shape (H,)."""
        return np.load(self._proxy(name, ".npy"), allow_pickle=False)

    def model_state(self, name: str) -> dict | None:
        """Saved weights of a proxy (a state dict of CPU tensors), or None."""
        path = self._proxy(name, ".safetensors")
        return load_file(str(path)) if path.is_file() else None

    def save_proxy(self, name: str, record: dict, losses, state: dict | None = None) -> None:
        """Write a finished proxy: its losses, its weights (optional), then its record."""
        with atomic_path(self._proxy(name, ".npy")) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, np.asarray(losses, dtype=np.float64), allow_pickle=False)
        if state is not None:
            tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
            with atomic_path(self._proxy(name, ".safetensors")) as tmp:
                save_file(tensors, str(tmp))
        write_json(self._proxy(name, ".json"), record)

    def has_state(self, name: str) -> bool:
        """Whether the weights of a proxy were saved."""
        return self._proxy(name, ".safetensors").is_file()

    # -- other documents
    def read(self, relpath: str):
        """A JSON document of the folder, or None when missing."""
        path = self.path / relpath
        return read_json(path, what="study document") if path.is_file() else None

    def write(self, relpath: str, obj) -> Path:
        """Write a JSON document of the folder (atomically); return its path."""
        path = self.path / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, obj)
        return path


def state_dict_of(model: torch.nn.Module) -> dict:
    """CPU copy of a model's weights (tied embeddings stored once)."""
    return {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
