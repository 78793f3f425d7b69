"""Evaluate page (AppTest): a tiny ci study started on the page, run in the background, committed
to the fit as one unit, rendered; "use this mixture" carries it to Mix & Export, which exports it.

One study for the whole module (about 15 s): the sample fit, the ci preset, 10 steps per proxy.
"""

import json
import time

import numpy as np
import pytest

from gem_app.app import session_keys as keys
from gem_app.app import state as app_state
from gem_app.app import studies
from gem_app.export.formats import FORMATS, render_mixture
from gem_app.export.saved import load_saved_mixture
from gem_app.storage import run_files
from gem_app.storage.workspace import Workspace
from tests.app.helpers import frame_with, new_session, open_page, plotly_figures

FIT = app_state.SAMPLE_FIT


def _button(at, label):
    return next(b for b in at.button if b.label == label)


def _start(at, name, *, steps, candidates=4):
    at.selectbox(key=keys.EVAL_PRESET).set_value("ci")
    at.number_input(key=keys.EVAL_CANDIDATES).set_value(candidates)
    at.number_input(key=keys.EVAL_STEPS).set_value(steps)
    at.text_input(key=keys.EVAL_NAME).set_value(name)
    _button(at, "Start the study").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return studies.running_study(Workspace(), FIT)


@pytest.fixture(scope="module")
def finished(app_env):
    """The Evaluate page after a tiny study started on it has finished: (AppTest, study.json)."""
    at = open_page(new_session(), "evaluate")
    assert any("No study of this fit yet" in i.value for i in at.info)
    entry = _start(at, "tiny", steps=10)
    assert entry is not None and entry.name == "tiny"
    # the page shows the job while it runs (it takes seconds, the page run milliseconds)
    progress = at.get("progress")
    assert progress and "Study **tiny**" in progress[0].proto.text
    assert _button(at, "Cancel the study") is not None
    assert entry.job.wait(600)
    assert entry.job.state == "done", entry.job.error
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    ws = Workspace(app_env)
    info = ws.load("fits", FIT)  # every checksum of the fit, the study's files included
    study = json.loads((info.path / "studies/tiny/study.json").read_text())
    return at, study


def test_the_finished_study_renders_its_three_figures(finished):
    at, study = finished
    assert any("Study **tiny** finished" in s.value for s in at.success)
    assert at.selectbox(key=keys.EVAL_STUDY).value == "tiny"
    weights, heatmap, scatter = plotly_figures(at)
    # (a) natural and recommended weights per domain, as in study.json
    bars = {t["name"]: t for t in weights["data"]}
    assert set(bars) == {"natural", "recommended"}
    np.testing.assert_allclose(bars["recommended"]["x"], study["recommended"]["weights"])
    assert list(bars["natural"]["y"]) == [
        d if len(d) <= 28 else d[:27] + "…" for d in study["domains"]
    ]
    # (b) mixtures x domains: every anchor but natural, and the recommendation, at seed 0
    main = [p for p in study["proxies"] if p["seed"] == 0 and p["name"] != "anchor-natural-s0"]
    main = [p for p in main if p["kind"] != "candidate"]
    natural = next(p for p in study["proxies"] if p["name"] == "anchor-natural-s0")
    grey, coloured = heatmap["data"]
    cells = np.array(
        [[np.nan if v is None else v for v in row] for row in coloured["z"]], dtype=float
    )
    within = np.array([[v is not None for v in row] for row in grey["z"]], dtype=bool)
    assert cells.shape == within.shape == (len(main), len(study["domains"]))
    assert not np.any(within & np.isfinite(cells))  # a cell is grey or coloured, not both
    assert list(heatmap["data"][1]["y"]) == [
        p["name"].rsplit("-s", 1)[0].removeprefix("anchor-") for p in main
    ]
    recommended = next(i for i, p in enumerate(main) if p["kind"] == "recommended")
    expected = np.array(main[recommended]["bpb"], float) - np.array(natural["bpb"], float)
    shown = cells[recommended]
    significant = np.isfinite(shown)
    np.testing.assert_allclose(shown[significant], expected[significant], atol=1e-12)
    # (c) predicted vs measured, titled with the cross-validated Spearman of study.json
    spearman = study["regression"]["cv_spearman"]
    assert f"Spearman ρ = {spearman:.2f}" in scatter["layout"]["title"]["text"]
    proxies = next(t for t in scatter["data"] if t["name"] == "proxies (out of fold)")
    assert len(proxies["x"]) == study["regression"]["n"]
    assert any(m.label == "Cross-validated Spearman" for m in at.metric)


