"""Start ``gem app`` on a free port and wait for Streamlit's health endpoint (test helper)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    """Return once ``url/_stcore/health`` answers 200; raise if the server exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gem app exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"gem app did not answer {url}/_stcore/health within {timeout:.0f} s")


@contextlib.contextmanager
def running_app(
    gem: Path,
    workspace: Path,
    *,
    env: dict | None = None,
    cwd: Path | None = None,
    umap_sample: int | None = None,
):
    """Run ``gem app --workspace W`` until the block ends; yields (URL, process) once healthy.

    The server's output goes to ``workspace/../server-<port>.log``. The background UMAP layout
    is off unless ``umap_sample`` gives its sample size.
    """
    port = free_port()
    log_path = Path(workspace).parent / f"server-{port}.log"
    environment = dict(os.environ if env is None else env, GEM_APP_UMAP="0")
    if umap_sample is not None:
        environment.update(GEM_APP_UMAP="1", GEM_APP_UMAP_SAMPLE=str(umap_sample))
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                str(gem),
                "app",
                "--workspace",
                str(workspace),
                "--port",
                str(port),
                "--address",
                "127.0.0.1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=cwd,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            try:
                wait_healthy(url, proc)
            except (RuntimeError, TimeoutError) as exc:
                log.flush()
                raise AssertionError(f"{exc}; server log:\n{log_path.read_text()[-3000:]}") from exc
            yield url, proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
