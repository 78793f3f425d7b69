"""Spawned test processes must not import the test runner's ``__main__``: after the app's
AppTest tests it is a Streamlit page that cannot be imported elsewhere."""

from __future__ import annotations

import pytest

from gem_app.scale.local_engine import hidden_main


@pytest.fixture(autouse=True)
def _no_main_in_spawned_processes():
    with hidden_main():
        yield
