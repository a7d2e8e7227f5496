"""augment-and-train with several labels per image (harness/multilabel_stages.py, multilabel_report.py), on
../shared/data/nih1000: a tiny experiment end to end, and the pieces it is made of on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest

from genaug.errors import GenaugError
from genaug.harness.experiment import Experiment, experiment_config
from genaug.harness.report.multilabel_report import PER_LABEL
from genaug.harness.stages.multilabel_stages import rare_weights, set_agreement, targeted_label_sets
from genaug.classifiers.multilabel_metrics import choose_thresholds, multilabel_metrics
from genaug.harness.run.store import Store
from genaug.io import read_json

from conftest import SHARED

NIH = str(SHARED / "nih1000" / "labels.csv")
TINY_DDPM = ("steps: 6\nbatch_size: 16\nmodel: {block_out_channels: [16, 32], attention_levels: [], "
             "norm_num_groups: 8, lr_warmup_steps: 1, sample_steps: 3}\n")


def _config(tmp_path, **over):
    (tmp_path / "ddpm.yaml").write_text(TINY_DDPM)
    return experiment_config(None, {
        "per_class": 4, "image_size": 16, "replicates": 2, "seeds": 1, "steps": 1, "generators": "ddpm-multilabel",
        "generator_configs": {"ddpm-multilabel": str(tmp_path / "ddpm.yaml")}, "synthetic_per_class": 12,
        "accept": "memorization,confidence", "acceptance": {"memorization_spaces": ["pixels"]},
        "target_labels": "rarest:2",
        **over})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multilabel")
    e = Experiment(NIH, tmp / "out", _config(tmp), progress=False)
    report = e.run()
    return e, report


def test_a_multilabel_experiment_runs_every_arm_and_reports_each_label(tiny):
    e, report = tiny
    names = list(e.classes)
    assert len(names) == 14 and report["design"]["primary_metric"] == "macro_auroc"
    arms = ["baseline", "baseline-strong", "+dup:ddpm-multilabel", "+dup:ddpm-multilabel-targeted", "+ddpm-multilabel",
            "+ddpm-multilabel-targeted"]
    assert list(report["arms"]) == arms
    assert [report["arms"][a]["kind"] for a in arms] == ["baseline", "control", "control", "control", "synthetic",
                                                         "synthetic"]
    assert set(report["per_label"]) == set(names)
    assert all(set(row["mean"]) == set(arms) for row in report["per_label"].values() if row["mean"])
    # the verdict's family: each synthetic arm against the reference and its matched +dup, on macro AUROC
    family = {(ref, a) for ref, block in report["comparisons"].items() for a, m in block.items()
              if m["macro_auroc"]["in_family"]}
    assert family == {(ref, f"+{s}") for s in ("ddpm-multilabel", "ddpm-multilabel-targeted")
                      for ref in ("baseline-strong", f"+dup:{s}")}
    assert report["answer"][0].startswith("Primary metric: **macro_auroc**")
    md = (e.out / "report.md").read_text()
    assert "## Per-label test AUROC" in md and "Hernia" in md
    # each stored run's metrics are those of its stored probabilities and validation-chosen thresholds
    unit = e.spec.units()[0]
    data = e.unit_data(0)
    run = read_json(e.out / "rep-0" / "classifiers" / "baseline" / "seed-0.json")
    again = multilabel_metrics(data.test_y.numpy(), np.array(run["test_probs"]), np.array(run["thresholds"]), names)
    assert again["macro_auroc"] == pytest.approx(run["test"]["macro_auroc"], abs=1e-3)  # probabilities stored to 6 digits
    assert np.allclose(run["thresholds"], choose_thresholds(data.val_y.numpy(), np.array(run["val_probs"])), atol=1e-5)
    assert unit.name == "rep-0"
    assert (e.out / "rep-0" / "classifiers" / "baseline" / "seed-0.safetensors").exists()  # for explain --label
    rows = (e.out / "results.csv").read_text().splitlines()
    assert any(PER_LABEL + "Hernia" in r for r in rows)


def test_multilabel_units_are_patient_disjoint_and_every_label_trains_on_positives(tiny):
    e, _ = tiny
    for rep in range(2):
        data = e.unit_data(rep)
        train = {it["group"] for it in data.train_items}
        val = {it["group"] for it in data.val_items}
        test = {it["group"] for it in data.manifest["test"]["items"]}
        assert not (train & val) and not (train & test) and not (val & test)
        assert (data.train_y.sum(0) >= 1).all()
        assert data.train_y.shape[1] == 14 and data.test_y.shape == (len(data.test_x), 14)


def test_targeted_samples_hold_a_target_label_in_turn_and_each_dup_matches_its_source(tiny):
    e, report = tiny
    targets = report["targets"]
    assert len(targets) == 2
    drawn = read_json(e.out / "rep-0" / "synthetic" / "ddpm-multilabel-targeted" / "samples.json")["images"]
    assert all(targets[im["index"] % 2] in im["labels"] for im in drawn)
    for rep in ("rep-0", "rep-1"):
        for s in ("ddpm-multilabel", "ddpm-multilabel-targeted"):
            kept = len(read_json(e.out / rep / "acceptance" / f"{s}.json")["kept"])
            assert read_json(e.out / rep / "classifiers" / f"plus-{s}" / "seed-0.json")["n_extra"] == kept
            assert read_json(e.out / rep / "classifiers" / f"plus-dup:{s}" / "seed-0.json")["n_extra"] == kept


def test_a_multilabel_folder_from_before_0_2_keeps_its_arms_and_rule(tiny, tmp_path):
    """A folder whose config predates the instrument (no reference, rule, share or added-image recipe):
    one +dup as large as the largest accepted set, Holm over every augmented arm x reference, and the
    report's design text of that protocol; its generators, samples and acceptance are reused."""
    import shutil

    import yaml

    from genaug.harness.design.config import LEGACY, RECIPE_KEYS

    e, _ = tiny
    out = tmp_path / "old"
    shutil.copytree(e.out, out)
    recorded = yaml.safe_load((out / "config.yaml").read_text())
    (out / "config.yaml").write_text(yaml.safe_dump({k: v for k, v in recorded.items()
                                                     if k not in LEGACY or k not in RECIPE_KEYS or k == "steps"}))
    old = Experiment(NIH, out, _config(e.out.parent), progress=False)
    report = old.run()
    assert {t.split(" ")[0] for t in old.outcome.computed} == {"classifier"}
    assert list(report["arms"]) == ["baseline", "baseline-strong", "+dup", "+ddpm-multilabel",
                                    "+ddpm-multilabel-targeted"]
    kept = max(len(read_json(out / "rep-0" / "acceptance" / f"{s}.json")["kept"])
               for s in ("ddpm-multilabel", "ddpm-multilabel-targeted"))
    assert read_json(out / "rep-0" / "classifiers" / "plus-dup" / "seed-0.json")["n_extra"] == kept
    family = [(ref, a) for ref, block in report["comparisons"].items() for a, m in block.items()
              if m["macro_auroc"]["in_family"]]
    assert len(family) == 6  # two synthetic arms x baseline, baseline-strong, +dup
    assert "as many as the largest accepted synthetic set" in (out / "report.md").read_text()


