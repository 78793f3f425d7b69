"""The ``gem`` command: argument parsing only; the work happens in gem_app's modules.

Each subcommand lives in its own module ``gem_app/cli/<name>_cmd.py`` exposing
``register(subparsers)`` (found automatically); its handler returns an exit code. Bad input
(``ValueError`` and ``OSError``) ends the command with exit code 2 and a one-line reason on
stderr; Ctrl-C (SIGINT) with exit code 130 and one line (every output is left as it was or
complete: see docs/reliability.md).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys


def _command_modules():
    """Every ``gem_app.cli.*_cmd`` module, in name order."""
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.endswith("_cmd"))
    return [importlib.import_module(f"{__name__}.{name}") for name in names]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gem", description="GEM Studio: Geometric Entropy Mixing")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in _command_modules():
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (ValueError, OSError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        print(f"gem {args.command}: error: {reason}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gem {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
