"""Proxy studies measured: does the recommended mixture beat natural and uniform? What does it cost?

Three parts (issue 11) and a report; numbers go to docs/evaluation.md::

    # 1. a full study (RegMix, then DoReMi in the same folder) on a run with K = 8 domains
    python bench/bench_study.py study --data sample_data/debian_packages.parquet \\
        --embeddings sample_data/embeddings.npy --work /tmp/bench_sample --proxies 24
    # 2. --domains clusters vs --domains labels at the same budget, on the same held-out text
    python bench/bench_study.py compare --work /tmp/bench_sample --proxies 24
    # 3. proxy training throughput against a bare torch loop of the same model
    python bench/bench_study.py throughput --preset cpu --steps 60
    # the markdown tables of finished study folders (trains nothing, writes nothing)
    python bench/bench_study.py report /tmp/bench_sample/study-clusters

``study`` fits the run (``--k 8``, label column ``section``, tokens column ``tokens``) into
``WORK/run`` unless it exists, runs ``gem_app.study.run_study`` into ``WORK/study-clusters``
and prints, for natural, uniform, the GEM temperature sweep, DoReMi and the recommended
mixture: overall and worst-domain held-out bits per byte, the target (mean over domains) and
the paired difference to natural and uniform over the seeds, with the seed noise sigma.
It writes ``WORK/summary-clusters.json``. ``compare`` runs the same study with
``--domains labels`` and scores both recommendations on common yardsticks (overall bits per
byte, mean over the run's clusters, over the label domains and over the human categories),
every seed of natural, uniform and the recommended mixture, from the per-document held-out
losses. ``report`` reads every finished proxy of study folders (DoReMi's included) and prints,
per mixture, the main seed's overall / worst / mean bits per byte, the mean over seeds, the
paired differences to natural and uniform per seed and in units of the seed noise, the
regressor's cross-validated Spearman (also among the candidates alone) and the recommended
mixture's prediction against its measurements. A DoReMi run rewrites ``regression.json``
with its own anchors-only regression: rerun ``study --methods regmix`` (nothing is trained)
before ``report``. Wall times and the machine's load average are recorded: the bench machine is
shared, and contention slows proxies several times.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from torch.nn import functional as F

from gem_app.evaluate.proxy import (
    bits_per_byte,
    build_model,
    build_streams,
    proxy_config,
    torch_threads,
    train_proxy,
)
from gem_app.storage.runs import fit_corpus, load_run
from gem_app.study import StudyConfig, StudyFolder, run_study
from gem_app.study.prepare import prepare_study
from gem_app.study.report import mean_bpb, seed_noise


def _load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def _run(args) -> Path:
    run_dir = Path(args.work) / "run"
    if not (run_dir / "model.json").is_file():
        start = time.perf_counter()
        fit_corpus(
            args.data,
            run_dir,
            n_clusters=args.k,
            embeddings=args.embeddings,
            label_col="section",
            tokens_col="tokens",
            random_state=0,
        )
        print(f"fitted K={args.k} into {run_dir} in {time.perf_counter() - start:.0f} s")
    return run_dir


def _config(args, **overrides) -> StudyConfig:
    return StudyConfig(
        preset=args.preset,
        steps=args.steps,
        n_proxies=args.proxies,
        threads=args.threads,
        **overrides,
    )


def _progress(log):
    def report(event):
        if event.step == 0 and event.proxy and event.message:
            stamp = f"[{time.strftime('%H:%M:%S')} load {_load()}]"
            log(f"{stamp} {event.done}/{event.total} {event.message}")

    return report


def _by_mixture(proxies) -> dict:
    out = {}
    for p in proxies:
        key = p["name"].rsplit("-s", 1)[0].removeprefix("anchor-")
        out.setdefault(key, {})[int(p["seed"])] = p
    return out


def _summary(study: dict, seeds: list[int]) -> dict:
    """Per mixture: overall, worst and mean bpb at the main seed; paired differences."""
    mixtures = _by_mixture(study["proxies"])
    natural, uniform = mixtures["natural"], mixtures["uniform"]
    rows = {}
    for name, by_seed in mixtures.items():
        if name.startswith("candidate"):
            continue
        main = by_seed[seeds[0]]
        row = {
            "overall": main["overall_bpb"],
            "worst": max(v for v in main["bpb"] if v is not None),
            "mean": mean_bpb(main["bpb"]),
            "seeds": sorted(by_seed),
        }
        for ref_name, ref in (("natural", natural), ("uniform", uniform)):
            common = [s for s in by_seed if s in ref]
            diffs = [mean_bpb(by_seed[s]["bpb"]) - mean_bpb(ref[s]["bpb"]) for s in common]
            row[f"mean_minus_{ref_name}"] = diffs
        rows[name] = row
    return rows


def _print_summary(rows: dict, noise: dict) -> None:
    sigma = noise["mean_bpb_std"] or float("nan")
    print(
        f"seed noise (std over seeds of one mixture): mean {sigma:.4f}, overall "
        f"{noise['overall_bpb_std'] or float('nan'):.4f} bits/byte"
    )
    print(
        f"{'mixture':<22} {'overall':>8} {'worst':>8} {'mean':>8} "
        f"{'d(nat) mean':>12} {'d(uni) mean':>12} {'seeds':>6}"
    )
    for name, row in rows.items():
        dn = row["mean_minus_natural"]
        du = row["mean_minus_uniform"]
        print(
            f"{name:<22} {row['overall']:8.4f} {row['worst']:8.4f} {row['mean']:8.4f} "
            f"{np.mean(dn):+12.4f} {np.mean(du):+12.4f} {len(row['seeds']):>6}"
        )


def study(args) -> dict:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    run_dir = _run(args)
    out = work / f"study-{args.domains}"
    log = print
    timings = {}
    results = {}
    for method in args.methods.split(","):
        config = _config(args, method=method, domains=args.domains)
        log(f"== {method} study of {run_dir} into {out} (load {_load()})")
        start = time.perf_counter()
        result = run_study(run_dir, out, config, progress=_progress(log))
        timings[method] = {
            "wall_s": time.perf_counter() - start,
            "trained": len(result.trained),
            "reused": len(result.reused),
            "load_after": _load(),
        }
        results[method] = result
        log(
            f"   {method}: {timings[method]['wall_s']:.0f} s, trained {len(result.trained)}, "
            f"reused {len(result.reused)}"
        )
    merged = {}
    for result in results.values():
        for p in result.study["proxies"]:
            merged[p["name"]] = p
    first = next(iter(results.values()))
    combined = dict(first.study, proxies=list(merged.values()))
    seeds = _config(args).seeds
    rows = _summary(combined, seeds)
    _print_summary(rows, first.study["noise"])
    seconds = [p["seconds"] for p in merged.values()]
    regmix = results.get("regmix")
    summary = {
        "run": str(run_dir),
        "domains": args.domains,
        "preset": args.preset,
        "steps": _config(args).proxy_config().steps,
        "proxies": len(merged),
        "noise": first.study["noise"],
        "regression": regmix.study["regression"] if regmix else None,
        "regression_scores": regmix.regression.get("scores") if regmix else None,
        "recommended": regmix.study["recommended"] if regmix else None,
        "mixtures": rows,
        "seconds_per_proxy": {"median": float(np.median(seconds)), "max": float(np.max(seconds))},
        "timings": timings,
        "tokens_per_second_median": float(
            np.median([r["tokens_per_second"] for r in _records(out, merged)])
        ),
    }
    (work / f"summary-{args.domains}.json").write_text(json.dumps(summary, indent=2))
    print(
        json.dumps(
            {
                k: summary[k]
                for k in (
                    "regression",
                    "regression_scores",
                    "seconds_per_proxy",
                    "timings",
                    "tokens_per_second_median",
                )
            },
            indent=1,
        )
    )
    return summary


def _records(out: Path, merged: dict) -> list[dict]:
    folder = StudyFolder(out)
    return [folder.record(name) for name in merged]


def compare(args) -> None:
    """Clusters vs labels: each study's recommendation scored on common yardsticks."""
    work = Path(args.work)
    run_dir = _run(args)
    run = load_run(run_dir)
    summaries = {}
    for source in ("clusters", "labels"):
        args.domains = source
        args.methods = "regmix"
        summaries[source] = study(args)
    data = prepare_study(run, _config(args, domains="clusters"))
    label_data = prepare_study(run, _config(args, domains="labels"))
    if not np.array_equal(data.heldout.rows, label_data.heldout.rows):
        raise ValueError("the two studies do not score the same held-out documents")
    labels = run.assignments["label"].astype(str).to_numpy()
    categories, codes = np.unique(labels[data.heldout.rows], return_inverse=True)
    weight = data.heldout_weight
    size = data.heldout.doc_bytes * weight
    yardsticks = {
        "mean over clusters": (data.heldout_domain, len(data.domains)),
        "mean over label domains": (label_data.heldout_domain, len(label_data.domains)),
        "mean over categories": (codes, len(categories)),
    }
    print(
        f"held-out: {len(weight)} documents, {len(data.domains)} clusters, "
        f"{len(label_data.domains)} label domains, {len(categories)} categories"
    )
    table = {}
    for source in ("clusters", "labels"):
        folder = StudyFolder(work / f"study-{source}")
        for p in _folder_records(work / f"study-{source}"):
            key = p["name"].rsplit("-s", 1)[0].removeprefix("anchor-")
            if key not in ("natural", "uniform") and p["kind"] != "recommended":
                continue
            nats = folder.losses(p["name"]) * weight
            row = {"overall": float(bits_per_byte(nats, size)[0])}
            for name, (groups, n) in yardsticks.items():
                row[name] = float(np.nanmean(bits_per_byte(nats, size, groups, n)))
            table.setdefault(f"{source}/{key}", {})[int(p["seed"])] = row
    columns = ["overall", *yardsticks]
    print("| domains / mixture | " + " | ".join(columns) + " | seeds |")
    print("|---|" + "---:|" * len(columns) + "---|")
    for name, by_seed in table.items():
        cells = []
        for column in columns:
            values = [by_seed[s][column] for s in sorted(by_seed)]
            cells.append(f"{np.mean(values):.4f}")
        print(f"| {name} | " + " | ".join(cells) + f" | {len(by_seed)} |")
    print("\npaired differences (same seed), per seed:")
    pairs = [
        ("clusters/recommended-mean", "clusters/natural"),
        ("labels/recommended-mean", "labels/natural"),
        ("clusters/recommended-mean", "labels/recommended-mean"),
        ("clusters/natural", "labels/natural"),
    ]
    for a, b in pairs:
        if a not in table or b not in table:
            continue
        seeds = sorted(set(table[a]) & set(table[b]))
        cells = [
            f"{column} " + _fmt_diffs([table[a][s][column] - table[b][s][column] for s in seeds])
            for column in columns
        ]
        print(f"  {a} - {b}: " + "; ".join(cells))
    (work / "compare.json").write_text(json.dumps(table, indent=2))


