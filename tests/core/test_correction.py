"""The anisotropy correction's one rule (gem_app.core.correction), and that GEM and the
SphereTransform (vMF-EM, the app) map and refuse rows alike."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gem_app.core.correction import (
    NO_DIRECTION_EPS,
    correct_units,
    flagged_rows,
    may_have_no_direction,
    no_direction_message,
)
from gem_app.core.gem import GEM
from gem_app.core.sphere import SphereTransform
from gem_app.core.vmf_em import VMFMixture


def _unit(rows):
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


# ----------------------------------------------------------------------------- the function
def test_correct_units_against_numpy_and_flags_rows_within_eps():
    rng = np.random.default_rng(0)
    u = _unit(rng.normal(size=(6, 4)))
    m = 0.3 * u[0] + 0.2 * u[1]
    L = np.linalg.qr(rng.normal(size=(4, 4)))[0] @ np.diag([1.0, 2.0, 3.0, 4.0])
    u[2] = m + np.array([1e-7, 0, 0, 0])  # ||u - m||^2 = 1e-14 <= 1e-12
    u[3] = m + np.array([2e-6, 0, 0, 0])  # 4e-12 > 1e-12: a direction is left
    for whitening in (None, L):
        x, flags = correct_units(
            torch.from_numpy(u.copy()),
            torch.from_numpy(m),
            None if whitening is None else torch.from_numpy(whitening.T),
        )
        z = u - m if whitening is None else (u - m) @ whitening.T
        expected = z / np.linalg.norm(z, axis=1, keepdims=True)
        keep = [0, 1, 3, 4, 5]
        np.testing.assert_allclose(x.numpy()[keep], expected[keep], rtol=1e-9)
        assert flags.tolist() == [False, False, True, False, False, False]
        assert flagged_rows(flags, 100) == [102]
    x, flags = correct_units(torch.from_numpy(u.copy()), None, None)
    np.testing.assert_allclose(x.numpy(), _unit(u), rtol=1e-14)
    assert not flags.any() and flagged_rows(flags, 0) == []
    x32, flags32 = correct_units(
        torch.from_numpy(u.astype(np.float32)), torch.from_numpy(m.astype(np.float32)), None
    )
    assert x32.dtype == torch.float32 and flags32.tolist()[2]


def test_only_a_nearly_fully_anisotropic_fit_can_have_rows_without_direction():
    # ||u - m|| >= 1 - R0, so rows can be within sqrt(eps) = 1e-6 of m only when R0 >= 1 - 1e-6
    assert may_have_no_direction(1.0) and may_have_no_direction(1.0 - 0.9e-6)
    assert not may_have_no_direction(1.0 - 1.1e-6) and not may_have_no_direction(0.5)
    assert math.isclose(NO_DIRECTION_EPS, 1e-12)


def test_message_names_rows_cause_and_remedy_without_library_flags():
    message = no_direction_message(list(range(12)), 12, 1.0)
    assert "12 row(s) with no direction left" in message
    assert "row(s) 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 2 more" in message
    assert "R0 = 1.000000" in message and "duplicated or empty texts" in message
    assert "center=False" not in message  # the CLI has no such option
    assert "1 sample" in no_direction_message([0], 1, 1.0)


# ----------------------------------------------------------------------------- one rule for all
def _with_duplicates(seed=0, n_copies=60):
    """Anisotropic rows where one document appears n_copies times (R0 < 1)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(40, 6)) * np.geomspace(0.1, 1.0, 6) + np.r_[3.0, np.zeros(5)]
    return np.r_[X, np.repeat(X[:1], n_copies, axis=0)]


@pytest.mark.parametrize("whiten", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gem_and_sphere_transform_give_the_same_points(whiten, dtype):
    X = _with_duplicates().astype(dtype)
    gem = GEM(3, whiten=whiten, random_state=0).fit(X)
    sphere = SphereTransform(whiten=whiten).fit(X)
    vmf = VMFMixture(3, whiten=whiten, random_state=0).fit(X)
    points = gem.transform(X)
    assert points.dtype == dtype
    tolerance = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(points, sphere.transform(X), atol=tolerance)
    np.testing.assert_allclose(gem.transform_.transform(X), sphere.transform(X), atol=1e-15)
    np.testing.assert_allclose(vmf.transform_.transform(X), sphere.transform(X), atol=1e-15)
    duplicates = points[40:]
    np.testing.assert_allclose(duplicates, np.repeat(duplicates[:1], 60, axis=0), atol=0)


def test_gem_vmf_and_sphere_transform_refuse_the_same_rows():
    X = np.tile([[1.0, 2.0, 3.0, -1.0, 0.5, 2.0]], (6, 1)) * np.arange(1, 7)[:, None]
    messages = set()
    for model in (GEM(1), VMFMixture(1), SphereTransform()):
        with pytest.raises(ValueError, match="no direction left") as error:
            model.fit(X)
        messages.add(str(error.value))
    assert len(messages) == 1 and "row(s) 0, 1, 2, 3, 4, 5." in messages.pop()
    # a fitted GEM whose correction has a unit mean direction (e.g. from a state file)
    gem = GEM(2, random_state=0).fit(_with_duplicates(1))
    state = gem.transform_.get_state()
    gem.transform_ = SphereTransform.from_state({**state, "mean_": _unit(X[:1])[0]})
    rows = np.r_[_with_duplicates(2)[:3], X[:2]]
    for transform in (gem.transform, gem.transform_.transform):
        with pytest.raises(ValueError, match=r"2 row\(s\) with no direction.*row\(s\) 3, 4\."):
            transform(rows)