def test_a_finished_multilabel_experiment_recomputes_nothing(tiny, tmp_path):
    e, report = tiny
    log = (Store(e.out).dir / "log.jsonl").read_text() if (Store(e.out).dir / "log.jsonl").exists() else None
    again = Experiment(NIH, e.out, _config(e.out.parent), progress=False)
    again.run()
    assert not again.outcome.computed
    if log is not None:
        assert (Store(e.out).dir / "log.jsonl").read_text() == log


def test_set_agreement_keeps_images_whose_intended_labels_the_classifier_finds():
    probs = np.array([[0.9, 0.1, 0.2], [0.9, 0.1, 0.2], [0.1, 0.1, 0.1], [0.6, 0.1, 0.1], [0.9, 0.8, 0.1]])
    intended = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0], [1, 1, 0]])
    thresholds = np.array([0.5, 0.5, 0.5])
    assert set_agreement(probs, thresholds, intended).tolist() == [True, False, True, False, True]


def test_rare_label_images_are_duplicated_more_often():
    labels = np.array([[1, 0]] * 8 + [[0, 1]] * 2 + [[0, 0]] * 4)
    w = rare_weights(labels)
    assert w[8] == pytest.approx(1 / 2) and w[0] == pytest.approx(1 / 8) and w[-1] == pytest.approx(1 / 4)
    share_rare = w[8:10].sum() / w.sum()
    assert share_rare > 2 / 14  # oversampled towards the rare label


