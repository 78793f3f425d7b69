"""A cheap student that assigns documents to GEM clusters without the encoder.

The teacher is a fitted :class:`~gem_app.core.gem.GEM` on encoder embeddings; the student
sees only the text (docs/method.md, teacher-student distillation). Its features:

- hashed word 1-2-grams and byte 3-5-grams of the lower-cased text (a fixed,
  process-independent hash, see :func:`~gem_app.scale.hashing.hash_features`), weighted by
  log(1 + tf) * idf and L2-normalised (a sparse row);
- optionally the mean of the encoder's *input* word-piece embeddings (a frozen table
  read from the offline MiniLM files, no transformer layer is run), centred and
  L2-normalised (:mod:`gem_app.scale.student_net`).

The default student is linear in both (a multinomial logistic regression,
``hidden=0``), trained by mini-batch Adam with explicit gradients in numpy
(:func:`~gem_app.scale.student_train.train_linear`): seconds for 10^4 labels.
``hidden > 0`` adds a ReLU layer (a torch network, minutes). It is trained on
the teacher's soft assignments sharpened/softened by a temperature
(``softmax(log q / temperature)``), or on hard labels, with the cross-entropy (KL) loss,
and stopped early on the agreement with the teacher on a validation split. The same split
gives the cascade curve (documents whose confidence under the ``routing`` signal, by
default the margin between the top two probabilities, is below a threshold go to encoder +
teacher) and the default threshold: the lowest one that reaches ``target_agreement``.

Either way the fitted model is a :class:`~gem_app.scale.student_net.StudentNet`
(an ``EmbeddingBag`` over the buckets), so students of every version load and score alike.
Saved as ``student.safetensors`` + ``student.json`` (no pickle, :mod:`gem_app.scale.student_files`).
"""

from __future__ import annotations

import os
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from gem_app.core.rows import resolve_device
from gem_app.io.records import check_texts
from gem_app.scale import student_files
from gem_app.scale.cascade import (
    SIGNALS,
    cascade_curve,
    choose_batch_size,
    choose_threshold,
    confidence,
)
from gem_app.scale.feature_store import (
    FEATURE_STORES,
    FeatureStore,
    centred_unit,
    resolve_store,
)
from gem_app.scale.hashing import hash_features, tfidf_weights
from gem_app.scale.student_net import StaticVectors, batch_inputs
from gem_app.scale.student_train import (
    linear_net,
    soft_targets,
    train_linear,
    train_network,
)
from gem_app.utils.validation import NumberInterval, check_int

__all__ = ["Student"]

_MIN_TEXTS = 10


