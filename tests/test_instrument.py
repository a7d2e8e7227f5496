"""The instrument of issue 38: the steps protocol, the fixed share of added images, matched +dup,
the positive control +real@N, the headroom stage, the intersection-union rule and stage keys that
a change of the arms' recipe keeps."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from conftest import PNEUMONIA, assert_clean_error, run_cli
from genaug.classifiers.batches import BatchDraw
from genaug.classifiers.training import TrainSettings, recompute_batch_norm, train_classifier
from genaug.harness.stats import verdict
from genaug.harness.stats.ceiling import go_sentence


@pytest.mark.parametrize("n_added", [3, 10, 57])
def test_half_of_every_batch_is_added_images_class_stratified(n_added):
    real = (torch.zeros(20, 1, 4, 4, dtype=torch.uint8), torch.arange(20) % 2)
    labels = torch.tensor([i % 3 for i in range(n_added)])
    added = (torch.full((n_added, 1, 4, 4), 255, dtype=torch.uint8), labels)
    draw = BatchDraw(real, added, 16, 0.5, torch.Generator().manual_seed(0))
    totals = torch.zeros(3)
    for _ in range(12):
        images, y, n = draw.next()
        marked = images[:, 0, 0, 0] == 255
        assert n == 8 and int(marked.sum()) == 8 and len(y) == 16
        per_class = torch.bincount(y[marked], minlength=3)
        assert int(per_class.max() - per_class.min()) <= 1  # each batch's added places go to the classes in turn
        totals += per_class
    assert int(totals.max() - totals.min()) <= 1


def test_share_zero_and_proportional_draws():
    real = (torch.zeros(10, 1, 4, 4, dtype=torch.uint8), torch.zeros(10, dtype=torch.int64))
    added = (torch.full((30, 1, 4, 4), 255, dtype=torch.uint8), torch.ones(30, dtype=torch.int64))
    assert BatchDraw(real, added, 8, 0.0, torch.Generator()).next()[2] == 0
    proportional = BatchDraw(real, added, 40, None, torch.Generator())  # before 0.2: the union, uniformly
    assert proportional.next()[2] == 30


def _bn_pairs(a, b):
    return [(p, q) for p, q in zip(a.modules(), b.modules()) if isinstance(p, torch.nn.BatchNorm2d)]


def _same_bn(a, b) -> bool:
    pairs = _bn_pairs(a, b)
    return bool(pairs) and all(torch.allclose(p.running_mean, q.running_mean) and
                               torch.allclose(p.running_var, q.running_var) for p, q in pairs)


@pytest.mark.parametrize("mode", ["augmented", "clean"])
def test_final_model_batch_norm_statistics_are_those_of_the_real_training_images(mode):
    """`augmented`: the real training images through the arm's augmentation (seeded passes);
    `clean`: the same images unaugmented; either way not the mixed, added-image batches'."""
    from genaug.classifiers.training import augmenter

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (24, 1, 16, 16), dtype=torch.uint8, generator=g)
    y = torch.arange(24) % 2
    settings = TrainSettings(steps=4, stem="imagenet", batch_size=8, scored_model="final", augment="trivialaugment",
                             mix=True, synthetic_share=0.5, bn_statistics=mode)
    extra = (torch.full((8, 1, 16, 16), 200, dtype=torch.uint8), torch.zeros(8, dtype=torch.int64))
    trained = train_classifier(x, y, x[:6], y[:6], 2, settings, 0, 3, "cpu", extra=extra)
    again, other = copy.deepcopy(trained.model), copy.deepcopy(trained.model)
    through = augmenter(settings, 16) if mode == "augmented" else None
    recompute_batch_norm(again, x, torch.device("cpu"), 8, through, seed=0)
    recompute_batch_norm(other, x, torch.device("cpu"), 8, None if through else augmenter(settings, 16), seed=0)
    assert _same_bn(trained.model, again) and not _same_bn(trained.model, other)
    assert trained.optimizer_steps == 4 and trained.best_epoch is None and trained.scored == "final"
    assert trained.images_seen == {"real": 16, "extra": 16} and trained.converged in (True, False)
    assert len(trained.history) == 4 and trained.history[-1]["lr"] == pytest.approx(0.0, abs=1e-9)  # cosine to 0


