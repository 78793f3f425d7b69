"""The student's routing signal: calibrated on, stored in student.json (old files read as
"max"), and part of what ``gem assign`` fingerprints."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from gem_app.scale.assign import assign
from gem_app.scale.cascade import cascade_curve, choose_threshold, confidence
from gem_app.scale.student import Student
from gem_app.scale.student_files import STUDENT_JSON
from tests.scale.test_assign import write_shards
from tests.scale.test_distill import SMALL, topic_texts


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    """A small default (margin-routing) student, saved."""
    texts, q, _ = topic_texts(60, 15)
    folder = tmp_path_factory.mktemp("student")
    Student(**SMALL).fit(texts, q).save(folder)
    return folder


@pytest.mark.parametrize("routing", ["margin", "entropy"])
def test_threshold_is_calibrated_on_the_routing_signal(routing):
    """The validation curve is over the chosen signal (recomputed from the validation rows)."""
    texts, q, _ = topic_texts(200, 12)
    q = 0.5 * q + 0.5 * np.random.default_rng(12).dirichlet(np.ones(3), size=200)  # unsure
    kw = dict(SMALL, refit=False, validation_fraction=0.4, target_agreement=0.99)
    student = Student(**kw, routing=routing).fit(texts, q)
    assert student.routing_ == routing and Student().routing == "margin"
    # the validation rows: the first 40% of the seed's permutation, as fit draws them
    val = np.sort(np.random.default_rng(3).permutation(200)[:80])
    p = student.predict_proba([texts[i] for i in val])  # refit=False: the validated weights
    agrees = p.argmax(1) == q[val].argmax(1)
    expected = cascade_curve(confidence(p, routing), agrees)
    got = student.cascade_curve_
    assert [c["threshold"] for c in got] == [c["threshold"] for c in expected]
    routed = np.array([c["routed_fraction"] for c in got])
    np.testing.assert_allclose(routed, [c["routed_fraction"] for c in expected], atol=1.5 / 80)
    on_max = cascade_curve(confidence(p, "max"), agrees)
    assert np.abs(routed - [c["routed_fraction"] for c in on_max]).max() > 0.2
    assert student.threshold_ == choose_threshold(got, 0.99)


def test_routing_survives_save_and_load(tmp_path):
    texts, q, _ = topic_texts(60, 13)
    student = Student(**SMALL, routing="entropy").fit(texts, q)
    student.save(tmp_path / "s")
    doc = json.loads((tmp_path / "s" / STUDENT_JSON).read_text())
    assert doc["routing"] == doc["params"]["routing"] == "entropy"
    assert doc["threshold"] == student.threshold_
    loaded = Student.load(tmp_path / "s")
    assert loaded.routing_ == loaded.routing == "entropy"
    assert loaded.threshold_ == student.threshold_
    assert loaded.cascade_curve_ == student.cascade_curve_


def test_a_student_json_without_routing_loads_as_max(tmp_path):
    """A student.json as written before the routing signal was stored (format_version 1)."""
    texts, q, _ = topic_texts(60, 14)
    student = Student(**SMALL).fit(texts, q)
    student.save(tmp_path / "new")
    probe = json.loads((tmp_path / "new" / STUDENT_JSON).read_text())["hashing"]
    old = {
        "format": "gem-student",
        "format_version": 1,
        "hashing": {
            "scheme": probe["scheme"],
            "n_buckets": 1024,
            "word_ngrams": [1, 2],
            "char_ngrams": [3, 5],
            "lowercase": True,
            "probe": probe["probe"],
            "probe_buckets": probe["probe_buckets"],  # this installation's hashing
        },
        "static_vectors": None,
        "params": {
            "n_buckets": 1024,
            "word_ngrams": [1, 2],
            "char_ngrams": [3, 5],
            "hidden": 0,
            "static_vectors": False,
            "temperature": 16.0,
            "epochs": 3,
            "batch_size": 256,
            "learning_rate": 0.02,
            "patience": 3,
            "alpha": 0.0,
            "validation_fraction": 0.15,
            "refit": True,
            "target_agreement": 0.975,
            "device": "auto",
            "random_state": 3,
        },
        "n_clusters": 3,
        "classes": [0, 1, 2],
        "cluster_labels": None,
        "threshold": 0.42,
        "validation_agreement": 0.9,
        "history": [{"epoch": 1, "loss": 1.0, "validation_agreement": 0.9}],
        "cascade_curve_validation": [],
        "metrics": {},
        "metadata": {},
    }
    folder = tmp_path / "old"
    folder.mkdir()
    shutil.copy(tmp_path / "new" / "student.safetensors", folder)
    (folder / STUDENT_JSON).write_text(json.dumps(old))
    loaded = Student.load(folder)
    assert loaded.routing_ == "max" and loaded.get_params()["routing"] == "max"
    assert loaded.threshold_ == 0.42
    np.testing.assert_array_equal(loaded.predict_proba(texts), student.predict_proba(texts))

    for doc, message in [
        ({**old, "routing": "top"}, "routing must be one of max, margin, entropy, got 'top'"),
        ({**old, "routing": 1}, "routing must be one of max, margin, entropy, got 1"),
        (
            {**old, "routing": "max", "params": {**old["params"], "routing": "margin"}},
            "routing 'max' differs from params.routing 'margin'",
        ),
    ]:
        (folder / STUDENT_JSON).write_text(json.dumps(doc))
        with pytest.raises(ValueError, match=message):
            Student.load(folder)


def test_another_routing_signal_or_threshold_is_another_writer(student_dir, tmp_path):
    """The settings fingerprint sees the routing signal (in student.json) and the threshold."""
    inputs = write_shards(tmp_path / "in", n_shards=1)
    out = tmp_path / "out"
    assign(student_dir, inputs, out, workers=1)
    on_max = tmp_path / "on-max"
    shutil.copytree(student_dir, on_max)
    doc = json.loads((on_max / STUDENT_JSON).read_text())
    assert doc["routing"] == "margin"
    doc["routing"] = doc["params"]["routing"] = "max"
    (on_max / STUDENT_JSON).write_text(json.dumps(doc))
    assert Student.load(on_max).routing_ == "max"
    with pytest.raises(ValueError, match="another model"):
        assign(on_max, inputs, out, workers=1)
    with pytest.raises(ValueError, match="other settings"):
        assign(student_dir, inputs, out, workers=1, threshold=0.3)
    again = assign(student_dir, inputs, out, workers=1)  # unchanged: resumes, nothing redone
    assert again.ran == [] and len(again.skipped) == 1
