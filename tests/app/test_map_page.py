"""The Map page under AppTest: every document in the density layer, the points a sample."""

import base64
import struct
import time
import zlib

import numpy as np

from gem_app.app import layout as layout_module
from gem_app.app import session_keys as keys
from gem_app.app.density import lonlat_pixels
from tests.app.helpers import new_session, open_page, plotly_array, plotly_figures


def _png_alpha(uri: str) -> np.ndarray:
    png = base64.b64decode(uri.split(",", 1)[1])
    width, height = struct.unpack(">II", png[16:24])
    idat = png.index(b"IDAT")
    (length,) = struct.unpack(">I", png[idat - 4 : idat])
    raw = np.frombuffer(zlib.decompress(png[idat + 4 : idat + 4 + length]), np.uint8)
    return raw.reshape(height, 1 + 4 * width)[:, 1:].reshape(height, width, 4)[..., 3]


def test_map_2d_draws_every_document_under_a_capped_sample(app_env):
    at = open_page(new_session(), "map")
    at.number_input(key=keys.MAP_CAP).set_value(1000).run()
    at.segmented_control(key=keys.MAP_SHAPE).set_value("Map 2D").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(
        "Showing **1,000 of 5,000** documents as points" in c.value
        and "all 5,000 in the density layer" in c.value
        for c in at.caption
    )
    (figure,) = plotly_figures(at)
    (points,) = [t for t in figure["data"] if t.get("name") == "documents"]
    custom = plotly_array(points["customdata"]).reshape(-1, 2)
    assert len(custom) == 1000 and len(np.unique(custom[:, 1])) == 16  # every cluster as points
    (image,) = figure["layout"]["images"]
    alpha = _png_alpha(image["source"])
    assert alpha.shape == (180, 360)
    lon = plotly_array(points["x"]).astype(float)
    lat = plotly_array(points["y"]).astype(float)
    point_pixels = np.zeros((180, 360), dtype=bool)
    point_pixels.reshape(-1)[lonlat_pixels(lon, lat, 360, 180)] = True
    inked = alpha > 0
    assert inked[point_pixels].all()  # under every point there is density
    assert inked.sum() > point_pixels.sum()  # and the 4,000 other documents are drawn too

    at.selectbox(key=keys.MAP_DENSITY).set_value("off").run()
    (figure,) = plotly_figures(at)
    assert not figure["layout"].get("images")


def test_globe_is_shaded_by_every_document(app_env):
    at = open_page(new_session(), "map")
    (figure,) = plotly_figures(at)
    surface = figure["data"][0]
    assert surface["type"] == "surface" and surface["name"] == "density"
    colour = plotly_array(surface["surfacecolor"]).reshape(61, 121)
    total = np.expm1(colour[:60, :120]).round().sum()
    assert total == 5000


def test_umap_layout_replaces_the_instant_one_without_a_button(app_env, monkeypatch):
    def quick_umap(points, **kwargs):  # stands in for UMAP (numba compiles for ~30 s)
        time.sleep(1.0)
        return np.asarray(points, dtype=np.float64)[:, :3] / np.linalg.norm(
            np.asarray(points, dtype=np.float64)[:, :3], axis=1, keepdims=True
        )

    monkeypatch.setattr(layout_module, "umap_sphere", quick_umap)
    monkeypatch.setenv("GEM_APP_UMAP_SAMPLE", "800")
    at = open_page(new_session(), "map")
    at.toggle(key=keys.MAP_UMAP).set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.button  # no Refresh button
    (bar,) = [p for p in at.get("progress")]
    assert "UMAP layout in the background" in bar.proto.text
    assert any("layout: spherical projection" in c.value for c in at.caption)
    (view_layout,) = [v for k, v in layout_module._LAYOUTS.items() if k.startswith(str(app_env))]
    view_layout._thread.join(timeout=120)
    at.run()  # what the polling fragment triggers once the job has ended
    assert any("layout: UMAP" in c.value for c in at.caption)
    assert not at.get("progress")
    rows, xyz = view_layout.umap()
    assert len(rows) == 800 and xyz.shape == (5000, 3)
