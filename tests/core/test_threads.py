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


def test_a_pass_that_leaves_the_process_as_it_was_releases_nothing(two_workers, monkeypatch):
    trims = []
    monkeypatch.setattr(threads, "_malloc_trim", lambda pad: trims.append(pad))
    monkeypatch.setattr(threads, "_resident_bytes", lambda: 10 * 2**30)  # never grows
    with chunk_workers("cpu"):
        assert map_chunks(lambda j: j, 7) == list(range(7))
    assert trims == []


def test_a_pass_that_grows_the_process_releases_after_it(two_workers, monkeypatch):
    trims, size = [], {"now": 2**30}
    monkeypatch.setattr(threads, "_malloc_trim", lambda pad: trims.append(pad))
    monkeypatch.setattr(threads, "_resident_bytes", lambda: size["now"])

    def work(j):
        size["now"] = 2**30 + threads.RETAINED_BYTES + 1  # every chunk sees the growth

    with chunk_workers("cpu"):
        map_chunks(work, 5)
    assert trims == [0] * 6  # after each chunk and after the pass
    trims.clear()
    map_chunks(work, 5)  # outside a session: in order on the caller, no release
    assert trims == []


def test_a_chunk_that_leaves_the_process_grown_releases_after_it(monkeypatch):
    trims, size = [], {"now": 2**30}
    monkeypatch.setattr(threads, "_malloc_trim", lambda pad: trims.append(pad))
    monkeypatch.setattr(threads, "_resident_bytes", lambda: size["now"])

    def work(j):
        size["now"] += (threads.RETAINED_BYTES + 1) if j == 3 else 1
        return j

    run = threads._releasing(work, 2**30)
    assert [run(j) for j in range(3)] == [0, 1, 2] and trims == []  # grew by 3 bytes
    assert run(3) == 3 and trims == [0]  # past RETAINED_BYTES: released
    threads._release_if_grown(size["now"])  # no growth since this start: nothing
    assert trims == [0]


def test_where_the_resident_size_is_unknown_every_chunk_releases(two_workers, monkeypatch):
    trims = []
    monkeypatch.setattr(threads, "_malloc_trim", lambda pad: trims.append(pad))
    monkeypatch.setattr(threads, "_resident_bytes", lambda: None)
    with chunk_workers("cpu"):
        map_chunks(lambda j: j, 5)
    assert trims == [0] * 6


def test_the_resident_size_is_read_from_the_process():
    size = threads._resident_bytes()
    assert size is None or 2**20 < size < 2**40


def test_a_failing_pass_still_releases_memory_and_raises(two_workers, monkeypatch):
    trims, ran = [], []
    monkeypatch.setattr(threads, "_malloc_trim", lambda pad: trims.append(pad))

    def work(j):
        ran.append(j)
        raise ValueError(f"chunk {j}")

    monkeypatch.setattr(threads, "_resident_bytes", lambda: None)  # unknown: always release
    with pytest.raises(ValueError, match="chunk 0"), chunk_workers("cpu"):
        map_chunks(work, 4)
    assert ran and len(trims) == len(ran) + 1  # after every chunk that ran, and the pass


def test_without_malloc_trim_nothing_is_called(two_workers, monkeypatch):
    monkeypatch.setattr(threads, "_malloc_trim", False)
    with chunk_workers("cpu"):
        assert map_chunks(lambda j: j + 1, 3) == [1, 2, 3]