class Student(ClassifierMixin, BaseEstimator):
    """A text-only student of a GEM teacher (a classifier of texts into the K clusters).

    Parameters
    ----------
    n_buckets : int, default=2**18
        Hashing dimension of the n-gram features.
    word_ngrams, char_ngrams : (int, int) or None, default (1, 2) and (3, 5)
        (min_n, max_n) of the word and byte n-grams; None leaves that kind out.
    hidden : int, default=0
        Width of the hidden layer; 0 gives the linear (logistic) student, trained in numpy
        (fast; use ``learning_rate`` about 3e-3 with a hidden layer).
    static_vectors : bool, default=True
        Add the mean of the offline MiniLM's input word-piece embeddings as a feature.
    temperature : float, default=16.0
        Targets are ``softmax(log q / temperature)`` (teacher posteriors are nearly
        one-hot; a temperature > 1 exposes the runner-up clusters).
    epochs, batch_size, learning_rate, patience : int, int, float, int, default 15, 256,
        0.02, 3. Adam's schedule; training stops when the validation agreement has not
        improved for ``patience`` epochs and the best epoch's weights are kept.
    alpha : float, default=0.0
        L2 penalty ``alpha / 2 ||W||^2`` of the linear student (per batch, on the buckets
        the batch touches, and on the static-vector weights); ignored with a hidden layer.
    validation_fraction : float, default=0.15
        Share of the training rows held out for early stopping and the cascade threshold.
    refit : bool, default=True
        Retrain on every row (validation rows included) for the best number of epochs.
    target_agreement : float, default=0.975
        The default cascade threshold is the lowest reaching this validation agreement.
    routing : {"margin", "max", "entropy"}, default="margin"
        The cascade's routing signal (:func:`~gem_app.scale.cascade.confidence`): a
        document goes to the teacher when this confidence is below the threshold.
        ``"margin"``: top minus runner-up probability (bench/bench_cascade.py: the best of
        the three); ``"max"``: the top probability (students saved before the signal was
        stored); ``"entropy"``: 1 - H(p) / log K.
    feature_store : {"auto", "memory", "disk"}, default="auto"
        Where ``fit`` keeps the training features (tf-idf rows, ~8 KB per Debian
        description, and static vectors, 1.5 KB; :mod:`gem_app.scale.feature_store`):
        ``"memory"``; ``"disk"``: scratch files in a fresh private folder under
        ``scratch_dir``, a batch's rows read at a time, so that the resident memory does
        not grow with the labels (the same student, bit for bit); ``"auto"``: on disk
        above 50,000 texts. The folder is removed when ``fit`` returns or raises.
    scratch_dir : str, path or None, default=None
        Existing folder for the on-disk features (None: the system temp folder).
    device : str or torch.device, default="auto"
        Where the network with a hidden layer trains (see
        :func:`gem_app.core.rows.resolve_device`); the linear student trains in numpy on
        the CPU. A fitted student scores on the CPU until :meth:`to` moves it.
    random_state : int, numpy RandomState or Generator, or None
        Seeds the split, the shuffles and the initial weights (an int: the same student).

    Attributes
    ----------
    classes_ : ndarray of shape (n_clusters,)
        The labels of the K outputs: ``0 .. K-1`` when trained on soft assignments.
    n_clusters_ : int
    idf_ : ndarray of shape (n_buckets,)
    static_mean_ : ndarray of shape (384,) or None
    static_model_ : StaticVectors or None
    net_ : torch.nn.Module
    history_ : list of dict (epoch, loss, validation_agreement)
    validation_agreement_ : float
    cascade_curve_ : list of dict (see :func:`~gem_app.scale.cascade.cascade_curve`), on
        the validation rows, over the ``routing_`` confidence
    threshold_ : float
        Default cascade threshold, on the ``routing_`` confidence.
    routing_ : str
        The routing signal ``threshold_`` was calibrated on (one of
        :data:`~gem_app.scale.cascade.SIGNALS`); ``gem assign`` routes with it.
    """

    _parameter_constraints: dict = {
        "n_buckets": [NumberInterval(Integral, 1, None, closed="left")],
        "word_ngrams": [tuple, list, None],
        "char_ngrams": [tuple, list, None],
        "hidden": [NumberInterval(Integral, 0, None, closed="left")],
        "static_vectors": ["boolean"],
        "temperature": [NumberInterval(Real, 0, None, closed="neither")],
        "epochs": [NumberInterval(Integral, 1, None, closed="left")],
        "batch_size": [NumberInterval(Integral, 1, None, closed="left")],
        "learning_rate": [NumberInterval(Real, 0, None, closed="neither")],
        "patience": [NumberInterval(Integral, 1, None, closed="left")],
        "alpha": [NumberInterval(Real, 0, None, closed="left")],
        "validation_fraction": [NumberInterval(Real, 0, 1, closed="neither")],
        "refit": ["boolean"],
        "target_agreement": [NumberInterval(Real, 0, 1, closed="both")],
        "routing": [StrOptions(set(SIGNALS))],
        "feature_store": [StrOptions(set(FEATURE_STORES))],
        "scratch_dir": [str, os.PathLike, None],
        "device": [str, torch.device],
        "random_state": ["random_state", np.random.Generator],
    }

    def __init__(
        self,
        *,
        n_buckets=2**18,
        word_ngrams=(1, 2),
        char_ngrams=(3, 5),
        hidden=0,
        static_vectors=True,
        temperature=16.0,
        epochs=15,
        batch_size=256,
        learning_rate=0.02,
        patience=3,
        alpha=0.0,
        validation_fraction=0.15,
        refit=True,
        target_agreement=0.975,
        routing="margin",
        feature_store="auto",
        scratch_dir=None,
        device="auto",
        random_state=None,
    ):
        self.n_buckets = n_buckets
        self.word_ngrams = word_ngrams
        self.char_ngrams = char_ngrams
        self.hidden = hidden
        self.static_vectors = static_vectors
        self.temperature = temperature
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.patience = patience
        self.alpha = alpha
        self.validation_fraction = validation_fraction
        self.refit = refit
        self.target_agreement = target_agreement
        self.routing = routing
        self.feature_store = feature_store
        self.scratch_dir = scratch_dir
        self.device = device
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # a sequence of texts, not a numeric matrix
        tags.input_tags.string = True
        return tags

    # -------------------------------------------------------------- features
    def _features(self, texts):
        return hash_features(
            texts,
            n_buckets=self.n_buckets,
            word_ngrams=self.word_ngrams,
            char_ngrams=self.char_ngrams,
        )

    def _static(self, texts):
        if self.static_model_ is None:
            return None
        return centred_unit(self.static_model_(texts), self.static_mean_)

    # -------------------------------------------------------------- fitting
    def fit(self, texts, y):
        """Train on texts and the teacher's assignments.

        Parameters
        ----------
        texts : sequence of str, length N (at least 10)
        y : array-like of shape (N, K) or (N,)
            The teacher's soft assignments q (rows are probability vectors, K >= 2), or
            hard labels (at least 2 distinct ones; ``classes_`` are the sorted labels).

        Returns
        -------
        self : Student
        """
        self._validate_params()
        for name in ("word_ngrams", "char_ngrams"):
            _check_ngrams(getattr(self, name), name)
        texts = _check_texts(texts)
        q, classes = _targets(y, len(texts))
        where = resolve_store(self.feature_store, len(texts))
        device = resolve_device(self.device)
        with FeatureStore(where, self.scratch_dir) as store:  # its folder goes with the block
            self.static_model_ = StaticVectors.from_minilm()[0] if self.static_vectors else None
            weights, static, self.idf_, self.static_mean_ = store.build(
                texts, self._features, self.static_model_
            )  # the idf is unsupervised: from every text
            self._train(weights, static, q, classes, device)
        return self

    def _train(self, weights, static, q, classes, device) -> None:
        """Train on the stored features (csr/ndarray or their on-disk stand-ins)."""
        rng = np.random.default_rng(self.random_state)
        n, K = q.shape
        order = rng.permutation(n)
        n_val = max(1, int(round(self.validation_fraction * n)))
        val, train = np.sort(order[:n_val]), order[n_val:]
        targets = soft_targets(q, self.temperature)
        teacher_top = q.argmax(axis=1)
        schedule = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "patience": self.patience,
            "alpha": self.alpha,
        }
        seed = int(rng.integers(2**31))
        everything = np.arange(n)
        if self.hidden == 0:  # the linear student: numpy, explicit gradients
            data = (weights, static, targets, teacher_top)
            params, self.history_, best_epoch, p_val = train_linear(data, train, val, schedule, rng)
            if self.refit:  # the same schedule on every row, for the best number of epochs
                params, _, _, _ = train_linear(data, everything, None, schedule, rng, best_epoch)
            net = linear_net(params)
        else:
            data = (weights, static, torch.from_numpy(targets), teacher_top, device)
            shape = (self.n_buckets, self.hidden, K, 0 if static is None else static.shape[1])
            net, self.history_, best_epoch, p_val = train_network(
                data, shape, seed, train, val, schedule, rng
            )
            if self.refit:
                net, _, _, _ = train_network(
                    data, shape, seed, everything, None, schedule, rng, best_epoch
                )
        self.classes_ = classes
        self.n_clusters_ = K
        self.validation_agreement_ = max(h["validation_agreement"] for h in self.history_)
        self.routing_ = self.routing
        self.cascade_curve_ = cascade_curve(
            confidence(p_val, self.routing_), p_val.argmax(1) == teacher_top[val]
        )
        self.threshold_ = choose_threshold(self.cascade_curve_, self.target_agreement)
        self.net_ = net.cpu().eval()

    # -------------------------------------------------------------- prediction
    def predict_proba(self, texts, batch_size=None):
        """Student probabilities, shape (N, n_clusters), float32; rows sum to 1.

        Column k is the probability of ``classes_[k]``. ``batch_size`` texts are
        featurised and scored at a time (default: 2048 on CPU, chosen from the free
        memory on CUDA, see :func:`~gem_app.scale.cascade.choose_batch_size`).
        """
        check_is_fitted(self)
        texts = _check_texts(texts, minimum=0)
        out = [np.zeros((0, self.n_clusters_), dtype=np.float32)]
        device = next(self.net_.parameters()).device
        if batch_size is None:
            batch_size = choose_batch_size(device, self.hidden or self.n_clusters_)
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                part = texts[start : start + batch_size]
                weights = tfidf_weights(self._features(part), self.idf_)
                rows = np.arange(len(part))
                logits = self.net_(*batch_inputs(weights, self._static(part), rows, device))
                out.append(torch.softmax(logits, 1).cpu().numpy())
        return np.concatenate(out)

    def predict(self, texts):
        """Most probable class per text, shape (N,) (int64 cluster ids for soft training)."""
        proba = self.predict_proba(texts)
        return self.classes_[proba.argmax(axis=1)]

    def to(self, device):
        """Move the network to a device ("cpu", "cuda"); returns self."""
        check_is_fitted(self)
        self.net_ = self.net_.to(resolve_device(device))
        return self

    # -------------------------------------------------------------- persistence
    def save(self, folder, *, cluster_labels=None, metrics=None, metadata=None):
        """Write ``folder/student.safetensors`` and ``folder/student.json`` atomically.

        The word-piece table is not copied: it is read back from the offline MiniLM
        package and checked against the sha256 stored in the JSON.
        """
        check_is_fitted(self)
        return student_files.save_student(
            self, folder, cluster_labels=cluster_labels, metrics=metrics, metadata=metadata
        )

    @classmethod
    def load(cls, folder, device="cpu"):
        """Load a student folder; a different format_version or hashing scheme is a ValueError."""
        return student_files.load_student(cls, folder, device=device)


