"""Tests for gem_app.core.row_checks: embeddings, invalid rows and masses, one rule for all."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse

from gem_app.core import row_checks
from gem_app.core.gem import GEM
from gem_app.core.row_checks import check_embeddings, check_sample_weight, find_invalid_rows
from gem_app.core.sphere import SphereTransform
from gem_app.core.vmf_em import VMFMixture


# ----------------------------------------------------------------------------- invalid rows
def test_find_invalid_rows_numpy_torch_and_across_chunks(monkeypatch):
    X = np.ones((12, 3))
    X[2, 1] = np.nan
    X[5] = 0.0
    X[9, 0] = -np.inf
    X[10, :] = [np.nan, np.inf, 0.0]
    expected = {2: "contains NaN", 5: "zero vector", 9: "contains Inf", 10: "contains NaN"}
    assert find_invalid_rows(X) == expected
    assert find_invalid_rows(torch.from_numpy(X).float()) == expected
    monkeypatch.setattr(row_checks, "_CHUNK_ELEMENTS", 7)  # two rows per chunk
    assert find_invalid_rows(X) == expected
    integers = np.array([[1, 2], [0, 0], [3, 0]])
    assert find_invalid_rows(integers) == {1: "zero vector"}
    assert find_invalid_rows(np.ones((4, 2), dtype=np.float16)) == {}
    with pytest.raises(ValueError, match="2-D"):
        find_invalid_rows(np.ones(3))


# ----------------------------------------------------------------------------- embeddings
def test_check_embeddings_conversions_keep_floats_and_tensors():
    model = SphereTransform()
    X32 = np.ones((3, 2), dtype=np.float32)
    assert check_embeddings(X32, model) is X32  # no copy
    assert model.n_features_in_ == 2
    ints = check_embeddings(np.array([[1, 2], [3, 4]]), model)
    assert ints.dtype == np.float64
    objects = check_embeddings(np.array([[1.0, 2], [3, 4]], dtype=object), model)
    assert objects.dtype == np.float64 and objects.tolist() == [[1, 2], [3, 4]]
    tensor = torch.ones((2, 3), dtype=torch.float16)
    assert check_embeddings(tensor, model).data_ptr() == tensor.data_ptr()  # no copy
    assert check_embeddings(torch.ones((2, 3), dtype=torch.int32), model).dtype == torch.float64
    assert check_embeddings([[1.0, 2.0]], model).shape == (1, 2)
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]})
    check_embeddings(frame, model)
    assert model.feature_names_in_.tolist() == ["a", "b"]


@pytest.mark.parametrize(
    ("X", "reset", "error", "message"),
    [
        (sparse.csr_matrix(np.eye(3)), True, ValueError, "sparse input is not supported"),
        (np.ones((3, 2)) * (1 + 1j), True, ValueError, "Complex data not supported"),
        (torch.ones((3, 2), dtype=torch.complex64), True, ValueError, "Complex data"),
        (np.array([["a", "b"]]), True, ValueError, "dtype <U1"),
        (np.array([[{"a": 1}, 2.0]], dtype=object), True, TypeError, "must be a string"),
        (np.ones(4), True, ValueError, r"2-D .*got shape \(4,\)\. Reshape your data"),
        (np.ones((0, 3)), True, ValueError, r"0 sample\(s\) \(shape=\(0, 3\)\)"),
        (np.ones((4, 1)), True, ValueError, r"1 feature\(s\) .* minimum of 2 .*d >= 2"),
        (np.ones((4, 5)), False, ValueError, "X has 5 features, but GEM is expecting 3"),
        (np.r_[np.ones((2, 3)), [[0.0, 0, 0]]], True, ValueError, r"row 2 \(zero vector\)"),
        (np.r_[np.ones((2, 3)), [[np.inf, 0, 0]]], False, ValueError, r"inf.*row 2 \(contains"),
    ],
)
def test_check_embeddings_messages(X, reset, error, message):
    model = GEM()
    model.n_features_in_ = 3
    with pytest.raises(error, match=message):
        check_embeddings(X, model, reset=reset)


def test_predicting_zero_rows_is_allowed():
    model = GEM(2, random_state=0).fit(np.random.default_rng(0).normal(size=(10, 3)))
    assert check_embeddings(np.ones((0, 3)), model, reset=False).shape == (0, 3)
    assert model.predict(np.ones((0, 3))).shape == (0,)
    assert model.predict_proba(np.ones((0, 3))).shape == (0, 2)
    assert model.transform(np.ones((0, 3))).shape == (0, 3)


# ----------------------------------------------------------------------------- masses
def test_check_sample_weight_accepts_zeros_and_names_bad_rows():
    assert check_sample_weight(None, 3).tolist() == [1.0, 1.0, 1.0]
    weights = check_sample_weight([0, 2, 1], 3)
    assert weights.dtype == np.float64 and weights.tolist() == [0.0, 2.0, 1.0]
    assert check_sample_weight(torch.tensor([1.0, 0.5]), 2).tolist() == [1.0, 0.5]
    for bad, message in [
        ([1.0, -0.5, 1.0], r"sample_weight\[1\] = -0.5: weights must be finite and >= 0"),
        ([1.0, 1.0, np.inf], r"sample_weight\[2\] = inf"),
        ([np.nan, -1.0, 1.0], r"sample_weight\[0\] = nan.*2 bad weight"),
        ([0.0, 0.0, 0.0], "zero for every row"),
        ([1.0, 1.0], r"shape \(3,\)"),
        (["a", "b", "c"], "numbers are needed"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_sample_weight(bad, 3)


@pytest.mark.parametrize("make", [GEM, VMFMixture])
def test_weights_equal_removed_and_repeated_rows_when_the_seeds_are_fixed(make):
    """What scikit-learn's sample-weight equivalence check asks, with the random seeding
    taken out (init given): weight 0 removes a row, weight w repeats it w times."""
    rng = np.random.default_rng(1)
    X = np.r_[rng.normal(size=(15, 4)) + [3, 0, 0, 0], rng.normal(size=(15, 4)) - [0, 3, 0, 0]]
    weights = rng.integers(0, 4, size=30)
    init = np.array([[1.0, 0, 0, 0], [0, -1.0, 0, 0]])
    params = {"init": init, "tol": 1e-12, "max_iter": 500}
    weighted = make(2, **params).fit(X, sample_weight=weights)
    repeated = make(2, **params).fit(np.repeat(X, weights, axis=0))
    np.testing.assert_allclose(weighted.mean_directions_, repeated.mean_directions_, atol=1e-8)
    np.testing.assert_allclose(weighted.concentrations_, repeated.concentrations_, rtol=1e-7)
    np.testing.assert_allclose(weighted.predict_proba(X), repeated.predict_proba(X), atol=1e-7)
    assert weighted.labels_.shape == (30,)  # rows of weight 0 are assigned too
    with pytest.raises(ValueError, match=r"n_clusters=2 is larger .*\b1\b.*positive weight"):
        make(2).fit(X, sample_weight=np.r_[np.zeros(29), 1.0])
