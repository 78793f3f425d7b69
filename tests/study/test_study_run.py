"""run_study on a planted corpus (ci proxies): study.json, anchors, caps, resume, labels, job."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from gem_app.export.document import build_mixture_document, read_mixture
from gem_app.export.domains import domains_from_run, mix_domains
from gem_app.storage.runs import load_run
from gem_app.study.config import StudyConfig
from gem_app.study.domains import OTHER, merge_categories
from gem_app.study.job import StudyJob
from gem_app.study.prepare import prepare_study
from gem_app.study.report import PROXY_KEYS, seed_noise
from gem_app.study.runner import run_study
from gem_app.taxonomy.build import build_taxonomy
from tests.study.conftest import CI

STUDY_KEYS = {"domains", "proxies", "noise", "regression", "recommended"}


def test_study_json_has_the_issue_keys_and_each_proxy_once(finished_study):
    _, out, result = finished_study
    study = json.loads((out / "study.json").read_text())
    assert set(study) == STUDY_KEYS
    assert set(study["noise"]) == {"overall_bpb_std", "mean_bpb_std"}
    assert set(study["regression"]) == {"model", "cv_spearman", "n"}
    assert set(study["recommended"]) == {"weights", "predicted", "measured"}
    names = [p["name"] for p in study["proxies"]]
    assert len(names) == len(set(names))
    k = len(study["domains"])
    for proxy in study["proxies"]:
        assert set(proxy) == set(PROXY_KEYS)
        assert proxy["kind"] in {"anchor", "candidate", "recommended", "doremi"}
        assert len(proxy["weights"]) == k and len(proxy["bpb"]) == k
        assert np.isclose(sum(proxy["weights"]), 1.0)
        assert proxy["overall_bpb"] > 0 and proxy["seconds"] > 0
        assert set(proxy["category_bpb"]) == {f"sec{d}{j}" for d in range(3) for j in range(2)}
    kinds = [p["kind"] for p in study["proxies"]]
    assert kinds.count("candidate") == CI.n_proxies
    assert kinds.count("recommended") == len(CI.seeds)
    labels = {p["name"].rsplit("-s", 1)[0] for p in study["proxies"] if p["kind"] == "anchor"}
    assert {"anchor-natural", "anchor-uniform", "anchor-balanced"} <= labels
    assert {f"anchor-tau{t:g}" for t in CI.temperatures} <= labels
    assert study == result.study


def test_recommended_is_measured_and_regression_reported(finished_study):
    _, _, result = finished_study
    study = result.study
    recommended = study["recommended"]
    main = next(p for p in study["proxies"] if p["kind"] == "recommended")
    assert main["seed"] == CI.seed
    assert np.allclose(main["weights"], recommended["weights"])
    assert recommended["measured"] == pytest.approx(np.mean(main["bpb"]))
    assert study["regression"]["model"] in ("log-linear", "gbm")
    assert -1 <= study["regression"]["cv_spearman"] <= 1
    # every main-seed anchor and candidate is a regression point
    points = [p for p in study["proxies"] if p["seed"] == CI.seed and p["kind"] != "recommended"]
    assert study["regression"]["n"] == len(points)
    assert np.isfinite(recommended["predicted"])


def test_noise_is_the_pooled_std_of_the_repeated_mixtures(finished_study):
    _, _, result = finished_study
    proxies = result.study["proxies"]
    groups = {}
    for p in proxies:
        groups.setdefault(p["name"].rsplit("-s", 1)[0], []).append(p["overall_bpb"])
    variances = [np.var(v, ddof=1) for v in groups.values() if len(v) > 1]
    assert len(variances) == 3  # natural, uniform, recommended
    expected = float(np.sqrt(np.mean(variances)))
    assert result.study["noise"]["overall_bpb_std"] == pytest.approx(expected)
    assert seed_noise(proxies)["groups"] == 3


def test_epoch_caps_hold_for_every_mixture(finished_study):
    run_dir, _, result = finished_study
    data = prepare_study(load_run(run_dir), CI)
    for proxy in result.study["proxies"]:
        assert np.all(np.asarray(proxy["weights"]) <= data.caps + 1e-12), proxy["name"]
    assert np.all(np.asarray(result.study["recommended"]["weights"]) <= data.caps + 1e-12)


def test_no_proxy_sees_a_heldout_document(finished_study):
    run_dir, _, _ = finished_study
    data = prepare_study(load_run(run_dir), CI)
    held = set(data.heldout.rows.tolist())
    assert held and len(held) == len(data.heldout)
    for owners in data.streams.owners:
        seen = set(owners[owners >= 0].tolist())
        assert seen and not seen & held
    # every cluster holds some documents out
    clusters = load_run(run_dir).assignments["cluster"].to_numpy()
    assert set(clusters[list(held)]) == set(clusters)


def test_rerun_trains_nothing_and_reuses_every_proxy(finished_study):
    run_dir, out, result = finished_study
    again = run_study(run_dir, out, CI)
    assert again.trained == []
    assert sorted(again.reused) == sorted(p["name"] for p in result.study["proxies"])
    assert again.study == result.study


def test_other_target_reuses_the_proxies_and_trains_a_new_recommendation(finished_study):
    run_dir, out, result = finished_study
    config = StudyConfig(preset="ci", n_proxies=5, target="worst")
    worst = run_study(run_dir, out, config)
    assert all(name.startswith("recommended-worst") for name in worst.trained)
    assert len(worst.trained) == len(CI.seeds)
    main = next(p for p in worst.study["proxies"] if p["kind"] == "recommended")
    assert worst.study["recommended"]["measured"] == pytest.approx(max(main["bpb"]))
    # the mean-target result is kept beside the new one, each with its three files
    kept = {p.parent.name for p in (out / "results").glob("*/study.json")}
    assert kept == {"regmix-mean", "regmix-worst"}
    assert json.loads((out / "results/regmix-mean/study.json").read_text()) == result.study
    assert json.loads((out / "results/regmix-worst/study.json").read_text()) == worst.study
    assert json.loads((out / "study.json").read_text()) == worst.study
    for tag in kept:
        assert (out / "results" / tag / "regression.json").is_file()
        assert (out / "results" / tag / "recommended.json").is_file()
    run_study(run_dir, out, CI)  # restore the shared study.json


def test_current_mixture_is_an_anchor(finished_study, tmp_path):
    run_dir, out, _ = finished_study
    shutil.copytree(out, tmp_path / "s")
    run = load_run(run_dir)
    domains = domains_from_run(run)
    report = mix_domains(domains, temperature=3.0)
    doc = build_mixture_document(run, report, domains=domains)
    result = run_study(run, tmp_path / "s", CI, current=doc)
    assert f"anchor-current-s{CI.seed}" in result.trained
    assert not any(n.startswith(("candidate", "anchor-natural")) for n in result.trained)
    current = next(p for p in result.study["proxies"] if p["name"] == f"anchor-current-s{CI.seed}")
    data = prepare_study(run, CI)
    assert np.all(np.asarray(current["weights"]) <= data.caps + 1e-12)
    # within the caps, the curator's weights keep their ratios
    free = np.asarray(current["weights"]) < data.caps - 1e-9
    ratio = np.asarray(current["weights"])[free] / report.weights[free]
    assert np.allclose(ratio, ratio[0])


def test_label_domains_merge_the_smallest_categories():
    categories = ["a"] * 5 + ["b"] * 4 + ["c"] * 3 + ["d"] * 2 + ["e"]
    tokens = np.ones(len(categories))
    names, domain = merge_categories(categories, tokens, 3)
    assert names == ["a", "b", OTHER]
    assert domain.tolist() == [0] * 5 + [1] * 4 + [2] * 6
    names, domain = merge_categories(categories, tokens, 5)
    assert names == ["a", "b", "c", "d", "e"]


def test_label_domains_study_measures_the_same_heldout_text(planted_run, tmp_path):
    config = StudyConfig(
        preset="ci", n_proxies=4, domains="labels", noise_seeds=0, temperatures=(2.0,)
    )
    result = run_study(planted_run, tmp_path / "labels", config)
    assert result.recommended_path is None
    assert not (tmp_path / "labels" / "recommended.json").exists()
    assert len(result.study["domains"]) == 3  # 6 sections merged to the run's 3 clusters
    assert result.study["domains"][-1].startswith("label_02_other")
    clusters = prepare_study(load_run(planted_run), CI)
    labels = prepare_study(load_run(planted_run), config)
    assert np.array_equal(clusters.heldout.rows, labels.heldout.rows)


def test_study_job_runs_in_the_background_and_cancels(finished_study, tmp_path):
    run_dir, out, _ = finished_study
    shutil.copytree(out, tmp_path / "job")
    config = StudyConfig(preset="ci", n_proxies=5, target="overall")
    job = StudyJob(run_dir, tmp_path / "job", config).start()
    assert job.wait(120)
    snap = job.snapshot()
    assert snap["state"] == "done" and snap["fraction"] == 1.0 and snap["error"] is None
    assert sorted(job.result.trained) == [f"recommended-overall-s{s}" for s in config.seeds]

    def cancel_after_first(event):
        if event.done >= 1:
            cancelled.cancel()

    config = StudyConfig(preset="ci", n_proxies=4, steps=150)
    cancelled = StudyJob(run_dir, tmp_path / "cancel", config, on_progress=cancel_after_first)
    cancelled.start()
    assert cancelled.wait(120)
    assert cancelled.snapshot()["state"] == "cancelled", cancelled.snapshot()
    finished = sorted((tmp_path / "cancel" / "proxies").glob("*.json"))
    assert len(finished) == 1
    assert not (tmp_path / "cancel" / "study.json").exists()


def test_failed_job_reports_one_line(short_run, tmp_path):
    job = StudyJob(short_run, tmp_path / "bad", StudyConfig(preset="ci")).start()
    assert job.wait(60)
    snap = job.snapshot()
    assert snap["state"] == "failed"
    assert "\n" not in snap["error"] and "held-out" in snap["error"]


def test_taxonomy_leaves_as_domains_with_an_excluded_leaf(planted_run, tmp_path):
    shutil.copytree(planted_run, tmp_path / "run")
    run = load_run(tmp_path / "run")
    taxonomy = build_taxonomy(run, (3, 2), min_df=1)
    excluded = taxonomy.leaves()[0].id
    taxonomy.apply({"op": "exclude", "node": excluded})
    taxonomy.save(tmp_path / "run")
    config = StudyConfig(
        preset="ci", n_proxies=4, domains="taxonomy", noise_seeds=0, temperatures=(2.0,)
    )
    result = run_study(tmp_path / "run", tmp_path / "tax", config)
    leaves = [leaf.id for leaf in taxonomy.leaves()]
    assert len(result.study["domains"]) == len(leaves) > 3
    for proxy in result.study["proxies"]:
        assert proxy["weights"][0] == 0.0, proxy["name"]  # the excluded leaf is never trained on
        assert all(v is not None for v in proxy["bpb"])  # every leaf has held-out text
    doc = read_mixture(tmp_path / "tax" / "recommended.json")
    assert doc["mixing"]["domain_source"] == "taxonomy"
    assert [d["id"] for d in doc["domains"]] == leaves
    assert doc["domains"][0]["excluded"] and doc["domains"][0]["weight"] == 0.0
