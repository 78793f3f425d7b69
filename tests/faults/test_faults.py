"""Fault injection in the test suite: operations killed (SIGKILL) or interrupted (SIGINT) at
their file-system boundaries leave the old state or the new one, never a mix that a consumer
accepts, and no process behind. The full sweep (every boundary, both signals, reruns and
the CLI consumers) is bench/faults.py; see docs/reliability.md."""

from __future__ import annotations

import sys

import pytest

from tests.faults.harness import ASSIGN, FIT, MATERIALIZE, WORKSPACE, WORKSPACE_FIRST, Sweep

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc to find surviving processes"
)


def check(trials, allowed=("old", "new")):
    for t in trials:
        assert t.state in allowed, t
        assert t.orphans == [], t
        if t.signal == "INT":  # an interrupted command cleans up after itself
            assert t.leftovers == [] and t.exitcode in (1, 130), t
        if t.recovered is not None:
            assert t.recovered, t


def test_an_interrupted_refit_leaves_the_old_run_or_the_new_one(tmp_path):
    sweep = Sweep(FIT, tmp_path)
    names = sweep.boundaries
    assert "rename assignments.parquet" in names and "rename model.json" in names
    assert names[-2:] == ["swap run", "swapped run"]  # one step makes the new run visible
    trials = sweep.run(signals=("KILL",))
    trials.append(sweep.trial(names.index("rename model.json") + 1, "INT"))
    trials.append(sweep.trial(len(names), "KILL", rerun=True))  # a rerun removes the leftovers
    check(trials)
    assert [t.state for t in trials[: len(names)]] == ["old"] * (len(names) - 1) + ["new"]


def test_an_interrupted_materialization_leaves_the_old_shards_or_the_new_ones(tmp_path):
    sweep = Sweep(MATERIALIZE, tmp_path)
    names = sweep.boundaries
    swap = names.index("swap shards") + 1
    points = [i + 1 for i, name in enumerate(names) if name.startswith("rename")] + [swap]
    trials = [sweep.trial(p, "KILL") for p in points]
    trials.append(sweep.trial(names.index("rename manifest.json") + 1, "KILL", rerun=True))
    trials.append(sweep.trial(swap - 2, "INT"))
    check(trials)
    assert {t.state for t in trials} == {"old", "new"}


@pytest.mark.parametrize("operation", [WORKSPACE, WORKSPACE_FIRST], ids=["replace", "first"])
def test_an_interrupted_workspace_save_leaves_a_committed_version(tmp_path, operation):
    sweep = Sweep(operation, tmp_path)
    trials = sweep.run(signals=("KILL",))
    trials += sweep.run(signals=("INT",))  # the commit interrupted right after the manifest
    trials.append(sweep.trial(2, "KILL", rerun=True))
    check(trials)


def test_a_killed_assign_leaves_no_worker_and_a_resumable_folder(tmp_path):
    sweep = Sweep(ASSIGN, tmp_path, reference=False)
    # boundaries of the parent: 1-2 the first manifest, 3-4 the manifest after the first
    # shard; at 3 both workers are busy with the next shards
    trial = sweep.trial(3, "KILL")
    assert trial.exitcode == -9
    check([trial], allowed=("old", "resumable"))
