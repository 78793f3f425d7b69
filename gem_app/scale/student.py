"""A cheap student that assigns documents to GEM clusters without the encoder.

The teacher is a fitted :class:`~gem_app.core.gem.GEM` on encoder embeddings; the student
sees only the text (../shared/design/METHOD.md section 7). Its features:

- hashed word 1-2-grams and byte 3-5-grams of the lower-cased text (a fixed,
  process-independent hash, see :func:`hash_features`), weighted by log(1 + tf) * idf
  and L2-normalised, fed to an ``EmbeddingBag`` (sum);
- optionally the mean of the encoder's *input* word-piece embeddings (a frozen table
  read from the offline MiniLM files, no transformer layer is run), centred and
  L2-normalised, through a linear map.

Both are added, passed through a ReLU and a linear head to K logits. It is trained on
the teacher's soft assignments sharpened/softened by a temperature
(``softmax(log q / temperature)``) with the cross-entropy (KL) loss, and stopped early
on the agreement with the teacher on a validation split. The same split gives the
cascade curve (documents below a confidence threshold go to encoder + teacher) and the
default threshold: the lowest one that reaches ``target_agreement``.

Saved as ``student.safetensors`` + ``student.json`` (no pickle).
"""

from __future__ import annotations

import hashlib
import numbers
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer

from gem_app.core.rows import resolve_device
from gem_app.io.encoder import DEFAULT_MODEL, OFFLINE_MODELS
from gem_app.scale.cascade import cascade_curve, choose_batch_size, choose_threshold
from gem_app.scale.hashing import (
    HASH_SCHEME,
    hash_features,
    inverse_document_frequency,
    tfidf_weights,
)
from gem_app.utils.files import atomic_path, read_versioned_json, write_json

__all__ = ["FORMAT_VERSION", "STUDENT_JSON", "STUDENT_TENSORS", "Student", "read_student_json"]

FORMAT_VERSION = 1
STUDENT_JSON = "student.json"
STUDENT_TENSORS = "student.safetensors"
_PROBE = "GEM Studio hashing probe: naïve café, 12 Debian packages."


# ---------------------------------------------------------------------------- static table
def _minilm_files():
    """(tokenizer.json path, word-piece embedding table (V, 384) float32) of the offline MiniLM."""
    folder = Path(OFFLINE_MODELS[DEFAULT_MODEL][0]())
    tensors = load_file(str(folder / "model.safetensors"))
    table = next(v for k, v in tensors.items() if k.endswith("word_embeddings.weight"))
    return folder / "tokenizer.json", np.ascontiguousarray(table, dtype=np.float32)


class _StaticVectors:
    """Mean of the encoder's input word-piece embeddings (no transformer layer is run)."""

    def __init__(self, tokenizer_json: str, table: np.ndarray, max_tokens: int = 512):
        self.tokenizer_json = tokenizer_json
        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_tokens)
        self.table = torch.from_numpy(table)

    def __call__(self, texts) -> torch.Tensor:
        """(N, dim) float32 mean vectors (zeros for a text without tokens)."""
        ids = [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]
        lengths = torch.tensor([len(i) for i in ids], dtype=torch.int64)
        flat = torch.tensor([t for i in ids for t in i], dtype=torch.int64)
        offsets = torch.cumsum(lengths, 0) - lengths
        return torch.nn.functional.embedding_bag(flat, self.table, offsets, mode="mean")


class _Net(torch.nn.Module):
    """EmbeddingBag over hashed n-grams (+ linear map of the static vector) -> [ReLU -> linear]."""

    def __init__(self, n_buckets: int, hidden: int, n_clusters: int, static_dim: int):
        super().__init__()
        width = hidden or n_clusters
        self.ngrams = torch.nn.EmbeddingBag(n_buckets, width, mode="sum", sparse=True)
        self.static = torch.nn.Linear(static_dim, width) if static_dim else None
        self.bias = None if static_dim else torch.nn.Parameter(torch.zeros(width))
        self.head = torch.nn.Linear(hidden, n_clusters) if hidden else None

    def forward(self, indices, offsets, weights, static=None):
        z = self.ngrams(indices, offsets, per_sample_weights=weights)
        z = z + (self.static(static) if self.static is not None else self.bias)
        return self.head(torch.relu(z)) if self.head is not None else z


