"""The Ray engine gives the local engine's outputs, bit for bit (a local Ray cluster)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from gem_app.scale.assign import assign
from gem_app.scale.student import Student

ray = pytest.importorskip("ray")

from tests.scale.test_assign import synthetic_texts, write_shards  # noqa: E402


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    texts, labels = synthetic_texts(120, 0)
    q = np.full((len(texts), 4), 0.05)
    q[np.arange(len(texts)), labels] = 0.85
    folder = tmp_path_factory.mktemp("student")
    Student(n_buckets=2**10, hidden=4, static_vectors=False, epochs=2, random_state=0).fit(
        texts, q
    ).save(folder)
    return folder


def test_ray_equals_local_and_reports_failed_shard(ray_cluster, student_dir, tmp_path):
    inputs = write_shards(tmp_path / "in", n_shards=3)
    (inputs / "broken.parquet").write_bytes(b"PAR1 not a parquet file")
    local = assign(student_dir, inputs, tmp_path / "local", engine="local", workers=1, batch_size=9)
    remote = assign(student_dir, inputs, tmp_path / "ray", engine="ray", workers=2, batch_size=9)
    assert local.failed == remote.failed == ["broken"]
    assert "broken.parquet" in remote.manifest["shards"]["broken"]["error"]
    for stem in ("shard0", "shard1", "shard2"):
        a = pq.read_table(tmp_path / "local" / f"{stem}.parquet")
        b = pq.read_table(tmp_path / "ray" / f"{stem}.parquet")
        assert a.equals(b) and a.num_rows == 30
        assert (tmp_path / "local" / f"{stem}.parquet").read_bytes() == (
            tmp_path / "ray" / f"{stem}.parquet"
        ).read_bytes()
    for key in ("rows", "rejected", "input_sha256", "output_sha256", "status"):
        assert [e.get(key) for e in local.manifest["shards"].values()] == [
            e.get(key) for e in remote.manifest["shards"].values()
        ]
    # resume on Ray: the finished shards are skipped, the broken one is tried again
    again = assign(student_dir, inputs, tmp_path / "ray", engine="ray", workers=2, batch_size=9)
    assert len(again.skipped) == 3 and again.failed == ["broken"]
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["shards"]["shard0"]["status"] == "done"
