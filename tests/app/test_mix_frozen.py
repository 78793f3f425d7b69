"""Mix & Export's frozen-geometry sliders show the exact q-step's masses (AppTest, sample)."""

import numpy as np

from gem_app.app import session_keys as keys
from gem_app.app import state as app_state
from gem_app.core.reassign import document_scores, q_from_scores
from gem_app.storage.runs import load_run
from tests.app.helpers import new_session, open_page, plotly_array, plotly_figures


def _moved_masses(at) -> np.ndarray:
    (figure,) = [
        f for f in plotly_figures(at) if any(t.get("name") == "re-assigned" for t in f["data"])
    ]
    (trace,) = [t for t in figure["data"] if t["name"] == "re-assigned"]
    return plotly_array(trace["y"]).astype(float)


def test_frozen_sliders_show_the_cold_q_step(app_env):
    at = open_page(new_session(), "mix")
    ws = app_state.open_workspace(app_env)
    run = load_run(ws.load("fits", app_state.SAMPLE_FIT).path)
    # independent of the app's cached solver: the scores again, and a cold solve each time
    scores = document_scores(run.model, run.embeddings)
    tokens = run.frame["tokens"].to_numpy(dtype=float)
    fitted = _moved_masses(at)
    np.testing.assert_allclose(
        fitted,
        q_from_scores(
            scores, tokens, temperature=run.model.temperature, balance=run.model.balance
        ).masses,
        atol=2e-6,
    )
    for T, lam in [(0.5, 1.0), (0.5, 3.0), (2.0, 3.0), (2.0, 0.0)]:
        at.slider(key=keys.MIX_T).set_value(T).run()
        at.slider(key=keys.MIX_LAMBDA).set_value(lam).run()
        assert not at.exception, [e.value for e in at.exception]
        cold = q_from_scores(scores, tokens, temperature=T, balance=lam)
        np.testing.assert_allclose(_moved_masses(at), cold.masses, atol=2e-6)
    # more balance: the masses move towards uniform
    at.slider(key=keys.MIX_LAMBDA).set_value(20.0).run()
    balanced = _moved_masses(at)
    assert np.std(balanced) < np.std(fitted)