def _folder_records(path: Path) -> list[dict]:
    """Every finished proxy of a study folder (including DoReMi's), whatever ran last."""
    folder = StudyFolder(path)
    records = (folder.record(f.stem) for f in sorted((path / "proxies").glob("*.json")))
    return [r for r in records if r is not None]


def _fmt_diffs(diffs: list[float]) -> str:
    return ", ".join(f"{d:+.4f}" for d in diffs)


def _mixture_table(records: list[dict], sigma: float) -> list[str]:
    """Markdown rows: per mixture at the main seed, over seeds, paired differences."""
    mixtures = _by_mixture(records)
    natural, uniform = mixtures["natural"], mixtures["uniform"]
    main = min(natural)
    lines = [
        "| mixture | overall | worst domain | mean (target) | mean over seeds (± sd) | "
        "paired d vs natural | paired d vs uniform | mean d / sigma (nat, uni) |",
        "|---|---:|---:|---:|---|---|---|---|",
    ]
    order = ["natural", "uniform"] + sorted(n for n in mixtures if n.startswith("tau"))
    order += [n for n in mixtures if n not in order]
    for name in order:
        by_seed = mixtures[name]
        if name.startswith("candidate") or main not in by_seed:
            continue
        p = by_seed[main]
        means = [mean_bpb(by_seed[s]["bpb"]) for s in sorted(by_seed)]
        spread = "1 seed"
        if len(means) > 1:
            spread = f"{np.mean(means):.4f} ± {np.std(means, ddof=1):.4f} (n={len(means)})"
        cells, ratios = [], []
        for ref in (natural, uniform):
            common = sorted(s for s in by_seed if s in ref)
            diffs = [mean_bpb(by_seed[s]["bpb"]) - mean_bpb(ref[s]["bpb"]) for s in common]
            cells.append(_fmt_diffs(diffs))
            ratios.append(f"{np.mean(diffs) / sigma:+.1f}")
        lines.append(
            f"| {name} | {p['overall_bpb']:.4f} | {max(v for v in p['bpb'] if v is not None):.4f}"
            f" | {mean_bpb(p['bpb']):.4f} | {spread} | "
            f"{cells[0]} | {cells[1]} | {ratios[0]}, {ratios[1]} |"
        )
    candidates = [
        mean_bpb(p["bpb"]) for p in records if p["kind"] == "candidate" and p["seed"] == main
    ]
    if candidates:
        lines.append(
            f"| {len(candidates)} RegMix candidates | | | best {min(candidates):.4f}, median "
            f"{np.median(candidates):.4f}, worst {max(candidates):.4f} | | | | |"
        )
    return lines


