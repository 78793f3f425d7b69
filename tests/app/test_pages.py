"""The Streamlit app under streamlit.testing.v1.AppTest, on the bundled sample."""

from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

ENTRY = str(Path(__file__).resolve().parents[2] / "streamlit_app.py")
PAGES = ["data", "fit", "map", "taxonomy", "compare", "mix"]
TITLES = {
    "data": "Data",
    "fit": "Fit",
    "map": "Map of the hypersphere",
    "taxonomy": "Taxonomy",
    "compare": "Compare with the human taxonomy",
    "mix": "Mix & Export",
}


def _app():
    return AppTest.from_file(ENTRY, default_timeout=300)


def _open(at, page):
    at.switch_page(f"app_pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _metric(at, label):
    return next(m.value for m in at.metric if m.label.startswith(label))


def _weights(at):
    table = next(df.value for df in at.dataframe if "weight" in df.value.columns)
    return table["weight"].to_numpy(dtype=float)


def _tax_table(at):
    return next(df.value for df in at.dataframe if "terms" in df.value.columns)


def test_every_page_renders_on_the_sample(app_env):
    at = _app().run()
    assert not at.exception, [e.value for e in at.exception]
    for page in PAGES:
        _open(at, page)
        assert not at.error, [e.value for e in at.error]
        assert at.title[0].value == TITLES[page]
    # the map page shows the point cap and the sample's numbers
    _open(at, "map")
    assert any("of 5,000" in c.value and "cap 30,000" in c.value for c in at.caption)


def test_tau_slider_moves_weights_and_entropy_the_right_way(app_env):
    at = _open(_app().run(), "mix")
    entropy_1 = float(_metric(at, "Entropy").split()[0])
    w1 = _weights(at)
    natural = next(df.value for df in at.dataframe if "natural_share" in df.value.columns)[
        "natural_share"
    ]
    np.testing.assert_allclose(w1, natural.to_numpy(dtype=float), atol=1e-9)  # tau = 1: w = rho
    at.slider(key="mix_tau").set_value(4.0).run()
    entropy_4 = float(_metric(at, "Entropy").split()[0])
    w4 = _weights(at)
    assert entropy_4 > entropy_1  # hotter: closer to uniform
    assert np.ptp(w4) < np.ptp(w1)
    at.slider(key="mix_tau").set_value(0.3).run()
    assert float(_metric(at, "Entropy").split()[0]) < entropy_1
    assert _weights(at).max() > w1.max()


def test_bad_rows_show_the_validation_report(app_env, tmp_path):
    at = _open(_app().run(), "data")
    at.radio(key="data_source").set_value("Upload a file").run()
    lines = [
        '{"id": 1, "text": "a fine document about networking"}',
        '{"id": 2, "text": ""}',
        "not json at all",
        '{"id": 4, "text": "another fine document"}',
    ]
    at.file_uploader(key="data_upload").upload(
        "bad.jsonl", ("\n".join(lines) + "\n").encode()
    ).run()
    assert not at.exception, [e.value for e in at.exception]
    assert _metric(at, "Rejected rows") == "2"
    assert _metric(at, "Valid rows") == "2"
    rejected = next(
        df.value for df in at.dataframe if list(df.value.columns) == ["row", "id", "reason"]
    )
    assert sorted(rejected["row"].tolist()) == [1, 2]
    assert any("2 rows were rejected" in w.value for w in at.warning)


def test_unreadable_path_is_a_message_not_a_traceback(app_env, tmp_path):
    at = _open(_app().run(), "data")
    at.radio(key="data_source").set_value("Server path").run()
    at.text_input(key="data_path").set_value(str(tmp_path / "nope.jsonl")).run()
    assert not at.exception
    assert any("does not exist" in e.value for e in at.error)


def test_taxonomy_edit_survives_rerun_and_new_session(app_env):
    at = _open(_app().run(), "taxonomy")
    if at.button(key="tax_build") is not None and not any(tab.label == "Rename" for tab in at.tabs):
        at.button(key="tax_build").click().run()
    at.selectbox(key="tax_rename_node").set_value("3").run()
    at.text_input(key="tax_rename_label").set_value("Curated name").run()
    at.button(key="tax_rename").click().run()
    assert not at.exception, [e.value for e in at.exception]
    at.run()  # a plain rerun
    table = _tax_table(at)
    assert table.loc[table["id"] == "3", "label"].item() == "Curated name"
    fresh = _open(_app().run(), "taxonomy")  # another session (or a reload) reads the workspace
    table = _tax_table(fresh)
    assert table.loc[table["id"] == "3", "label"].item() == "Curated name"


def test_sessions_do_not_share_unsaved_state(app_env):
    first = _open(_app().run(), "mix")
    second = _open(_app().run(), "mix")
    first.slider(key="mix_tau").set_value(5.0).run()
    second.run()
    assert first.slider(key="mix_tau").value == 5.0
    assert second.slider(key="mix_tau").value == 1.0
    assert float(_metric(second, "Entropy").split()[0]) < float(
        _metric(first, "Entropy").split()[0]
    )
