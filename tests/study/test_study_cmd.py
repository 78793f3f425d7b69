"""`gem study` through gem_app.cli.main: export of the recommendation, bad input, kill -9."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gem_app.cli import main
from gem_app.export.document import read_mixture
from gem_app.export.formats import FORMATS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_accepts_the_recommended_mixture_in_every_format(finished_study, tmp_path, fmt):
    run_dir, out, result = finished_study
    target = tmp_path / f"mix.{fmt}"
    code = main(
        ["export", str(run_dir), "--from", str(out / "recommended.json"), "--format", fmt]
        + ["--out", str(target)]
    )
    assert code == 0
    assert target.is_file() and target.stat().st_size > 0
    doc = read_mixture(out / "recommended.json")
    weights = [d["weight"] for d in doc["domains"]]
    assert np.allclose(weights, result.study["recommended"]["weights"], atol=1e-12)
    assert [d["name"] for d in doc["domains"]] == result.study["domains"]
    if fmt == "weborganizer":
        shown = {d["domain"]: d["weight"] for d in json.loads(target.read_text())}
        assert shown == {d["name"]: d["weight"] for d in doc["domains"] if d["weight"] > 0}


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    assert err.startswith("gem study: error: ")
    return err


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--target", "best"], "unknown target 'best'"),
        (["--target", "domain:9"], "unknown domain '9'"),
        (["--proxies", "0"], "--proxies must be at least 1"),
        (["--preset", "huge"], "unknown preset 'huge'"),
        (["--method", "magic"], "unknown method 'magic'"),
        (["--steps", "180"], "too close to the epoch cap of 4 for RegMix candidates"),
    ],
)
def test_bad_options_exit_2_with_one_line(planted_run, tmp_path, capsys, extra, expected):
    args = ["study", str(planted_run), "--out", str(tmp_path / "s"), "--preset", "ci"]
    assert main(args + extra) == 2
    assert expected in _one_line_error(capsys)


def test_documents_too_short_for_the_heldout_split_exit_2(short_run, tmp_path, capsys):
    assert main(["study", str(short_run), "--out", str(tmp_path / "s"), "--preset", "ci"]) == 2
    assert "held-out split" in _one_line_error(capsys)
    assert not (tmp_path / "s" / "config.json").exists()  # nothing claimed


def test_a_study_folder_of_another_run_is_refused(finished_study, short_run, capsys):
    _, out, _ = finished_study
    before = (out / "study.json").read_bytes()
    assert main(["study", str(short_run), "--out", str(out), "--preset", "ci"]) == 2
    assert "study of another run" in _one_line_error(capsys)
    assert (out / "study.json").read_bytes() == before


def test_other_proxy_settings_in_the_same_folder_are_refused(finished_study, capsys):
    run_dir, out, _ = finished_study
    args = ["study", str(run_dir), "--out", str(out), "--preset", "ci", "--steps", "41"]
    assert main(args) == 2
    assert "other settings (proxy)" in _one_line_error(capsys)


def _fingerprints(folder: Path) -> dict:
    return {
        p.name: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted((folder / "proxies").glob("*"))
        if p.suffix in (".json", ".npy")
    }


def test_kill_9_then_rerun_retrains_nothing_that_finished(planted_run, tmp_path, capsys):
    out = tmp_path / "killed"
    args = ["study", str(planted_run), "--out", str(out), "--preset", "ci", "--steps", "120"]
    code = f"import sys; from gem_app.cli import main; sys.exit(main({args!r}))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    deadline = time.monotonic() + 120
    try:
        while len(list(out.glob("proxies/*.json"))) < 2:
            assert proc.poll() is None, "the study ended before it could be killed"
            assert time.monotonic() < deadline, "no proxy finished in 120 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "study.json").exists()
    finished = _fingerprints(out)
    names = {Path(n).stem for n in finished if n.endswith(".json")}
    assert len(names) >= 2

    assert main(args) == 0
    capsys.readouterr()
    after = _fingerprints(out)
    for name, print_ in finished.items():
        if Path(name).stem in names:
            assert after[name] == print_, f"{name} was rewritten"
    study = json.loads((out / "study.json").read_text())
    listed = [p["name"] for p in study["proxies"]]
    assert len(listed) == len(set(listed))
    assert names <= set(listed)
    assert (out / "recommended.json").is_file()
