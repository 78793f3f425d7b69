"""Taxonomy page edits are saved in the workspace (this module's own copy of the sample)."""

from gem_app.app import session_keys as keys
from tests.app.helpers import frame_with, new_session, open_page


def test_taxonomy_edit_survives_rerun_and_new_session(app_env):
    at = open_page(new_session(), "taxonomy")
    assert any("No taxonomy built yet" in c.value for c in at.caption)
    at.button(key=keys.TAX_BUILD).click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(tab.label == "Rename" for tab in at.tabs)
    at.selectbox(key=keys.TAX_RENAME_NODE).set_value("3").run()
    at.text_input(key=keys.TAX_RENAME_LABEL).set_value("Curated name").run()
    at.button(key=keys.TAX_RENAME).click().run()
    assert not at.exception, [e.value for e in at.exception]
    at.run()  # a plain rerun
    table = frame_with(at, "terms")
    assert table.loc[table["id"] == "3", "label"].item() == "Curated name"
    assert (table["label"] == "Curated name").sum() == 1
    fresh = open_page(
        new_session(), "taxonomy"
    )  # another session (or a reload) reads the workspace
    table = frame_with(fresh, "terms")
    assert table.loc[table["id"] == "3", "label"].item() == "Curated name"
    edits = fresh.json[0].value if fresh.json else None
    assert '"rename"' in str(edits) and "Curated name" in str(edits)
