"""``gem taxonomy DATA --levels 8,4 --out DIR``: fit a corpus and build its two-level taxonomy."""

from __future__ import annotations

from gem_app.cli.arguments import add_corpus_arguments
from gem_app.cli.fit_cmd import MAX_SEED
from gem_app.storage.runs import check_run_target, fit_corpus
from gem_app.taxonomy.build import build_taxonomy
from gem_app.utils.validation import check_int

#: K of the run's own fit when level 1 is chosen automatically.
AUTO_RUN_K = 8


def register(sub) -> None:
    p = sub.add_parser(
        "taxonomy", help="fit GEM and build a hierarchical taxonomy -> DIR/taxonomy.json"
    )
    add_corpus_arguments(p)
    p.add_argument(
        "--levels",
        required=True,
        help="K per level: K1 or K1,K2 (each an integer >= 2 or 'auto'), or 'auto'",
    )
    p.add_argument("--balance", type=float, default=1.0, help="lambda, mixing-balance strength")
    p.add_argument("--temperature", type=float, default=1.0, help="T, assignment temperature")
    p.add_argument("--terms", type=int, default=8, help="terms per node")
    p.add_argument("--max-auto-k", type=int, default=32, help="largest K that 'auto' considers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--llm", action="store_true", help="name nodes through the GEM_LLM_* endpoint")
    p.add_argument("--out", required=True, help="run folder to write (replaced as a whole)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out even when it is a non-empty folder that is not a GEM run",
    )
    p.set_defaults(handler=run)


def parse_levels(text: str) -> tuple:
    """``"8,4"`` -> (8, 4); ``"auto"`` -> ("auto", "auto"); ``"16,auto"`` -> (16, "auto")."""
    text = text.strip().lower()
    if text == "auto":
        return ("auto", "auto")
    parts = [p.strip() for p in text.split(",")]
    if not 1 <= len(parts) <= 2 or not all(parts):
        raise ValueError(f"--levels must be K1 or K1,K2 (integers >= 2 or 'auto'), got {text!r}")
    levels = []
    for depth, part in enumerate(parts, start=1):
        if part == "auto":
            levels.append("auto")
            continue
        try:
            k = int(part)
        except ValueError:
            raise ValueError(
                f"--levels: level {depth} K must be an integer or 'auto', got {part!r}"
            ) from None
        if k < 2:
            raise ValueError(f"--levels: level {depth} K = {k}; a taxonomy level needs K >= 2")
        levels.append(k)
    return tuple(levels)


def run(args) -> int:
    levels = parse_levels(args.levels)
    if args.terms < 1:
        raise ValueError(f"--terms must be >= 1, got {args.terms}")
    check_int(args.seed, "--seed", minimum=0, maximum=MAX_SEED)
    check_run_target(args.out, overwrite=args.overwrite)
    run_k = levels[0] if levels[0] != "auto" else min(AUTO_RUN_K, args.max_auto_k)
    fit = fit_corpus(
        args.data,
        args.out,
        n_clusters=run_k,
        embeddings=args.embeddings,
        text_col=args.text_col,
        id_col=args.id_col,
        label_col=args.label_col,
        tokens_col=args.tokens_col,
        balance=args.balance,
        temperature=args.temperature,
        random_state=args.seed,
        overwrite=args.overwrite,
    )
    taxonomy = build_taxonomy(
        fit,
        levels,
        balance=args.balance,
        temperature=args.temperature,
        random_state=args.seed,
        n_terms=args.terms,
        max_auto_k=args.max_auto_k,
        llm=bool(args.llm),
    )
    folder = taxonomy.save(args.out)
    used = ",".join(str(k) for k in taxonomy.parameters["levels"])
    print(f"taxonomy of {len(fit.frame)} documents, levels K = {used}")
    for level, curve in sorted(taxonomy.k_curves.items()):
        scores = ", ".join(f"{k}: {v:.6g}" for k, v in curve.items())
        print(f"level {level} BIC by K (lower is better): {scores}")
    print(taxonomy.format_tree())
    for note in taxonomy.parameters.get("notes", []):
        print(f"note: {note}")
    if "llm_message" in taxonomy.parameters:
        print(taxonomy.parameters["llm_message"])
    print(
        f"written to {folder}/ (model.*, assignments.parquet, taxonomy.json, taxonomy_assignments.parquet)"
    )
    return 0
