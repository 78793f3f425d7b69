"""``gem label DIR``: label the clusters of a run folder and write DIR/taxonomy.json."""

from __future__ import annotations

from gem_app.storage.runs import load_run
from gem_app.taxonomy.build import build_taxonomy
from gem_app.utils.files import check_writable_dir


def register(sub) -> None:
    p = sub.add_parser(
        "label", help="label a run's clusters (GIS terms, optional LLM) -> DIR/taxonomy.json"
    )
    p.add_argument("dir", help="run folder written by `gem fit`")
    p.add_argument("--terms", type=int, default=8, help="terms per cluster")
    p.add_argument(
        "--llm",
        action="store_true",
        help="name clusters through the endpoint in GEM_LLM_BASE_URL / GEM_LLM_MODEL",
    )
    p.set_defaults(handler=run)


def run(args) -> int:
    if args.terms < 1:
        raise ValueError(f"--terms must be >= 1, got {args.terms}")
    fit = load_run(args.dir)
    check_writable_dir(fit.folder, "the run folder")  # before labelling (an LLM takes minutes)
    taxonomy = build_taxonomy(fit, None, n_terms=args.terms, llm=bool(args.llm))
    folder = taxonomy.save(args.dir)
    print(summary(taxonomy))
    if "llm_message" in taxonomy.parameters:
        print(taxonomy.parameters["llm_message"])
    note = taxonomy.parameters.get("vocabulary_note")
    if note:
        print(f"note: {note}")
    print(f"written to {folder}/ (taxonomy.json, taxonomy_assignments.parquet)")
    return 0


def summary(taxonomy) -> str:
    """One line per cluster, largest first: id, documents, mass, label, terms."""
    lines = [f"{'cluster':>7} {'docs':>6} {'mass':>7}  label  [terms]"]
    for node in taxonomy.leaves():
        lines.append(
            f"{node.id:>7} {node.documents:>6} {node.mass:>7.3f}  {node.label}"
            f"  [{', '.join(node.terms)}]"
        )
    return "\n".join(lines)
