"""Map's "chosen weight" colouring follows the mixture chosen on Mix & Export (clusters as domains)."""

import numpy as np

from gem_app.app import session_keys as keys
from tests.app.helpers import frame_with, map_points, new_session, open_page


def _mix_table(at):
    table = frame_with(at, "weight")
    return dict(zip(table["domain"], table["weight"].astype(float), strict=True)), dict(
        zip(table["domain"], table["natural_share"].astype(float), strict=True)
    )


def _chosen_weight_colours(at):
    open_page(at, "map")
    at.selectbox(key=keys.MAP_COLOUR).set_value("chosen weight").run()
    assert not at.exception, [e.value for e in at.exception]
    return map_points(at)


def test_map_colours_follow_the_tau_chosen_on_mix(app_env):
    at = open_page(new_session(), "mix")
    at.slider(key=keys.MIX_TAU).set_value(0.3).run()  # concentrate on the largest clusters
    chosen, natural = _mix_table(at)
    rows, clusters, colour = _chosen_weight_colours(at)
    assert len(rows) == 5000 and set(np.unique(clusters)) == {int(d) for d in chosen}
    expected = np.array([chosen[str(k)] for k in clusters])
    np.testing.assert_allclose(colour, expected, rtol=1e-6, atol=1e-12)
    # independently of the Mix table: tau = 0.3 gives w ∝ natural^(1/0.3), not the natural shares
    ids = sorted(natural, key=int)
    sharp = np.array([natural[d] for d in ids]) ** (1 / 0.3)
    np.testing.assert_allclose(colour, (sharp / sharp.sum())[clusters], rtol=1e-4)
    natural_colour = np.array([natural[str(k)] for k in clusters])
    assert np.abs(colour - natural_colour).max() > 0.02
    assert any("chosen on Mix & Export (τ = 0.3" in c.value for c in at.caption)

    # back on Mix, a hotter tau: the map follows again
    open_page(at, "mix")
    at.slider(key=keys.MIX_TAU).set_value(3.0).run()
    hot, _ = _mix_table(at)
    _, clusters, colour = _chosen_weight_colours(at)
    np.testing.assert_allclose(colour, [hot[str(k)] for k in clusters], rtol=1e-6, atol=1e-12)
    assert any("(τ = 3," in c.value for c in at.caption)


def test_map_shows_natural_shares_before_a_mixture_is_chosen(app_env):
    reference = open_page(new_session(), "mix")  # tau = 1: weights are the natural shares
    _, natural = _mix_table(reference)
    at = new_session()  # a session that never opened Mix & Export
    _, clusters, colour = _chosen_weight_colours(at)
    np.testing.assert_allclose(colour, [natural[str(k)] for k in clusters], rtol=1e-6)
    assert any("natural share of the tokens" in c.value for c in at.caption)
