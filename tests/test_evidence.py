"""Evidence a reviewer accepts: replicates over the whole pipeline, control arms that isolate the
generator, any synthetic source, statistics with stated limits, and resume mid-replicate."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from genaug.data import load_split, open_source, save_png
from genaug.harness.stats.paired import holm, paired_difference, wilcoxon_min_p
from genaug.harness.run.store import Store
from genaug.io import package_digest

from conftest import PNEUMONIA, assert_clean_error, run_cli

TINY = ["--config", Path(__file__).parent / "helpers" / "tiny-experiment.yaml", "--data", PNEUMONIA, "--per-class", "10", "--generator", "vae", "--synthetic-per-class", "8",
        "--replicates", "2", "--seeds", "2", "--steps", "2", "--generator-steps", "15", "--accept", "all,memorization",
        "--image-size", "16", "--no-progress", "--device", "cpu"]
# 16 px: a third of ResNet18's time at 28 px, where scoring the 624 test images dominates this file


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One uninterrupted tiny experiment: 2 replicates x 2 seeds, VAE, both controls."""
    out = tmp_path_factory.mktemp("tiny") / "exp"
    r = run_cli("augment-and-train", "--headroom", "none", *TINY, "--out", out)
    assert r.exit_code == 0, r.output
    return out


def _json(path):
    return json.loads(path.read_text())


def _no_quality(folder):
    """A config without the quality stage (FIDs), for tests of other stages."""
    path = folder / "no-quality.yaml"
    path.write_text("quality: false\n")
    return path


# -- statistics -------------------------------------------------------------------------------

def test_holm_on_a_hand_example():
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01 = 0.03; max(0.03, 2 x 0.03) = 0.06; max(0.06, 1 x 0.04) = 0.06
    assert holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": None}) == pytest.approx(
        {"a": 0.03, "b": 0.06, "c": 0.06, "d": None})
    assert holm({"a": 0.5, "b": 0.9}) == {"a": 1.0, "b": 1.0}


def test_zero_variance_difference_gets_no_p_value_and_says_why():
    r = paired_difference([0.6, 0.7, 0.8], [0.5, 0.6, 0.7])
    assert r["mean_diff"] == pytest.approx(0.1) and r["p_ttest"] is None and r["p_wilcoxon"] is None
    assert "zero variance" in r["note"]
    assert wilcoxon_min_p(3) == 0.25 and wilcoxon_min_p(5) == 0.0625
    r = paired_difference([0.61, 0.72, 0.80], [0.5, 0.6, 0.7])
    assert r["wilcoxon_min_p"] == 0.25 and r["p_wilcoxon"] == pytest.approx(0.25)
    assert math.isnan(r["boot_low"])  # a bootstrap interval at 3 units covers about 75%: not given (coverage.py)


def test_spearman_p_is_exact_for_a_handful_of_points():
    from genaug.harness.stats.analysis import spearman

    assert spearman([1, 2, 3], [0.1, 0.2, 0.3]) == pytest.approx((1.0, 1 / 3))  # scipy's t approximation: p = 0
    # rho = 1 - 6 sum d^2 / 120 >= 0.8 for 8 of the 120 orders (sum d^2 = 0: 1, 2: 4, 4: 3): two-sided 16 / 120
    assert spearman([1, 2, 3, 4, 5], [1, 3, 2, 5, 4]) == pytest.approx((0.8, 16 / 120))


# -- replicates -------------------------------------------------------------------------------

def test_replicates_redraw_subset_generators_and_samples(tiny):
    m0, m1 = _json(tiny / "rep-0" / "manifest.json"), _json(tiny / "rep-1" / "manifest.json")
    assert {it["id"] for it in m0["train"]["items"]} != {it["id"] for it in m1["train"]["items"]}
    assert m0["validation"]["items"] != m1["validation"]["items"]
    report = _json(tiny / "report.json")
    for cls, hashes in report["generators"]["vae"].items():
        assert len(hashes) == 2 and hashes[0] != hashes[1]
    seeds = {}
    for rep in ("rep-0", "rep-1"):
        for cls in ("normal", "pneumonia"):
            samples = _json(tiny / rep / "synthetic" / "vae" / cls / "samples.json")
            seeds[rep, cls] = {im["seed"] for im in samples["images"]}
    all_seeds = [s for v in seeds.values() for s in v]
    assert len(all_seeds) == len(set(all_seeds)) == 4 * 8  # no class or replicate shares a latent
    assert report["design"] == {**report["design"], "replicates": 2, "seeds": 2, "unit_of_inference": "replicate",
                                "primary_metric": "balanced_accuracy"}