def test_training_batch_norm_statistics_are_the_running_ones():
    """`training` scores the model as it left the loop: the same run with `clean` differs from it only by
    the statistics recomputed on the unaugmented real images."""
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (16, 1, 16, 16), dtype=torch.uint8, generator=g)
    y = torch.arange(16) % 2
    runs = {mode: train_classifier(x, y, x[:4], y[:4], 2, TrainSettings(steps=3, stem="imagenet", batch_size=8,
                                                                        scored_model="final", bn_statistics=mode),
                                   0, 2, "cpu").model for mode in ("training", "clean")}
    assert not _same_bn(runs["training"], runs["clean"])
    recompute_batch_norm(runs["training"], x, torch.device("cpu"), 8)
    assert _same_bn(runs["training"], runs["clean"])


def _pair(diffs):
    from genaug.harness.stats.paired import paired_difference

    return paired_difference(list(diffs), [0.0] * len(diffs))


def test_intersection_union_rule_by_hand(monkeypatch):
    """An arm better than two references at p 0.03 each is a claim; two such arms go through Holm."""
    from genaug.harness.stats import verdict as v

    def fake(treated, base, *a, **k):
        return {"n": 6, "nonzero": 6, "mean_diff": 0.02, "diffs": [0.01, 0.02, 0.03, 0.02, 0.01, 0.03],
                "ci_low": 0.01, "ci_high": 0.03, "p_ttest": 0.03, "p_wilcoxon": 0.03, "wilcoxon_min_p": 0.03125,
                "confidence": 0.95}

    monkeypatch.setattr(v, "paired_difference", fake)
    units = {a: {"balanced_accuracy": {r: 0.5 for r in range(6)}}
             for a in ("baseline", "baseline-strong", "+dup", "+ddpm", "+vae", "+dup:ddpm", "+dup:vae")}
    one = v.comparisons({k: units[k] for k in ("baseline", "baseline-strong", "+dup", "+ddpm")},
                        ["baseline", "baseline-strong", "+dup", "+ddpm"], "balanced_accuracy",
                        metrics=("balanced_accuracy",), rule="iut", reference="baseline-strong")
    for ref in ("baseline-strong", "+dup"):
        c = one[ref]["+ddpm"]["balanced_accuracy"]
        assert c["p_holm"] == pytest.approx(0.03) and c["decision"] == "better" and c["family_size"] == 1
    assert one["baseline"]["+ddpm"]["balanced_accuracy"]["decision"] == "secondary"
    arms = ["baseline", "baseline-strong", "+dup:ddpm", "+dup:vae", "+ddpm", "+vae"]
    two = v.comparisons({k: units[k] for k in arms}, arms, "balanced_accuracy", metrics=("balanced_accuracy",),
                        rule="iut", reference="baseline-strong")
    assert set(two) == {"baseline", "baseline-strong", "+dup:ddpm", "+dup:vae"}
    assert "+vae" not in two["+dup:ddpm"]  # each arm against its own matched duplicates
    c = two["baseline-strong"]["+vae"]["balanced_accuracy"]
    assert c["p_holm"] == pytest.approx(0.06) and c["decision"] == "no difference shown" and c["family_size"] == 2


def test_go_no_go_sentence():
    base = {"reference": "baseline-strong", "reference_mean": 0.85, "ceiling_arm": "headroom@all",
            "ceiling_minus_reference": 0.001}
    none = {**base, "positive": {"arm": "+real@50", "mean_diff": 0.002, "ci_low": -0.01, "ci_high": 0.014,
                                 "p_ttest": 0.6, "n": 6, "detected": False, "min_detectable_effect": 0.05}}
    some = {**base, "ceiling_minus_reference": 0.08,
            "positive": {**none["positive"], "mean_diff": 0.05, "ci_low": 0.03, "ci_high": 0.07, "p_ttest": 0.001,
                         "detected": True}}
    assert "**No-go**" in go_sentence(none, "balanced_accuracy", 0.05)
    assert "**Go**" in go_sentence(some, "balanced_accuracy", 0.05) and "lower bound" not in go_sentence(
        some, "balanced_accuracy", 0.05)
    few = {**some, "positive": {**some["positive"], "n": 3, "detected": False, "wilcoxon_min_p": 0.25}}
    said = go_sentence(few, "balanced_accuracy", 0.05)  # the t test clears alpha; 3 units cannot clear Wilcoxon
    assert "**No-go by the number of units**" in said and "smallest p is 0.25" in said and "at least 6 replicates" in said
    assert "with 80% power" not in said and "with 80% power" in go_sentence(some, "balanced_accuracy", 0.05)
    assert "**No-go**:" in go_sentence({**none, "positive": {**none["positive"], "wilcoxon_min_p": 0.031}},
                                       "balanced_accuracy", 0.05)  # not significant: the data says no
    short = go_sentence({**some, "ceiling_unconverged": [2, 6]}, "balanced_accuracy", 0.05)
    assert "2 of its 6 runs did not converge" in short and "the ceiling is a lower bound" in short
    from genaug.harness.stats.ceiling import control_recovered

    summ = {a: {"balanced_accuracy": {"mean": m}} for a, m in
            (("baseline-strong", 0.85), ("+ddpm", 0.87), ("+pseudo", 0.84), ("+real@50", 0.90))}
    shares = control_recovered(some, summ, "balanced_accuracy", ["+ddpm", "+pseudo", "+absent"])
    assert shares == pytest.approx({"+ddpm": 0.4, "+pseudo": -0.2})  # (0.87 - 0.85) / 0.05, (0.84 - 0.85) / 0.05
    assert control_recovered(none, summ, "balanced_accuracy", ["+ddpm"]) == {}  # an undetected gain: no share


