"""GEM model files: safetensors for the arrays, JSON for everything else (never pickle).

``model.safetensors`` holds the fitted arrays (float64); ``model.json`` the parameters,
the sphere transform's scalars, the objective history, masses and concentrations (for
people reading the file), free-form ``metadata``, and ``safetensors_sha256``, the SHA-256
of the tensor file it was saved with. Both are written atomically, the JSON last; loading
checks the tensor file against that checksum, so a tensor file of another save (even one
of the same shapes) is refused instead of silently paired with the wrong parameters.
Files saved before the checksum was recorded are still read (without that check).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from gem_app.core.sphere import SphereTransform
from gem_app.utils.files import atomic_path, file_sha256, read_versioned_json, write_json

__all__ = ["FORMAT_VERSION", "MODEL_JSON", "MODEL_TENSORS", "load_model", "save_model"]

FORMAT_VERSION = 1
MODEL_JSON = "model.json"
MODEL_TENSORS = "model.safetensors"
_REQUIRED = {
    "params": dict,
    "n_features_in": int,
    "anisotropy": (int, float),
    "sphere": dict,
    "objective": (int, float),
    "objective_history": list,
    "n_iter": int,
    "converged": bool,
    "reseeded": list,
    "metadata": dict,
}


def save_model(model, path, *, metadata=None) -> Path:
    """Write ``path/model.safetensors`` and ``path/model.json`` of a fitted GEM, atomically.

    ``metadata``: extra JSON-serialisable information stored under "metadata".
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    state = model.transform_.get_state()
    tensors = {
        "mean_directions": model.mean_directions_,
        "concentrations": model.concentrations_,
        "cluster_masses": model.cluster_masses_,
        "dual": model.dual_,
        "prior": model.prior_,
        "sphere_mean": np.asarray(state["mean_"], dtype=np.float64),
    }
    if state.get("whitening_") is not None:
        tensors["sphere_whitening"] = np.asarray(state["whitening_"], dtype=np.float64)
    tensors = {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in tensors.items()}
    params = model.get_params()
    params.pop("callback")
    params["prior"] = None if model.prior is None else np.asarray(model.prior).tolist()
    params["init"] = model.init if isinstance(model.init, str) else "array"
    params["random_state"] = (
        model.random_state if isinstance(model.random_state, int | type(None)) else "object"
    )
    doc = {
        "format": "gem-model",
        "format_version": FORMAT_VERSION,
        "params": params,
        "n_features_in": model.n_features_in_,
        "anisotropy": model.anisotropy_,
        "sphere": {
            k: v for k, v in state.items() if not isinstance(v, np.ndarray) and v is not None
        },
        "objective": model.objective_,
        "objective_history": list(map(float, model.objective_history_)),
        "n_iter": model.n_iter_,
        "converged": model.converged_,
        "reseeded": [list(map(int, ev)) for ev in model.reseeded_],
        "cluster_masses": model.cluster_masses_.tolist(),
        "concentrations": model.concentrations_.tolist(),
        "metadata": metadata or {},
    }
    with atomic_path(folder / MODEL_TENSORS) as tmp:
        save_file(tensors, str(tmp))
        doc["safetensors_sha256"] = file_sha256(tmp)
    write_json(folder / MODEL_JSON, doc)
    return folder


def load_model(cls, path):
    """Load a model written by :func:`save_model` as an instance of ``cls`` (checks format and shapes)."""
    folder = Path(path)
    meta_path, tensor_path = folder / MODEL_JSON, folder / MODEL_TENSORS
    for p in (meta_path, tensor_path):
        if not p.is_file():
            raise ValueError(f"{p} is missing: not a saved GEM model folder")
    doc = read_model_json(meta_path)
    expected_sha = doc.get("safetensors_sha256")
    if expected_sha is not None and file_sha256(tensor_path) != expected_sha:
        raise ValueError(
            f"{tensor_path} does not belong to {meta_path} (its SHA-256 differs from the one "
            "recorded when the model was saved): the folder mixes files of two saves; "
            "restore both files of one save, or refit"
        )
    try:
        t = load_file(str(tensor_path))
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"{tensor_path} cannot be read: {exc}") from None
    params = dict(doc["params"])
    if params.get("init") == "array":
        params["init"] = "k-means++"
    if params.get("random_state") == "object":
        params["random_state"] = None
    known = set(cls().get_params())
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(
            f"{meta_path}: unknown parameter(s) {', '.join(map(repr, unknown))} in 'params' "
            f"(a {cls.__name__} has {', '.join(sorted(known))}); the file was written by "
            "another program or edited"
        )
    model = cls(**params)
    K, d = params.get("n_clusters"), doc["n_features_in"]
    expected = {
        "mean_directions": (K, d),
        "concentrations": (K,),
        "cluster_masses": (K,),
        "dual": (K,),
        "prior": (K,),
        "sphere_mean": (d,),
    }
    for name, shape in expected.items():
        if name not in t or t[name].shape != shape:
            got = t[name].shape if name in t else "missing"
            raise ValueError(f"{tensor_path}: tensor {name!r} should be {shape}, is {got}")
    state = dict(doc["sphere"])
    state["mean_"] = t["sphere_mean"]
    state["whitening_"] = t.get("sphere_whitening")
    try:
        model.transform_ = SphereTransform.from_state(state)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{meta_path}: invalid 'sphere' section ({exc!r})") from None
    model.mean_directions_ = t["mean_directions"]
    model.concentrations_ = t["concentrations"]
    model.cluster_masses_ = t["cluster_masses"]
    model.dual_ = t["dual"]
    model.prior_ = t["prior"]
    model.anisotropy_ = float(doc["anisotropy"])
    model.objective_ = float(doc["objective"])
    model.objective_history_ = list(doc["objective_history"])
    model.n_iter_ = int(doc["n_iter"])
    model.converged_ = bool(doc["converged"])
    model.reseeded_ = [tuple(ev) for ev in doc["reseeded"]]
    model.n_features_in_ = d
    return model


def read_model_json(path) -> dict:
    """The model.json document at ``path``, with every field :func:`load_model` needs.

    Raises
    ------
    ValueError
        Naming the file: not JSON, not an object, another format or version, or a missing
        or mistyped field (``params``, ``metadata``...).
    """
    doc = read_versioned_json(path, kind="gem-model", version=FORMAT_VERSION, what="GEM model file")
    for key, kind in _REQUIRED.items():
        if key not in doc:
            raise ValueError(f"{path}: not a complete GEM model file ('{key}' is missing)")
        if not isinstance(doc[key], kind) or (kind is int and isinstance(doc[key], bool)):
            raise ValueError(
                f"{path}: not a valid GEM model file ('{key}' is a {type(doc[key]).__name__})"
            )
    return doc
