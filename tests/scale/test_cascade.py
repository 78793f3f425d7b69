"""The cascade: routing signals by hand, routed rows get exactly the teacher's answer (also
through ``gem assign``'s Assigner), bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import entropy

from gem_app.core.gem import GEM
from gem_app.scale.assigner import Assigner, ModelSpec
from gem_app.scale.cascade import SIGNALS, cascade_labels, confidence
from gem_app.scale.student import Student
from tests.scale.test_distill import topic_texts


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


def test_assign_cascade_routes_exactly_to_the_teacher(tmp_path):
    """``gem assign``'s Assigner: rows below the threshold carry the teacher's q, bit for bit."""
    texts, _, labels = topic_texts(200, 3)
    rng = np.random.default_rng(3)
    X = (np.eye(3, 8)[labels] + 0.6 * rng.normal(size=(200, 8))).astype(np.float32)
    teacher = GEM(3, random_state=0).fit(X)
    teacher.save(tmp_path / "teacher")
    student = Student(n_buckets=2**10, static_vectors=False, epochs=2, random_state=0)
    student.fit(texts[:150], teacher.predict_proba(X[:150])).save(tmp_path / "student")
    student_q = Student.load(tmp_path / "student").predict_proba(texts)
    threshold = float(np.median(confidence(student_q)))  # about half of the rows routed
    assigner = Assigner(
        ModelSpec(str(tmp_path / "student"), teacher=str(tmp_path / "teacher"), threshold=threshold)
    )
    q, by = assigner.proba(texts, list(X))
    routed = confidence(student_q) < threshold
    assert 50 < routed.sum() < 150
    np.testing.assert_array_equal(by == "teacher", routed)
    reloaded = GEM.load(tmp_path / "teacher")
    np.testing.assert_array_equal(q[routed], reloaded.predict_proba(X[routed]))
    np.testing.assert_array_equal(q[~routed], student_q[~routed])