def report(args) -> None:
    """Markdown tables of finished study folders; trains nothing and writes nothing."""
    for path in [Path(p) for p in args.studies]:
        records = _folder_records(path)
        noise = seed_noise(records)
        sigma = noise["mean_bpb_std"]
        print(f"### {path} ({len(records)} proxies)\n")
        print("\n".join(_mixture_table(records, sigma)))
        print(
            f"\nseed noise sigma (pooled over {noise['groups']} mixtures trained with several "
            f"seeds): {sigma:.4f} on the mean target, {noise['overall_bpb_std']:.4f} overall"
        )
        regression = StudyFolder(path).read("regression.json") or {}
        if "search" not in regression:
            print(
                "regression.json holds no search (the last run was DoReMi's): rerun the "
                "regmix study (it trains nothing) to restore it"
            )
        else:
            names = regression["names"]
            oof = np.array(regression["oof"])
            measured = np.array(regression["measured"])
            cand = [i for i, n in enumerate(names) if n.startswith("candidate")]
            within = spearmanr(oof[cand], measured[cand]).statistic if len(cand) > 2 else None
            scores = ", ".join(f"{k} {v:.2f}" for k, v in regression["scores"].items())
            print(
                f"regression: {regression['model']} chosen, cross-validated Spearman {scores} "
                f"(n = {regression['n']}); among the candidates alone "
                f"{within if within is None else f'{within:.2f}'}"
            )
            chosen = regression[regression["search"]]
            rec = [p for p in records if p["kind"] == "recommended"]
            means = [mean_bpb(p["bpb"]) for p in sorted(rec, key=lambda p: p["seed"])]
            print(
                f"recommended ({regression['search']} search, target {regression['target']}): "
                f"predicted {chosen['predicted']:.4f}, measured "
                f"{', '.join(f'{m:.4f}' for m in means)} by seed; "
                f"weights {[round(w, 3) for w in chosen['weights']]}"
            )
            other = "exact" if regression["search"] == "topk" else "topk"
            if other in regression:
                print(
                    f"  ({other} search, not trained: predicted "
                    f"{regression[other]['predicted']:.4f}, weights "
                    f"{[round(w, 3) for w in regression[other]['weights']]})"
                )
        seconds = [p["seconds"] for p in records]
        rates = [p["tokens_per_second"] for p in records if "tokens_per_second" in p]
        print(
            f"proxies: {sum(seconds):.0f} s in all (training + scoring), median "
            f"{np.median(seconds):.1f} s, max {max(seconds):.1f} s per proxy; median "
            f"{np.median(rates):,.0f} training tokens/s\n"
        )


