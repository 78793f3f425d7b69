"""Map's "chosen weight" colouring when the mixture's domains are taxonomy leaves.

The curator merges clusters 1 and 2, splits cluster 5 in two and excludes cluster 7 on the
Taxonomy page, then chooses tau = 2 on Mix & Export. Rule (gem_app.app.chosen): a split
cluster gets the sum of its children's weights, a merged node's weight is shared by its
clusters in proportion to their tokens, an excluded one gets 0.
"""

import numpy as np
import pandas as pd

from gem_app.app import session_keys as keys
from gem_app.app import state as app_state
from gem_app.storage.workspace import Workspace
from tests.app.helpers import frame_with, map_points, new_session, open_page


def _edit(at, button):
    at.button(key=button).click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_leaf_weights_reach_their_clusters(app_env):
    at = open_page(new_session(), "taxonomy")
    _edit(at, keys.TAX_BUILD)
    at.multiselect(key=keys.TAX_MERGE_NODES).set_value(["1", "2"]).run()
    _edit(at, keys.TAX_MERGE)
    at.selectbox(key=keys.TAX_SPLIT_NODE).set_value("5").run()
    at.number_input(key=keys.TAX_SPLIT_N).set_value(2).run()
    _edit(at, keys.TAX_SPLIT)
    at.selectbox(key=keys.TAX_EXCLUDE_NODE).set_value("7").run()
    at.checkbox(key=keys.tax_exclude_flag("7")).check().run()
    _edit(at, keys.TAX_EXCLUDE)

    open_page(at, "mix")
    assert any("taxonomy leaves" in c.value for c in at.caption)
    at.slider(key=keys.MIX_TAU).set_value(2.0).run()
    table = frame_with(at, "weight")
    weight = dict(zip(table["domain"], table["weight"].astype(float), strict=True))
    children = [d for d in weight if d.startswith("5.")]
    merged = [d for d in weight if d not in {str(k) for k in range(16)} and d not in children]
    assert len(children) == 2 and len(merged) == 1, sorted(weight)
    assert weight["7"] == 0.0

    # tokens per cluster, straight from the fit's assignments file
    info = Workspace(app_env).load("fits", app_state.SAMPLE_FIT)
    assignments = pd.read_parquet(info.path / "assignments.parquet")
    tokens = assignments.groupby("cluster")["tokens"].sum().reindex(range(16)).to_numpy(float)
    expected = np.array([weight.get(str(k), np.nan) for k in range(16)])
    expected[5] = weight[children[0]] + weight[children[1]]
    expected[1] = weight[merged[0]] * tokens[1] / (tokens[1] + tokens[2])
    expected[2] = weight[merged[0]] * tokens[2] / (tokens[1] + tokens[2])
    assert not np.isnan(expected).any()
    np.testing.assert_allclose(expected.sum(), 1.0, atol=1e-9)

    open_page(at, "map")
    at.selectbox(key=keys.MAP_COLOUR).set_value("chosen weight").run()
    assert not at.exception, [e.value for e in at.exception]
    _, clusters, colour = map_points(at)
    np.testing.assert_allclose(colour, expected[clusters], rtol=1e-6, atol=1e-12)
    assert np.all(colour[clusters == 7] == 0.0)
