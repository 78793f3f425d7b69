"""``gem export DIR --format F --out FILE [--materialize DIR2]``: write a mixture for a training stack.

The mixture comes from the mixing options (as ``gem mix``), from a saved workspace mixture
(``--mixture NAME``) or from a canonical JSON file (``--from FILE``). ``--out`` is an ordinary
path chosen by the user; ``--materialize`` writes one shard per domain.

Everything is checked before anything is written: the options, the mixture (it must come
from the run DIR), the rendered output, the materialization folder (see
:func:`gem_app.export.shards.check_shards_target`) and the writability of both outputs.
The shards are written next (their folder is replaced as a whole), ``--out`` last.
"""

from __future__ import annotations

from pathlib import Path

from gem_app.cli.mix_cmd import (
    add_mixing_options,
    check_mixing_args,
    format_table,
    mixture_from_args,
)
from gem_app.cli.progress import counting_callback, progress_bar
from gem_app.export.document import read_mixture
from gem_app.export.formats import FORMATS, render_mixture, write_mixture
from gem_app.export.run_batches import check_mixture_run
from gem_app.export.saved import load_saved_mixture
from gem_app.export.shards import CONTENTS, SHARD_FORMATS, check_shard_options, materialize
from gem_app.utils.files import check_writable_dir


def register(sub) -> None:
    p = sub.add_parser(
        "export", help="write a mixture (JSON, DoReMi, RegMix, Megatron, OLMo, HF, WebOrganizer)"
    )
    add_mixing_options(p)
    p.add_argument("--format", choices=FORMATS, default="gem")
    p.add_argument("--out", required=True, help="file to write")
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--mixture", metavar="NAME", help="a mixture saved with `gem mix --save NAME`"
    )
    source.add_argument(
        "--from", dest="from_file", metavar="FILE", help="a canonical mixture JSON file"
    )
    p.add_argument("--workspace", default=None, help="workspace folder for --mixture")
    p.add_argument(
        "--path-template",
        default=None,
        help="data path per domain with {domain} (megatron, olmo, hf)",
    )
    p.add_argument("--eval-weights", choices=["natural", "train", "uniform"], default="natural")
    p.add_argument(
        "--global-batch-size",
        type=int,
        default=None,
        help="OLMo-core global batch size in tokens (olmo; default 4194304)",
    )
    p.add_argument(
        "--materialize", metavar="DIR2", default=None, help="also write one shard per domain here"
    )
    p.add_argument("--shard-format", choices=SHARD_FORMATS, default="parquet")
    p.add_argument(
        "--content", choices=CONTENTS, default="ids", help="shards hold ids only or full texts"
    )
    p.add_argument("--batch-size", type=int, default=65536)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="let --materialize replace a folder holding another tool's or another run's output",
    )
    p.set_defaults(handler=run)


def run(args) -> int:
    if args.materialize is not None:
        check_shard_options(args.shard_format, args.content, args.batch_size)
    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give the path of the file to write")
    check_writable_dir(out.parent, "the folder of --out")
    if args.mixture is not None:
        doc = load_saved_mixture(args.mixture, args.workspace)
    elif args.from_file is not None:
        doc = read_mixture(args.from_file)
    else:
        check_mixing_args(args)
        _, _, _, doc = mixture_from_args(args)
    if args.mixture is not None or args.from_file is not None:
        check_mixture_run(doc, args.dir)
    options = {
        "path_template": args.path_template,
        "eval_weights": args.eval_weights,
        "global_batch_size": args.global_batch_size,
    }
    render_mixture(doc, args.format, **options)  # every check of the format, before writing
    print(format_table(doc))
    if args.materialize is not None:
        with progress_bar(None, "materializing", "doc") as bar:
            manifest = materialize(
                args.dir,
                doc,
                args.materialize,
                format=args.shard_format,
                content=args.content,
                batch_size=args.batch_size,
                progress=counting_callback(bar),
                overwrite=args.overwrite,
            )
        print(
            f"materialized {manifest['documents']} documents ({manifest['tokens']} tokens) into "
            f"{len(manifest['shards'])} {args.shard_format} shards in {args.materialize}/"
        )
    path = write_mixture(doc, out, args.format, **options)
    print(f"wrote {args.format} mixture to {path}")
    return 0
