"""``gem assign MODEL --input GLOB --out OUTDIR``: assign shards to clusters, resumably."""

from __future__ import annotations

import math

from gem_app.cli.progress import progress_bar
from gem_app.scale.assign import assign


def register(sub) -> None:
    p = sub.add_parser("assign", help="assign JSONL/Parquet shards with a student or a GEM model")
    p.add_argument("model", help="student folder (gem distill) or GEM model/run folder")
    p.add_argument("--input", required=True, nargs="+", help="glob(s), folder(s) or file(s)")
    p.add_argument("--out", required=True, help="output folder (per-shard Parquet + manifest)")
    p.add_argument(
        "--teacher",
        default=None,
        help="GEM run folder: low-confidence documents go to encoder + teacher",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="cascade threshold in [0, 1] on the student's routing signal, the one its own "
        "threshold was calibrated on (student.json 'routing', shown by gem distill: margin = "
        "top minus runner-up probability, the default; max = top probability, students "
        "saved before the signal was stored); documents below it go to the teacher "
        "(default: the student's threshold)",
    )
    p.add_argument("--engine", choices=["local", "ray"], default="local")
    p.add_argument("--address", default=None, help="Ray cluster address to join")
    p.add_argument("--workers", type=int, default=None, help="processes / Ray actors")
    p.add_argument("--batch-size", type=int, default=1024, help="rows per record batch")
    p.add_argument("--text-col", default="text")
    p.add_argument("--id-col", default="id")
    p.add_argument("--tokens-col", default=None)
    p.add_argument(
        "--embeddings-col", default=None, help="column with precomputed embeddings for the teacher"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the outputs of another model, other settings or another tool in --out",
    )
    p.set_defaults(handler=run)


def run(args) -> int:
    if args.threshold is not None and not (
        math.isfinite(args.threshold) and 0 <= args.threshold <= 1
    ):
        raise ValueError(f"--threshold must be a number in [0, 1], got {args.threshold}")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be a positive integer, got {args.workers}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, got {args.batch_size}")
    inputs = args.input if len(args.input) > 1 else args.input[0]
    with progress_bar(None, "assigning", "doc") as bar:

        def start(total):
            bar.total = total or None
            bar.refresh()

        result = assign(
            args.model,
            inputs,
            args.out,
            teacher=args.teacher,
            threshold=args.threshold,
            engine=args.engine,
            workers=args.workers,
            address=args.address,
            batch_size=args.batch_size,
            text_col=args.text_col,
            id_col=args.id_col,
            tokens_col=args.tokens_col,
            embeddings_col=args.embeddings_col,
            device=args.device,
            progress=bar.update,
            start=start,
            overwrite=args.overwrite,
        )
    print(result.summary())
    return 1 if result.failed else 0
