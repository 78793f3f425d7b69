"""Clustering quality on the bundled sample: GEM settings against every baseline.

Usage (from the repository root)::

    .venv/bin/python bench/quality.py                      # full matrix, writes docs/quality.md
    .venv/bin/python bench/quality.py --ks 16 --seeds 0 1 --no-write

For each K and seed, every method is fitted on the same 80% of the documents (token
counts as masses wherever the method takes weights) and measured on those documents
against the human ``section`` column: AMI, NMI, ARI; the normalised entropy of the
cluster masses (balance), the share of the largest cluster and of outliers; the
mean pairwise ARI between the seeds' labelings (stability); the mean log-likelihood of
the held-out 20% under the method's vMF mixture; and wall time. GEM's mixture is its own
(mu, kappa) with the cluster masses as weights; every other method's mixture is one
maximum-likelihood vMF per cluster of its hard labels (outliers as one more component)
on the same anisotropy-corrected sphere, weighted by the clusters' masses.

Every finished fit is appended to a JSON-lines cache (``--cache``), so an interrupted
run resumes where it stopped. Only the part of docs/quality.md between the RESULTS
markers is rewritten; the text around it is kept.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn import metrics

from gem_app.core.gem import GEM
from gem_app.core.sphere import SphereTransform
from gem_app.core.vmf_em import fit_vmf_to_labels, vmf_log_likelihood
from gem_app.evaluate.baselines import cluster_balance, run_baseline, seed_stability
from gem_app.io.corpus import load_corpus
from gem_app.io.embeddings import load_embeddings

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- BEGIN RESULTS -->", "<!-- END RESULTS -->"
DEFAULT = "gem tied λ=1"  # GEM() defaults: concentration="tied", balance=1.0


def gem_methods(balances_tied, balances_per_cluster) -> dict:
    out = {f"gem tied λ={b:g}": ("tied", b) for b in balances_tied}
    out.update({f"gem per-cluster λ={b:g}": ("per-cluster", b) for b in balances_per_cluster})
    return out


def fit_one(method, gem_setting, K, seed, X_tr, w_tr, X_te) -> dict:
    """Fit one method on the training rows; labels, held-out log-likelihood, seconds."""
    if gem_setting is not None:
        concentration, balance = gem_setting
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = GEM(K, balance=balance, concentration=concentration, random_state=seed)
            model.fit(X_tr, sample_weight=w_tr)
        seconds = time.perf_counter() - start
        x_te = np.asarray(model.transform(X_te), dtype=np.float64)
        ll = vmf_log_likelihood(
            x_te, model.mean_directions_, model.concentrations_, np.log(model.cluster_masses_)
        )
        return {
            "labels": model.labels_.tolist(),
            "heldout_ll": float(ll.mean()),
            "seconds": seconds,
        }
    result = run_baseline(method, X_tr, K, sample_weight=w_tr, random_state=seed)
    if method == "vmf-em":
        ll = result.model.score_samples(X_te)
    else:
        sphere = SphereTransform().fit(X_tr, sample_weight=w_tr)
        _, mu, kappa, weights = fit_vmf_to_labels(
            sphere.transform(X_tr), result.labels, w_tr, "per-cluster"
        )
        with np.errstate(divide="ignore"):
            ll = vmf_log_likelihood(sphere.transform(X_te), mu, kappa, np.log(weights))
    return {
        "labels": result.labels.tolist(),
        "heldout_ll": float(ll.mean()),
        "seconds": result.seconds,
    }


def summarise(runs: list[dict], y, w, K) -> dict:
    """Mean metrics over seeds plus stability, for one (K, method)."""
    rows = []
    for run in runs:
        labels = np.asarray(run["labels"])
        bal = cluster_balance(labels, w, n_clusters=K)
        rows.append(
            {
                "ami": metrics.adjusted_mutual_info_score(y, labels),
                "nmi": metrics.normalized_mutual_info_score(y, labels),
                "ari": metrics.adjusted_rand_score(y, labels),
                "balance": bal["balance"],
                "largest": bal["largest_share"],
                "outliers": bal["outlier_share"],
                "clusters": bal["n_clusters_found"],
                "heldout_ll": run["heldout_ll"],
                "seconds": run["seconds"],
            }
        )
    out = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
    out["ami_std"] = float(np.std([r["ami"] for r in rows]))
    out["stability"] = (
        seed_stability([r["labels"] for r in runs]) if len(runs) > 1 else float("nan")
    )
    out["n_seeds"] = len(runs)
    return out


COLUMNS = [
    ("K", "{:d}"),
    ("method", "{}"),
    ("AMI", "{:.4f}"),
    ("±", "{:.4f}"),
    ("NMI", "{:.4f}"),
    ("ARI", "{:.4f}"),
    ("balance", "{:.4f}"),
    ("largest", "{:.3f}"),
    ("outliers", "{:.3f}"),
    ("clusters", "{:.1f}"),
    ("stability", "{:.3f}"),
    ("held-out LL", "{:.2f}"),
    ("seconds", "{:.1f}"),
    ("seeds", "{:d}"),
]
KEYS = [
    "K",
    "method",
    "ami",
    "ami_std",
    "nmi",
    "ari",
    "balance",
    "largest",
    "outliers",
    "clusters",
    "stability",
    "heldout_ll",
    "seconds",
    "n_seeds",
]


def markdown_table(table: list[dict]) -> str:
    head = "| " + " | ".join(c for c, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---" if c == "method" else "---:" for c, _ in COLUMNS) + "|"
    lines = [head, rule]
    for row in table:
        cells = [fmt.format(row[key]) for (_, fmt), key in zip(COLUMNS, KEYS, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


K_FREE = {"bertopic"}  # methods whose number of clusters is not K


def _goal_lines(K, rows, base, gem_names, scope) -> list[str]:
    best_name = max(base, key=lambda m: base[m]["ami"])
    best_ami = base[best_name]["ami"]
    lines = [f"K = {K}, against {scope}: best AMI {best_ami:.4f} ({best_name})."]
    for name in [n for n in gem_names if n in rows]:
        r = rows[name]
        checks = (
            ("AMI within 0.005", r["ami"] >= best_ami - 0.005),
            ("balance higher", all(r["balance"] > b["balance"] for b in base.values())),
            ("stability higher", all(r["stability"] > b["stability"] for b in base.values())),
        )
        marks = ", ".join(f"{label} {'yes' if ok else 'NO'}" for label, ok in checks)
        flag = " (default)" if name == DEFAULT else ""
        lines.append(
            f"- {name}{flag}: AMI {r['ami']:.4f} ({r['ami'] - best_ami:+.4f}), balance "
            f"{r['balance']:.4f}, stability {r['stability']:.3f}: {marks}."
        )
    return lines


def goal_check(table: list[dict], gem_names: list[str]) -> list[str]:
    """For each K and GEM setting: the goals of the issue, met or not, with the numbers.

    Checked twice: against every baseline, and against the baselines fitted at the same K
    (BERTopic chooses its own number of clusters, and AMI grows with it).
    """
    lines = []
    for K in sorted({row["K"] for row in table}):
        rows = {row["method"]: row for row in table if row["K"] == K}
        base = {m: r for m, r in rows.items() if not m.startswith("gem")}
        same_k = {m: r for m, r in base.items() if m not in K_FREE}
        if base:
            lines += _goal_lines(K, rows, base, gem_names, "every baseline")
        if same_k and len(same_k) < len(base):
            lines += _goal_lines(K, rows, same_k, gem_names, "the baselines at the same K")
    return lines


def write_doc(path: Path, command: str, table: list[dict], checks: list[str], info: str) -> None:
    block = "\n".join(
        [
            BEGIN,
            f"Command: `{command}`",
            "",
            info,
            "",
            markdown_table(table),
            "",
            "Goals for GEM (AMI within 0.005 of the best baseline, balance and stability above every baseline):",
            "",
            *checks,
            END,
        ]
    )
    text = path.read_text(encoding="utf-8") if path.exists() else "# Clustering quality\n\n"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT / "sample_data/debian_packages.parquet"))
    p.add_argument("--embeddings", default=str(ROOT / "sample_data/embeddings.npy"))
    p.add_argument("--label-col", default="section")
    p.add_argument("--tokens-col", default="tokens")
    p.add_argument("--ks", type=int, nargs="+", default=[16, 48])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--balances-tied", type=float, nargs="*", default=[0.0, 1.0, 10.0])
    p.add_argument("--balances-per-cluster", type=float, nargs="*", default=[0.0, 1.0])
    p.add_argument(
        "--baselines", nargs="*", default=["kmeans", "spherical-kmeans", "vmf-em", "bertopic"]
    )
    p.add_argument("--holdout", type=float, default=0.2)
    p.add_argument("--cache", default="/tmp/gem_quality_runs.jsonl")
    p.add_argument("--out", default=str(ROOT / "docs/quality.md"))
    p.add_argument(
        "--max-minutes", type=float, default=float("inf"), help="start no new fit after this"
    )
    p.add_argument("--no-write", action="store_true", help="print the table only")
    args = p.parse_args(argv)

    corpus = load_corpus(args.data, label_col=args.label_col, tokens_col=args.tokens_col)
    X = load_embeddings(args.embeddings)[corpus.source_rows].astype(np.float32)
    y = corpus.frame["label"].astype(str).to_numpy()
    w = corpus.frame["tokens"].to_numpy(dtype=np.float64)
    order = np.random.default_rng(12345).permutation(len(X))
    n_test = int(round(args.holdout * len(X)))
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    X_tr, X_te, y_tr, w_tr = X[train], X[test], y[train], w[train]

    cache_path = Path(args.cache)
    done = {}
    if cache_path.exists():
        for line in cache_path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            done[(rec["K"], rec["method"], rec["seed"])] = rec
    gems = gem_methods(args.balances_tied, args.balances_per_cluster)
    # Baselines and GEM's default first (every K), then the other GEM settings, so that a
    # run stopped by --max-minutes has the most important rows complete.
    first = [
        (K, m)
        for m in [*args.baselines, DEFAULT]
        if m in gems or m in args.baselines
        for K in args.ks
    ]
    rest = [(K, m) for m in gems if m != DEFAULT for K in args.ks]
    deadline = time.monotonic() + 60.0 * args.max_minutes
    for K, method in first + rest:
        for seed in args.seeds:
            key = (K, method, seed)
            if key in done:
                continue
            reuse = [r for (_, m, s), r in done.items() if m == "bertopic" == method and s == seed]
            if reuse:  # BERTopic does not take K: the same fit serves every K
                rec = {k: reuse[0][k] for k in ("labels", "heldout_ll", "seconds")}
            elif time.monotonic() > deadline:
                continue
            else:
                rec = fit_one(method, gems.get(method), K, seed, X_tr, w_tr, X_te)
            done[key] = {"K": K, "method": method, "seed": seed, **rec}
            with cache_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(done[key]) + "\n")
            print(f"K={K} {method} seed={seed}: {rec['seconds']:.1f}s", file=sys.stderr, flush=True)
    table = []
    for K in args.ks:
        for method in [*args.baselines, *gems]:
            runs = [done[(K, method, s)] for s in args.seeds if (K, method, s) in done]
            if runs:
                table.append({"K": K, "method": method, **summarise(runs, y_tr, w_tr, K)})
    print(markdown_table(table))
    checks = goal_check(table, list(gems))
    print("\n".join(checks))
    if not args.no_write:
        info = (
            f"Data: {Path(args.data).name}, {len(train)} training / {len(test)} held-out documents, "
            f"d = {X.shape[1]}, {len(np.unique(y))} human categories ({args.label_col}); "
            f"seeds {args.seeds}; means over seeds."
        )
        command = "python bench/quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_doc(Path(args.out), command.strip(), table, checks, info)
        print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
