"""``gem fit DATA --k K --out DIR``: fit GEM to a corpus and write a run folder."""

from __future__ import annotations

import sys

import numpy as np

from gem_app.cli.arguments import add_corpus_arguments
from gem_app.cli.progress import counting_callback, progress_bar
from gem_app.storage.runs import check_run_target, fit_corpus
from gem_app.taxonomy.labels import cluster_labels
from gem_app.utils.validation import check_int

#: numpy/scikit-learn seeds: 0 .. 2**32 - 1
MAX_SEED = 2**32 - 1


def register(sub) -> None:
    p = sub.add_parser("fit", help="fit GEM to a corpus and write DIR/model.* and assignments")
    add_corpus_arguments(p)
    p.add_argument("--k", type=int, required=True, help="number of clusters")
    p.add_argument("--balance", type=float, default=1.0, help="lambda, mixing-balance strength")
    p.add_argument("--temperature", type=float, default=1.0, help="T, assignment temperature")
    p.add_argument("--concentration", choices=["tied", "per-cluster"], default="tied")
    p.add_argument("--max-iter", type=int, default=100)
    p.add_argument("--n-init", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--no-center",
        dest="center",
        action="store_false",
        help="keep the mean direction (no anisotropy correction), e.g. for near-identical rows",
    )
    p.add_argument("--cache-dir", default=None, help="embedding cache folder")
    p.add_argument("--out", required=True, help="run folder to write (replaced as a whole)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out even when it is a non-empty folder that is not a GEM run",
    )
    p.set_defaults(handler=run)


def run(args) -> int:
    if args.k <= 0:
        raise ValueError(f"--k must be a positive integer, got {args.k}")
    check_int(args.seed, "--seed", minimum=0, maximum=MAX_SEED)
    check_run_target(args.out, overwrite=args.overwrite)  # before hours of embedding and fitting
    with (
        progress_bar(None, "embedding", "doc") as ebar,
        progress_bar(args.max_iter, "fitting", "iter") as fbar,
    ):

        def on_iteration(iteration: int, objective: float) -> None:
            fbar.update(iteration - fbar.n)
            fbar.set_postfix(J=f"{objective:.6g}")

        fit = fit_corpus(
            args.data,
            args.out,
            n_clusters=args.k,
            embeddings=args.embeddings,
            text_col=args.text_col,
            id_col=args.id_col,
            label_col=args.label_col,
            tokens_col=args.tokens_col,
            cache_dir=args.cache_dir,
            embed_progress=counting_callback(ebar),
            balance=args.balance,
            temperature=args.temperature,
            concentration=args.concentration,
            max_iter=args.max_iter,
            n_init=args.n_init,
            random_state=args.seed,
            device=args.device,
            center=args.center,
            callback=on_iteration,
            overwrite=args.overwrite,
        )
    print(summary(fit))
    for warning in fit.corpus.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def summary(fit) -> str:
    """The fitted clusters as a text table, largest first, with their top terms."""
    model = fit.model
    q = fit.proba()
    weights = fit.frame["tokens"].to_numpy(dtype=np.float64)
    labels = cluster_labels(
        fit.frame["text"].tolist(), q, model.cluster_masses_, weights, n_terms=5, n_docs=1
    )
    counts = np.bincount(model.labels_, minlength=model.n_clusters)
    n_rejected = len(fit.metadata["rejected_rows"])
    lines = [
        f"GEM fit: {len(fit.frame)} documents ({n_rejected} rejected), "
        f"{int(weights.sum())} tokens, K = {model.n_clusters}, "
        f"{model.n_iter_} iterations, J = {model.objective_:.6g}, anisotropy R0 = {model.anisotropy_:.3f}",
        f"{'cluster':>7} {'docs':>6} {'mass':>7} {'kappa':>8}  top terms",
    ]
    for k in np.argsort(-model.cluster_masses_):
        lines.append(
            f"{k:>7} {counts[k]:>6} {model.cluster_masses_[k]:>7.3f} "
            f"{model.concentrations_[k]:>8.1f}  {', '.join(labels[k].terms)}"
        )
    lines.append(f"written to {fit.folder}/ (model.json, model.safetensors, assignments.parquet)")
    return "\n".join(lines)
