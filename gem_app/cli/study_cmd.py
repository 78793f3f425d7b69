"""``gem study RUN --out STUDY``: proxy language models measure which mixture trains better.

Trains tiny proxies on anchor mixtures and RegMix candidates (or runs DoReMi), fits a
regressor from weights to held-out bits per byte, trains and measures the recommended mixture,
and writes ``STUDY/study.json`` and ``STUDY/recommended.json`` (for ``gem export --from``).
Rerunning the same command resumes: finished proxies are not trained again.
"""

from __future__ import annotations

import math
import sys

from gem_app.cli.progress import progress_bar
from gem_app.export.saved import load_saved_mixture
from gem_app.study.config import DOMAIN_SOURCES, METHODS, StudyConfig
from gem_app.study.runner import run_study


def register(sub) -> None:
    p = sub.add_parser(
        "study", help="train proxy LMs on mixtures and measure held-out bits per byte"
    )
    p.add_argument("dir", help="run folder written by `gem fit`")
    p.add_argument("--out", required=True, help="study folder (a rerun resumes it)")
    p.add_argument(
        "--proxies", type=int, default=None, help="RegMix candidate proxies (ci 4, cpu 32, gpu 64)"
    )
    p.add_argument("--preset", default="cpu", help="proxy size: ci, cpu or gpu")
    p.add_argument("--steps", type=int, default=None, help="training steps per proxy")
    p.add_argument("--seed", type=int, default=0, help="initialisation and data-order seed")
    p.add_argument("--method", default="regmix", help="regmix or doremi")
    p.add_argument(
        "--target", default="mean", help="mean (over domains), worst, overall or domain:ID"
    )
    p.add_argument("--domains", default="clusters", help="clusters, taxonomy or labels")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    p.add_argument("--max-epochs", type=float, default=4.0, help="epoch cap per domain")
    p.add_argument(
        "--kl", type=float, default=0.05, help="lambda of predicted loss + lambda KL(w || natural)"
    )
    p.add_argument("--noise-seeds", type=int, default=None, help="extra seeds for noise (0-2)")
    p.add_argument("--doremi-rounds", type=int, default=1, help="DoReMi rounds (1-3)")
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: ci 1)"
    )
    current = p.add_mutually_exclusive_group()
    current.add_argument("--current", metavar="FILE", help="the curator's mixture document")
    current.add_argument(
        "--mixture", metavar="NAME", help="the curator's mixture saved in the workspace"
    )
    p.add_argument("--workspace", default=None, help="workspace folder for --mixture")
    p.set_defaults(handler=run)


def _choice(value: str, choices, what: str) -> str:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}: expected one of {', '.join(choices)}")
    return value


def config_from_args(args) -> StudyConfig:
    """The :class:`StudyConfig` of parsed ``gem study`` arguments (ValueError when invalid)."""
    _choice(args.method, METHODS, "method")
    _choice(args.domains, DOMAIN_SOURCES, "domains")
    if args.proxies is not None and args.proxies < 1:
        raise ValueError(f"--proxies must be at least 1, got {args.proxies}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {args.steps}")
    if not math.isfinite(args.max_epochs) or args.max_epochs <= 0:
        raise ValueError(f"--max-epochs must be a number > 0, got {args.max_epochs}")
    return StudyConfig(
        preset=args.preset,
        steps=args.steps,
        seed=args.seed,
        n_proxies=args.proxies,
        method=args.method,
        target=args.target,
        domains=args.domains,
        device=args.device,
        max_epochs=args.max_epochs,
        kl_penalty=args.kl,
        noise_seeds=args.noise_seeds,
        doremi_rounds=args.doremi_rounds,
        threads=args.threads,
    )


class _Bars:
    """Two tqdm bars on stderr: proxies of the study, steps of the current proxy."""

    def __init__(self):
        self.study = progress_bar(None, "study", "proxy")
        self.proxy = progress_bar(None, "proxy", "step")

    def __call__(self, event) -> None:
        if event.total:
            self.study.total = event.total
            self.study.update(event.done - self.study.n)
        if event.steps:
            if event.step == 0 or self.proxy.total != event.steps:
                self.proxy.reset(total=event.steps)
                self.proxy.set_description(event.proxy or "proxy")
            self.proxy.update(event.step - self.proxy.n)

    def close(self) -> None:
        self.proxy.close()
        self.study.close()


def run(args) -> int:
    config = config_from_args(args)
    current = args.current
    if args.mixture is not None:
        current = load_saved_mixture(args.mixture, args.workspace)
    bars = _Bars()
    try:
        result = run_study(args.dir, args.out, config, current=current, progress=bars)
    finally:
        bars.close()
    study = result.study
    print(f"{'proxy':<34} {'kind':<12} {'overall':>8} {'mean':>8} {'worst':>8}")
    for proxy in study["proxies"]:
        values = [v for v in proxy["bpb"] if v is not None]
        print(
            f"{proxy['name']:<34} {proxy['kind']:<12} {proxy['overall_bpb']:8.4f} "
            f"{sum(values) / len(values):8.4f} {max(values):8.4f}"
        )
    noise = study["noise"]
    regression = study["regression"]
    recommended = study["recommended"]
    if noise["overall_bpb_std"] is not None:
        print(
            f"seed noise: overall {noise['overall_bpb_std']:.4f}, mean {noise['mean_bpb_std']:.4f} "
            "bits per byte"
        )
    if regression["model"] is not None:
        print(
            f"regressor: {regression['model']} (cross-validated Spearman "
            f"{regression['cv_spearman']:.3f}, n={regression['n']})"
        )
    predicted = recommended["predicted"]
    print(
        f"recommended ({config.target}): measured {recommended['measured']:.4f}"
        + (f", predicted {predicted:.4f}" if predicted is not None else "")
    )
    print(f"trained {len(result.trained)} proxies, reused {len(result.reused)}")
    print(f"wrote {result.folder / 'study.json'}")
    if result.recommended_path is not None:
        print(f"wrote {result.recommended_path}")
    else:
        print(
            "no recommended.json for --domains labels: mixture documents are over clusters or "
            "taxonomy leaves (see docs/evaluation.md)",
            file=sys.stderr,
        )
    return 0
