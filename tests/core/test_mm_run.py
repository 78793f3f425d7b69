"""The fit loop's initialisation: the sample-size rule and the warm start on a subsample."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_mutual_info_score

from gem_app.core import mm_run
from gem_app.core.gem import GEM
from gem_app.core.mm_run import (
    SEED_MIN_ROWS,
    SEED_ROWS_PER_CLUSTER,
    WARM_MIN_ROWS,
    WARM_ROWS_PER_CLUSTER,
    MMRun,
    _sample_sizes,
)
from tests.core.test_gem import planted

# ----------------------------------------------------------------- the sample-size rule


def test_default_sizes_follow_faiss_rows_per_centroid():
    n, K = 1_000_000, 256
    warm, seed = _sample_sizes(n, K, None)
    assert warm == WARM_ROWS_PER_CLUSTER * K == 65_536
    assert seed == max(SEED_ROWS_PER_CLUSTER * K, SEED_MIN_ROWS) == 10_240


def test_default_sizes_have_a_floor_for_small_k():
    warm, seed = _sample_sizes(100_000, 4, None)
    assert (warm, seed) == (WARM_MIN_ROWS, SEED_MIN_ROWS)


@pytest.mark.parametrize("n", [1, 50, 10_000, 19_999])
def test_no_warm_start_when_the_sample_is_more_than_half_the_rows(n):
    warm, seed = _sample_sizes(n, 1, None)  # default sample: 10,000 rows
    assert warm == n
    assert seed == min(n, SEED_MIN_ROWS)


def test_warm_start_from_exactly_half_the_rows():
    assert _sample_sizes(20_000, 1, None)[0] == 10_000
    assert _sample_sizes(1_000, 3, 500) == (500, 500)


def test_explicit_init_size_and_its_lower_bound():
    assert _sample_sizes(100_000, 64, 30_000) == (30_000, 8_192)
    assert _sample_sizes(100_000, 64, 10)[0] == 64  # never fewer rows than clusters
    assert _sample_sizes(100_000, 64, 10**9) == (100_000, 8_192)  # larger than n: off


# ----------------------------------------------------------------- the warm start


@pytest.fixture(scope="module")
def mixture():
    X, y, _ = planted([900, 800, 700, 600, 550, 450], d=16, kappa=40.0, seed=21)
    return X, y


WARM = 1536  # 256 rows per cluster, as the default rule; less than half of the 4,000 rows


def _fit_counting_warm_starts(monkeypatch, X, random_state=0, **params):
    calls = []
    original = MMRun._warm_start

    def counted(self):
        calls.append(self.warm_size)
        return original(self)

    monkeypatch.setattr(MMRun, "_warm_start", counted)
    seen = []
    model = GEM(6, random_state=random_state, callback=lambda i, j: seen.append(j), **params).fit(X)
    return model, calls, np.array(seen)


@pytest.mark.parametrize(
    ("dtype", "random_state"), [(np.float64, 0), (np.float64, 1), (np.float32, 2)]
)
def test_warm_start_keeps_the_planted_clusters_and_j_never_decreases(
    monkeypatch, mixture, dtype, random_state
):
    X, y = mixture
    model, calls, seen = _fit_counting_warm_starts(
        monkeypatch, X.astype(dtype), random_state, init_size=WARM
    )
    assert calls == [WARM]  # the warm start ran
    assert adjusted_mutual_info_score(y, model.labels_) > 0.9
    history = np.asarray(model.objective_history_)
    slack = (1e-9 if dtype == np.float64 else 1e-6) * np.abs(history).max()
    assert np.all(np.diff(seen) >= -slack)  # J seen by the callback, q-step after q-step
    assert np.all(np.diff(history) >= -slack)  # and every half-step
    assert history[0] == pytest.approx(seen[0])  # the history starts at the first q-step
    assert model.objective_ == pytest.approx(history[-1])


def test_warm_start_reaches_the_objective_of_a_cold_start(monkeypatch, mixture):
    X, y = mixture
    warm, calls, _ = _fit_counting_warm_starts(monkeypatch, X, init_size=WARM)
    cold, cold_calls, _ = _fit_counting_warm_starts(monkeypatch, X)  # 4,000 rows: no warm start
    assert calls == [WARM] and cold_calls == []
    assert warm.objective_ == pytest.approx(cold.objective_, rel=1e-4)
    agreement = adjusted_mutual_info_score(cold.labels_, warm.labels_)
    assert agreement > 0.95


def test_warm_start_is_reproducible_and_follows_random_state(mixture):
    X, _ = mixture
    first = GEM(6, init_size=WARM, random_state=3).fit(X)
    second = GEM(6, init_size=WARM, random_state=3).fit(X)
    np.testing.assert_array_equal(first.labels_, second.labels_)
    assert first.objective_history_ == second.objective_history_


def test_warm_start_with_random_init_and_no_balance(monkeypatch, mixture):
    X, y = mixture
    model, calls, seen = _fit_counting_warm_starts(
        monkeypatch, X, init_size=WARM, init="random", balance=0.0
    )
    assert calls == [WARM]
    assert np.all(np.diff(seen) >= -1e-9 * np.abs(seen).max())
    assert adjusted_mutual_info_score(y, model.labels_) > 0.9


def test_array_init_skips_the_warm_start(monkeypatch, mixture):
    X, _ = mixture
    init = X[[0, 900, 1700, 2400, 3000, 3550]]
    _, calls, _ = _fit_counting_warm_starts(monkeypatch, X, init=init, init_size=WARM)
    assert calls == []


def test_warm_start_tolerance_is_loose_but_never_looser_than_tol(monkeypatch, mixture):
    X, _ = mixture
    tolerances = []
    original = MMRun._iterate

    def spy(self, *args, **kwargs):
        if not kwargs.get("polish", True):
            tolerances.append(self.tol)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MMRun, "_iterate", spy)
    GEM(6, init_size=WARM, random_state=0).fit(X)
    GEM(6, init_size=WARM, tol=1e-3, random_state=0).fit(X)
    assert tolerances == [mm_run.WARM_TOL, 1e-3]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"init_size": 5}, "init_size=5 must be >= n_clusters=6"),
        ({"init_size": 0}, "init_size"),
        ({"init_size": 2.5}, "init_size"),
    ],
)
def test_bad_init_size_is_refused_at_fit(mixture, kwargs, message):
    X, _ = mixture
    with pytest.raises(ValueError, match=message):
        GEM(6, **kwargs).fit(X)