TINY = ["--data", PNEUMONIA, "--per-class", "6", "--generator", "none", "--synthetic", None,
        "--synthetic-per-class", "3", "--replicates", "1", "--seeds", "1", "--steps", "2", "--image-size", "16",
        "--headroom", "12,all", "--no-progress", "--device", "cpu"]


def _external(tmp_path):
    """Three val-split images per class as an external synthetic set."""
    from genaug.data import load_split, open_source
    from PIL import Image

    root = tmp_path / "ext"
    s = open_source(str(PNEUMONIA))
    val = load_split(s, "val", [0, 1], 16)
    for k, name in enumerate(s.classes[:2]):
        (root / name).mkdir(parents=True)
        for i, img in enumerate(val.images[val.labels == k][:3]):
            Image.fromarray(img[0].numpy()).save(root / name / f"{i}.png")
    return root


def test_headroom_positive_control_and_recipe_change_keep_upstream_keys(tmp_path):
    from genaug.harness.design.spec import ExperimentSpec
    from genaug.harness.run.plan import plan

    args = [str(a) if a is not None else f"ext={_external(tmp_path)}" for a in TINY]
    out = tmp_path / "exp"
    r = run_cli("headroom", *args, "--out", out)
    assert r.exit_code == 0, r.output
    assert "+real@3" in r.output and ("**Go**" in r.output or "**No-go**" in r.output)
    done = {p.name for p in (out / "rep-0" / "classifiers").iterdir()}
    assert done == {"baseline-strong", "headroom-at-12", "headroom-at-all", "plus-real-at-3"}  # nothing else yet
    runs = {a: json.loads((out / "rep-0" / "classifiers" / a / "seed-0.json").read_text()) for a in done}
    n = {a: r["n_real_train"] for a, r in runs.items()}
    # headroom_steps scaled: a point with k times the subset's images gets k times the steps, at most 4x
    assert {a: r["optimizer_steps"] for a, r in runs.items()} == {
        "baseline-strong": 2, "plus-real-at-3": 2, "headroom-at-12": round(2 * n["headroom-at-12"] / n["baseline-strong"]),
        "headroom-at-all": 8}
    assert "step budget scaled by its images" in (out / "headroom.md").read_text()
    r = run_cli("augment-and-train", *args, "--out", out)
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert report["headroom"]["positive"]["arm"] == "+real@3" and "## Headroom" in (out / "report.md").read_text()
    # +real@3 never holds a subset, validation or test item
    manifest = json.loads((out / "rep-0" / "manifest.json").read_text())
    spec = ExperimentSpec.from_json((out / "spec.json").read_text())
    from genaug.harness.stages.headroom import extra_real
    from genaug.harness.run.plan import unit_subset
    from genaug.harness.design.spec import Unit
    from genaug.data.unlabeled import candidates

    data = unit_subset(spec, Unit(0))
    pool = set(candidates(spec.source, list(spec.source_labels), manifest, data.val_items))
    held = {it["id"] for it in manifest["train"]["items"]} | {it["id"] for it in data.val_items}
    assert pool and not pool & held
    x, y = extra_real(spec, Unit(0), data, 3)
    assert len(x) == 6 and torch.bincount(y).tolist() == [3, 3]
    assert not {h for h in map(lambda im: im.numpy().tobytes(), x)} & {im.numpy().tobytes() for im in data.train_x}
    before = {t.label: t.key for t in plan(spec)}
    # a change of the arms' recipe (the budget and the network's stem): classifiers re-run, nothing upstream of
    # them; the helpers (teacher, CAS) keep the stem they recorded
    (tmp_path / "stem.yaml").write_text("stem: small\n")
    r = run_cli("augment-and-train", *args, "--steps", "3", "--config", tmp_path / "stem.yaml", "--out", out)
    assert r.exit_code == 0, r.output
    after = {t.label: t.key for t in plan(ExperimentSpec.from_json((out / "spec.json").read_text()))}
    for label, key in before.items():
        assert (after[label] == key) != label.startswith("classifier"), label
    assert list((out / "rep-0").glob("classifiers-before-*"))  # the first recipe's results kept
    history = json.loads((out / "history.json").read_text())
    assert history[-1]["recipe_changed"] == {"steps": [2, 3], "stem": ["imagenet", "small"]}
    assert spec.helper_settings.stem == "imagenet" and ExperimentSpec.from_json(
        (out / "spec.json").read_text()).helper_settings.stem == "imagenet"
    # a dose-response over the share on the finished folder: its two arms run, no other task changes
    (tmp_path / "dose.yaml").write_text("stem: small\nshare_dose: {ext: [0.25]}\n")
    r = run_cli("augment-and-train", *args, "--steps", "3", "--config", tmp_path / "dose.yaml", "--out", out)
    assert r.exit_code == 0, r.output
    dosed = {t.label: t.key for t in plan(ExperimentSpec.from_json((out / "spec.json").read_text()))}
    assert {k: v for k, v in dosed.items() if k in after} == after
    assert sorted(set(dosed) - set(after)) == ["classifier rep-0 share-0.25:+dup:ext resnet18 seed 0",
                                               "classifier rep-0 share-0.25:+ext resnet18 seed 0"]
    folder = out / "rep-0" / "classifiers"
    shares = {a: json.loads((folder / a / "seed-0.json").read_text())["synthetic_share"]
              for a in ("plus-ext", "share-0.25:plus-ext", "share-0.25:plus-dup:ext", "baseline")}
    assert shares == {"plus-ext": 0.5, "share-0.25:plus-ext": 0.25, "share-0.25:plus-dup:ext": 0.25, "baseline": None}
    report = json.loads((out / "report.json").read_text())
    rows = report["share_dose"]["ext"]["rows"]
    assert [(row["share"], row["arm"], row["dup"]) for row in rows] == [
        (0.25, "share-0.25:+ext", "share-0.25:+dup:ext"), (0.5, "+ext", "+dup")]
    assert "share-0.25:+ext" not in verdict.family_arms(report["config"])
    assert "## The added images' share" in (out / "report.md").read_text()
    assert json.loads((out / "history.json").read_text())[-1]["arms_added"] == {"share_dose": {"ext": [0.25]}}


