"""Running a study: anchors, candidates, regression, search, the recommended mixture measured.

:func:`run_study` is the one entry point of the CLI, the app's background job and the bench:

1. prepare the run (split, tokenizer, streams; :mod:`gem_app.study.prepare`);
2. train and score every anchor (natural and uniform also with the noise seeds) and, for
   ``method="regmix"``, the RegMix candidates: every finished proxy is written at once
   (:class:`~gem_app.study.store.StudyFolder`), and a rerun skips the finished ones;
3. ``regmix``: choose a regressor by cross-validated Spearman, search (exact KL solve for the
   log-linear law, top-k averaging for boosting), then **train and measure** the recommended
   mixture with every seed; ``doremi``: DoReMi rounds against the natural proxy, each round's
   averaged weights trained and measured;
4. write ``regression.json``, ``study.json`` and ``recommended.json``, and a copy of them in
   ``results/<method>-<target>/`` (another method or target in the folder keeps this result).

Every proxy of a study shares one initialisation and data-order seed (the noise repeats use
the next seeds), so differences between mixtures are paired.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gem_app.evaluate.proxy import (
    TinyGPT,
    build_model,
    doremi_weights,
    parse_target,
    project_to_caps,
    resolve_device,
    score_heldout,
    torch_threads,
    train_proxy,
)
from gem_app.export.document import read_mixture
from gem_app.storage.runs import FitRun, load_run
from gem_app.study.anchors import anchor_mixtures, candidate_mixtures, current_weights
from gem_app.study.config import StudyConfig
from gem_app.study.prepare import StudyData, measure, prepare_study
from gem_app.study.recommend import fit_regression, regression_data, search_mixture
from gem_app.study.report import recommended_document, study_document
from gem_app.study.store import StudyFolder, state_dict_of
from gem_app.utils.files import file_sha256

__all__ = ["StudyProgress", "StudyResult", "PlannedProxy", "run_study"]

STUDY_FILE = "study.json"
RECOMMENDED_FILE = "recommended.json"
REGRESSION_FILE = "regression.json"
RESULTS_DIR = "results"  # results/<method>-<target>/: every result the folder has held


@dataclass(frozen=True)
class StudyProgress:
    """Where a study is.

    Attributes
    ----------
    phase : {"prepare", "train", "regress", "doremi", "done"}
    done, total : int
        Proxies finished (trained or reused) and planned.
    proxy : str or None
        The proxy in training.
    step, steps : int
        Its training step.
    message : str
    """

    phase: str
    done: int
    total: int
    proxy: str | None = None
    step: int = 0
    steps: int = 0
    message: str = ""


@dataclass
class PlannedProxy:
    """A proxy of the plan: its name, kind, mixture and seed."""

    name: str
    kind: str
    weights: np.ndarray
    seed: int
    keep_state: bool = False


@dataclass
class StudyResult:
    """What a finished study wrote.

    Attributes
    ----------
    folder : Path
    study : dict
        The content of ``study.json``.
    regression : dict
        The content of ``regression.json``.
    recommended_path : Path or None
        ``recommended.json`` (None for label domains, which export cannot map).
    trained, reused : list of str
        Proxies trained by this call and proxies found finished.
    """

    folder: Path
    study: dict
    regression: dict
    recommended_path: Path | None
    trained: list
    reused: list


class _Trainer:
    """Trains a planned proxy unless its record is on disk; reports progress."""

    def __init__(self, folder, data, config, device, fingerprint, progress, should_stop, total):
        self.folder = folder
        self.data = data
        self.config = config
        self.device = device
        self.fingerprint = fingerprint
        self.progress = progress
        self.should_stop = should_stop
        self.total = total
        self.done = 0
        self.trained: list[str] = []
        self.reused: list[str] = []

    def emit(self, phase, proxy=None, step=0, steps=0, message=""):
        if self.progress is not None:
            self.progress(StudyProgress(phase, self.done, self.total, proxy, step, steps, message))

    def key(self, planned: PlannedProxy) -> str:
        text = json.dumps(
            [self.fingerprint, [float(w) for w in planned.weights], int(planned.seed)],
            sort_keys=True,
        )
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def ensure(self, planned: PlannedProxy) -> dict:
        key = self.key(planned)
        record = self.folder.record(planned.name)
        if (
            record is not None
            and record.get("key") == key
            and (not planned.keep_state or self.folder.has_state(planned.name))
        ):
            self.done += 1
            self.reused.append(planned.name)
            self.emit("train", planned.name, message=f"{planned.name} already measured")
            return record
        steps = self.data.proxy.steps
        self.emit("train", planned.name, 0, steps, f"training {planned.name}")
        start = time.perf_counter()
        trained = train_proxy(
            self.data.proxy,
            self.data.streams,
            planned.weights,
            init_seed=planned.seed,
            data_seed=planned.seed,
            max_epochs=self.config.max_epochs,
            device=self.device,
            progress=lambda i, n: self.emit("train", planned.name, i, n),
            should_stop=self.should_stop,
        )
        nats = score_heldout(
            trained.model, self.data.heldout, batch_size=self.data.proxy.eval_batch_size
        )
        record = {
            "name": planned.name,
            "kind": planned.kind,
            "weights": [float(w) for w in planned.weights],
            "seed": int(planned.seed),
            **measure(self.data, nats),
            "seconds": time.perf_counter() - start,
            "train_seconds": trained.seconds,
            "tokens_per_second": trained.tokens_per_second,
            "epochs": [float(e) for e in trained.epochs],
            "final_loss": trained.final_loss,
            "key": key,
        }
        state = state_dict_of(trained.model) if planned.keep_state else None
        self.folder.save_proxy(planned.name, record, nats, state)
        self.done += 1
        self.trained.append(planned.name)
        self.emit("train", planned.name, steps, steps, f"{planned.name} measured")
        return record

    def load_model(self, name: str) -> TinyGPT:
        model = build_model(
            self.data.proxy, self.data.streams.vocab_size, init_seed=0, device="cpu"
        )
        model.load_state_dict(self.folder.model_state(name))
        return model.to(self.device)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in ".-" else "-" for ch in text.lower())


def _plan_anchors(data: StudyData, config: StudyConfig, current) -> list[PlannedProxy]:
    anchors = anchor_mixtures(
        data, config.temperatures, max_epochs=config.max_epochs, current=current
    )
    seed = config.seeds[0]
    plan = [
        PlannedProxy(f"anchor-{_slug(label)}-s{seed}", "anchor", w, seed, label == "natural")
        for label, w in anchors.items()
    ]
    for extra in config.seeds[1:]:
        for label in ("natural", "uniform"):
            plan.append(PlannedProxy(f"anchor-{label}-s{extra}", "anchor", anchors[label], extra))
    return plan


def _doremi(trainer: _Trainer, data, config, natural_name: str) -> list[dict]:
    """DoReMi rounds; returns the records of the measured round mixtures (kind ``doremi``)."""
    seed = config.seeds[0]
    reference_name = natural_name
    records = []
    for round_ in range(1, config.doremi_rounds + 1):
        saved = trainer.folder.read(f"doremi/round-{round_}.json")
        if saved is None or saved.get("reference") != reference_name:
            trainer.emit("doremi", f"doremi-round-{round_}", 0, data.proxy.steps, "DoReMi proxy")
            result = doremi_weights(
                data.proxy,
                data.streams,
                trainer.load_model(reference_name),
                init_seed=seed,
                data_seed=seed,
                device=trainer.device,
                progress=lambda i, n, r=round_: trainer.emit("doremi", f"doremi-round-{r}", i, n),
                should_stop=trainer.should_stop,
            )
            saved = {
                "reference": reference_name,
                "weights": result.weights.tolist(),
                "final": result.history[-1].tolist(),
                "mean_excess": result.excess.mean(axis=0).tolist(),
            }
            trainer.folder.write(f"doremi/round-{round_}.json", saved)
        trainer.done += 1
        weights = np.where(data.natural > 0, np.asarray(saved["weights"]), 0.0)
        planned = PlannedProxy(
            f"doremi-r{round_}-s{seed}",
            "doremi",
            project_to_caps(weights, data.caps),
            seed,
            keep_state=round_ < config.doremi_rounds,
        )
        records.append(trainer.ensure(planned))
        reference_name = planned.name
    return records


def run_study(
    run,
    out,
    config: StudyConfig | None = None,
    *,
    current=None,
    progress: Callable[[StudyProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> StudyResult:
    """Run (or resume) a study of a fitted run; see the module docstring.

    Parameters
    ----------
    run : FitRun or path
        A run folder written by ``gem fit``.
    out : path
        The study folder (created; a rerun resumes it).
    config : StudyConfig, optional
    current : mapping or path, optional
        The curator's mixture document (or its file) for the ``current`` anchor.
    progress : callable(StudyProgress), optional
    should_stop : callable() -> bool, optional
        Polled at every training step; True stops with
        :class:`~gem_app.evaluate.proxy.ProxyCancelled` (finished proxies stay on disk).

    Raises
    ------
    ValueError
        Bad settings, a run unfit for a study, or a study folder of another run.
    """
    config = config or StudyConfig()
    run = run if isinstance(run, FitRun) else load_run(run)
    folder = StudyFolder(out)
    run_info = {
        "folder": str(Path(run.folder).resolve()),
        "assignments_sha256": file_sha256(Path(run.folder) / "assignments.parquet"),
    }
    if current is not None and not isinstance(current, Mapping):
        current = read_mixture(current)
    with folder.lock(), torch_threads(config.torch_threads):
        folder.check_owner(run_info, config.identity())
        emit = progress or (lambda event: None)
        emit(StudyProgress("prepare", 0, 0, message="preparing the run"))
        data = prepare_study(run, config, folder.load_tokenizer())
        scored = np.bincount(data.heldout_domain, minlength=len(data.domains)) > 0
        target = parse_target(config.target, data.domains.ids, data.byte_share, scored)
        current_w = (
            current_weights(current, data, run_info["assignments_sha256"])
            if current is not None
            else None
        )
        folder.claim(run_info, config.identity())
        if folder.load_tokenizer() is None:
            folder.save_tokenizer(data.tokenizer)
        device = resolve_device(config.device)
        plan = _plan_anchors(data, config, current_w)
        if config.method == "regmix":
            candidates = candidate_mixtures(
                data, config.candidates, max_epochs=config.max_epochs, seed=config.seed
            )
            plan += [
                PlannedProxy(f"candidate-{i:03d}-s{config.seed}", "candidate", w, config.seed)
                for i, w in enumerate(candidates)
            ]
            total = len(plan) + len(config.seeds)
        else:
            total = len(plan) + 2 * config.doremi_rounds
        fingerprint = [run_info["assignments_sha256"], config.identity()]
        trainer = _Trainer(folder, data, config, device, fingerprint, progress, should_stop, total)
        records = [trainer.ensure(p) for p in plan]
        main = [r for r in records if r["seed"] == config.seed]
        trainer.emit("regress", message="fitting the regressor")
        choice, regression = None, {"model": None, "cv_spearman": None, "n": len(main)}
        if config.method == "regmix" or len(main) >= 4:
            choice, regression = fit_regression(config, target, main)
        if config.method == "regmix":
            weights, predicted, details = search_mixture(data, config, target, main, choice)
            regression.update(details)
            name = f"recommended-{_slug(target.name)}"
            for seed in config.seeds:
                planned = PlannedProxy(f"{name}-s{seed}", "recommended", weights, seed)
                records.append(trainer.ensure(planned))
            final = records[-len(config.seeds)]
        else:
            records += _doremi(trainer, data, config, plan[0].name)
            final = records[-1]
            weights = np.asarray(final["weights"])
            predicted = None
            if choice is not None:
                predicted = float(target(choice.model.predict(weights[None, :]))[0])
        measured = float(target(regression_data([final])[1])[0])
        regression = dict(regression, target=target.name)
        study = study_document(
            data.domains.names,
            records,
            regression,
            {"weights": list(weights), "predicted": predicted, "measured": measured},
        )
        doc = None
        if data.domains.domain_set is not None:
            doc = recommended_document(run, data.domains.domain_set, weights)
        # every (method, target) keeps its own copy: another --method or --target in the same
        # folder replaces the top-level summary, never the earlier result
        kept = f"{RESULTS_DIR}/{config.method}-{_slug(target.name)}"
        for prefix in (kept, ""):
            folder.write(f"{prefix}/{REGRESSION_FILE}".lstrip("/"), regression)
            recommended_path = None
            if doc is not None:
                recommended_path = folder.write(f"{prefix}/{RECOMMENDED_FILE}".lstrip("/"), doc)
            folder.write(f"{prefix}/{STUDY_FILE}".lstrip("/"), study)
        trainer.emit("done", message=f"study written to {folder.path}")
        return StudyResult(
            folder.path, study, regression, recommended_path, trainer.trained, trainer.reused
        )
