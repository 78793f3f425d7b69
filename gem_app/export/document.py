"""Canonical mixture documents: domains of a fit, their weights, and the JSON that records them.

A *mixture document* is one versioned JSON object (schema: ``gem_app/export/mixture.schema.json``,
``schema_version`` an integer) holding the corpus, the GEM model, the mixing parameters and
summaries, and one entry per domain (id, stable slug ``name``, label, terms, parent, documents,
tokens, natural share, weight, multiplier, epochs, GIS, top human categories), plus the path and
sha256 of the assignments file it was built from. It is validated with ``jsonschema`` on write
and on read; a document of a newer schema version is refused.

Typical use::

    run = load_run("runs/debian")
    domains = domains_from_run(run, run_taxonomy(run))      # taxonomy leaves, or clusters
    report = mix_domains(domains, temperature=2.0, exclude=["3"], boost={"2": 1.5})
    doc = build_mixture_document(run, report, domains=domains)
    write_mixture(doc, "mix.json")                           # canonical (export.formats)
    write_mixture(doc, "mix.yaml", format="olmo", path_template="s3://b/{domain}/*.npy")
    materialize(run, doc, "shards/", format="parquet", content="text")   # export.shards

Domains come from :mod:`gem_app.export.domains`, training-stack formats and
:func:`~gem_app.export.formats.write_mixture` from :mod:`gem_app.export.formats`, shards from
:mod:`gem_app.export.shards`, mixtures saved in the workspace from :mod:`gem_app.export.saved`.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import jsonschema
import numpy as np

from gem_app.export.domains import DomainSet, domains_from_run
from gem_app.storage.runs import ASSIGNMENTS
from gem_app.taxonomy.tree import TAXONOMY_FILE
from gem_app.utils.files import file_sha256, read_json
from gem_app.version import __version__

__all__ = [
    "SCHEMA_PATH",
    "SCHEMA_VERSION",
    "build_mixture_document",
    "mixture_document",
    "read_mixture",
    "training_domains",
    "validate_mixture_document",
]

#: The schema version this build writes and the newest it reads.
SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).resolve().parent / "mixture.schema.json"


# ----------------------------------------------------------------------------- the document
def _number(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def mixture_document(
    domains: DomainSet,
    report,
    *,
    corpus: Mapping,
    model: Mapping,
    assignments: Mapping,
    created: str | None = None,
) -> dict:
    """Assemble (and validate) a mixture document from its parts.

    Parameters
    ----------
    domains : DomainSet
    report : gem_app.mixing.weights.MixingReport
        From :func:`mix_domains` on the same domains (arrays of shape (n_domains,)).
    corpus, model, assignments : mapping
        The ``corpus``, ``model`` and ``assignments`` sections (see the schema).
    created : str, optional
        ISO time; now (UTC) by default.

    Returns
    -------
    dict
        A valid mixture document.
    """
    n = len(domains)
    if report.weights.shape != (n,):
        raise ValueError(
            f"the mixing report has {report.weights.size} weights but there are {n} domains"
        )
    multipliers = getattr(report, "multipliers", None)
    if multipliers is None:
        multipliers = np.where(report.excluded, 0.0, 1.0)
    epochs = report.epochs if report.epochs is not None else np.zeros(n)
    entries = []
    for i, d in enumerate(domains.domains):
        entries.append(
            {
                "id": d.id,
                "name": d.name,
                "label": d.label,
                "terms": list(d.terms),
                "parent": d.parent,
                "level": int(d.level),
                "documents": int(d.documents),
                "tokens": int(d.tokens),
                "natural_share": float(report.natural_share[i]),
                "weight": float(report.weights[i]),
                "multiplier": float(0.0 if report.excluded[i] else multipliers[i]),
                "excluded": bool(report.excluded[i]),
                "epochs": float(epochs[i]) if np.isfinite(epochs[i]) else 0.0,
                "gis": float(d.gis),
                "top_categories": [[str(c), float(s)] for c, s in d.top_categories],
            }
        )
    tokens_total = int(sum(d.tokens for d in domains.domains))
    doc = {
        "schema_version": SCHEMA_VERSION,
        "kind": "gem-mixture",
        "created": created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "generator": f"gem_app {__version__}",
        "corpus": dict(corpus),
        "model": dict(model),
        "mixing": {
            "tau": float(report.temperature),
            "beta": float(report.gis_strength),
            "max_epochs": _number(report.max_epochs),
            "budget": float(report.budget if report.budget is not None else tokens_total),
            "entropy": max(float(report.entropy), 0.0),
            "effective_domains": max(float(report.effective_domains), 1.0),
            "kl_to_natural": max(float(report.kl_to_natural), 0.0),
            "domain_source": domains.source,
        },
        "domains": entries,
        "assignments": dict(assignments),
    }
    return validate_mixture_document(doc)


def build_mixture_document(
    run, report, *, taxonomy=None, domains: DomainSet | None = None, created: str | None = None
) -> dict:
    """The canonical mixture document of a fitted run and a mixing report.

    Parameters
    ----------
    run : gem_app.storage.runs.FitRun
    report : gem_app.mixing.weights.MixingReport
        Weights over ``domains`` (from :func:`mix_domains`).
    taxonomy : gem_app.taxonomy.tree.Taxonomy, optional
        Used to build the domains when ``domains`` is not given.
    domains : DomainSet, optional
        The domains the report was computed on (recomputed from the run when omitted).

    Returns
    -------
    dict
        Validated against ``gem_app/export/mixture.schema.json``.
    """
    if domains is None:
        domains = domains_from_run(run, taxonomy)
    meta = run.metadata
    model = run.model
    seed = model.random_state
    folder = Path(run.folder).resolve()
    assignments_path = folder / ASSIGNMENTS
    taxonomy_path = folder / TAXONOMY_FILE if domains.source == "taxonomy" else None
    has_taxonomy = taxonomy_path is not None and taxonomy_path.is_file()
    source = meta.get("data")
    corpus = {
        "name": Path(source).stem if source else folder.name,
        "source": source,
        "documents": int(len(domains.document_domain)),
        "tokens": int(sum(d.tokens for d in domains.domains)),
        "tokens_estimated": bool(meta.get("tokens_estimated", False)),
        "encoder": meta.get("encoder"),
        "anisotropy": _number(getattr(model, "anisotropy_", None)),
    }
    model_section = {
        "n_clusters": int(model.n_clusters),
        "balance": float(model.balance),
        "temperature": float(model.temperature),
        "seed": int(seed)
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)
        else None,
        "objective": _number(getattr(model, "objective_", None)),
        "concentration": str(model.concentration) if model.concentration is not None else None,
    }
    assignments = {
        "path": str(assignments_path),
        "sha256": file_sha256(assignments_path) if assignments_path.is_file() else None,
        "documents": int(len(domains.document_domain)),
        "taxonomy_path": str(taxonomy_path) if has_taxonomy else None,
        "taxonomy_sha256": file_sha256(taxonomy_path) if has_taxonomy else None,
    }
    return mixture_document(
        domains,
        report,
        corpus=corpus,
        model=model_section,
        assignments=assignments,
        created=created,
    )


@lru_cache(maxsize=1)
def _validator():
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def _where(error) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return path.lstrip(".") or "(document)"


def validate_mixture_document(doc) -> dict:
    """Check a mixture document against the schema and its own arithmetic; return it.

    Raises
    ------
    ValueError
        Not an object; ``schema_version`` missing, not an integer, or newer than
        :data:`SCHEMA_VERSION` (the message says which version this build reads); a schema
        violation (naming the field); weights that do not sum to 1; duplicate domain ids or
        names; an excluded domain with weight; document counts that do not add up.
    """
    if not isinstance(doc, Mapping):
        raise ValueError(f"a mixture document is a JSON object, got {type(doc).__name__}")
    version = doc.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"mixture schema_version must be an integer, got {version!r}")
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"mixture schema_version {version} is newer than this build of GEM Studio reads "
            f"(schema_version {SCHEMA_VERSION}); upgrade gem_app to read it"
        )
    errors = sorted(_validator().iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise ValueError(f"invalid mixture document at {_where(first)}: {first.message}{more}")
    domains = doc["domains"]
    for key in ("id", "name"):
        seen: set[str] = set()
        for i, d in enumerate(domains):
            if d[key] in seen:
                raise ValueError(f"domain {i} repeats the {key} {d[key]!r}")
            seen.add(d[key])
    total = math.fsum(d["weight"] for d in domains)
    if abs(total - 1.0) > 1e-9:
        raise ValueError(f"the domain weights sum to {total!r}, not 1")
    for d in domains:
        if d["excluded"] and d["weight"] != 0:
            raise ValueError(f"domain {d['id']} is excluded but has weight {d['weight']!r}")
    n_docs = sum(d["documents"] for d in domains)
    if n_docs != doc["assignments"]["documents"]:
        raise ValueError(
            f"the domains hold {n_docs} documents but the assignments have "
            f"{doc['assignments']['documents']}"
        )
    return dict(doc)


def read_mixture(path) -> dict:
    """Read and validate a canonical mixture JSON file (see :func:`validate_mixture_document`)."""
    doc = read_json(path, what="mixture document (JSON)")
    try:
        return validate_mixture_document(doc)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def training_domains(doc: Mapping) -> list[dict]:
    """The domains that are trained on (weight > 0), in domain order."""
    return [d for d in doc["domains"] if d["weight"] > 0]