def test_targeted_label_sets_take_each_target_in_turn_from_the_training_sets():
    items = [{"labels": ["A"]}, {"labels": ["A", "B"]}, {"labels": []}, {"labels": ["C", "A"]}]
    sets = targeted_label_sets(items, ["B", "C"], 6, seed=0)
    assert [("B" if i % 2 == 0 else "C") in s for i, s in enumerate(sets)] == [True] * 6
    assert all(s in ([["A", "B"]] if i % 2 == 0 else [["C", "A"]]) for i, s in enumerate(sets))


@pytest.mark.parametrize("over, words", [
    ({"generators": "ddpm"}, "the generator is ddpm-multilabel"),
    ({"classes": "Hernia,Mass"}, "--class"),
    ({"cv": 3}, "--cv"),
    ({"primary_metric": "balanced_accuracy"}, "with several labels choose from"),
    ({"target_labels": "Hernia,Fracture"}, "unknown label 'Fracture'"),
    ({"labelled_images": 5000}, "labelled_images must be a whole number from 2 to the"),
    ({"synthetic_per_class": "6,12"}, "--synthetic-per-class: one count"),
    ({"headroom": "8,16"}, "--headroom: its learning curve"),
])
def test_what_a_multilabel_experiment_cannot_do_is_refused_in_one_line_with_nothing_written(tmp_path, over, words):
    with pytest.raises(GenaugError) as err:
        Experiment(NIH, tmp_path / "out", _config(tmp_path, **over), progress=False).run()
    assert words in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_label_set_families_and_targets_are_refused_on_one_class_per_image(tmp_path):
    with pytest.raises(GenaugError, match="one class per image"):
        Experiment(str(SHARED / "pneumoniamnist.npz"), tmp_path / "out",
                   experiment_config(None, {"generators": "ddpm-multilabel"}), progress=False)
    assert not (tmp_path / "out").exists()


def test_explain_draws_heatmaps_per_label_on_test_images_that_carry_it(tiny, tmp_path):
    from genaug.explain.views import explain_experiment

    e, _ = tiny
    result = explain_experiment(e.out, tmp_path / "explain", "gradcam", labels_wanted="Effusion,Mass", per_class=2,
                                mean_count=8)
    assert result["labels"] == ["Effusion", "Mass"] and result["models"][0] == "baseline"
    assert len(result["models"]) == 6 and len(result["images"]) == 4
    assert all(im["label"] in im["labels"] for im in result["images"])
    assert all(0 <= p <= 1 for im in result["images"] for p in im["probability"].values())
    assert all((tmp_path / "explain" / f).exists() for f in result["figures"])
    with pytest.raises(GenaugError, match="--label 'Fracture': not a label"):
        explain_experiment(e.out, tmp_path / "x", "gradcam", labels_wanted="Fracture")


def test_genaug_plan_reads_a_finished_multilabel_experiment():
    """The committed nih1000 report (6 replicates): the power table on macro AUROC from its results.csv."""
    from conftest import REPO
    from genaug.harness.stats import planning

    plan = planning.plan_from_experiment(REPO / "samples" / "reports" / "nih1000-multilabel")
    assert plan["primary_metric"] == "macro_auroc" and plan["unit"] == "replicate"
    assert {(r["arm"], r["reference"]) for r in plan["rows"]} == {
        (a, ref) for a in ("+ddpm-multilabel", "+ddpm-multilabel-targeted") for ref in ("baseline", "baseline-strong", "+dup")}
    assert all(r["min_detectable_effect"] > 0 for r in plan["rows"])