def test_bad_recipe_input_in_one_line(tmp_path):
    args = [str(a) if a is not None else "ext=x" for a in TINY]
    for extra, message in ((["--steps", "0"], "steps must be a whole number"),
                           (["--steps", "many"], "steps must be a whole number"),
                           (["--synthetic-share", "1"], "1<=x<1"),
                           (["--headroom", "12,lots"], "headroom must be")):
        r = run_cli("augment-and-train", *args, *extra, "--out", tmp_path / "bad")
        assert r.exit_code != 0 and "Traceback" not in r.output, r.output
        assert message in r.output or "Invalid value" in r.output, r.output
        assert not (tmp_path / "bad").exists()
    r = run_cli("augment-and-train", *[a if a != "3" else "5000" for a in args], "--out", tmp_path / "bad")
    assert_clean_error(r, "+real@5000")
    assert not (tmp_path / "bad").exists()
    for dose, message in (("{nope: [0.25]}", "not a synthetic source"), ("{ext: [0.5]}", "declared synthetic_share"),
                          ("{ext: [1.5]}", "numbers in (0, 1)"), ("[0.25]", "must map a synthetic source")):
        (tmp_path / "dose.yaml").write_text(f"share_dose: {dose}\n")
        r = run_cli("augment-and-train", *args, "--config", tmp_path / "dose.yaml", "--out", tmp_path / "bad")
        assert_clean_error(r, message)
        assert not (tmp_path / "bad").exists()


