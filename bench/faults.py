"""Fault injection, the long sweep: every operation stopped at every file-system boundary.

    .venv/bin/python -m bench.faults                     # every operation, SIGKILL and SIGINT
    .venv/bin/python -m bench.faults --only "gem fit"    # operations whose name starts so
    .venv/bin/python -m bench.faults --signals KILL --json trials.json

For each operation of :mod:`tests.faults.harness` (``gem fit`` over an existing run,
``gem export`` plain and ``--materialize`` over existing outputs, ``gem assign --workers 2``
resuming a folder, workspace saves), a traced run lists the boundaries (every atomic write
and rename, folder swap and workspace commit step: ``gem_app.utils.files.fault_point``).
Then each boundary is tried with each signal: the old state is restored, the operation is
stopped there, and the state it leaves is classified (old / new / resumable / refused /
mixed-accepted); the consumer commands run on it (exit 0 on a complete state, 2 on a
refused one); surviving processes are counted; and the operation is rerun, which must
reach the new state and leave no temporary file.

Prints the markdown table of docs/reliability.md; exits 1 when a trial breaks the invariant.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

from tests.faults.harness import OPERATIONS, SIGNALS, Sweep

COLUMNS = ("old", "new", "resumable", "refused", "mixed-accepted")


def sweep(op, root: Path, signals) -> tuple[list[str], list]:
    """Every boundary of ``op`` with every signal (with consumer commands and a rerun)."""
    started = time.perf_counter()
    runner = Sweep(op, root)
    trials = runner.run(signals=signals, rerun=True, commands=True)
    seconds = time.perf_counter() - started
    print(
        f"{op.name}: {len(runner.boundaries)} boundaries, {len(trials)} trials, {seconds:.0f} s",
        file=sys.stderr,
    )
    return runner.boundaries, trials


def broken(trial) -> bool:
    """A trial that breaks the invariant."""
    return bool(
        trial.state == "mixed-accepted"
        or trial.orphans
        or trial.commands_ok is False
        or trial.recovered is False
    )


def table(results) -> str:
    """The markdown table: one row per operation."""
    header = ["operation", "kill points", "trials", *COLUMNS]
    header += ["orphan processes", "consumer exit code wrong", "rerun not recovered"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, (boundaries, trials) in results.items():
        states = collections.Counter(t.state for t in trials)
        cells = [name, len(boundaries), len(trials), *(states.get(c, 0) for c in COLUMNS)]
        cells += [
            sum(len(t.orphans) for t in trials),
            sum(t.commands_ok is False for t in trials),
            sum(t.recovered is False for t in trials),
        ]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="operations whose name starts with this")
    parser.add_argument("--signals", default=",".join(SIGNALS), help="KILL,INT")
    parser.add_argument("--json", default=None, help="write every trial to this file")
    args = parser.parse_args()
    signals = tuple(s.strip().upper() for s in args.signals.split(",") if s.strip())
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, op in enumerate(OPERATIONS):
            if args.only is None or op.name.startswith(args.only):
                results[op.name] = sweep(op, Path(tmp) / f"op{i}", signals)
    print(table(results))
    for name, (boundaries, _) in results.items():
        print(f"\n{name}: " + ", ".join(f"{i}. {b}" for i, b in enumerate(boundaries, 1)))
    trials = [t for _, ts in results.values() for t in ts]
    for trial in filter(broken, trials):
        print(f"BROKEN: {trial}")
    if args.json:
        text = json.dumps([dataclasses.asdict(t) for t in trials], indent=1)
        Path(args.json).write_text(text, encoding="utf-8")
    return 1 if any(map(broken, trials)) else 0


if __name__ == "__main__":
    sys.exit(main())
