"""Tests for gem_app.core.sphere: the SphereTransform.

References are independent of the implementation: sklearn's PCA and plain numpy
re-implementations of the transform written here.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError

from gem_app.core import row_checks, sphere
from gem_app.core.sphere import SphereTransform


# ----------------------------------------------------------------------------- SphereTransform
def _unit(rows):
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _anisotropic(n=3000, d=8, seed=0):
    rng = np.random.default_rng(seed)
    scales = np.geomspace(0.05, 1.0, d)
    return rng.normal(size=(n, d)) * scales + np.r_[4.0, np.zeros(d - 1)]


def test_hand_computed_small_example_with_weights():
    X = np.array([[3.0, 4.0], [0.0, 2.0], [-5.0, 0.0]])
    weights = np.array([1.0, 2.0, 3.0])
    # u = (0.6, 0.8), (0, 1), (-1, 0)
    m = np.array([(0.6 - 3.0) / 6.0, (0.8 + 2.0) / 6.0])  # (-0.4, 0.4667)
    model = SphereTransform().fit(X, sample_weight=weights)
    np.testing.assert_allclose(model.mean_, m, rtol=1e-15)
    assert model.anisotropy_ == pytest.approx(math.hypot(-0.4, 2.8 / 6.0), rel=1e-15)
    u = np.array([[0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]])
    np.testing.assert_allclose(model.transform(X), _unit(u - m), rtol=1e-14)
    unweighted = SphereTransform().fit(X)
    np.testing.assert_allclose(unweighted.mean_, u.mean(axis=0), rtol=1e-15)
    assert unweighted.n_features_in_ == 2 and unweighted.whitening_ is None
    plain = SphereTransform(center=False).fit(X)
    np.testing.assert_allclose(plain.transform(X), u, rtol=1e-15)


def test_integer_weights_equal_repeated_rows():
    X = _anisotropic(n=50, d=5, seed=1)
    counts = np.random.default_rng(2).integers(1, 4, size=50)
    weighted = SphereTransform(whiten=True).fit(X, sample_weight=counts)
    repeated = SphereTransform(whiten=True).fit(np.repeat(X, counts, axis=0))
    np.testing.assert_allclose(weighted.mean_, repeated.mean_, rtol=1e-12)
    np.testing.assert_allclose(weighted.whitening_, repeated.whitening_, rtol=1e-9)


def test_centering_removes_anisotropy_and_outputs_are_unit():
    X = _anisotropic().astype(np.float32)
    model = SphereTransform().fit(X)
    assert model.anisotropy_ > 0.9
    Y = model.transform(X)
    assert Y.dtype == np.float32 and Y.shape == X.shape
    np.testing.assert_allclose(np.linalg.norm(Y, axis=1), 1.0, atol=1e-6)
    assert SphereTransform().fit(Y).anisotropy_ < 0.05
    assert SphereTransform(center=False).fit(X).anisotropy_ == pytest.approx(model.anisotropy_)


def test_transform_of_new_rows_uses_stored_mean():
    X = _anisotropic(n=400, seed=3)
    new = _anisotropic(n=30, seed=4) + 1.0
    model = SphereTransform().fit(X)
    expected = _unit(_unit(new) - model.mean_)
    np.testing.assert_allclose(model.transform(new), expected, rtol=1e-12, atol=1e-15)
    assert not np.allclose(model.transform(new), SphereTransform().fit_transform(new))


def test_numpy_and_torch_agree_and_keep_dtypes():
    X = _anisotropic(n=300, d=6, seed=5)
    model = SphereTransform(whiten=True).fit(X)
    from_torch = SphereTransform(whiten=True).fit(torch.from_numpy(X))
    np.testing.assert_allclose(from_torch.mean_, model.mean_, rtol=1e-14)
    np.testing.assert_allclose(from_torch.whitening_, model.whitening_, rtol=1e-10)
    weights = np.linspace(0.5, 3.0, len(X))
    np.testing.assert_allclose(
        SphereTransform().fit(torch.from_numpy(X), sample_weight=torch.from_numpy(weights)).mean_,
        SphereTransform().fit(X, sample_weight=weights).mean_,
        rtol=1e-14,
    )
    X32 = X.astype(np.float32)
    np.testing.assert_array_equal(
        model.transform(torch.from_numpy(X32)).numpy(), model.transform(X32)
    )
    out64 = model.transform(torch.from_numpy(X))
    assert isinstance(out64, torch.Tensor) and out64.dtype == torch.float64
    np.testing.assert_allclose(out64.numpy(), model.transform(X), rtol=1e-13)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        out = model.transform(torch.from_numpy(X).to(dtype))
        assert out.dtype == torch.float32 and out.device == torch.device("cpu")
    assert model.transform(X.astype(np.float16)).dtype == np.float32
    assert model.transform(np.round(X * 10).astype(np.int64)).dtype == np.float64
    assert model.transform(X.tolist()).dtype == np.float64
    requires_grad = torch.from_numpy(X).requires_grad_(True)
    assert not model.transform(requires_grad).requires_grad


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensor_stays_on_device():
    X = _anisotropic(n=500, seed=6)
    model = SphereTransform().fit(torch.from_numpy(X).cuda().half())
    out = model.transform(torch.from_numpy(X).cuda().half())
    assert out.is_cuda and out.dtype == torch.float32
    reference = SphereTransform().fit(X.astype(np.float16))
    np.testing.assert_allclose(
        out.cpu().numpy(), reference.transform(X.astype(np.float16)), atol=1e-6
    )


def test_chunked_statistics_equal_single_chunk(monkeypatch):
    X = _anisotropic(n=101, d=7, seed=8)
    weights = np.random.default_rng(9).uniform(0.5, 2.0, size=101)
    whole = SphereTransform(whiten=True).fit(X, sample_weight=weights)
    monkeypatch.setattr(row_checks, "_CHUNK_ELEMENTS", 50)  # 7 rows per chunk
    seen_rows = []
    original_as_float64 = sphere._as_float64

    def recording_as_float64(chunk, device):
        seen_rows.append(chunk.shape[0])
        return original_as_float64(chunk, device)

    monkeypatch.setattr(sphere, "_as_float64", recording_as_float64)
    chunked = SphereTransform(whiten=True).fit(X, sample_weight=weights)
    np.testing.assert_allclose(chunked.mean_, whole.mean_, rtol=1e-13)
    np.testing.assert_allclose(chunked.whitening_, whole.whitening_, rtol=1e-10)
    np.testing.assert_allclose(chunked.transform(X), whole.transform(X), rtol=1e-12, atol=1e-14)
    # float64 work happens 7 rows at a time: fit (2 passes) and two transforms, 15 chunks each
    assert max(seen_rows) == 7 and sum(seen_rows) == 4 * 101 and len(seen_rows) == 60


def test_whitening_gives_identity_covariance_and_matches_pca():
    X = _anisotropic(n=3000, seed=10)
    model = SphereTransform(whiten=True).fit(X)
    u = _unit(X)
    z = (u - model.mean_) @ model.whitening_
    np.testing.assert_allclose(z.T @ z / len(z), np.eye(8), atol=1e-9)
    Y = model.transform(X)
    np.testing.assert_allclose(np.linalg.norm(Y, axis=1), 1.0, rtol=1e-14)
    # ZCA and PCA whitening differ by a rotation, so the normalised outputs have equal Gram matrices.
    pca_directions = _unit(PCA(whiten=True).fit_transform(u))
    np.testing.assert_allclose(
        Y[:200] @ Y[:200].T, pca_directions[:200] @ pca_directions[:200].T, atol=1e-9
    )
    # On the sphere, the spread of variances over directions becomes nearly flat.
    whitened = np.linalg.eigvalsh(np.cov(Y.T))
    plain = np.linalg.eigvalsh(np.cov(SphereTransform().fit_transform(X).T))
    assert whitened.max() / whitened.min() < 1.5 < 10 < plain.max() / plain.min()


def test_whitening_floor_keeps_degenerate_directions_bounded():
    rng = np.random.default_rng(11)
    X = rng.normal(size=(200, 3)) @ rng.normal(size=(3, 10)) + 5.0  # rank 3 in d = 10
    model = SphereTransform(whiten=True).fit(X)
    eigenvalues = np.linalg.eigvalsh(np.cov(_unit(X).T, bias=True))
    floor = 1e-3 * eigenvalues.clip(0).mean()
    assert np.isfinite(model.whitening_).all()
    assert np.linalg.norm(model.whitening_, 2) == pytest.approx(1 / math.sqrt(floor), rel=1e-6)
    assert np.isfinite(model.transform(rng.normal(size=(5, 10)))).all()


def test_rows_with_no_direction_left_are_refused_by_fit_and_transform():
    X = np.tile([[2.0, 0.0, 0.0]], (4, 1))  # R0 = 1: every u_i equals m
    for whiten in (False, True):
        with pytest.raises(
            ValueError, match=r"4 row\(s\) with no direction left.*rows?\(s\) 0, 1, 2, 3"
        ):
            SphereTransform(whiten=whiten).fit(X)
    with pytest.raises(ValueError, match="1 sample"):
        SphereTransform().fit(X[:1])
    np.testing.assert_array_equal(SphereTransform(center=False).fit_transform(X), _unit(X))
    # one different row among 10^7 identical ones: the identical rows are within 1e-6 of m
    weights = np.array([1e7, 1.0])
    rows = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    with pytest.raises(ValueError, match=r"1 row\(s\).*row\(s\) 0\. .*R0 = 1\.000000"):
        SphereTransform().fit(rows, sample_weight=weights)
    # a model whose mean direction is a unit vector (from a state) refuses such rows too
    state = SphereTransform().fit(rows).get_state()
    model = SphereTransform.from_state({**state, "mean_": np.array([1.0, 0.0, 0.0])})
    with pytest.raises(ValueError, match=r"row\(s\) 1\b"):
        model.transform([[0.0, 1.0, 0.0], [3.0, 0.0, 0.0]])
    half = math.sqrt(0.5)
    np.testing.assert_allclose(
        model.transform([[1.0, 1.0, 0.0]]), _unit([[half - 1, half, 0]]), rtol=1e-14
    )


def test_state_round_trip_through_json():
    X = _anisotropic(n=200, d=4, seed=12)
    for whiten in (False, True):
        model = SphereTransform(whiten=whiten).fit(X)
        state = model.get_state()
        assert set(state) >= {"center", "whiten", "mean_", "anisotropy_", "whitening_"}
        assert state["mean_"].dtype == np.float64 and state["anisotropy_"] == model.anisotropy_
        as_json = json.loads(
            json.dumps(
                {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in state.items()}
            )
        )
        for restored in (SphereTransform.from_state(state), SphereTransform.from_state(as_json)):
            np.testing.assert_array_equal(restored.transform(X), model.transform(X))
            assert restored.get_params() == model.get_params()
    with pytest.raises(ValueError, match="mean_"):
        SphereTransform.from_state({**state, "mean_": [np.nan, 1.0, 0.0, 0.0]})
    with pytest.raises(ValueError, match="whitening_"):
        SphereTransform.from_state({**state, "whitening_": np.eye(3)})
    with pytest.raises(ValueError, match="missing"):
        SphereTransform.from_state({"center": True})


def test_sklearn_conventions():
    model = SphereTransform(center=False, whiten=True, eps=1e-10)
    assert clone(model).get_params() == {"center": False, "whiten": True, "eps": 1e-10}
    assert not hasattr(model, "mean_")
    X = _anisotropic(n=20, d=3)
    assert model.fit(X) is model
    np.testing.assert_array_equal(model.get_feature_names_out(), ["x0", "x1", "x2"])
    with pytest.raises(NotFittedError, match="not fitted"):
        SphereTransform().transform(X)
    for params, name in [
        ({"center": "yes"}, "center"),
        ({"eps": 1.0}, "eps"),
        ({"eps": -1}, "eps"),
    ]:
        with pytest.raises(ValueError, match=f"The '{name}' parameter of SphereTransform must be"):
            SphereTransform(**params).fit(X)


def test_zero_weights_remove_rows():
    X = _anisotropic(n=30, d=4, seed=13)
    weights = np.r_[np.zeros(10), np.linspace(1.0, 2.0, 20)]
    weighted = SphereTransform(whiten=True).fit(X, sample_weight=weights)
    dropped = SphereTransform(whiten=True).fit(X[10:], sample_weight=weights[10:])
    np.testing.assert_allclose(weighted.mean_, dropped.mean_, rtol=1e-14)
    np.testing.assert_allclose(weighted.whitening_, dropped.whitening_, rtol=1e-10)
    with pytest.raises(ValueError, match="zero for every row"):
        SphereTransform().fit(X, sample_weight=np.zeros(30))


@pytest.mark.parametrize(
    ("X", "weights", "message"),
    [
        (np.ones((5, 1)), None, "d >= 2"),
        (np.ones(5), None, "2-D"),
        (np.ones((0, 3)), None, "no rows"),
        (
            np.array([[1.0, 2.0], [0.0, 0.0], [np.nan, 1.0], [1.0, np.inf]]),
            None,
            r"3 row\(s\).*row 1 \(zero vector\), row 2 \(contains NaN\), row 3 \(contains Inf\)",
        ),
        (np.ones((3, 2)), np.ones(4), r"shape \(3,\)"),
        (np.ones((3, 2)), [1.0, -1.0, 1.0], r"sample_weight\[1\] = -1.0: .* >= 0"),
        (np.ones((3, 2)), [1.0, 1.0, np.nan], r"sample_weight\[2\] = nan"),
        (np.array([["a", "b"]]), None, "dtype"),
    ],
)
def test_fit_rejects_bad_input(X, weights, message):
    with pytest.raises(ValueError, match=message):
        SphereTransform().fit(X, sample_weight=weights)


def test_transform_rejects_wrong_dimension_and_invalid_rows():
    model = SphereTransform().fit(_anisotropic(n=20, d=4))
    with pytest.raises(ValueError, match="X has 3 features, but SphereTransform is expecting 4"):
        model.transform(np.ones((2, 3)))
    bad = np.ones((8, 4))
    bad[6, 2] = np.nan
    with pytest.raises(ValueError, match=r"row 6 \(contains NaN\)"):
        model.transform(torch.from_numpy(bad))
    many = np.zeros((9, 4))
    with pytest.raises(ValueError, match=r"9 row\(s\).*and 4 more"):
        model.transform(many)