def test_use_this_mixture_shows_and_exports_it_on_mix_and_export(finished, app_env):
    at, study = finished
    _button(at, "Use this mixture on Mix & Export").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Mix & Export"
    open_page(at, "mix")  # AppTest would rerun the page it last switched to (Evaluate)
    assert at.radio(key=keys.MIX_SOURCE).value.startswith("study tiny: recommended")
    table = frame_with(at, "weight")
    recommended = json.loads(
        (Workspace(app_env).load("fits", FIT).path / "studies/tiny/recommended.json").read_text()
    )
    by_id = {d["id"]: d["weight"] for d in recommended["domains"]}
    np.testing.assert_allclose(
        table["weight"].to_numpy(float), [by_id[i] for i in table["domain"]], atol=1e-9
    )
    at.text_input(key=keys.MIX_NAME).set_value("from-study")
    at.button(key=keys.MIX_SAVE).click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    saved = load_saved_mixture("from-study", app_env)
    np.testing.assert_allclose(
        [d["weight"] for d in saved["domains"]], [by_id[d["id"]] for d in saved["domains"]]
    )
    for fmt in FORMATS:
        assert render_mixture(saved, fmt)
    # back to the entropy temperature: tau = 1 gives the natural shares again
    at.radio(key=keys.MIX_SOURCE).set_value("Entropy temperature τ").run()
    table = frame_with(at, "weight")
    np.testing.assert_allclose(table["weight"], table["natural_share"], atol=1e-9)


def test_a_cancelled_study_commits_nothing_and_a_taken_name_is_refused(finished, app_env):
    at, _ = finished
    at = open_page(new_session(), "evaluate")
    entry = _start(at, "stopped", steps=400)
    _button(at, "Cancel the study").click().run()
    assert entry.job.wait(600)
    assert entry.job.state == "cancelled", entry.job.error
    at.run()
    assert any("was cancelled" in i.value for i in at.info)
    assert studies.list_studies(Workspace(app_env), FIT) == ["tiny"]
    _start(at, "tiny", steps=10)
    assert [e.value for e in at.error] == [
        f"**Could not do that:** the fit '{FIT}' already has a study named 'tiny'; choose "
        "another name"
    ]


def test_a_study_is_committed_whole_or_not_at_all(finished, app_env, tmp_path, monkeypatch):
    ws = Workspace(app_env)
    before = ws.load("fits", FIT)
    source = before.path / "studies" / "tiny"
    copied = tmp_path / "copy"
    for path in source.rglob("*"):
        if path.is_file():
            (copied / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            (copied / path.relative_to(source)).write_bytes(path.read_bytes())
    calls = [0]
    original = run_files.link_or_copy

    def failing(src, dst):
        calls[0] += 1
        if calls[0] == 5:
            raise OSError("disk full")
        original(src, dst)

    monkeypatch.setattr(studies, "link_or_copy", failing)
    with pytest.raises(OSError, match="disk full"):
        studies.commit_study(ws, FIT, "again", copied, {"finished": 1.0})
    after = ws.load("fits", FIT)
    assert after.version == before.version and after.files == before.files
    assert studies.list_studies(ws, FIT) == ["tiny"]
    monkeypatch.setattr(studies, "link_or_copy", original)
    studies.commit_study(ws, FIT, "again", copied, {"finished": time.time() + 60})
    assert studies.list_studies(ws, FIT) == ["again", "tiny"]
    assert studies.load_study(ws, FIT, "again").study == studies.load_study(ws, FIT, "tiny").study
    with pytest.raises(ValueError, match="already has a study named 'again'"):
        studies.commit_study(ws, FIT, "again", copied, {"finished": 3.0})
