"""Workspaces for the AppTest files: the bundled sample fitted once, then one copy per module.

The template workspace is fitted once per test session and never handed to a test. Every
test module that needs the app gets its own copy (``app_env``), so a module that edits its
workspace (builds a taxonomy, uploads a file) cannot change what another module sees.
"""

import shutil
import sys

import pytest

from gem_app.app import state as app_state


@pytest.fixture(scope="session")
def sample_template(tmp_path_factory):
    root = tmp_path_factory.mktemp("gem_ws_template")
    app_state.ensure_sample_fit(app_state.open_workspace(root))
    return root


@pytest.fixture(scope="module")
def app_env(sample_template, tmp_path_factory, request):
    """This module's own copy of the fitted sample workspace, set as ``$GEM_WORKSPACE``."""
    root = tmp_path_factory.mktemp(f"gem_ws_{request.module.__name__.rsplit('.', 1)[-1]}")
    workspace = root / "workspace"
    shutil.copytree(sample_template, workspace)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GEM_WORKSPACE", str(workspace))
        patch.setenv("GEM_APP_UMAP", "0")  # no background UMAP thread in AppTest
        yield workspace


@pytest.fixture(autouse=True)
def restore_main_module():
    """AppTest leaves ``sys.modules["__main__"]`` set to the page script it ran; put it back,
    so that later tests which spawn processes do not re-import a Streamlit page."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main
