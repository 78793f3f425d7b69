"""The cascade: routing signals by hand, routed rows get exactly the teacher's answer (also
through ``gem assign``'s Assigner, on the student's stored routing signal), bad inputs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from scipy.stats import entropy

from gem_app.core.gem import GEM
from gem_app.scale.assigner import Assigner, ModelSpec
from gem_app.scale.cascade import SIGNALS, cascade_labels, confidence
from gem_app.scale.student import Student
from gem_app.scale.student_files import STUDENT_JSON
from tests.scale.test_distill import topic_texts

# Hand-built student probabilities (dyadic: every margin is exact in float64) on which the
# top probability and the margin route differently at the threshold 0.5.
HAND_P = np.array(
    [
        [0.5, 0.375, 0.125],  # max 0.5 (not below), margin 0.125 (below)
        [0.75, 0.25, 0.0],  # margin exactly 0.5: not below, stays with the student
        [0.375, 0.3125, 0.3125],  # both below
        [0.25, 0.125, 0.625],  # max 0.625, margin 0.375: only the margin routes it
        [0.0625, 0.875, 0.0625],  # neither
        [0.4375, 0.125, 0.4375],  # a tie: margin 0; max 0.4375
    ],
    dtype=np.float32,
)
HAND_THRESHOLD = 0.5
ROUTED_BY_MARGIN = [True, False, True, True, False, True]
ROUTED_BY_MAX = [False, False, True, False, False, True]


def test_signals_by_hand_and_against_scipy():
    p = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(confidence(p, "max"), [0.7, 0.4, 1.0, 1 / 3])
    np.testing.assert_allclose(confidence(p), confidence(p, "max"))
    np.testing.assert_allclose(confidence(p, "margin"), [0.5, 0.05, 1.0, 0.0], atol=1e-12)
    expected = 1 - entropy(p, axis=1) / np.log(3)
    np.testing.assert_allclose(confidence(p, "entropy"), expected, atol=1e-12)
    assert confidence(p, "entropy")[2] == 1.0 and abs(confidence(p, "entropy")[3]) < 1e-12


@pytest.mark.parametrize("signal", SIGNALS)
def test_routed_rows_get_exactly_the_teachers_answer(signal):
    rng = np.random.default_rng(0)
    student = rng.dirichlet(np.ones(4), size=50)
    teacher_all = rng.dirichlet(np.ones(4), size=50).astype(np.float32)
    calls = []

    def teacher(rows):
        calls.append(rows.copy())
        return teacher_all[rows]

    proba, routed = cascade_labels(student, teacher, 0.4, signal)
    np.testing.assert_array_equal(routed, confidence(student, signal) < 0.4)
    assert 0 < routed.sum() < 50  # both kinds of rows are exercised
    np.testing.assert_array_equal(proba[routed], teacher_all[routed])
    np.testing.assert_array_equal(proba[~routed], student[~routed].astype(np.float32))
    assert len(calls) == 1 and np.array_equal(calls[0], np.flatnonzero(routed))
    calls.clear()
    _, none = cascade_labels(student, teacher, 0.0, signal)
    assert not none.any() and calls == []  # nothing routed: the teacher is not asked


def test_bad_inputs_are_clear_value_errors():
    p = np.full((3, 2), 0.5)
    with pytest.raises(ValueError, match="signal must be one of max, margin, entropy, got 'top'"):
        confidence(p, "top")
    with pytest.raises(ValueError, match=r"proba must have shape \(N, K >= 2\), got \(3,\)"):
        confidence(p[:, 0])
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\], got 1.5"):
        cascade_labels(p, lambda rows: p[rows], 1.5)
    with pytest.raises(ValueError, match=r"teacher returned shape \(3, 3\) for 3 routed rows"):
        cascade_labels(p, lambda rows: np.ones((3, 3)), 0.9)


def test_hand_built_rows_route_as_computed_by_hand():
    """The reference lists above, against the signals (so the Assigner tests below are sound)."""
    np.testing.assert_array_equal(confidence(HAND_P, "margin") < HAND_THRESHOLD, ROUTED_BY_MARGIN)
    np.testing.assert_array_equal(confidence(HAND_P, "max") < HAND_THRESHOLD, ROUTED_BY_MAX)


@pytest.fixture(scope="module")
def cascade_folders(tmp_path_factory):
    """A K = 3 teacher GEM and a (default, margin-routing) student of it, saved; texts, X."""
    folder = tmp_path_factory.mktemp("cascade")
    texts, _, labels = topic_texts(200, 3)
    rng = np.random.default_rng(3)
    X = (np.eye(3, 8)[labels] + 0.6 * rng.normal(size=(200, 8))).astype(np.float32)
    teacher = GEM(3, random_state=0).fit(X)
    teacher.save(folder / "teacher")
    student = Student(n_buckets=2**10, static_vectors=False, epochs=2, random_state=0)
    student.fit(texts[:150], teacher.predict_proba(X[:150])).save(folder / "student")
    return folder, texts, X


class _StubTeacher:
    """Answers row i (embedding ``[i, ...]``) with a one-hot on cluster ``i % 3``."""

    def __init__(self):
        self.asked = []

    def predict_proba(self, X):
        rows = X[:, 0].astype(int)
        self.asked.append(rows.tolist())
        return np.eye(3, dtype=np.float32)[rows % 3]


def _hand_assigner(student_folder, teacher_folder, threshold=HAND_THRESHOLD):
    """An Assigner whose student answers HAND_P and whose teacher is the stub."""
    assigner = Assigner(ModelSpec(str(student_folder), str(teacher_folder), threshold))
    assigner.student.predict_proba = lambda texts: HAND_P[: len(texts)].copy()
    assigner.teacher = _StubTeacher()
    return assigner


def test_assigner_routes_exactly_the_rows_below_threshold_on_the_margin(cascade_folders):
    folder, _, _ = cascade_folders
    assigner = _hand_assigner(folder / "student", folder / "teacher")
    assert assigner.student.routing_ == "margin"
    embeddings = [np.array([i, 0.0], dtype=np.float32) for i in range(len(HAND_P))]
    q, by = assigner.proba([f"text {i}" for i in range(len(HAND_P))], embeddings)
    routed = np.array(ROUTED_BY_MARGIN)
    assert by.tolist() == np.where(routed, "teacher", "student").tolist()
    assert assigner.teacher.asked == [np.flatnonzero(routed).tolist()]  # one call, in order
    np.testing.assert_array_equal(q[routed], np.eye(3)[np.flatnonzero(routed) % 3])
    np.testing.assert_array_equal(q[~routed], HAND_P[~routed])


def test_an_old_student_without_routing_routes_on_the_top_probability(cascade_folders, tmp_path):
    """A student.json written before ``routing`` was stored: its threshold is on the max."""
    folder, _, _ = cascade_folders
    old = tmp_path / "old-student"
    shutil.copytree(folder / "student", old)
    doc = json.loads((old / STUDENT_JSON).read_text())
    del doc["routing"], doc["params"]["routing"]
    (old / STUDENT_JSON).write_text(json.dumps(doc))
    assigner = _hand_assigner(old, folder / "teacher")
    assert assigner.student.routing_ == "max"
    embeddings = [np.array([i, 0.0], dtype=np.float32) for i in range(len(HAND_P))]
    _, by = assigner.proba([f"text {i}" for i in range(len(HAND_P))], embeddings)
    assert (by == "teacher").tolist() == ROUTED_BY_MAX


def test_assign_cascade_routes_exactly_to_the_teacher(cascade_folders):
    """``gem assign``'s Assigner with the real teacher: rows below the threshold on the
    student's margin carry the teacher's q, bit for bit."""
    folder, texts, X = cascade_folders
    student_q = Student.load(folder / "student").predict_proba(texts)
    margin = confidence(student_q, "margin")
    threshold = float(np.median(margin))  # about half of the rows routed
    assigner = Assigner(
        ModelSpec(str(folder / "student"), teacher=str(folder / "teacher"), threshold=threshold)
    )
    q, by = assigner.proba(texts, list(X))
    routed = margin < threshold
    assert 50 < routed.sum() < 150
    by_max = confidence(student_q, "max") < threshold
    assert (by_max != routed).sum() > 10  # the two signals do route different rows here
    np.testing.assert_array_equal(by == "teacher", routed)
    reloaded = GEM.load(folder / "teacher")
    np.testing.assert_array_equal(q[routed], reloaded.predict_proba(X[routed]))
    np.testing.assert_array_equal(q[~routed], student_q[~routed])
