"""The Streamlit app under streamlit.testing.v1.AppTest, on the bundled sample (own workspace)."""

import argparse

import numpy as np
import pandas as pd
from streamlit import config as streamlit_config

from gem_app.app import session_keys as keys
from gem_app.app import state as app_state
from gem_app.cli import app_cmd
from tests.app.helpers import PAGE_FILES, frame_with, metric, new_session, open_page

TITLES = {
    "data": "Data",
    "fit": "Fit",
    "map": "Map of the hypersphere",
    "taxonomy": "Taxonomy",
    "compare": "Compare with the human taxonomy",
    "evaluate": "Evaluate mixtures",
    "mix": "Mix & Export",
}


def test_gem_app_starts_a_viewer_that_watches_no_files():
    args = argparse.Namespace(port=8501, address="localhost", open_browser=False, workspace=None)
    cmd = app_cmd.command(args)
    flags = dict(zip(cmd[5::2], cmd[6::2], strict=True))  # after: python -m streamlit run ENTRY
    assert flags["--client.toolbarMode"] == "viewer"  # no "Deploy" button
    assert flags["--server.fileWatcherType"] == "none"  # the workspace lives in the project
    assert flags["--server.runOnSave"] == "false"
    options = streamlit_config.get_config_options()
    for flag in flags:  # every flag is an option of the installed Streamlit
        assert flag[2:] in options, flag
    assert "viewer" in options["client.toolbarMode"].description
    assert "none" in options["server.fileWatcherType"].description


def test_every_page_renders_on_the_sample(app_env):
    at = new_session()
    assert at.title[0].value == TITLES["map"]  # "/" opens the Map
    for page in PAGE_FILES:
        open_page(at, page)
        assert not at.error, [e.value for e in at.error]
        assert at.title[0].value == TITLES[page]
    # the sidebar: the fit selector holds the sample fit; the workspace is this module's
    assert at.sidebar.selectbox(key=keys.FIT_NAME).value == app_state.SAMPLE_FIT
    assert any(str(app_env) in c.value for c in at.sidebar.caption)
    # the map page shows the point cap and the sample's numbers
    open_page(at, "map")
    assert any(
        "Showing **5,000 of 5,000**" in c.value and "cap 30,000" in c.value for c in at.caption
    )


def test_tau_slider_moves_weights_and_entropy_the_right_way(app_env):
    at = open_page(new_session(), "mix")

    def weights():
        return frame_with(at, "weight")["weight"].to_numpy(dtype=float)

    def entropy():
        return float(metric(at, "Entropy").split()[0])

    natural = frame_with(at, "natural_share")["natural_share"].to_numpy(dtype=float)
    w1, entropy_1 = weights(), entropy()
    np.testing.assert_allclose(w1, natural, atol=1e-9)  # tau = 1: w = the natural shares
    np.testing.assert_allclose(entropy_1, -np.sum(natural * np.log(natural)), atol=1e-3)
    at.slider(key=keys.MIX_TAU).set_value(4.0).run()
    w4 = weights()
    # independent reference: w ∝ natural^(1/tau)
    reference = natural ** (1 / 4.0) / np.sum(natural ** (1 / 4.0))
    np.testing.assert_allclose(w4, reference, atol=1e-4)
    assert entropy() > entropy_1  # hotter: closer to uniform
    at.slider(key=keys.MIX_TAU).set_value(0.3).run()
    assert entropy() < entropy_1
    assert weights().max() > w1.max()


def test_bad_rows_show_the_validation_report(app_env):
    at = open_page(new_session(), "data")
    at.radio(key=keys.DATA_SOURCE).set_value("Upload a file").run()
    lines = [
        '{"id": 1, "text": "a fine document about networking"}',
        '{"id": 2, "text": ""}',
        "not json at all",
        '{"id": 4, "text": "another fine document"}',
    ]
    at.file_uploader(key=keys.DATA_UPLOAD).upload(
        "bad.jsonl", ("\n".join(lines) + "\n").encode()
    ).run()
    assert not at.exception, [e.value for e in at.exception]
    assert metric(at, "Rejected rows") == "2"
    assert metric(at, "Valid rows") == "2"
    rejected = next(
        df.value for df in at.dataframe if list(df.value.columns) == ["row", "id", "reason"]
    )
    assert sorted(rejected["row"].tolist()) == [1, 2]
    assert any("2 rows were rejected" in w.value for w in at.warning)
    # the upload is stored in this module's workspace, content-addressed
    (stored,) = (app_env / "uploads").glob("*-bad.jsonl")
    assert stored.read_text() == "\n".join(lines) + "\n"


def test_unreadable_path_is_a_message_not_a_traceback(app_env, tmp_path):
    at = open_page(new_session(), "data")
    at.radio(key=keys.DATA_SOURCE).set_value("Server path").run()
    at.text_input(key=keys.DATA_PATH).set_value(str(tmp_path / "nope.jsonl")).run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        f"**Could not do that:** {tmp_path / 'nope.jsonl'} does not exist or is not a file; "
        "check the path on the server"
    ]


def test_sessions_do_not_share_unsaved_state(app_env):
    first = open_page(new_session(), "mix")
    second = open_page(new_session(), "mix")
    first.slider(key=keys.MIX_TAU).set_value(5.0).run()
    second.run()
    assert first.slider(key=keys.MIX_TAU).value == 5.0
    assert second.slider(key=keys.MIX_TAU).value == 1.0
    assert float(metric(second, "Entropy").split()[0]) < float(metric(first, "Entropy").split()[0])
    first_weights = frame_with(first, "weight")
    second_weights = frame_with(second, "weight")
    pd.testing.assert_series_equal(
        second_weights["weight"], second_weights["natural_share"], check_names=False
    )
    assert not np.allclose(first_weights["weight"], first_weights["natural_share"])


def test_compare_baselines_show_their_progress_and_metrics(app_env):
    at = open_page(new_session(), "compare")
    at.toggle(key=keys.CMP_BASELINES).set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    (status,) = at.status  # the progress box, complete
    assert status.label == "Baselines: k-means, vMF-EM (learned prior)"
    metrics = frame_with(at, "method")
    assert metrics["method"].tolist() == ["GEM", "kmeans", "vmf-em"]
    assert metrics["nmi"].between(0, 1).all() and metrics["nmi"].nunique() == 3