def _bare_loop(config, data: torch.Tensor) -> float:
    """Tokens/s of the plainest loop of the same model: forward, loss, backward, AdamW step."""
    model = build_model(config, config.vocab_size, init_seed=0, device="cpu")
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.95))
    start = time.perf_counter()
    for step in range(config.steps):
        x, y = data[step, :, :-1], data[step, :, 1:]
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return config.budget / (time.perf_counter() - start)


def throughput(args) -> None:
    """Tokens/s of train_proxy and of a bare loop (same model, optimizer, batch) on CPU.

    Both run in the same process, alternately, ``--repeats`` times; the best of each is kept
    (contention only slows a run down), and the median ratio of the back-to-back pairs.
    """
    config = proxy_config(args.preset, steps=args.steps)
    rng = np.random.default_rng(0)
    lengths = [200_000, 120_000, 80_000]
    tokens = [rng.integers(0, config.vocab_size - 1, n).astype(np.int32) for n in lengths]
    streams = build_streams(
        tokens,
        np.arange(3),
        np.arange(3),
        3,
        eos_id=config.vocab_size - 1,
        vocab_size=config.vocab_size,
        doc_bytes=np.array(lengths) * 2,
    )
    data = torch.randint(
        0, config.vocab_size, (config.steps, config.batch_size, config.context + 1)
    )
    for threads in [int(t) for t in args.threads_list.split(",")]:
        with torch_threads(threads):
            bare, proxy = [], []
            for _ in range(args.repeats):
                bare.append(_bare_loop(config, data))
                trained = train_proxy(
                    config,
                    streams,
                    [0.5, 0.3, 0.2],
                    init_seed=0,
                    data_seed=0,
                    max_epochs=None,
                    device="cpu",
                )
                proxy.append(trained.tokens_per_second)
            paired = np.median(np.array(bare) / np.array(proxy))
            print(
                f"preset {args.preset} threads {threads}: bare loop {max(bare):,.0f} tok/s, "
                f"train_proxy {max(proxy):,.0f} tok/s, ratio {max(bare) / max(proxy):.2f} "
                f"(best of each), {paired:.2f} (median of the interleaved pairs) "
                f"(all runs: bare {[round(b) for b in bare]}, proxy {[round(p) for p in proxy]}; "
                f"load {_load()})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("study", "compare"):
        p = sub.add_parser(name)
        p.add_argument("--data", default="sample_data/debian_packages.parquet")
        p.add_argument("--embeddings", default="sample_data/embeddings.npy")
        p.add_argument("--work", required=True)
        p.add_argument("--k", type=int, default=8)
        p.add_argument("--preset", default="cpu")
        p.add_argument("--steps", type=int, default=None)
        p.add_argument("--proxies", type=int, default=24)
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--domains", default="clusters")
        p.add_argument("--methods", default="regmix,doremi")
    p = sub.add_parser("report")
    p.add_argument("studies", nargs="+", help="finished study folders")
    p = sub.add_parser("throughput")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads-list", default="1,2")
    args = parser.parse_args()
    {"study": study, "compare": compare, "report": report, "throughput": throughput}[args.command](
        args
    )


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