# ---------------------------------------------------------------------------- the student
class Student:
    """A text-only student of a GEM teacher.

    Parameters
    ----------
    n_buckets : int, default=2**18
        Hashing dimension of the n-gram features.
    word_ngrams, char_ngrams : (int, int) or None, default (1, 2) and (3, 5)
    hidden : int, default=128
        Width of the hidden layer; 0 gives a linear (logistic) student.
    static_vectors : bool, default=True
        Add the mean of the offline MiniLM's input word-piece embeddings as a feature.
    temperature : float, default=16.0
        Targets are ``softmax(log q / temperature)`` (teacher posteriors are nearly
        one-hot; a temperature > 1 exposes the runner-up clusters).
    epochs, batch_size, learning_rate, patience : training schedule; training stops
        when the validation agreement has not improved for ``patience`` epochs and the
        best epoch's weights are kept.
    validation_fraction : float, default=0.15
        Share of the training rows held out for early stopping and the cascade threshold.
    refit : bool, default=True
        Retrain on every row (validation rows included) for the best number of epochs.
    target_agreement : float, default=0.975
        The default cascade threshold is the lowest reaching this validation agreement.
    device : {"auto", "cpu", "cuda"}
    random_state : int or None

    Attributes
    ----------
    n_clusters_ : int
    idf_ : ndarray of shape (n_buckets,)
    static_mean_ : ndarray of shape (384,) or None
    net_ : torch.nn.Module
    history_ : list of dict (epoch, loss, validation_agreement)
    validation_agreement_ : float
    cascade_curve_ : list of dict (see :func:`cascade_curve`), on the validation rows
    threshold_ : float
        Default cascade threshold.
    """

    def __init__(
        self,
        *,
        n_buckets=2**18,
        word_ngrams=(1, 2),
        char_ngrams=(3, 5),
        hidden=128,
        static_vectors=True,
        temperature=16.0,
        epochs=30,
        batch_size=500,
        learning_rate=3e-3,
        patience=4,
        validation_fraction=0.15,
        refit=True,
        target_agreement=0.975,
        device="auto",
        random_state=None,
    ):
        self.refit = refit
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
        self.validation_fraction = validation_fraction
        self.target_agreement = target_agreement
        self.device = device
        self.random_state = random_state

    def _validate(self, texts, q):
        for name in ("n_buckets", "epochs", "batch_size", "patience"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.hidden, numbers.Integral) or self.hidden < 0:
            raise ValueError(f"hidden must be an integer >= 0, got {self.hidden!r}")
        for name in ("temperature", "learning_rate"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or not 0 < value < np.inf:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(
                f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}"
            )
        for name in ("word_ngrams", "char_ngrams"):
            value = getattr(self, name)
            if value is not None and not (len(value) == 2 and 1 <= value[0] <= value[1]):
                raise ValueError(
                    f"{name} must be (min_n, max_n) with 1 <= min_n <= max_n, got {value!r}"
                )
        q = np.asarray(q, dtype=np.float64)
        if q.ndim != 2 or q.shape[0] != len(texts) or q.shape[1] < 2:
            raise ValueError(f"teacher_proba must have shape ({len(texts)}, K >= 2), got {q.shape}")
        bad = np.flatnonzero(
            ~np.isfinite(q).all(axis=1) | (q < 0).any(axis=1) | (np.abs(q.sum(axis=1) - 1) > 1e-3)
        )
        if len(bad):
            raise ValueError(f"teacher_proba row {bad[0]} is not a probability vector")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ValueError(f"text {i} is {type(t).__name__}, not str")
        if len(texts) < 10:
            raise ValueError(f"need at least 10 texts to train a student, got {len(texts)}")
        return q

    # -------------------------------------------------------------- features
    def _features(self, texts):
        counts = hash_features(
            texts,
            n_buckets=self.n_buckets,
            word_ngrams=self.word_ngrams,
            char_ngrams=self.char_ngrams,
        )
        return counts

    def _batch(self, weights, static, rows, device):
        sub = weights[rows]
        indices = torch.from_numpy(sub.indices.astype(np.int64)).to(device)
        offsets = torch.from_numpy(sub.indptr[:-1].astype(np.int64)).to(device)
        values = torch.from_numpy(sub.data).to(device)
        v = None if static is None else static[torch.as_tensor(rows)].to(device)
        return indices, offsets, values, v

    def _static(self, texts):
        if self._static_model is None:
            return None
        v = self._static_model(texts) - torch.from_numpy(self.static_mean_)
        return v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)

    # -------------------------------------------------------------- fitting
    def fit(self, texts, teacher_proba):
        """Train on texts and the teacher's soft assignments q, shape (N, K).

        Returns
        -------
        self : Student
        """
        texts = list(texts)
        q = self._validate(texts, teacher_proba)
        device = resolve_device(self.device)
        rng = np.random.default_rng(self.random_state)
        n, K = q.shape
        order = rng.permutation(n)
        n_val = max(1, int(round(self.validation_fraction * n)))
        val, train = np.sort(order[:n_val]), order[n_val:]
        counts = self._features(texts)
        self.idf_ = inverse_document_frequency(counts)  # unsupervised: every text
        weights = tfidf_weights(counts, self.idf_)
        if self.static_vectors:
            tokenizer_path, table = _minilm_files()
            self._static_model = _StaticVectors(tokenizer_path.read_text(encoding="utf-8"), table)
            raw = self._static_model(texts)
            self.static_mean_ = raw.mean(0).numpy()
        else:
            self._static_model, self.static_mean_ = None, None
        static = self._static(texts)
        targets = torch.softmax(
            torch.from_numpy(np.log(np.maximum(q, 1e-300)) / self.temperature), dim=1
        ).to(torch.float32)
        data = (weights, static, targets, q.argmax(axis=1), device)
        static_dim = 0 if static is None else static.shape[1]
        seed = int(rng.integers(2**31))
        net, self.history_, best_epoch = self._train(data, K, static_dim, seed, train, val, rng)
        self.n_clusters_ = K
        self.validation_agreement_ = max(h["validation_agreement"] for h in self.history_)
        p_val = self._proba_rows(net, weights, static, val, device)
        self.cascade_curve_ = cascade_curve(p_val.max(1), p_val.argmax(1) == data[3][val])
        self.threshold_ = choose_threshold(self.cascade_curve_, self.target_agreement)
        if self.refit:  # the same schedule on every row, for the best number of epochs
            everything = np.arange(n)
            net, _, _ = self._train(data, K, static_dim, seed, everything, None, rng, best_epoch)
        self.net_ = net.cpu().eval()
        return self

    def _train(self, data, K, static_dim, seed, train, val, rng, epochs=None):
        """Train a fresh network on rows ``train``; early-stop on rows ``val`` when given.

        Returns (network with the best validation weights, history, best epoch).
        """
        weights, static, targets, teacher_top, device = data
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = _Net(self.n_buckets, self.hidden, K, static_dim)
            if self.hidden:
                torch.nn.init.normal_(net.ngrams.weight, std=0.05)
            else:
                torch.nn.init.zeros_(net.ngrams.weight)
        net = net.to(device)
        dense = [p for name, p in net.named_parameters() if not name.startswith("ngrams")]
        optimizers = [
            torch.optim.SparseAdam([net.ngrams.weight], lr=self.learning_rate),
            torch.optim.Adam(dense, lr=self.learning_rate),
        ]
        train = np.array(train)
        best, best_epoch, best_state, stale, history = -1.0, 0, None, 0, []
        for epoch in range(epochs or self.epochs):
            net.train()
            total = 0.0
            for start in range(0, len(train), self.batch_size):
                rows = np.sort(train[start : start + self.batch_size])
                logits = net(*self._batch(weights, static, rows, device))
                loss = -(targets[rows].to(device) * torch.log_softmax(logits, 1)).sum(1).mean()
                for opt in optimizers:
                    opt.zero_grad()
                loss.backward()
                for opt in optimizers:
                    opt.step()
                total += float(loss.detach()) * len(rows)
            rng.shuffle(train)
            if val is None:
                continue
            p_val = self._proba_rows(net, weights, static, val, device)
            score = float(np.mean(p_val.argmax(1) == teacher_top[val]))
            history.append(
                {"epoch": epoch + 1, "loss": total / len(train), "validation_agreement": score}
            )
            if score > best:
                best, best_epoch, stale = score, epoch + 1, 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                stale += 1
                if stale >= self.patience:
                    break
        if best_state is not None:
            net.load_state_dict(best_state)
        return net.eval(), history, best_epoch

    def _proba_rows(self, net, weights, static, rows, device):
        out = []
        with torch.no_grad():
            for start in range(0, len(rows), 4096):
                part = rows[start : start + 4096]
                out.append(torch.softmax(net(*self._batch(weights, static, part, device)), 1).cpu())
        return torch.cat(out).numpy()

    # -------------------------------------------------------------- prediction
    def predict_proba(self, texts, batch_size=None):
        """Student probabilities, shape (N, K), float32; rows sum to 1.

        ``batch_size`` texts are featurised and scored at a time (default: 2048 on CPU,
        chosen from the free memory on CUDA, see :func:`choose_batch_size`).
        """
        self._check_fitted()
        texts = list(texts)
        out = [np.zeros((0, self.n_clusters_), dtype=np.float32)]
        device = next(self.net_.parameters()).device
        batch_size = batch_size or choose_batch_size(device, self.hidden or self.n_clusters_)
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                part = texts[start : start + batch_size]
                weights = tfidf_weights(self._features(part), self.idf_)
                rows = np.arange(len(part))
                logits = self.net_(*self._batch(weights, self._static(part), rows, device))
                out.append(torch.softmax(logits, 1).cpu().numpy())
        return np.concatenate(out)

    def predict(self, texts):
        """Most probable cluster per text, shape (N,), int64."""
        return self.predict_proba(texts).argmax(axis=1).astype(np.int64)

    def to(self, device):
        """Move the network to a device ("cpu", "cuda"); returns self."""
        self._check_fitted()
        self.net_ = self.net_.to(device)
        return self

    def _check_fitted(self):
        if not hasattr(self, "net_"):
            raise ValueError("this Student is not fitted yet; call fit or Student.load")

    # -------------------------------------------------------------- persistence
    def save(self, folder, *, cluster_labels=None, metrics=None, metadata=None):
        """Write ``folder/student.safetensors`` and ``folder/student.json`` atomically.

        The word-piece table is not copied: it is read back from the offline MiniLM
        package and checked against the sha256 stored in the JSON.
        """
        self._check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"net.{k}": v.detach().cpu().numpy() for k, v in self.net_.state_dict().items()}
        tensors["idf"] = self.idf_
        if self.static_mean_ is not None:
            tensors["static_mean"] = self.static_mean_
        tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
        params = {k: getattr(self, k) for k in _PARAMS}
        params["word_ngrams"] = None if self.word_ngrams is None else list(self.word_ngrams)
        params["char_ngrams"] = None if self.char_ngrams is None else list(self.char_ngrams)
        doc = {
            "format": "gem-student",
            "format_version": FORMAT_VERSION,
            "hashing": {
                "scheme": HASH_SCHEME,
                "n_buckets": self.n_buckets,
                "word_ngrams": params["word_ngrams"],
                "char_ngrams": params["char_ngrams"],
                "lowercase": True,
                "probe": _PROBE,
                "probe_buckets": _probe_buckets(self),
            },
            "static_vectors": None
            if self.static_mean_ is None
            else {
                "encoder": "all-MiniLM-L6-v2",
                "table_sha256": _table_sha256(),
                "max_tokens": 512,
            },
            "params": params,
            "n_clusters": self.n_clusters_,
            "cluster_labels": cluster_labels,
            "threshold": self.threshold_,
            "validation_agreement": self.validation_agreement_,
            "history": self.history_,
            "cascade_curve_validation": self.cascade_curve_,
            "metrics": metrics or {},
            "metadata": metadata or {},
        }
        with atomic_path(folder / STUDENT_TENSORS) as tmp:
            save_file(tensors, str(tmp))
        write_json(folder / STUDENT_JSON, doc)

    @classmethod
    def load(cls, folder, device="cpu"):
        """Load a student folder; a different format_version or hashing scheme is a ValueError."""
        folder = Path(folder)
        doc = read_student_json(folder)
        params = dict(doc["params"])
        for key in ("word_ngrams", "char_ngrams"):
            params[key] = None if params[key] is None else tuple(params[key])
        student = cls(**params)
        tensors = load_file(str(folder / STUDENT_TENSORS))
        student.idf_ = tensors["idf"]
        student.static_mean_ = tensors.get("static_mean")
        student.n_clusters_ = int(doc["n_clusters"])
        if student.static_mean_ is not None:
            tokenizer_path, table = _minilm_files()
            expected = doc["static_vectors"]["table_sha256"]
            if _table_sha256(table) != expected:
                raise ValueError(
                    f"{folder}: the installed MiniLM word-piece table differs from the one the "
                    "student was trained with (sha256 mismatch); retrain the student"
                )
            student._static_model = _StaticVectors(
                tokenizer_path.read_text(encoding="utf-8"), table
            )
        else:
            student._static_model = None
        static_dim = 0 if student.static_mean_ is None else len(student.static_mean_)
        net = _Net(student.n_buckets, student.hidden, student.n_clusters_, static_dim)
        state = {k[4:]: torch.from_numpy(v) for k, v in tensors.items() if k.startswith("net.")}
        net.load_state_dict(state)
        net.eval()
        student.net_ = net.to(device)
        student.threshold_ = float(doc["threshold"])
        student.validation_agreement_ = float(doc["validation_agreement"])
        student.history_ = doc["history"]
        student.cascade_curve_ = doc["cascade_curve_validation"]
        student.cluster_labels_ = doc.get("cluster_labels")
        student.metrics_ = doc.get("metrics", {})
        if _probe_buckets(student) != doc["hashing"]["probe_buckets"]:
            raise ValueError(
                f"{folder}: this installation hashes n-grams differently ({HASH_SCHEME})"
            )
        return student


_PARAMS = (
    "n_buckets",
    "word_ngrams",
    "char_ngrams",
    "hidden",
    "static_vectors",
    "temperature",
    "epochs",
    "batch_size",
    "learning_rate",
    "patience",
    "validation_fraction",
    "refit",
    "target_agreement",
    "device",
    "random_state",
)


def read_student_json(folder) -> dict:
    """Read and check ``folder/student.json`` (format and format_version)."""
    path = Path(folder) / STUDENT_JSON
    doc = read_versioned_json(
        path, kind="gem-student", version=FORMAT_VERSION, what="GEM student file"
    )
    if doc.get("hashing", {}).get("scheme") != HASH_SCHEME:
        raise ValueError(f"{path}: unknown hashing scheme {doc.get('hashing', {}).get('scheme')!r}")
    return doc


def _probe_buckets(student) -> list[int]:
    counts = student._features([_PROBE])
    return [int(i) for i in counts.indices]


def _table_sha256(table=None) -> str:
    if table is None:
        table = _minilm_files()[1]
    return hashlib.sha256(np.ascontiguousarray(table, dtype=np.float32).tobytes()).hexdigest()
