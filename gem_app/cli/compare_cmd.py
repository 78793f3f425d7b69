"""``gem compare DIR [--label-col COL] [--baselines all]``: GEM and baselines against a taxonomy.

Writes ``DIR/compare.json`` with every metric of GEM and of each requested baseline
(agreement with the human column, balance, largest share, outliers, wall time) plus
the full comparison (contingency tables and misalignment report) of each method, and
prints a table and GEM's misalignment report.
"""

from __future__ import annotations

import numpy as np

from gem_app.cli.fit_cmd import MAX_SEED
from gem_app.evaluate.baselines import BASELINES, cluster_balance, run_baseline
from gem_app.evaluate.compare import compare_labels
from gem_app.io.corpus import load_corpus
from gem_app.storage.runs import load_run
from gem_app.utils.files import check_writable_dir, write_json
from gem_app.utils.validation import check_int

COMPARE_FILE = "compare.json"
_SHOWN = 10  # lines per part of the misalignment report


def register(sub) -> None:
    p = sub.add_parser(
        "compare", help="compare GEM's clusters and baselines with a human label column"
    )
    p.add_argument("run_dir", metavar="DIR", help="run folder written by `gem fit`")
    p.add_argument(
        "--label-col",
        default=None,
        help="human taxonomy column of the data file (default: the run's mapped label column)",
    )
    p.add_argument(
        "--baselines",
        default="all",
        help=f"'all', 'none' or a comma-separated list of: {', '.join(BASELINES)}",
    )
    p.add_argument("--seed", type=int, default=0, help="random_state of the baselines")
    p.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="a category/cluster is reported as split/mixed below this largest share",
    )
    p.set_defaults(handler=run)


def parse_baselines(text: str) -> list[str]:
    """'all' | 'none' | 'a,b' -> list of baseline names (ValueError naming an unknown one)."""
    text = text.strip()
    if text == "all":
        return list(BASELINES)
    if text in ("none", ""):
        return []
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        if name not in BASELINES:
            raise ValueError(
                f"unknown baseline {name!r} in --baselines; choose 'all', 'none' or from "
                f"{', '.join(BASELINES)}"
            )
    return list(dict.fromkeys(names))


def human_labels(fit, label_col: str | None) -> tuple[str, np.ndarray]:
    """(column name, labels aligned with the run's documents)."""
    mapped = fit.metadata["columns"].get("label")
    if label_col is None or label_col == mapped:
        if mapped is None or "label" not in fit.frame:
            raise ValueError(f"{fit.folder}: the run has no label column; pass --label-col COLUMN")
        return mapped, fit.frame["label"].to_numpy(dtype=object)
    cols = fit.metadata["columns"]
    corpus = load_corpus(
        fit.metadata["data"],
        text_col=cols["text"],
        id_col=cols["id"],
        label_col=label_col,
        tokens_col=cols.get("tokens"),
    )
    by_id = corpus.frame.set_index("id")["label"]
    missing = fit.frame["id"][~fit.frame["id"].isin(by_id.index)]
    if len(missing):
        raise ValueError(
            f"document id {missing.iloc[0]!r} of the run is not a valid row of "
            f"{fit.metadata['data']} when reading column {label_col!r}"
        )
    return label_col, by_id.loc[fit.frame["id"]].to_numpy(dtype=object)


def method_entry(labels, human, weights, n_clusters, seconds, threshold) -> dict:
    """Every metric of one clustering, plus its full comparison."""
    result = compare_labels(labels, human, weights=weights, threshold=threshold)
    comparison = result.to_dict()
    shape = cluster_balance(labels, weights, n_clusters=n_clusters)
    n_outliers = int((np.asarray(labels) < 0).sum())
    return {
        "metrics": {**comparison["metrics"], **shape, "n_outliers": n_outliers, "seconds": seconds},
        "comparison": comparison,
    }


def run(args) -> int:
    names = parse_baselines(args.baselines)
    if not 0 < args.threshold <= 1:
        raise ValueError(f"--threshold must be in (0, 1], got {args.threshold}")
    check_int(args.seed, "--seed", minimum=0, maximum=MAX_SEED)
    fit = load_run(args.run_dir)
    check_writable_dir(fit.folder, "the run folder")  # before the baselines run
    column, human = human_labels(fit, args.label_col)
    weights = fit.frame["tokens"].to_numpy(dtype=np.float64)
    K = fit.model.n_clusters
    gem_labels = fit.assignments["cluster"].to_numpy(dtype=np.int64)
    methods = {"gem": method_entry(gem_labels, human, weights, K, None, args.threshold)}
    for name in names:
        result = run_baseline(
            name, fit.embeddings, K, sample_weight=weights, random_state=args.seed
        )
        methods[name] = method_entry(
            result.labels, human, weights, K, result.seconds, args.threshold
        )
    doc = {
        "run": str(fit.folder),
        "label_column": column,
        "n_documents": len(gem_labels),
        "n_clusters": K,
        "seed": args.seed,
        "baselines": names,
        "methods": methods,
        "misalignment": {
            "split_categories": methods["gem"]["comparison"]["split_categories"],
            "mixed_clusters": methods["gem"]["comparison"]["mixed_clusters"],
        },
    }
    write_json(fit.folder / COMPARE_FILE, doc)
    print(report(doc))
    print(f"written to {fit.folder / COMPARE_FILE}")
    return 0


_COLUMNS = [
    ("ami", "AMI", "{:.4f}"),
    ("nmi", "NMI", "{:.4f}"),
    ("ari", "ARI", "{:.4f}"),
    ("purity", "purity", "{:.3f}"),
    ("balance", "balance", "{:.3f}"),
    ("largest_share", "largest", "{:.3f}"),
    ("outlier_share", "outliers", "{:.3f}"),
    ("n_clusters_found", "clusters", "{:d}"),
]


def report(doc: dict) -> str:
    """The metrics table and GEM's misalignment report, as text."""
    lines = [
        f"{doc['n_documents']} documents, K = {doc['n_clusters']}, human column "
        f"{doc['label_column']!r}",
        f"{'method':<17}"
        + "".join(f"{title:>10}" for _, title, _ in _COLUMNS)
        + f"{'seconds':>10}",
    ]
    for name, entry in doc["methods"].items():
        m = entry["metrics"]
        cells = "".join(f"{fmt.format(m[key]):>10}" for key, _, fmt in _COLUMNS)
        seconds = "-" if m["seconds"] is None else f"{m['seconds']:.1f}"
        lines.append(f"{name:<17}{cells}{seconds:>10}")
    split = doc["misalignment"]["split_categories"]
    mixed = doc["misalignment"]["mixed_clusters"]
    lines.append(f"GEM misalignment: {len(split)} split categories, {len(mixed)} mixed clusters")
    for item in split[:_SHOWN]:
        where = ", ".join(f"{c['cluster']} ({c['share']:.0%})" for c in item["clusters"])
        lines.append(f"  category {item['category']!r} is split over clusters {where}")
    for item in mixed[:_SHOWN]:
        what = ", ".join(f"{c['category']} ({c['share']:.0%})" for c in item["categories"])
        lines.append(f"  cluster {item['cluster']} mixes {what}")
    return "\n".join(lines)
