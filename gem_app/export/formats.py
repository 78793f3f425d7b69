"""Render a mixture document for a training stack (DoReMi, RegMix, Megatron-LM, OLMo-core, ...).

Every writer takes a validated mixture document (see :mod:`gem_app.export.document`) and returns text.
They all list the *training domains* (weight > 0) in domain order under their slug ``name``,
with weights copied as Python floats so that JSON and YAML parsers read back the very same
numbers (``repr`` round-trips exactly):

- ``gem``: the canonical JSON document itself.
- ``doremi``: ``{"train_domain_weights": {name: w}, "eval_domain_weights": {name: v}}``.
- ``regmix``: YAML with ``train:`` and ``valid:`` maps ``{name: weight}``.
- ``megatron``: ``--data-path w1 p1 w2 p2 ...`` (one line; ``p = path_template`` per domain).
- ``olmo``: YAML that ai2-olmo-core 3.0 (``olmo_core.data.source_mixture``) loads with
  ``SourceMixtureDatasetConfig.from_yaml`` / ``from_dict``: ``source_list: {sources: [...]}``
  of ``source_name``, ``target_ratio``, ``paths``, ``max_repetition_ratio``,
  ``max_source_fraction``, then ``requested_tokens`` (the budget), ``global_batch_size``
  (tokens; :data:`DEFAULT_GLOBAL_BATCH_SIZE` unless given) and ``seed``. The epoch cap ``E``
  becomes ``max_repetition_ratio = E`` when ``E >= 1``, else ``max_source_fraction = E``.
  (OLMo-core before 3.0 read a flat ``source_configs`` list; that layout is refused by 3.0.)
- ``hf``: JSON for ``datasets.interleave_datasets``: ``domains``, ``probabilities`` (same
  order), ``data_files``, ``seed``, ``stopping_strategy``.
- ``weborganizer``: ``[{"domain": name, "weight": w}, ...]``.

Evaluation weights (DoReMi ``eval_domain_weights``, RegMix ``valid:``) are by default the
natural token shares of the training domains, renormalised (``eval_weights="natural"``);
``"train"`` repeats the training weights and ``"uniform"`` gives each domain ``1/n``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import yaml

from gem_app.export.document import training_domains, validate_mixture_document
from gem_app.utils.files import atomic_open
from gem_app.utils.validation import check_int

__all__ = [
    "DEFAULT_GLOBAL_BATCH_SIZE",
    "DEFAULT_PATH_TEMPLATE",
    "FORMATS",
    "FORMAT_WRITERS",
    "OLMO_CORE_VERSION",
    "expand_path",
    "render_mixture",
    "write_mixture",
]

DEFAULT_PATH_TEMPLATE = "{domain}"
#: OLMo-core ``global_batch_size`` in tokens when none is given: 2**22 (1024 sequences of 4096,
#: the OLMo 2 recipe), a multiple of every power-of-two sequence length up to 4M.
DEFAULT_GLOBAL_BATCH_SIZE = 4 * 1024 * 1024
#: The OLMo-core release whose loader the ``olmo`` format is written for (and tested against).
OLMO_CORE_VERSION = "3.0"
_EVAL_CHOICES = ("natural", "train", "uniform")
_SPACE = re.compile(r"\s")


def expand_path(template: str, name: str) -> str:
    """``template`` with ``{domain}`` replaced by ``name``; no whitespace allowed in the result."""
    if not isinstance(template, str) or "{domain}" not in template:
        raise ValueError(f"path template {template!r} must contain the placeholder {{domain}}")
    path = template.replace("{domain}", name)
    if _SPACE.search(path):
        raise ValueError(f"path template {template!r} gives a path with whitespace: {path!r}")
    return path


def _training(doc: Mapping) -> list[dict]:
    domains = training_domains(doc)
    if not domains:
        raise ValueError("the mixture has no domain with positive weight")
    return domains


def _eval_weights(domains: list[dict], eval_weights: str) -> list[float]:
    if eval_weights not in _EVAL_CHOICES:
        raise ValueError(
            f"eval_weights must be one of {', '.join(_EVAL_CHOICES)}, got {eval_weights!r}"
        )
    if eval_weights == "train":
        return [float(d["weight"]) for d in domains]
    if eval_weights == "uniform":
        return [1.0 / len(domains)] * len(domains)
    total = math.fsum(d["natural_share"] for d in domains)
    if total <= 0:
        raise ValueError("the training domains have no natural share: use eval_weights='train'")
    return [float(d["natural_share"]) / total for d in domains]


def _dump_json(obj) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _dump_yaml(obj, header: str) -> str:
    body = yaml.safe_dump(obj, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return header + body


def _gem(doc: Mapping, **_) -> str:
    return _dump_json(doc)


def _doremi(doc: Mapping, *, eval_weights: str = "natural", **_) -> str:
    domains = _training(doc)
    evals = _eval_weights(domains, eval_weights)
    return _dump_json(
        {
            "train_domain_weights": {d["name"]: float(d["weight"]) for d in domains},
            "eval_domain_weights": {d["name"]: v for d, v in zip(domains, evals, strict=True)},
        }
    )


def _regmix(doc: Mapping, *, eval_weights: str = "natural", **_) -> str:
    domains = _training(doc)
    evals = _eval_weights(domains, eval_weights)
    header = f"# RegMix data mixture from GEM Studio ({doc['corpus']['name']}, tau={doc['mixing']['tau']!r})\n"
    return _dump_yaml(
        {
            "train": {d["name"]: float(d["weight"]) for d in domains},
            "valid": {d["name"]: v for d, v in zip(domains, evals, strict=True)},
        },
        header,
    )


def _megatron(doc: Mapping, *, path_template: str | None = None, **_) -> str:
    template = path_template or DEFAULT_PATH_TEMPLATE
    parts = ["--data-path"]
    for d in _training(doc):
        parts += [repr(float(d["weight"])), expand_path(template, d["name"])]
    return " ".join(parts) + "\n"


def _olmo_limits(domain: Mapping, max_epochs) -> tuple[float, float]:
    """OLMo's ``(max_repetition_ratio, max_source_fraction)`` for a domain.

    With an epoch cap ``E``: ``(E, 1)`` when ``E >= 1``, ``(1, E)`` below one epoch (OLMo
    requires a repetition ratio >= 1). Without a cap: enough repetitions for the domain's
    epochs (rounded up to 1e-6 so that OLMo's integer token counts never fall short).
    """
    if max_epochs is not None:
        cap = float(max_epochs)
        return (cap, 1.0) if cap >= 1 else (1.0, cap)
    return float(max(1.0, math.ceil(domain["epochs"] * 1e6) / 1e6)), 1.0


def _olmo(doc: Mapping, *, path_template: str | None = None, global_batch_size=None, **_) -> str:
    template = path_template or DEFAULT_PATH_TEMPLATE
    batch = DEFAULT_GLOBAL_BATCH_SIZE if global_batch_size is None else global_batch_size
    check_int(batch, "global_batch_size", minimum=1)
    mixing = doc["mixing"]
    requested = int(round(mixing["budget"]))
    if requested < 1:
        raise ValueError(
            f"OLMo-core needs requested_tokens >= 1; the budget is {mixing['budget']!r}"
        )
    seed = doc["model"].get("seed")
    sources = []
    for d in _training(doc):
        repetition, fraction = _olmo_limits(d, mixing["max_epochs"])
        sources.append(
            {
                "source_name": d["name"],
                "target_ratio": float(d["weight"]),
                "paths": [expand_path(template, d["name"])],
                "max_repetition_ratio": repetition,
                "max_source_fraction": fraction,
            }
        )
    config = {
        "source_list": {"sources": sources},
        "requested_tokens": requested,
        "global_batch_size": int(batch),
        "seed": int(seed) if seed is not None else 0,
    }
    header = (
        f"# OLMo-core SourceMixtureDatasetConfig (ai2-olmo-core {OLMO_CORE_VERSION}) from GEM Studio\n"
        "# load: SourceMixtureDatasetConfig.from_yaml(path); global_batch_size is in tokens:\n"
        "# set it to your trainer's (a multiple of the sequence length).\n"
    )
    return _dump_yaml(config, header)


def _hf(doc: Mapping, *, path_template: str | None = None, **_) -> str:
    domains = _training(doc)
    template = path_template or DEFAULT_PATH_TEMPLATE + ".parquet"
    seed = doc["model"].get("seed")
    return _dump_json(
        {
            "domains": [d["name"] for d in domains],
            "probabilities": [float(d["weight"]) for d in domains],
            "data_files": {d["name"]: expand_path(template, d["name"]) for d in domains},
            "seed": int(seed) if seed is not None else 0,
            "stopping_strategy": "all_exhausted",
        }
    )


def _weborganizer(doc: Mapping, **_) -> str:
    return _dump_json([{"domain": d["name"], "weight": float(d["weight"])} for d in _training(doc)])


FORMAT_WRITERS: dict[str, Callable[..., str]] = {
    "gem": _gem,
    "doremi": _doremi,
    "regmix": _regmix,
    "megatron": _megatron,
    "olmo": _olmo,
    "hf": _hf,
    "weborganizer": _weborganizer,
}


#: Output formats of :func:`write_mixture`.
FORMATS = tuple(FORMAT_WRITERS)


def render_mixture(
    doc: Mapping,
    format: str = "gem",
    *,
    path_template: str | None = None,
    eval_weights="natural",
    global_batch_size: int | None = None,
) -> str:
    """Validate a mixture document and return its text in ``format``.

    Parameters
    ----------
    doc : mapping
        A mixture document (:mod:`gem_app.export.document`).
    format : str
        One of :data:`FORMATS`: ``gem, doremi, regmix, megatron, olmo, hf, weborganizer``.
    path_template : str, optional
        Data path per domain for Megatron, OLMo and HF, with ``{domain}`` for the domain name
        (default ``{domain}``; ``{domain}.parquet`` for HF).
    eval_weights : {"natural", "train", "uniform"}
        Evaluation weights of DoReMi and RegMix.
    global_batch_size : int, optional
        OLMo-core's global batch size in tokens (default :data:`DEFAULT_GLOBAL_BATCH_SIZE`).
    """
    writer = FORMAT_WRITERS.get(format)
    if writer is None:
        raise ValueError(
            f"unknown export format {format!r}: expected one of {', '.join(FORMAT_WRITERS)}"
        )
    if path_template is not None:
        expand_path(path_template, "domain")  # fail early on a bad template
    return writer(
        validate_mixture_document(doc),
        path_template=path_template,
        eval_weights=eval_weights,
        global_batch_size=global_batch_size,
    )


def write_mixture(doc: Mapping, path, format: str = "gem", **options) -> Path:
    """Validate ``doc`` and write it to ``path`` in ``format``, atomically; return the path.

    Options as :func:`render_mixture` (``path_template``, ``eval_weights``,
    ``global_batch_size``).
    """
    text = render_mixture(doc, format, **options)
    path = Path(path)
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path