def test_seed_ensembles_score_the_averaged_probabilities_with_thresholds_on_the_averaged_validation():
    from genaug.harness.report.multilabel_report import ensembles

    rng = np.random.default_rng(0)
    names = ["A", "B"]
    test_y, val_y = rng.integers(0, 2, (40, 2)), rng.integers(0, 2, (30, 2))
    runs = [{"arm": "baseline", "replicate": 0, "val_probs": rng.random((30, 2)).tolist(),
             "test_probs": rng.random((40, 2)).tolist()} for _ in range(3)]
    out = ensembles(runs + [{**runs[0], "arm": "+dup"}], {0: test_y}, {0: val_y}, names)
    assert set(out) == {"baseline"}  # one seed is no ensemble
    val, test = np.mean([r["val_probs"] for r in runs], 0), np.mean([r["test_probs"] for r in runs], 0)
    expected = multilabel_metrics(test_y, test, choose_thresholds(val_y, val), names)
    assert out["baseline"][0]["macro_auroc"] == pytest.approx(expected["macro_auroc"])
    assert out["baseline"][0]["final_score"] == pytest.approx(expected["final_score"])


def test_the_confidence_filter_is_one_per_unit_and_decides_for_both_sources(tiny):
    """Its per-label thresholds come with it; each source's confidence row counts the images after the
    memorisation gate whose predicted label set agrees with their own, by the reloaded filter."""
    from genaug.classifiers.inference import predict_proba
    from genaug.classifiers.networks import load_classifier
    from genaug.harness.stages.multilabel_stages import decisions_path, set_agreement, synthetic_set

    e, _ = tiny
    unit, data = e.spec.units()[0], e.unit_data(0)
    files = list((e.out / "rep-0" / "acceptance").glob("filter-*.safetensors"))
    assert len(files) == 1
    model, meta = load_classifier(files[0])
    thresholds = np.asarray(meta["filter"]["thresholds"])
    assert meta["role"] == "confidence filter" and thresholds.shape == (14,)
    for source in ("ddpm-multilabel", "ddpm-multilabel-targeted"):
        images, labels = synthetic_set(e.spec, unit, data, source)
        decisions = read_json(decisions_path(e.spec, unit, source))
        gate, confidence = decisions["rows"]
        assert confidence["policy"] == "confidence" and confidence["seen"] == gate["kept"]
        probs = predict_proba(model, images, "cpu", multilabel=True)
        agree = set_agreement(probs, thresholds, labels.numpy())
        assert set(decisions["kept"]) <= set(np.flatnonzero(agree).tolist())
        assert confidence["kept"] == len(decisions["kept"])


def test_a_carried_multilabel_folder_from_before_0_2_re_renders_byte_for_byte(tmp_path):
    """samples/carry/multilabel-legacy-tiny.tar.gz: a tiny multi-label folder from before 0.2 (no
    reference, rule, share or added-image recipe recorded: the settings nih1000-multilabel's config
    lacks), finished and reported by the code before the label kinds shared one classifier stage and one
    set of arms (ad6a5af with d027f94's order of references; generator weights kept, checkpoints and
    saved models dropped). Re-run from the repository root, as it was made: nothing is computed or
    re-keyed, and its report.md and results.csv come out byte for byte."""
    import tarfile

    from conftest import REPO, run_cli

    with tarfile.open(REPO / "samples" / "carry" / "multilabel-legacy-tiny.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    out = tmp_path / "multilabel-legacy"
    before = {name: (out / name).read_bytes() for name in ("report.md", "results.csv")}
    logged = len(Store(out).log())
    r = run_cli("augment-and-train", "--config", out / "config.yaml", "--out", out, "--no-progress")
    assert r.exit_code == 0, r.output
    assert len(Store(out).log()) == logged  # nothing computed, nothing re-keyed
    assert {name: (out / name).read_bytes() for name in before} == before
