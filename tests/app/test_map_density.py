"""The density layer of every document (gem_app.app.density, gem_app.viz.density)."""

import base64
import struct
import zlib

import numpy as np
import pytest

from gem_app.app.density import category_codes, density_raster, lonlat_pixels
from gem_app.app.projection import sphere_to_lonlat
from gem_app.utils.ordering import natural_key
from gem_app.viz import cluster_palette, flat_map_figure, globe_figure
from gem_app.viz.density import png_data_uri, shade_categories, shade_counts, shade_values
from tests.app.helpers import plotly_array


def _sphere_points(n, k, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, 3))
    labels = rng.integers(k, size=n)
    xyz = centres[labels] * 3 + rng.normal(size=(n, 3))
    xyz /= np.linalg.norm(xyz, axis=1, keepdims=True)
    return xyz, labels


def test_raster_counts_every_document_and_every_cluster():
    xyz, labels = _sphere_points(50_000, 7)
    lon, lat = sphere_to_lonlat(xyz)
    raster = density_raster(lon, lat, categories=labels, n_categories=7, values=labels * 0.5)
    assert raster.counts.shape == (180, 360)
    assert raster.counts.sum() == 50_000
    np.testing.assert_array_equal(
        raster.by_category.sum(axis=(1, 2)), np.bincount(labels, minlength=7)
    )
    np.testing.assert_array_equal(raster.by_category.sum(axis=0), raster.counts)
    assert raster.value_sum.sum() == pytest.approx(0.5 * labels.sum())


def test_raster_matches_histogram2d_and_keeps_the_edges():
    rng = np.random.default_rng(1)
    lon = rng.uniform(-180, 180, size=2000)
    lat = rng.uniform(-90, 90, size=2000)
    lon[:2] = [180.0, -180.0]  # the poles and the antimeridian: nothing falls off the raster
    lat[:2] = [-90.0, 90.0]
    raster = density_raster(lon, lat, width=36, height=18)
    # independent reference: numpy's 2-D histogram (away from bin edges; at the poles its last bin is closed, as ours)
    # our row 0 is the north; lon = 180 wraps to -180 (the same meridian)
    lon_wrapped = np.where(lon >= 180, lon - 360, lon)
    ref, _, _ = np.histogram2d(lat, lon_wrapped, bins=[18, 36], range=[[-90, 90], [-180, 180]])
    np.testing.assert_array_equal(raster.counts, ref[::-1].astype(int))
    assert raster.counts[0, 0] >= 1 and raster.counts[-1, 0] >= 1  # (-180, 90) and (180, -90)


def test_raster_rejects_bad_input():
    with pytest.raises(ValueError, match="non-finite position at row 1"):
        lonlat_pixels(np.array([0.0, np.nan]), np.array([0.0, 0.0]), 4, 2)
    with pytest.raises(ValueError, match="categories must be in 0..1"):
        density_raster([0.0], [0.0], categories=[2], n_categories=2)
    with pytest.raises(ValueError, match="values has shape"):
        density_raster([0.0], [0.0], values=[1.0, 2.0])


def test_category_codes_natural_order():
    codes, cats = category_codes(np.array(["10", "b", "2", "a", "2"]))
    assert cats == ["2", "10", "a", "b"]
    np.testing.assert_array_equal(codes, [1, 3, 0, 2, 0])


def test_natural_key_puts_integer_names_by_value_before_the_others():
    names = ["10", "b", "2", "-3", "A", "a10", "a2"]
    assert sorted(names, key=natural_key) == ["-3", "2", "10", "A", "a10", "a2", "b"]


def _png_pixels(uri):
    png = base64.b64decode(uri.split(",", 1)[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    idat = png.index(b"IDAT")
    (length,) = struct.unpack(">I", png[idat - 4 : idat])
    raw = np.frombuffer(zlib.decompress(png[idat + 4 : idat + 4 + length]), np.uint8)
    return raw.reshape(height, 1 + 4 * width)[:, 1:].reshape(height, width, 4)


def test_shading_and_png_round_trip():
    by_cat = np.zeros((2, 2, 3), dtype=int)
    by_cat[0, 0, 0] = 4  # pure category 0
    by_cat[1, 0, 1] = 1  # pure category 1
    by_cat[:, 1, 2] = [1, 1]  # half and half
    rgba = shade_categories(by_cat, ["#ff0000", "#0000ff"])
    np.testing.assert_array_equal(rgba[0, 0, :3], [255, 0, 0])
    np.testing.assert_array_equal(rgba[0, 1, :3], [0, 0, 255])
    np.testing.assert_array_equal(rgba[1, 2, :3], [128, 0, 128])
    assert rgba[0, 2, 3] == 0 and rgba[0, 0, 3] > rgba[1, 2, 3] > 0  # more documents, more ink
    np.testing.assert_array_equal(_png_pixels(png_data_uri(rgba)), rgba)
    counts = by_cat.sum(axis=0)
    assert np.array_equal(shade_counts(counts)[..., 3] > 0, counts > 0)
    mean = np.where(counts > 0, np.arange(6).reshape(2, 3), np.nan)
    shaded = shade_values(mean, counts)
    assert shaded[0, 2, 3] == 0 and shaded[1, 2, 3] > 0


def test_figures_draw_the_density_under_the_points():
    xyz, labels = _sphere_points(300, 3)
    lon, lat = sphere_to_lonlat(xyz)
    uri = png_data_uri(shade_counts(density_raster(lon, lat).counts))
    fig = flat_map_figure(lon[:50], lat[:50], labels[:50], density_image=uri).to_dict()
    (image,) = fig["layout"]["images"]
    assert image["source"] == uri and image["layer"] == "below"
    assert (image["x"], image["y"], image["sizex"], image["sizey"]) == (-180, 90, 360, 180)
    counts = density_raster(lon, lat, width=12, height=6).counts
    globe = globe_figure(xyz[:50], labels[:50], density_counts=counts).to_dict()
    surface = globe["data"][0]
    assert surface["type"] == "surface" and surface["name"] == "density"
    colour = plotly_array(surface["surfacecolor"]).reshape(7, 13)
    np.testing.assert_allclose(colour[:6, :12], np.log1p(counts))


def test_points_use_the_given_category_order():
    lon = np.zeros(2)
    fig = flat_map_figure(lon, lon, np.array(["b", "c"]), categories=["a", "b", "c"]).to_dict()
    assert list(fig["data"][0]["marker"]["color"]) == cluster_palette(3)[1:]
