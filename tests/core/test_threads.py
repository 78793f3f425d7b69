"""Chunk worker pool: results in chunk order, torch threads restored, arenas trimmed per chunk."""

from __future__ import annotations

import threading

import pytest
import torch

from gem_app.core import threads
from gem_app.core.threads import chunk_workers, map_chunks


@pytest.fixture
def two_workers(monkeypatch):
    monkeypatch.setattr(threads, "worker_count", lambda: 2)


def test_results_come_back_in_chunk_order_from_the_workers(two_workers):
    names = []

    def work(j):
        names.append(threading.current_thread().name)
        return j * j

    before = torch.get_num_threads()
    with chunk_workers("cpu"):
        assert torch.get_num_threads() == 1  # the workers are the parallelism
        assert map_chunks(work, 40) == [j * j for j in range(40)]
    assert torch.get_num_threads() == before
    assert all(name.startswith("gem-chunks") for name in names)


def test_each_chunk_on_a_worker_releases_the_free_memory_after_it(two_workers, monkeypatch):
    trims = []
    monkeypatch.setattr(threads, "_malloc_trim", lambda pad: trims.append(pad))
    with chunk_workers("cpu"):
        map_chunks(lambda j: j, 7)
    assert trims == [0] * 7
    trims.clear()
    map_chunks(lambda j: j, 5)  # outside a session: in order on the caller, no trim
    assert trims == []


def test_a_failing_chunk_still_releases_memory_and_raises(two_workers, monkeypatch):
    trims, ran = [], []
    monkeypatch.setattr(threads, "_malloc_trim", lambda pad: trims.append(pad))

    def work(j):
        ran.append(j)
        raise ValueError(f"chunk {j}")

    with pytest.raises(ValueError, match="chunk 0"), chunk_workers("cpu"):
        map_chunks(work, 4)
    assert ran and len(trims) == len(ran)  # the pool has shut down: every chunk that ran


def test_without_malloc_trim_nothing_is_called(two_workers, monkeypatch):
    monkeypatch.setattr(threads, "_malloc_trim", False)
    with chunk_workers("cpu"):
        assert map_chunks(lambda j: j + 1, 3) == [1, 2, 3]
