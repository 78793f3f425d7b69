"""A workspace with the bundled sample already fitted, shared by the AppTest files."""

import pytest

from gem_app.app import state as app_state


@pytest.fixture(scope="session")
def sample_workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("gem_ws")
    ws = app_state.open_workspace(root)
    app_state.ensure_sample_fit(ws)
    return root


@pytest.fixture
def app_env(sample_workspace, monkeypatch):
    monkeypatch.setenv("GEM_WORKSPACE", str(sample_workspace))
    monkeypatch.setenv("GEM_APP_UMAP", "0")  # no background UMAP thread in AppTest
    return sample_workspace