def _check_ngrams(value, name: str) -> None:
    """(min_n, max_n) with 1 <= min_n <= max_n, or None."""
    if value is None:
        return
    if len(value) != 2:
        raise ValueError(f"{name} must be (min_n, max_n) with 1 <= min_n <= max_n, got {value!r}")
    low = check_int(value[0], f"{name}[0] (min_n)", minimum=1)
    check_int(value[1], f"{name}[1] (max_n)", minimum=low)


def _check_texts(texts, minimum: int = _MIN_TEXTS) -> list[str]:
    """Texts as a list of str (:func:`gem_app.io.records.check_texts`), at least ``minimum``."""
    texts = check_texts(texts)
    if len(texts) < minimum:
        raise ValueError(f"need at least {minimum} texts to train a student, got {len(texts)}")
    return texts


def _targets(y, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Training targets (N, K) and the classes: soft assignments as given, labels one-hot."""
    y = np.asarray(y)
    if y.ndim == 1 and y.shape[0] == n:
        check_classification_targets(y)
        classes, index = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"y has a single class ({classes[0]!r}); a student needs K >= 2")
        return np.eye(len(classes))[index], classes
    if y.ndim != 2 or y.shape[0] != n or y.shape[1] < 2:
        raise ValueError(
            f"y must have shape ({n}, K >= 2) (the teacher's soft assignments) or ({n},) "
            f"(hard labels), got {y.shape}"
        )
    q = np.asarray(y, dtype=np.float64)
    bad = np.flatnonzero(
        ~np.isfinite(q).all(axis=1) | (q < 0).any(axis=1) | (np.abs(q.sum(axis=1) - 1) > 1e-3)
    )
    if len(bad):
        raise ValueError(f"y (teacher probabilities) row {bad[0]} is not a probability vector")
    return q, np.arange(q.shape[1])