def test_min_effect_as_a_share_of_the_measured_headroom():
    from genaug.errors import GenaugError
    from genaug.harness.design.config import experiment_config
    from genaug.harness.stats.ceiling import resolve_min_effect

    summ = {"baseline-strong": {"balanced_accuracy": {"mean": 0.80}},
            "headroom@100": {"balanced_accuracy": {"mean": 0.86}}, "headroom@all": {"balanced_accuracy": {"mean": 0.90}}}
    value, how = resolve_min_effect("50%", summ, "balanced_accuracy", "baseline-strong")
    assert value == pytest.approx(0.05) and "+0.1000" in how
    assert resolve_min_effect(0.03, summ, "balanced_accuracy", "baseline-strong") == (0.03, None)
    assert experiment_config(None, {"min_effect": "50%"})["min_effect"] == "50%"
    for bad in ("150%", "x%", "-1"):
        with pytest.raises(GenaugError, match="min_effect must be"):
            experiment_config(None, {"min_effect": bad})
    with pytest.raises(GenaugError, match="bn_statistics must be one of training, augmented, clean"):
        experiment_config(None, {"bn_statistics": "running"})


def test_the_default_learning_curve_ends_at_a_balanced_ceiling_on_an_imbalanced_split():
    """PneumoniaMNIST's train split is 74% pneumonia, so `all` would be a ceiling that leans towards one
    class (its headroom@all scored below the reference): auto ends at the most images per class a
    balanced draw leaves instead; a balanced split keeps `all`."""
    import numpy as np

    from genaug.data import open_source
    from genaug.data.sources import ArraySource
    from genaug.harness.stages.headroom import default_headroom

    pneumonia = open_source(str(PNEUMONIA))
    normal = int((pneumonia.split("train").labels == 0).sum())
    assert default_headroom(pneumonia, [0, 1], {"per_class": 50}) == [100, 500, 50 + (normal - 50) // 2]
    rng = np.random.default_rng(0)
    balanced = ArraySource("b", "npz", {"train": (rng.integers(0, 256, (400, 8, 8), dtype=np.uint8),
                                                  np.arange(400) % 2)}, ["a", "b"])
    assert default_headroom(balanced, [0, 1], {"per_class": 10}) == [20, "all"]  # 10x would not leave half to spare
    assert default_headroom(balanced, [0, 1], {"per_class": 200}) == [50, 100]  # nothing beyond: inside the set


def test_a_folder_on_the_epochs_protocol_resumes_with_its_own_config_file_unchanged(tmp_path):
    """Its config.yaml records `steps: null` (the 0.1 protocol); read back as the run's config, null must
    not become the new default budget, which would re-run every classifier under another recipe."""
    args = [str(a) if a is not None else f"ext={_external(tmp_path)}" for a in TINY]
    args[args.index("--steps") + 1] = "epochs"
    out = tmp_path / "exp"
    r = run_cli("headroom", *args, "--epochs", "2", "--headroom", "none", "--out", out)
    assert r.exit_code == 0, r.output
    r = run_cli("headroom", "--config", out / "config.yaml", "--no-progress", "--device", "cpu", "--out", out)
    assert r.exit_code == 0, r.output
    history = json.loads((out / "history.json").read_text())
    assert not any("recipe_changed" in h for h in history) and not list((out / "rep-0").glob("classifiers-before-*"))


def test_a_folder_from_before_0_2_takes_todays_recipe_only_when_asked(tmp_path):
    """A 0.1 folder never recorded the settings 0.2 added: a plain re-run keeps how it ran (LEGACY);
    `recipe_defaults: current` gives the arms today's defaults (to re-judge its accepted sets), while
    settings upstream of the arms (seed scheme, pretraining) keep the folder's own in either case."""
    import yaml

    from genaug.errors import GenaugError
    from genaug.harness.design.config import LEGACY, experiment_config
    from genaug.harness.experiment import Experiment

    out = tmp_path / "old"
    out.mkdir()
    recorded = {k: v for k, v in experiment_config(None, {"data": str(PNEUMONIA)}).items() if k not in LEGACY}
    (out / "config.yaml").write_text(yaml.safe_dump({**recorded, "recipe_defaults": None}))

    def resolved(**extra):
        return Experiment(str(PNEUMONIA), out, experiment_config(None, {"data": str(PNEUMONIA), **extra}),
                          device="cpu", progress=False).config

    kept, today = resolved(), resolved(recipe_defaults="current")
    assert {k: kept[k] for k in ("steps", "synthetic_share", "bn_statistics", "decision_rule", "scored_model")} == \
        {"steps": None, "synthetic_share": None, "bn_statistics": "clean", "decision_rule": "holm-all",
         "scored_model": "best"}
    assert today["steps"] == 1000 and today["synthetic_share"] == 0.5 and today["bn_statistics"] == "training"
    assert today["decision_rule"] == "iut" and today["reference"] == "baseline-strong"
    for c in (kept, today):
        assert c["seed_scheme"] == "offset" and c["pretrain"] == "per-replicate"
    # once a run recorded the resolved settings, the same command (a second driver, a resume) finds them again
    (out / "config.yaml").write_text(yaml.safe_dump({**today, "data": str(PNEUMONIA)}))
    again = resolved(recipe_defaults="current")
    assert {k: again[k] for k in LEGACY} == {k: today[k] for k in LEGACY}
    with pytest.raises(GenaugError, match="recipe_defaults must be recorded or current"):
        experiment_config(None, {"recipe_defaults": "today"})


def test_a_folder_keeps_its_recorded_step_budget_when_the_default_changes(tmp_path, monkeypatch):
    """`steps: auto` resolves once and is recorded; a later genaug whose default budget at that size differs
    resumes the folder with its own budget (no classifier re-run), unless asked for today's defaults."""
    import yaml

    from genaug.harness.design import config
    from genaug.harness.design.config import experiment_config
    from genaug.harness.experiment import Experiment

    out = tmp_path / "exp"
    first = Experiment(str(PNEUMONIA), out, experiment_config(None, {"data": str(PNEUMONIA), "image_size": 16}),
                       device="cpu", progress=False)
    first.check_settings()
    assert yaml.safe_load((out / "config.yaml").read_text())["steps"] == 1000
    monkeypatch.setitem(config.STEP_BUDGETS, 32, 3000)

    def resolved(**extra):
        return Experiment(str(PNEUMONIA), out, experiment_config(None, {"data": str(PNEUMONIA), "image_size": 16,
                                                                        **extra}), device="cpu", progress=False)

    again = resolved()
    again.check_settings()
    assert again.config["steps"] == 1000 and again.recipe_changed == []
    assert resolved(recipe_defaults="current").config["steps"] == 3000
    assert resolved(steps=500).config["steps"] == 500


def test_protocol_paragraph_states_the_protocol_the_folder_ran():
    """A steps folder's report names its budget, share and batch-norm statistics; a folder on the epochs
    protocol keeps its paragraph word for word (its report re-renders unchanged)."""
    from genaug.harness.report.protocol import protocol_text

    base = {"per_class": 50, "seeds": 1, "accept": ["all"], "controls": ["baseline-strong"],
            "primary_metric": "balanced_accuracy", "select_metric": None}
    args = dict(patients_known=False, validation="a carve", seed_scheme="sequence", alpha=0.05, min_effect=0.03)
    steps = protocol_text({**base, "steps": 1000, "synthetic_share": 0.5, "scored_model": "final",
                           "bn_statistics": "training", "decision_rule": "iut"}, **args)
    assert "trains 1000 optimizer steps" in steps and "fill 0.5 of every batch" in steps
    assert "its training batches' batch-norm statistics" in steps and "it chooses no model" in steps
    epochs = protocol_text({**base, "steps": None}, **args)
    assert "Every arm has the baseline's optimizer-step budget, the same epoch selection and the same seeds." in epochs
    assert "2. Validation (epoch selection by `balanced_accuracy`): a carve." in epochs


def test_report_flags_arms_not_converged_and_runs_of_mixed_precision():
    from genaug.harness.report.run_notes import convergence_note, precision_note

    def report(*arms):
        return {"arms": {name: {"runs": [{"converged": c, "bf16": b} for c, b in runs]} for name, runs in arms}}

    same = report(("baseline", [(True, True), (True, True)]), ("+ddpm", [(True, True), (None, None)]))
    assert convergence_note(same) == [] and precision_note(same) == []  # None: recorded before the field
    mixed = report(("baseline", [(True, False), (True, True)]), ("+ddpm", [(False, True), (True, True)]))
    note = " ".join(precision_note(mixed))
    assert "3 of 4 classifier runs computed in bf16" in note and "arms with both: baseline" in note
    assert "+ddpm (1 of 2 runs)" in " ".join(convergence_note(mixed)) and "baseline" not in convergence_note(mixed)[0]
