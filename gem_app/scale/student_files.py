"""Student files: ``student.safetensors`` for the arrays, ``student.json`` for the rest (no pickle).

The JSON records the student's parameters (``get_params()``), its classes, the hashing
scheme with a probe text and its buckets (a different hashing is refused at load), the
fingerprint of the static-vector table (the table itself is read back from the offline
MiniLM package), the cascade threshold and the routing signal it is on, the training
history and free-form metrics.

Fields are only ever added within a ``format_version`` (1): a file lacking a later field
loads with the value that reproduces what it meant when written; ``routing`` (added with
issue 13) is absent from earlier files, whose threshold was calibrated on the top
probability, so it reads as ``"max"``. A file of a newer GEM Studio carries parameters
this one does not know and is refused (:func:`load_student`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from gem_app.scale.cascade import SIGNALS
from gem_app.scale.hashing import HASH_SCHEME, hash_features
from gem_app.scale.student_net import StaticVectors, StudentNet, table_sha256
from gem_app.utils.files import atomic_path, read_versioned_json, write_json

__all__ = [
    "FORMAT_VERSION",
    "LEGACY_ROUTING",
    "STUDENT_JSON",
    "STUDENT_TENSORS",
    "load_student",
    "read_student_json",
    "save_student",
    "stored_routing",
]

FORMAT_VERSION = 1
STUDENT_JSON = "student.json"
STUDENT_TENSORS = "student.safetensors"
_PROBE = "GEM Studio hashing probe: naïve café, 12 Debian packages."
_NGRAMS = ("word_ngrams", "char_ngrams")
#: The routing signal of a student.json written before ``routing`` was stored.
LEGACY_ROUTING = "max"


def _probe_buckets(params: dict) -> list[int]:
    """Buckets of the probe text under the hashing parameters in ``params``."""
    counts = hash_features(
        [_PROBE],
        n_buckets=params["n_buckets"],
        word_ngrams=params["word_ngrams"],
        char_ngrams=params["char_ngrams"],
    )
    return [int(i) for i in counts.indices]


def _json_params(student) -> dict:
    """``get_params()`` as JSON values: n-gram ranges as lists, a non-int seed as None."""
    params = student.get_params()
    for key in _NGRAMS:
        params[key] = None if params[key] is None else list(params[key])
    if not isinstance(params["random_state"], int | type(None)):
        params["random_state"] = None
    if isinstance(params["device"], torch.device):
        params["device"] = str(params["device"])
    if params.get("scratch_dir") is not None:
        params["scratch_dir"] = str(params["scratch_dir"])
    return params


def save_student(student, folder, *, cluster_labels=None, metrics=None, metadata=None) -> Path:
    """Write ``folder/student.safetensors`` and ``folder/student.json`` of a fitted student.

    Both are written atomically. The word-piece table is not copied: it is read back
    from the offline MiniLM package and checked against the sha256 stored in the JSON.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    net = student.net_.state_dict()
    tensors = {f"net.{k}": v.detach().cpu().numpy() for k, v in net.items()}
    tensors["idf"] = student.idf_
    if student.static_mean_ is not None:
        tensors["static_mean"] = student.static_mean_
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    params = _json_params(student)
    doc = {
        "format": "gem-student",
        "format_version": FORMAT_VERSION,
        "hashing": {
            "scheme": HASH_SCHEME,
            "n_buckets": params["n_buckets"],
            "word_ngrams": params["word_ngrams"],
            "char_ngrams": params["char_ngrams"],
            "lowercase": True,
            "probe": _PROBE,
            "probe_buckets": _probe_buckets(params),
        },
        "static_vectors": None
        if student.static_mean_ is None
        else {
            "encoder": "all-MiniLM-L6-v2",
            "table_sha256": table_sha256(student.static_model_.table.numpy()),
            "max_tokens": 512,
        },
        "params": params,
        "n_clusters": student.n_clusters_,
        "classes": student.classes_.tolist(),
        "cluster_labels": cluster_labels,
        "threshold": student.threshold_,
        "routing": student.routing_,
        "validation_agreement": student.validation_agreement_,
        "history": student.history_,
        "cascade_curve_validation": student.cascade_curve_,
        "metrics": metrics or {},
        "metadata": metadata or {},
    }
    with atomic_path(folder / STUDENT_TENSORS) as tmp:
        save_file(tensors, str(tmp))
    write_json(folder / STUDENT_JSON, doc)
    return folder


