"""``gem distill DIR --out STUDENT``: train a text-only student of a fitted GEM run."""

from __future__ import annotations

from gem_app.cli.fit_cmd import MAX_SEED
from gem_app.scale.cascade import SIGNAL_NAMES, SIGNALS
from gem_app.scale.distill import distill_run
from gem_app.scale.feature_store import AUTO_DISK_ROWS, FEATURE_STORES, check_scratch_dir
from gem_app.utils.files import check_writable_dir
from gem_app.utils.validation import check_int


def register(sub) -> None:
    p = sub.add_parser("distill", help="train a cheap student (no encoder) on a run's teacher")
    p.add_argument("run", help="fit run folder (model.json, model.safetensors)")
    p.add_argument(
        "--data", default=None, help="corpus to label with the teacher (default: the run's)"
    )
    p.add_argument(
        "--embeddings", default=None, help="embeddings of --data (else the encoder runs)"
    )
    p.add_argument("--text-col", default="text")
    p.add_argument("--id-col", default="id")
    p.add_argument("--out", required=True, help="student folder to write")
    p.add_argument("--holdout", type=float, default=0.2, help="share of documents held out")
    p.add_argument(
        "--hidden", type=int, default=0, help="hidden width (0: the linear student, default)"
    )
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--temperature", type=float, default=16.0)
    p.add_argument(
        "--target-agreement",
        type=float,
        default=0.975,
        help="the default cascade threshold reaches this validation agreement",
    )
    p.add_argument(
        "--routing",
        choices=SIGNALS,
        default="margin",
        help="the cascade's routing signal, the one the threshold is on: margin (top minus "
        "runner-up probability, default), max (top probability) or entropy",
    )
    p.add_argument(
        "--no-static-vectors",
        action="store_true",
        help="hashed n-grams only (no MiniLM word-piece table)",
    )
    p.add_argument(
        "--encoder-sample",
        type=int,
        default=128,
        help="texts embedded to time encoder + teacher (0: skip)",
    )
    p.add_argument(
        "--feature-store",
        choices=FEATURE_STORES,
        default="auto",
        help="where the training features live: memory, disk (scratch files read a batch at "
        f"a time: memory flat in the labels) or auto (disk above {AUTO_DISK_ROWS:,} labels)",
    )
    p.add_argument(
        "--scratch-dir",
        default=None,
        help="existing folder for the on-disk features (default: the system temp folder); "
        "their gem-student-* folder is removed when the training ends",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(handler=run)


def run(args) -> int:
    check_int(args.seed, "--seed", minimum=0, maximum=MAX_SEED)
    check_writable_dir(args.out, "--out")  # before the teacher labels and the training
    check_scratch_dir(args.scratch_dir)
    metrics = distill_run(
        args.run,
        args.out,
        data=args.data,
        embeddings=args.embeddings,
        text_col=args.text_col,
        id_col=args.id_col,
        holdout=args.holdout,
        encoder_sample=args.encoder_sample,
        random_state=args.seed,
        hidden=args.hidden,
        epochs=args.epochs,
        temperature=args.temperature,
        target_agreement=args.target_agreement,
        routing=args.routing,
        static_vectors=not args.no_static_vectors,
        feature_store=args.feature_store,
        scratch_dir=args.scratch_dir,
        device=args.device,
    )
    print(summary(metrics, args.out))
    return 0


def summary(m: dict, out) -> str:
    signal = SIGNAL_NAMES[m["routing"]]
    rate = lambda v: "n/a" if v is None else f"{v:,.0f} docs/s"  # noqa: E731
    lines = [
        f"student written to {out}/ (student.json, student.safetensors); K = {m['n_clusters']}, "
        f"trained on {m['n_train']} teacher labels in {m['train_seconds']:.1f} s "
        f"({m['labels_per_s']:,.0f} labels/s), {m['n_heldout']} held out",
        f"held-out agreement with the teacher: {m['heldout_agreement']:.3f}; "
        f"mean KL(teacher || student) = {m['heldout_mean_kl']:.3f} nats",
        f"speed: student {rate(m['student_docs_per_s'])}, encoder + teacher "
        f"{rate(m['teacher_docs_per_s'])}",
        f"cascade routes on {signal}: a document goes to encoder + teacher when it is below "
        "the threshold",
        f"cascade at the default threshold {m['threshold']:.2f} ({m['routing']}): agreement "
        f"{m['cascade_agreement']:.3f}, {m['cascade_routed_fraction']:.1%} routed to the "
        f"teacher, {rate(m['cascade_docs_per_s'])}",
        f"{'threshold':>9} {'routed':>7} {'agreement':>9} {'docs/s':>10}   (on {m['routing']})",
    ]
    for c in m["heldout_cascade_curve"][::10]:
        speed = "" if c["docs_per_s"] is None else f"{c['docs_per_s']:>10.0f}"
        lines.append(
            f"{c['threshold']:>9.2f} {c['routed_fraction']:>7.1%} {c['agreement']:>9.3f} {speed}"
        )
    return "\n".join(lines)
