"""``gem app [--workspace W] [--port P]``: start the GEM Studio web app (Streamlit).

The entry script is ``pages/streamlit_app.py`` of the checkout or ``gem_studio_pages/`` of an
installed wheel (:mod:`gem_app.app.bundle`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from gem_app.app.bundle import APP_ENTRY

# Flags, not a config file: they hold wherever the pages are installed (checkout or wheel) and
# whatever the working folder holds. A curator's app, not a developer's: a viewer toolbar (no
# "Deploy" button), and no watching of the source folder, where the default workspace lives
# (its writes flooded the log with inotify overflows) and whose edits should not rerun the app.
SERVER_OPTIONS = (
    "--client.toolbarMode",
    "viewer",
    "--server.fileWatcherType",
    "none",
    "--server.runOnSave",
    "false",
)


def register(sub) -> None:
    p = sub.add_parser("app", help="start the GEM Studio web app in the browser")
    p.add_argument(
        "--workspace",
        default=None,
        help="workspace folder (default: $GEM_WORKSPACE or ./gem_workspace)",
    )
    p.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    p.add_argument("--address", default="localhost", help="address to bind (default localhost)")
    p.add_argument(
        "--open-browser",
        action="store_true",
        help="also open a browser window (Streamlit may then ask for an e-mail on its first run)",
    )
    p.set_defaults(handler=run)


def command(args) -> list[str]:
    """The streamlit command line for ``args``."""
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_ENTRY),
        "--server.port",
        str(args.port),
        "--server.address",
        args.address,
        "--server.headless",
        "false" if args.open_browser else "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.maxUploadSize",
        "1024",
        *SERVER_OPTIONS,
    ]


def run(args) -> int:
    if not APP_ENTRY.is_file():
        raise OSError(
            f"the app entry script {APP_ENTRY} is missing; reinstall GEM Studio (pip install gem-studio, "
            "or pip install -e . in its source tree)"
        )
    env = dict(os.environ)
    if args.workspace is not None:
        workspace = Path(args.workspace).expanduser().resolve()
        workspace.mkdir(parents=True, exist_ok=True)
        env["GEM_WORKSPACE"] = str(workspace)
    print(
        f"GEM Studio: open http://{args.address}:{args.port} in your browser (workspace: "
        f"{env.get('GEM_WORKSPACE', Path('gem_workspace').resolve())})",
        flush=True,
    )
    argv = command(args)
    # replace this process by Streamlit's: signals (Ctrl-C, terminate) reach the server itself
    # and no orphaned server outlives a stopped `gem app`
    os.execve(argv[0], argv, env)
