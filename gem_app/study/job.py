"""A study in a background thread, for the app: progress that survives reruns, and a cancel flag.

Nothing here imports a UI toolkit: the app keeps the :class:`StudyJob` object (for example in
``st.session_state`` or a cached resource), polls :meth:`StudyJob.snapshot` to draw a progress
bar, and calls :meth:`StudyJob.cancel`. A cancelled or failed study leaves every finished
proxy on disk; starting the same study again resumes it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from gem_app.evaluate.proxy import ProxyCancelled
from gem_app.study.config import StudyConfig
from gem_app.study.runner import StudyProgress, StudyResult, run_study

__all__ = ["StudyJob"]


class StudyJob:
    """Run :func:`~gem_app.study.runner.run_study` in a daemon thread.

    Parameters
    ----------
    run : path or FitRun
    out : path
    config : StudyConfig, optional
    current : mapping or path, optional
        The curator's mixture document.
    on_progress : callable(StudyProgress), optional
        Also called with every progress event (in the job's thread).
    on_done : callable(StudyResult), optional
        Called in the job's thread when the study has finished, before the state becomes
        ``"done"`` (e.g. to commit the study folder somewhere); an exception fails the job.

    Attributes
    ----------
    state : {"pending", "running", "done", "cancelled", "failed"}
    progress : StudyProgress or None
        The latest progress event.
    result : StudyResult or None
    error : str or None
        One line, when the study failed.
    """

    def __init__(
        self,
        run,
        out,
        config: StudyConfig | None = None,
        *,
        current=None,
        on_progress=None,
        on_done=None,
    ):
        self.run = run
        self.out = Path(out)
        self.config = config or StudyConfig()
        self.current = current
        self.on_progress = on_progress
        self.on_done = on_done
        self.state = "pending"
        self.progress: StudyProgress | None = None
        self.result: StudyResult | None = None
        self.error: str | None = None
        self.started: float | None = None
        self.finished: float | None = None
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> StudyJob:
        """Start the thread (once); return self."""
        with self._lock:
            if self._thread is not None:
                raise ValueError("this study job was already started")
            self.state = "running"
            self.started = time.time()
            self._thread = threading.Thread(target=self._work, name="gem-study", daemon=True)
            self._thread.start()
        return self

    def _record(self, event: StudyProgress) -> None:
        self.progress = event
        if self.on_progress is not None:
            self.on_progress(event)

    def _work(self) -> None:
        try:
            self.result = run_study(
                self.run,
                self.out,
                self.config,
                current=self.current,
                progress=self._record,
                should_stop=self._cancel.is_set,
            )
            if self.on_done is not None:
                self.on_done(self.result)
            self.state = "done"
        except ProxyCancelled:
            self.state = "cancelled"
        except Exception as exc:  # reported to the app as one line
            self.error = " ".join(f"{type(exc).__name__}: {exc}".split())
            self.state = "failed"
        finally:
            self.finished = time.time()

    def cancel(self) -> None:
        """Ask the study to stop at the next training step."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the thread ends (or ``timeout`` seconds); return whether it ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def snapshot(self) -> dict:
        """A JSON-ready view for a progress bar: state, fraction, message, error."""
        event = self.progress
        fraction = 0.0
        message = ""
        if event is not None:
            unit = event.step / event.steps if event.steps else 0.0
            fraction = (event.done + unit) / event.total if event.total else 0.0
            message = event.message or (event.proxy or event.phase)
        if self.state == "done":
            fraction = 1.0
        return {
            "state": self.state,
            "fraction": min(1.0, max(0.0, fraction)),
            "done": event.done if event else 0,
            "total": event.total if event else 0,
            "proxy": event.proxy if event else None,
            "message": message,
            "error": self.error,
            "seconds": (self.finished or time.time()) - self.started if self.started else 0.0,
        }