def load_student(cls, folder, device="cpu"):
    """Load a student folder as an instance of ``cls`` (a :class:`Student`).

    A different format_version, hashing scheme, probe buckets or static-vector table, or
    parameters this version does not know, are a ValueError (retrain the student). Files of
    earlier students (a hidden layer, no ``alpha``) load: the network layout is unchanged;
    one without ``routing`` routes on :data:`LEGACY_ROUTING` (see :func:`stored_routing`).
    """
    folder = Path(folder)
    doc = read_student_json(folder)
    routing = stored_routing(doc, folder / STUDENT_JSON)
    params = {"routing": routing, **doc["params"]}
    for key in _NGRAMS:
        params[key] = None if params[key] is None else tuple(params[key])
    if _probe_buckets(params) != doc["hashing"]["probe_buckets"]:
        raise ValueError(f"{folder}: this installation hashes n-grams differently ({HASH_SCHEME})")
    unknown = sorted(set(params) - set(cls().get_params()))
    if unknown:
        raise ValueError(
            f"{folder}: {STUDENT_JSON} has parameters this version does not know "
            f"({', '.join(unknown)}); it was written by a newer GEM Studio"
        )
    student = cls(**params)  # parameters added since the file was written take defaults
    tensors = load_file(str(folder / STUDENT_TENSORS))
    student.idf_ = tensors["idf"]
    student.static_mean_ = tensors.get("static_mean")
    student.n_clusters_ = int(doc["n_clusters"])
    student.classes_ = np.asarray(doc.get("classes", np.arange(student.n_clusters_)))
    student.static_model_ = None
    if student.static_mean_ is not None:
        student.static_model_, table = StaticVectors.from_minilm()
        if table_sha256(table) != doc["static_vectors"]["table_sha256"]:
            raise ValueError(
                f"{folder}: the installed MiniLM word-piece table differs from the one the "
                "student was trained with (sha256 mismatch); retrain the student"
            )
    static_dim = 0 if student.static_mean_ is None else len(student.static_mean_)
    net = StudentNet(student.n_buckets, student.hidden, student.n_clusters_, static_dim)
    state = {k[4:]: torch.from_numpy(v) for k, v in tensors.items() if k.startswith("net.")}
    net.load_state_dict(state)
    student.net_ = net.eval().to(device)
    student.threshold_ = float(doc["threshold"])
    student.routing_ = routing
    student.validation_agreement_ = float(doc["validation_agreement"])
    student.history_ = doc["history"]
    student.cascade_curve_ = doc["cascade_curve_validation"]
    student.cluster_labels_ = doc.get("cluster_labels")
    student.metrics_ = doc.get("metrics", {})
    return student


def stored_routing(doc: dict, path) -> str:
    """The routing signal of a student.json document (``"max"`` when the field is absent).

    Raises
    ------
    ValueError
        ``routing`` is not one of :data:`~gem_app.scale.cascade.SIGNALS`, or differs from
        the ``routing`` parameter recorded in ``params``.
    """
    routing = doc.get("routing", LEGACY_ROUTING)
    if not isinstance(routing, str) or routing not in SIGNALS:
        raise ValueError(f"{path}: routing must be one of {', '.join(SIGNALS)}, got {routing!r}")
    recorded = doc["params"].get("routing", routing)
    if recorded != routing:
        raise ValueError(
            f"{path}: routing {routing!r} differs from params.routing {recorded!r}; the "
            "threshold is on one signal only (retrain, or correct the file)"
        )
    return routing


def read_student_json(folder) -> dict:
    """Read and check ``folder/student.json`` (format and format_version)."""
    path = Path(folder) / STUDENT_JSON
    doc = read_versioned_json(
        path, kind="gem-student", version=FORMAT_VERSION, what="GEM student file"
    )
    if doc.get("hashing", {}).get("scheme") != HASH_SCHEME:
        raise ValueError(f"{path}: unknown hashing scheme {doc.get('hashing', {}).get('scheme')!r}")
    return doc
