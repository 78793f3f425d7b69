"""gem_app.core.rows: the device rule and the chunks of corrected points."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gem_app.core.correction import correct_units
from gem_app.core.gem import GEM
from gem_app.core.rows import Rows, prepare_rows, resolve_device


# ----------------------------------------------------------------------------- devices
def test_known_devices_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    tensor = torch.ones(2, 2)
    assert resolve_device("auto", tensor) == tensor.device
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto", np.ones((2, 2))).type == expected


@pytest.mark.parametrize("device", ["tpu", "CPU", "cuda:", "cuda:x", "gpu", "", 3, None])
def test_unknown_device_is_a_clear_value_error(device):
    with pytest.raises(ValueError) as error:
        resolve_device(device)
    message = str(error.value)
    assert f"device={device!r} is not a known device" in message
    for accepted in ("'auto'", "'cpu'", "'cuda'", "'cuda:N'", "'mps'"):
        assert accepted in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_a_clear_value_error(device):
    with pytest.raises(ValueError, match=f"device='{device}' was asked for but torch sees no CUDA"):
        resolve_device(device)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_index_beyond_the_devices_is_a_clear_value_error():
    count = torch.cuda.device_count()
    assert resolve_device(f"cuda:{count - 1}") == torch.device(f"cuda:{count - 1}")
    with pytest.raises(ValueError, match=f"torch sees {count} CUDA device"):
        resolve_device(f"cuda:{count}")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="needs a machine without MPS")
def test_mps_without_mps_is_a_clear_value_error():
    with pytest.raises(ValueError, match="no MPS"):
        resolve_device("mps")


def test_gem_fit_reports_an_unknown_device():
    X = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match="device='tpu' is not a known device"):
        GEM(2, device="tpu").fit(X)


# ----------------------------------------------------------------------------- rows
@pytest.mark.parametrize("cached", [True, False])
def test_rows_hold_the_corrected_points_by_chunk(monkeypatch, cached):
    if not cached:
        monkeypatch.setattr("gem_app.core.rows.POINT_CACHE_BYTES", 0)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(23, 4)) + [2.0, 0, 0, 0]
    mean = np.array([0.5, 0.1, 0.0, 0.0])
    whitening = np.diag([1.0, 2.0, 0.5, 1.5])
    rows = prepare_rows(
        X,
        np.ones(23),
        mean,
        whitening,
        device=torch.device("cpu"),
        dtype=torch.float64,
        chunk_size=5,
    )
    assert len(rows) == 5 and rows.bounds[-1] == (20, 23)
    expected, _ = correct_units(
        torch.from_numpy(X / np.linalg.norm(X, axis=1, keepdims=True)),
        torch.from_numpy(mean),
        torch.from_numpy(whitening.T),
    )
    points = torch.cat([rows.points(j) for j in range(len(rows))]).numpy()
    np.testing.assert_array_equal(points, expected.numpy())
    np.testing.assert_array_equal(rows.gather([22, 0, 7]), expected.numpy()[[22, 0, 7]])


def test_gather_in_the_compute_dtype():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(30, 5)).astype(np.float32)
    rows = prepare_rows(
        X, np.ones(30), X.mean(0), None, device=torch.device("cpu"), dtype=torch.float32,
        chunk_size=7,
    )  # fmt: skip
    points = torch.cat([rows.points(j) for j in range(len(rows))]).numpy()
    picked = [29, 3, 3, 14, 0]
    narrow = rows.gather(picked, dtype=torch.float32)
    assert narrow.dtype == np.float32
    np.testing.assert_array_equal(narrow, points[picked])
    np.testing.assert_array_equal(rows.gather(picked), points[picked].astype(np.float64))


def test_rows_refuse_rows_with_no_direction_left_by_number():
    X = np.r_[np.ones((3, 3)), [[1.0, -1.0, 0.0]], np.ones((9, 3))]
    mean = np.ones(3) / np.sqrt(3.0)  # a unit mean: every row equal to it has no direction
    with pytest.raises(
        ValueError, match=r"12 row\(s\) .*row\(s\) 0, 1, 2, 4, 5, 6, 7, 8, 9, 10 and 2"
    ):
        prepare_rows(
            X,
            np.ones(13),
            mean,
            None,
            device=torch.device("cpu"),
            dtype=torch.float32,
            chunk_size=4,
        )


def test_uncached_points_are_computed_once_per_consecutive_read(monkeypatch):
    monkeypatch.setattr("gem_app.core.rows.POINT_CACHE_BYTES", 0)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(20, 3))
    rows = prepare_rows(
        X, np.ones(20), None, None, device=torch.device("cpu"), dtype=torch.float64, chunk_size=6
    )
    computed = []
    original = rows._compute
    monkeypatch.setattr(rows, "_compute", lambda j: computed.append(j) or original(j))
    expected = X / np.linalg.norm(X, axis=1, keepdims=True)
    for j in [0, 0, 1, 1, 1, 3, 0]:
        a, b = rows.bounds[j]
        np.testing.assert_allclose(rows.points(j).numpy(), expected[a:b], rtol=1e-15)
    assert computed == [0, 1, 3, 0]


def test_uncached_rows_skip_the_check_pass_only_when_no_row_can_be_flagged(monkeypatch):
    monkeypatch.setattr("gem_app.core.rows.POINT_CACHE_BYTES", 0)
    computed = []
    original = Rows._compute
    monkeypatch.setattr(Rows, "_compute", lambda self, j: computed.append(j) or original(self, j))
    rng = np.random.default_rng(4)
    X = rng.normal(size=(20, 3))
    cpu = torch.device("cpu")
    for mean in (None, np.array([0.3, 0.0, 0.0])):  # ||u - m|| >= 0.7 for every unit row
        prepare_rows(X, np.ones(20), mean, None, device=cpu, dtype=torch.float64, chunk_size=6)
        assert computed == []
    near = np.r_[np.ones((5, 3)), [[1.0, -1.0, 0.0]]]  # rows equal to a unit mean: flagged
    with pytest.raises(ValueError, match=r"5 row\(s\)"):
        prepare_rows(
            near, np.ones(6), np.ones(3) / np.sqrt(3.0), None, device=cpu, dtype=torch.float64,
            chunk_size=4,
        )  # fmt: skip
    assert computed == [0, 1]
