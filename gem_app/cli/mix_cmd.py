"""``gem mix DIR --temperature 2 ...``: mixture weights over a run's domains, printed as a table.

Nothing is written unless ``--save NAME`` stores the mixture document in the workspace
(kind ``mixtures``). The helpers here (mixing options, ``--exclude`` / ``--boost`` parsing,
building the document) are shared with ``gem export``.
"""

from __future__ import annotations

import math

from gem_app.export.document import build_mixture_document
from gem_app.export.domains import domains_from_run, mix_domains, run_taxonomy
from gem_app.export.saved import check_export_name, save_mixture
from gem_app.storage.runs import load_run
from gem_app.storage.workspace import Workspace


def add_mixing_options(p) -> None:
    """The options that choose the weights (shared by ``gem mix`` and ``gem export``)."""
    p.add_argument("dir", help="run folder written by `gem fit`")
    p.add_argument(
        "--temperature", "--tau", type=float, default=1.0, help="tau > 0 (1: natural shares)"
    )
    p.add_argument(
        "--gis-strength", type=float, default=0.0, help="beta, tilt towards high-GIS domains"
    )
    p.add_argument(
        "--max-epochs", type=float, default=None, help="E, at most E passes over a domain"
    )
    p.add_argument(
        "--budget", type=float, default=None, help="B, training tokens (default: corpus tokens)"
    )
    p.add_argument("--exclude", default="", help="domain ids to leave out, e.g. 3,7 or 3.1")
    p.add_argument(
        "--boost",
        action="append",
        default=[],
        help="ID=FACTOR multipliers, e.g. 2=1.5 (repeatable, or comma-separated)",
    )
    p.add_argument(
        "--domains",
        choices=["auto", "clusters", "taxonomy"],
        default="auto",
        help="taxonomy leaves (auto: when the run has taxonomy.json) or level-1 clusters",
    )


def register(sub) -> None:
    p = sub.add_parser("mix", help="mixture weights of a run's domains (entropy temperature)")
    add_mixing_options(p)
    p.add_argument(
        "--save", metavar="NAME", default=None, help="store the mixture in the workspace"
    )
    p.add_argument(
        "--workspace",
        default=None,
        help="workspace folder (default $GEM_WORKSPACE or ./gem_workspace)",
    )
    p.set_defaults(handler=run)


def parse_exclude(text: str) -> list[str]:
    """``"3, 7"`` -> ``["3", "7"]`` (empty text: none)."""
    return [part.strip() for part in str(text or "").split(",") if part.strip()]


def parse_boost(values) -> dict[str, float]:
    """``["2=1.5", "3=0,4=2"]`` -> ``{"2": 1.5, "3": 0.0, "4": 2.0}``; bad or negative -> ValueError."""
    boost: dict[str, float] = {}
    for value in values or []:
        for item in str(value).split(","):
            if not item.strip():
                continue
            key, sep, factor = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"--boost {item.strip()!r} is not ID=FACTOR (e.g. 2=1.5)")
            try:
                number = float(factor)
            except ValueError:
                raise ValueError(
                    f"--boost {item.strip()!r}: factor {factor!r} is not a number"
                ) from None
            if not math.isfinite(number) or number < 0:
                raise ValueError(f"--boost {item.strip()!r}: the factor must be finite and >= 0")
            boost[key.strip()] = number
    return boost


def check_mixing_args(args) -> None:
    """Cheap checks before the run is loaded."""
    if not math.isfinite(args.temperature) or args.temperature <= 0:
        raise ValueError(f"--temperature must be a number > 0, got {args.temperature}")
    if not math.isfinite(args.gis_strength):
        raise ValueError(f"--gis-strength must be finite, got {args.gis_strength}")
    if args.max_epochs is not None and not (math.isfinite(args.max_epochs) and args.max_epochs > 0):
        raise ValueError(f"--max-epochs must be a number > 0, got {args.max_epochs}")
    if args.budget is not None and not (math.isfinite(args.budget) and args.budget > 0):
        raise ValueError(f"--budget must be a number > 0, got {args.budget}")
    parse_boost(args.boost)


def mixture_from_args(args):
    """Load the run, build its domains and weights; return ``(run, domains, report, doc)``."""
    check_mixing_args(args)
    run = load_run(args.dir)
    taxonomy = None
    if args.domains in ("auto", "taxonomy"):
        taxonomy = run_taxonomy(run)
        if taxonomy is None and args.domains == "taxonomy":
            raise ValueError(f"{args.dir} has no taxonomy (taxonomy.json); use --domains clusters")
    domains = domains_from_run(run, taxonomy)
    report = mix_domains(
        domains,
        temperature=args.temperature,
        gis_strength=args.gis_strength,
        max_epochs=args.max_epochs,
        budget=args.budget,
        exclude=parse_exclude(args.exclude),
        boost=parse_boost(args.boost),
    )
    doc = build_mixture_document(run, report, domains=domains)
    return run, domains, report, doc


def format_table(doc) -> str:
    """The mixture as a text table, in domain order, with a summary line."""
    mixing = doc["mixing"]
    lines = [
        f"{'domain':>7} {'docs':>7} {'tokens':>11} {'natural':>8} {'weight':>8} {'epochs':>7}  name",
    ]
    for d in doc["domains"]:
        flag = "  (excluded)" if d["excluded"] else ""
        lines.append(
            f"{d['id']:>7} {d['documents']:>7} {d['tokens']:>11} {d['natural_share']:>8.4f} "
            f"{d['weight']:>8.4f} {d['epochs']:>7.2f}  {d['name']}{flag}"
        )
    epochs = "none" if mixing["max_epochs"] is None else f"{mixing['max_epochs']:g}"
    lines.append(
        f"tau = {mixing['tau']:g}, beta = {mixing['beta']:g}, max epochs {epochs}, "
        f"budget {mixing['budget']:.6g} tokens; H(w) = {mixing['entropy']:.4f} nats, "
        f"effective domains {mixing['effective_domains']:.2f}, KL(w||natural) = "
        f"{mixing['kl_to_natural']:.4f} nats; {len(doc['domains'])} domains "
        f"({'taxonomy leaves' if mixing['domain_source'] == 'taxonomy' else 'level-1 clusters'})"
    )
    return "\n".join(lines)


def run(args) -> int:
    workspace = None
    if args.save is not None:
        check_export_name(args.save)
        workspace = Workspace(args.workspace)  # a workspace path that is a file: exit 2 now
    _, _, _, doc = mixture_from_args(args)
    print(format_table(doc))
    if args.save is not None:
        info = save_mixture(doc, args.save, workspace)
        print(f"saved as mixtures/{args.save} in {info.path.parent.parent.parent}")
    return 0