def test_rerun_reproduces_and_a_kill_mid_replicate_resumes_to_the_same_results(tiny, tmp_path):
    out = tmp_path / "again"
    shutil.copytree(tiny / "rep-0", out / "rep-0")  # replicate 0 as finished; replicate 1 up to its classifiers
    shutil.copytree(tiny / "rep-1", out / "rep-1", ignore=shutil.ignore_patterns("classifiers"))
    # (the same seed training the same generators bit for bit: test_generators' resume tests)
    cmd = [sys.executable, "-m", "genaug.cli", "augment-and-train", "--headroom", "none", *map(str, TINY), "--out", str(out)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    deadline = time.time() + 600
    while not list((out / "rep-1" / "classifiers").glob("*/seed-0.json")) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # in the middle of replicate 1's classifier runs
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "run the same command again" in err and "Traceback" not in err, err
    assert not (out / "report.json").exists()
    r = run_cli("augment-and-train", "--headroom", "none", *TINY, "--out", out)
    assert r.exit_code == 0, r.output
    assert results_table(out) == results_table(tiny)  # identical on re-run, interrupted or not


def results_table(folder):
    with open(folder / "results.csv") as f:
        return list(csv.DictReader(f))


def _up_to_classifiers(tiny, out):
    """Both replicates of the tiny experiment with their generators, samples, acceptance and quality
    done and no classifier run yet."""
    for rep in ("rep-0", "rep-1"):
        shutil.copytree(tiny / rep, out / rep, ignore=shutil.ignore_patterns("classifiers"))


def test_a_folder_packed_without_weights_continues_elsewhere_retraining_only_what_is_still_read(tiny, tmp_path):
    """Another host (or a fresh machine) gets the folder without its model files; of the stages whose
    weights are gone, only the generator whose samples were lost retrains, and the results are equal."""
    import tarfile

    from genaug.harness.run.progress import progress

    r = run_cli("pack", tiny, tmp_path / "exp.tar.gz", "--without-weights")
    assert r.exit_code == 0 and "weight files" in r.output, r.output
    with tarfile.open(tmp_path / "exp.tar.gz") as tar:
        names = tar.getnames()
        assert names and not [n for n in names if n.endswith(".safetensors") or ".lease-" in n]
        tar.extractall(tmp_path / "there", filter="data")
    out = tmp_path / "there" / "exp"
    shutil.rmtree(out / "rep-1" / "synthetic" / "vae" / "normal")  # lost, with the stages that read it
    (out / "rep-1" / "acceptance" / "vae.json").unlink()
    for arm in ("plus-vae", "plus-dup"):
        shutil.rmtree(out / "rep-1" / "classifiers" / arm)
    status = progress(out)
    assert status["planned"] - status["done"] == 7
    logged = len(Store(out).log())
    r = run_cli("augment-and-train", "--headroom", "none", *TINY, "--out", out)
    assert r.exit_code == 0, r.output
    computed = sorted(e["label"] for e in Store(out).log()[logged:])
    assert computed == sorted(["generator rep-1 vae normal", "samples rep-1 vae normal", "acceptance rep-1 vae",
                               *(f"classifier rep-1 {arm} resnet18 seed {k}" for arm in ("+dup", "+vae") for k in (0, 1))])
    assert results_table(out) == results_table(tiny)


def test_pack_without_weights_keeps_the_models_a_stage_still_ahead_reads(tiny, tmp_path):
    """A generator whose samples are not all drawn travels with its model, so the next host draws
    them without training it again; finished replicates' generators and every checkpoint stay behind."""
    import tarfile

    out = tmp_path / "exp"
    shutil.copytree(tiny, out)
    shutil.rmtree(out / "rep-1" / "synthetic" / "vae" / "normal")  # not drawn yet, with what reads it
    (out / "rep-1" / "acceptance" / "vae.json").unlink()
    for arm in ("plus-vae", "plus-dup"):
        shutil.rmtree(out / "rep-1" / "classifiers" / arm)
    r = run_cli("pack", out, tmp_path / "exp.tar.gz", "--without-weights")
    assert r.exit_code == 0 and "kept the finished model of 1 training(s) a later stage reads" in r.output, r.output
    with tarfile.open(tmp_path / "exp.tar.gz") as tar:
        names = {n for n in tar.getnames() if n.endswith(".safetensors")}
        tar.extractall(tmp_path / "there", filter="data")
    assert names and all(n.startswith("exp/rep-1/generators/vae/normal/model/") for n in names), names
    there = tmp_path / "there" / "exp"
    logged = len(Store(there).log())
    r = run_cli("augment-and-train", "--headroom", "none", *TINY, "--out", there)
    assert r.exit_code == 0, r.output
    computed = {e["label"] for e in Store(there).log()[logged:]}
    assert "samples rep-1 vae normal" in computed and not [c for c in computed if c.startswith("generator")]


def test_pack_without_weights_keeps_only_the_newest_checkpoint_of_an_unfinished_training(tiny, tmp_path):
    """A training caught mid-way has no final model; its newest checkpoint is the only copy of that
    work, so it travels; older checkpoints, finished trainings' checkpoints and models do not."""
    import tarfile

    out = tmp_path / "exp"
    (out / "stages").mkdir(parents=True)
    shutil.copy(tiny / "spec.json", out / "spec.json")  # its stages not done here: no model is read
    weights = ["model.safetensors", "optimizer.bin", "custom_checkpoint_0.pkl"]
    running, finished = out / "rep-0" / "generators" / "ddpm-semi", out / "rep-0" / "generators" / "ddpm" / "normal"
    for run in (running, finished):
        for step in ("step-0000300", "step-0000600"):
            (run / "checkpoints" / step).mkdir(parents=True)
            for name in weights:
                (run / "checkpoints" / step / name).write_bytes(b"w" * 100)
        (run / "train_log.jsonl").write_text("{}\n")
    (finished / "model").mkdir()
    (finished / "model" / "diffusion.safetensors").write_bytes(b"w")
    (out / "rep-0" / "teacher").mkdir()
    (out / "rep-0" / "teacher" / "model.safetensors").write_bytes(b"w")
    (running / "checkpoints" / ".step-0000900.partial").mkdir()  # a checkpoint being written
    (running / "checkpoints" / ".step-0000900.partial" / "model.safetensors").write_bytes(b"w")
    r = run_cli("pack", out, tmp_path / "exp.tar.gz", "--without-weights")
    assert r.exit_code == 0 and "newest checkpoint of 1 unfinished training" in r.output, r.output
    with tarfile.open(tmp_path / "exp.tar.gz") as tar:
        names = {n for n in tar.getnames() if n.endswith((".safetensors", ".bin", ".pkl"))}
    assert names == {f"exp/rep-0/generators/ddpm-semi/checkpoints/step-0000600/{n}" for n in weights}
    r = run_cli("pack", out, tmp_path / "all.tar.gz")
    with tarfile.open(tmp_path / "all.tar.gz") as tar:
        assert len([n for n in tar.getnames() if n.endswith((".safetensors", ".bin", ".pkl"))]) == 14


def test_pack_bad_input(tiny, tmp_path):
    assert_clean_error(run_cli("pack", tmp_path, tmp_path.parent / "x.tar.gz"), "not an augment-and-train folder")
    assert_clean_error(run_cli("pack", tiny, tiny / "x.tar.gz"), "cannot go inside the folder")
    assert_clean_error(run_cli("pack", tiny, tmp_path / "x.zip"), "FILE.tar.gz")
    assert not (tiny / "x.tar.gz").exists() and not (tmp_path / "x.zip").exists()
    broken = tmp_path / "broken"  # what stays to run is read from the spec: one that does not parse says so
    broken.mkdir()
    (broken / "spec.json").write_text('{"data": "x"')
    assert_clean_error(run_cli("pack", broken, tmp_path / "b.tar.gz", "--without-weights"), "not a spec genaug can read")
    assert_clean_error(run_cli("status", broken), "not a spec genaug can read")
    assert not (tmp_path / "b.tar.gz").exists()


def test_two_drivers_on_one_folder_never_compute_a_stage_twice(tiny, tmp_path):
    """Two processes on one folder: a stage whose lease the other holds is left to it (store.py), so
    every classifier run is computed once, and the results equal one driver's."""
    out = tmp_path / "together"
    _up_to_classifiers(tiny, out)
    cmd = [sys.executable, "-m", "genaug.cli", "augment-and-train", "--headroom", "none", *map(str, TINY), "--out", str(out)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}  # the thread count of the tiny run: the same float sums
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    computed = [e for e in Store(out).log() if not e["adopted"]]
    assert len(computed) == len({e["key"] for e in computed}) == 16  # 2 replicates x 2 seeds x 4 arms, once each
    assert len({e["pid"] for e in computed}) == 2  # shared: a driver goes on past a stage the other holds
    assert results_table(out) == results_table(tiny) and not list((out / "stages").glob("*.lease-*"))


def test_the_spec_is_data_any_process_can_run_a_stage_from(tiny):
    import pickle

    from genaug.harness.design.spec import ExperimentSpec
    from genaug.harness.run.plan import done, plan

    spec = ExperimentSpec.from_json((tiny / "spec.json").read_text())
    assert pickle.loads(pickle.dumps(spec)) == spec and spec.classes == ("normal", "pneumonia")
    tasks = plan(spec)
    assert len(tasks) == 34 and all(done(spec, t) for t in tasks)  # the same keys the run recorded
    assert len({t.key for t in tasks}) == len(tasks) and len({t.label for t in tasks}) == len(tasks)
    # a setting added since the store, at the value that reproduces earlier stages, leaves every key as it was
    from dataclasses import replace

    config = json.loads(spec.config_json)
    without = replace(spec, config_json=json.dumps({k: v for k, v in config.items() if k != "given_split"}))
    ignore = replace(spec, config_json=json.dumps({**config, "given_split": "ignore"}))
    assert without.settings_hash == spec.settings_hash != ignore.settings_hash
    # so do the settings added since (a classifier's key too), at the values earlier folders ran with
    added = ("headroom_steps", "pretrain", "edit_strength")
    before = replace(spec, config_json=json.dumps({k: v for k, v in config.items() if k not in added}))
    older = replace(spec, config_json=json.dumps({**config, "headroom_steps": "same", "pretrain": "per-replicate",
                                                  "edit_strength": "mixed"}))
    scaled = replace(spec, config_json=json.dumps({**config, "headroom_steps": "scaled"}))
    assert older.stage_hash("classifier") == before.stage_hash("classifier") != scaled.stage_hash("classifier")
    assert older.upstream_hash == before.upstream_hash


def test_leases_one_holder_a_dead_holder_superseded_a_retry_takes_its_own(tmp_path):
    store = Store(tmp_path)
    first = store.acquire("classifier-k", "driver-a")
    assert first is not None and store.acquire("classifier-k", "driver-b") is None  # fresh: left to its holder
    again = store.acquire("classifier-k", "driver-a")  # the same driver run's retry of the task
    assert again is not None and again.path == first.path
    stale = time.time() - 120
    os.utime(first.path, (stale, stale))  # its heartbeat stopped: the process is gone
    first._stop.set()
    taken = store.acquire("classifier-k", "driver-b")
    assert taken is not None and taken.path.name == "classifier-k.lease-1"
    assert store.acquire("classifier-k", "driver-c") is None  # one taker wins; no file moved back
    taken.release()
    assert not list(store.dir.glob("classifier-k.lease-*"))


def test_control_arms_image_counts_and_step_budget(tiny):
    report = _json(tiny / "report.json")
    arms = report["arms"]
    assert list(arms) == ["baseline", "baseline-strong", "+dup", "+vae"]
    steps = {run["optimizer_steps"] for a in arms.values() for run in a["runs"]}
    seen = {sum(run["images_seen"].values()) for a in arms.values() for run in a["runs"]}
    assert len(steps) == 1 and len(seen) == 1  # one budget for every arm
    for rep in (0, 1):
        kept = _json(tiny / f"rep-{rep}" / "acceptance" / "vae.json")["kept"]
        largest = sum(len(v) for v in kept.values())
        dup = [run for run in arms["+dup"]["runs"] if run["replicate"] == rep]
        vae = [run for run in arms["+vae"]["runs"] if run["replicate"] == rep]
        assert all(run["n_extra"] == largest for run in dup + vae)
        assert all(run["n_extra"] == 0 for run in arms["baseline-strong"]["runs"])
    assert set(report["comparisons"]) == {"baseline", "baseline-strong", "+dup"}
    primary = report["comparisons"]["baseline"]["+vae"]["balanced_accuracy"]
    assert primary["n"] == 2 and "p_holm" in primary and primary["wilcoxon_min_p"] == 0.5
    r = run_cli("datasets", tiny)  # an experiment folder: each replicate's manifest
    assert r.exit_code == 0 and r.output.count("run ") == 2 and "rep-1" in r.output
    md = (tiny / "report.md").read_text()
    assert md.index("## Answer") < md.index("## Design") < md.index("## Test metrics")
    assert "Primary metric: **balanced_accuracy**" in md and "+vae" in md.split("## Design")[0]
    for name in ("forest.png", "metrics.png", "quality-vs-gain.png", "confusion-plus-dup.png"):
        assert (tiny / "figures" / name).exists()
    run = _json(tiny / "rep-1" / "classifiers" / "plus-vae" / "seed-1.json")
    assert set(run["test"]["per_class"]["normal"]) == {"sensitivity", "specificity"}
    assert np.asarray(run["test"]["confusion_matrix"]).sum() == 624 == report["data"]["n_test"]
    assert report["versions"]["torch"] and len(report["data"]["manifest_sha256"]) == 2
    assert report["versions"]["genaug_code_sha256"] == package_digest()[:16]
    q = _json(tiny / "rep-0" / "quality" / "vae.json")
    assert {"fid", "kid_mean", "precision", "recall", "cas", "n_real", "n_synthetic"} <= set(q)
    assert q["n_real"] == 16 and q["cas"]["n_test"] == 624
    normal = q["per_class"]["normal"]
    assert normal["n_real"] == 8 and normal["n_floor"] == 8 and normal["fid"] > 0 and normal["floor_fid"] > 0
    floor_items = _json(tiny / "rep-0" / "quality" / "floor.json")
    assert set(floor_items) == {"normal", "pneumonia"}
    assert "real-vs-real floor" in md


def test_more_replicates_and_seeds_on_a_rerun_are_recorded(tiny, tmp_path):
    out = tmp_path / "grow"
    shutil.copytree(tiny, out)
    args = list(TINY)
    args[args.index("--seeds") + 1] = "3"
    r = run_cli("augment-and-train", "--headroom", "none", *args, "--out", out)
    assert r.exit_code == 0, r.output
    history = _json(out / "report.json")["design"]["history"]
    assert [(h["replicates"], h["seeds"]) for h in history] == [(2, 2), (2, 3)]
    assert not history[0]["after_report"] and history[1]["after_report"]  # seeds added once a report existed
    md = (out / "report.md").read_text()
    assert "The design grew on re-runs" in md and "(post hoc: after a report existed)" in md
    assert "**Post hoc**: the design became 2 replicate(s) x 3 seed(s)" in md[md.index("## Answer"):md.index("## Design")]
    r = run_cli("augment-and-train", "--headroom", "none", *args, "--image-size", "20", "--out", out)
    assert_clean_error(r, "other settings (image_size)")


# -- any synthetic source --------------------------------------------------------------------

def _external(folder, names):
    """Six val-split images per class folder, mirrored, at 16 px (the size of the experiments using them)."""
    s = open_source(str(PNEUMONIA))
    for label, name in enumerate(names):
        for i, img in enumerate(load_split(s, "val", [label % 2], 16).images[:6]):
            save_png(img.flip(-1), folder / name / f"{i}.png")


def test_external_synthetic_folder_goes_through_acceptance_and_arms(tmp_path):
    _external(tmp_path / "ext", ["normal", "PNEUMONIA"])  # class folders match case-insensitively
    args = ["augment-and-train", "--headroom", "none", "--config", _no_quality(tmp_path), "--data", PNEUMONIA, "--per-class", "10",
            "--generator", "none", "--synthetic", f"mine={tmp_path / 'ext'}", "--synthetic-per-class", "6", "--controls", "none",
            "--seeds", "2", "--steps", "1", "--image-size", "16", "--no-progress", "--device", "cpu",
            "--out", tmp_path / "exp"]
    r = run_cli(*args)
    assert r.exit_code == 0, r.output
    report = _json(tmp_path / "exp" / "report.json")
    assert list(report["arms"]) == ["baseline", "+mine"]
    assert {row["policy"] for row in report["acceptance"]["mine"]} == {"all"}
    assert all(run["n_extra"] == 12 for run in report["arms"]["+mine"]["runs"])
    assert report["design"]["unit_of_inference"] == "seed" and "conditional on" in report["answer"][1]
    _external(tmp_path / "bad", ["normal", "covid"])
    args[args.index(f"mine={tmp_path / 'ext'}")] = f"mine={tmp_path / 'bad'}"
    args[-1] = tmp_path / "exp2"
    assert_clean_error(run_cli(*args), "folder 'covid'", "is not a class of this experiment (normal, pneumonia)")


def test_runs_from_genaug_train_are_reused_and_incompatible_ones_refused(tmp_path):
    from genaug.harness.design.seeds import Seeds

    subset_seed = Seeds(0, 0).of("subset")  # the seed replicate 0 of an experiment with --seed 0 draws its subset with
    common = ["--data", PNEUMONIA, "--class", "all", "--seed", subset_seed, "--steps", "5", "--batch-size", "4",
              "--image-size", "16", "--no-progress", "--device", "cpu"]
    # per class 10 with 20% validation from the source's val split: 8 training images per class
    assert run_cli("train", "vae", *common, "--per-class", "8", "--out", tmp_path / "R").exit_code == 0
    exp = ["augment-and-train", "--headroom", "none", "--config", _no_quality(tmp_path), "--data", PNEUMONIA, "--per-class", "10",
           "--generator", "vae", "--synthetic-per-class", "4", "--controls", "none", "--seeds", "1", "--steps", "1",
           "--image-size", "16", "--no-progress", "--device", "cpu"]
    r = run_cli(*exp, "--runs", tmp_path / "R", "--out", tmp_path / "exp")
    assert r.exit_code == 0, r.output
    from genaug.runs import model_hash

    used = _json(tmp_path / "exp" / "report.json")["generators"]["vae"]
    assert not (tmp_path / "exp" / "rep-0" / "generators").exists()
    assert used == {c: [model_hash(tmp_path / "R" / c)] for c in ("normal", "pneumonia")}
    assert run_cli("train", "vae", *common, "--per-class", "9", "--out", tmp_path / "R9").exit_code == 0
    r = run_cli(*exp, "--runs", tmp_path / "R9", "--out", tmp_path / "exp9")
    assert_clean_error(r, "was trained on real images this experiment does not train on",
                       f"--per-class 8 --seed {subset_seed}")
    # several replicates: every one needs its own generators (R/rep-<r>/), or the run is refused before any work
    r = run_cli(*exp, "--replicates", "2", "--runs", tmp_path / "R", "--out", tmp_path / "exp2")
    assert_clean_error(r, "no rep-0/ folder", "with --replicates 2")
    assert not (tmp_path / "exp2").exists()


def test_an_arm_whose_images_were_all_rejected_is_marked(tmp_path):
    _external(tmp_path / "ext", ["normal", "pneumonia"])
    cfg = tmp_path / "c.yaml"
    cfg.write_text("accept: [fid-gate]\nacceptance: {fid_max: 0.0}\nquality: false\n")  # every image rejected
    r = run_cli("augment-and-train", "--headroom", "none", "--config", cfg, "--data", PNEUMONIA, "--per-class", "10", "--generator", "none",
                "--synthetic", f"mine={tmp_path / 'ext'}", "--synthetic-per-class", "6", "--controls", "none",
                "--seeds", "1", "--steps", "1", "--image-size", "16", "--no-progress", "--device", "cpu",
                "--out", tmp_path / "exp")
    assert r.exit_code == 0, r.output
    md = (tmp_path / "exp" / "report.md").read_text()
    assert "| +mine (no accepted images) |" in md and "+mine had no accepted synthetic images" in md
    assert "**One unit**" in md  # one seed, one replicate: no interval, said in words


# -- saved classifiers and their heatmaps ------------------------------------------------------

def test_saved_classifiers_reload_to_the_recorded_test_results(tiny):
    from genaug.data import load_split
    from genaug.classifiers.inference import predict_proba
    from genaug.classifiers.networks import load_classifier

    saved = sorted(tiny.glob("rep-*/classifiers/*/seed-*.safetensors"))
    arms = {p.parent.name for p in saved}
    assert arms == {"baseline", "baseline-strong", "plus-dup", "plus-vae"}
    assert all(p.name == "seed-0.safetensors" for p in saved) and len(saved) == 2 * 4  # save_models: first
    model, meta = load_classifier(tiny / "rep-1" / "classifiers" / "plus-vae" / "seed-0.safetensors")
    assert meta["arm"] == "+vae" and meta["replicate"] == 1 and meta["classes"] == ["normal", "pneumonia"]
    s = open_source(str(PNEUMONIA))
    test = load_split(s, "test", [0, 1], meta["image_size"], fit=meta["fit"], intensity=meta["intensity"])
    accuracy = float((predict_proba(model, test.images, "cpu").argmax(1) == test.labels.numpy()).mean())
    recorded = _json(tiny / "rep-1" / "classifiers" / "plus-vae" / "seed-0.json")["test"]["accuracy"]
    assert accuracy == pytest.approx(recorded, abs=1e-12)


def test_report_shows_the_calibrated_gate(tiny):
    gate = _json(tiny / "rep-0" / "acceptance" / "gate.json")
    assert gate["near_copy_kinds"] == ["shift", "noise", "jpeg"]  # as its config asks
    assert gate["spaces"] == ["inception", "pixels"] and gate["method"] == "rank bound"
    for row in gate["per_class"].values():
        assert row["n_calibration"] == 2 and set(row["thresholds"]) == {"inception", "pixels"}
        assert row["false_rejection_bound"] is None  # 2 calibration images: exact copies only, and said so
    md = (tiny / "report.md").read_text()
    assert "### The memorisation gate" in md and "rank (split-conformal) bound" in md and "exact copies only" in md
    assert len(_json(tiny / "report.json")["memorization_gate"]) == 2  # one per replicate


def test_explain_an_experiment_and_the_report_section(tiny, tmp_path):
    out = tmp_path / "explained"
    shutil.copytree(tiny, out)
    r = run_cli("explain", "--experiment", out, "--method", "cam", "--per-class", "1", "--mean-count", "4",
                "--device", "cpu")
    assert r.exit_code == 0, r.output
    result = _json(out / "explain" / "explain-cam.json")
    assert result["models"][0] == "baseline" and set(result["models"]) == {"baseline", "baseline-strong",
                                                                             "plus-dup", "plus-vae"}
    assert 2 <= len(result["images"]) <= 4 and result["target"] == "true class"
    assert set(result["mean_heatmap_correlation_with_reference"]) == {"baseline-strong", "plus-dup", "plus-vae"}
    assert (out / "explain" / "heatmaps-cam.png").stat().st_size > 0 and (out / "explain" / "mean-cam.png").exists()
    # --explain on a re-run of the finished experiment: nothing retrained, heatmaps in the report
    r = run_cli("augment-and-train", "--headroom", "none", *TINY, "--explain", "gradcam", "--out", out)
    assert r.exit_code == 0, r.output
    assert "## Where the classifiers look" in (out / "report.md").read_text()
    assert (out / "explain" / "heatmaps-gradcam.png").exists()


def test_explain_bad_input(tiny, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.yaml").write_text((tiny / "config.yaml").read_text())
    assert_clean_error(run_cli("explain", "--experiment", bare), "no saved classifiers")
    assert_clean_error(run_cli("explain", "--experiment", tmp_path), "not an augment-and-train folder")
    r = run_cli("explain", "--model", tiny / "rep-0" / "classifiers" / "baseline" / "seed-0.safetensors")
    assert r.exit_code == 2 and "--model needs --data" in r.output
    r = run_cli("explain", "--model", tiny / "rep-0" / "classifiers" / "baseline" / "seed-0.safetensors",
                "--data", PNEUMONIA, "--split", "val", "--out", tmp_path / "one", "--method", "gradcam++",
                "--per-class", "1", "--mean-count", "3", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert _json(tmp_path / "one" / "explain-gradcam++.json")["models"] == ["baseline"]


def test_report_says_where_the_time_went(tiny):
    """Every stage task that computed recorded its wall time once; the report sums them per stage
    type and finds the critical path through the tasks' inputs."""
    from genaug.harness.run.timing import critical_path

    t = _json(tiny / "report.json")["timings"]
    assert t["generator"]["count"] == 4 and t["samples"]["count"] == 4  # 2 replicates x 2 classes
    assert t["acceptance"]["count"] == 2 and t["gate"]["count"] == 2 and t["subset"]["count"] == 2
    assert t["teacher"]["count"] == 2  # one per replicate: label fidelity in the quality stage
    assert t["classifier"]["count"] == 16 and t["classifier"]["total_s"] > 0  # 2 replicates x 2 seeds x 4 arms
    records = [r for r in Store(tiny).records() if r.get("wall_s") is not None]
    path = critical_path(records)
    assert [r["stage"] for r in path][:1] == ["subset"]
    assert not any(path[-1]["key"] in r["upstream"] for r in records)  # it ends where nothing reads on
    for before, after in zip(path, path[1:]):
        assert before["key"] in after["upstream"]  # a chain: each task reads the one before
    # which stage ends it depends on this machine's times; that no chain is longer does not
    by_key = {r["key"]: r for r in records}
    for leaf in (r for r in records if r["stage"] == "classifier"):
        chain, r = [leaf], leaf
        while ups := [by_key[u] for u in r["upstream"] if u in by_key]:
            r = ups[0]
            chain.append(r)
        assert sum(c["wall_s"] for c in chain) <= sum(c["wall_s"] for c in path) + 1e-9
    assert sum(r["critical_s"] for r in t.values()) == pytest.approx(sum(r["wall_s"] for r in path), abs=0.5)
    md = (tiny / "report.md").read_text()
    assert "## Where the time went" in md and "| classifier | 16 |" in md and "critical path" in md


def test_status_counts_recorded_running_and_the_time_ahead(tiny, tmp_path):
    """`genaug status`: a finished folder has every planned task recorded; with three classifier records
    gone and one of them leased, it counts them, names the running one and puts the time ahead at three
    times the mean of the recorded classifier runs."""
    from genaug.harness.run.progress import progress

    finished = progress(tiny)
    assert finished["done"] == finished["planned"] == 34 and finished["report"] and finished["left_s"] == 0
    assert finished["headroom"] == {"planned": 6, "done": 6}  # 2 subsets + baseline-strong's 4 runs
    out = tmp_path / "copy"
    shutil.copytree(tiny, out)
    store = Store(out)
    gone = [r for r in store.records() if r["stage"] == "classifier"][:3]
    for record in gone:
        store.record_path(record["key"]).unlink()
    (out / "report.json").unlink()
    (out / "stages" / f"{gone[0]['key']}.lease-0").write_text("someone\nhost-a 4242 2026-12-01T19:00:00\n")
    p = progress(out)
    row = p["stages"]["classifier"]
    assert (p["done"], row["done"], row["running"], p["report"]) == (31, 13, 1, False)
    kept = [r["wall_s"] for r in store.records() if r["stage"] == "classifier"]
    assert row["left_s"] == pytest.approx(3 * sum(kept) / len(kept)) and p["left_s"] == pytest.approx(row["left_s"])
    assert p["running"] == [{"label": gone[0]["label"], "host": "host-a", "pid": "4242", "since": "2026-12-01T19:00:00"}]
    r = run_cli("status", out)
    assert r.exit_code == 0, r.output
    assert "31 of 34 stage tasks recorded, 1 running; no report yet" in r.output and "| classifier | 13 / 16 | 1 |" in r.output
    assert f"running: {gone[0]['label']} (host-a, since 2026-12-01T19:00:00)" in r.output
    assert_clean_error(run_cli("status", tmp_path), "no spec.json; not an augment-and-train folder")


def test_the_confidence_filter_is_trained_once_per_unit_and_decides_for_every_source(tmp_path, monkeypatch):
    """Two sources through `all,confidence`: one filter classifier in the unit's folder, and each source's
    decisions are the reloaded filter's probabilities against confidence_tau."""
    from genaug.classifiers import networks
    from genaug.classifiers.networks import load_classifier
    from genaug.harness.stages.accepted import decisions_path
    from genaug.classifiers.inference import predict_proba
    from genaug.harness.stages.generation import synthetic_set
    from genaug.harness.design.spec import ExperimentSpec
    from genaug.harness.run.plan import unit_subset

    saved = []
    original = networks.save_classifier
    monkeypatch.setattr(networks, "save_classifier", lambda *a, **k: saved.append((k.get("extra") or {}).get("role"))
                        or original(*a, **k))
    _external(tmp_path / "ext", ["normal", "pneumonia"])
    out = tmp_path / "exp"
    r = run_cli("augment-and-train", "--headroom", "none", "--config", _no_quality(tmp_path), "--data", PNEUMONIA, "--per-class", "10",
                "--generator", "vae", "--generator-steps", "5", "--synthetic", f"mine={tmp_path / 'ext'}",
                "--synthetic-per-class", "6", "--accept", "all,confidence", "--controls", "none", "--seeds", "1",
                "--steps", "1", "--image-size", "16", "--no-progress", "--device", "cpu", "--out", out)
    assert r.exit_code == 0, r.output
    assert saved.count("confidence filter") == 1  # trained once for the unit's two acceptance tasks
    files = list((out / "rep-0" / "acceptance").glob("filter-*.safetensors"))
    assert len(files) == 1
    model, meta = load_classifier(files[0])
    assert meta["role"] == "confidence filter"
    spec = ExperimentSpec.from_json((out / "spec.json").read_text())
    unit = spec.units()[0]
    data = unit_subset(spec, unit)
    for source in ("vae", "mine"):
        drawn = synthetic_set(spec, unit, data, source)
        decisions = _json(decisions_path(spec, unit, source))
        kept, tau = decisions["kept"], decisions["settings"]["confidence_tau"]
        for label, name in enumerate(spec.classes):
            probs = predict_proba(model, drawn[label], "cpu")[:, label]
            assert kept[name] == np.flatnonzero(probs >= tau).tolist(), (source, name)


def test_a_record_rekeyed_by_a_later_genaug_is_not_counted_twice():
    """A folder from before 0.2 keeps its records and gains copies under the new keys (plan.adopt): the
    time table counts each computation once."""
    from genaug.harness.run.timing import critical_path, summary

    records = [{"key": "s", "stage": "subset", "wall_s": 1.0, "upstream": []},
               {"key": "c", "stage": "classifier", "wall_s": 2.0, "upstream": ["s"]},
               {"key": "s2", "stage": "subset", "wall_s": 1.0, "upstream": [], "rekeyed_from": "s"},
               {"key": "c2", "stage": "classifier", "wall_s": 2.0, "upstream": ["s"], "rekeyed_from": "c"}]
    rows = summary(records)
    assert rows["classifier"]["count"] == 1 and rows["subset"]["count"] == 1
    assert [r["key"] for r in critical_path(records)] == ["s", "c"]


def test_the_carried_pool_store_resumes_without_computing_and_re_renders_its_committed_report(tmp_path):
    """The pool run carried finished (samples/carry/pneumonia-50-pool.tar.gz, a folder from before 0.2,
    whose store keyed every stage under one settings hash): a re-run computes nothing (each recorded
    task is re-keyed to today's key by its label, once: a second re-run records nothing), and its
    report re-renders byte for byte as committed in samples/reports."""
    import tarfile

    from conftest import REPO, SHARED

    with tarfile.open(REPO / "samples" / "carry" / "pneumonia-50-pool.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    out = tmp_path / "pneumonia-50-pool"
    args = ("augment-and-train", "--config", out / "config.yaml", "--data-root", SHARED, "--out", out, "--no-progress")
    before = {r["key"] for r in Store(out).records()}
    assert run_cli(*args).exit_code == 0
    new = [r for r in Store(out).records() if r["key"] not in before]
    assert new and all(r["rekeyed_from"] in before for r in new)  # moved to today's keys, nothing computed
    logged = len(Store(out).log())
    assert run_cli(*args).exit_code == 0 and len(Store(out).log()) == logged
    committed = REPO / "samples" / "reports" / "pneumonia-50-pool"
    for name in ("report.md", "results.csv"):
        assert (out / name).read_bytes() == (committed / name).read_bytes(), name
