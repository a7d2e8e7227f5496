"""The decision rule, interval coverage, power, seeds and the planning command: no training, hand examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from genaug.errors import GenaugError
from genaug.harness.stats import coverage
from genaug.harness.stats import planning
from genaug.harness.stats import power
from genaug.harness.stats import verdict
from genaug.harness.design.seeds import STAGES, Seeds

from conftest import REPO, assert_clean_error, run_cli

BASE = [0.70, 0.72, 0.68, 0.75, 0.71, 0.69]


def _units(arms: dict[str, list[float]], metric: str = "balanced_accuracy") -> dict:
    """{arm: {metric: {replicate: value}}} with every secondary metric equal to the primary."""
    from genaug.classifiers.metrics import SCALAR_METRICS

    return {arm: {m: dict(enumerate(values)) for m in SCALAR_METRICS} for arm, values in arms.items()}


def test_two_arms_at_p_003_make_no_claim_after_holm():
    """The issue's first example: each unadjusted interval is above zero (the old answer said both
    helped), but Holm over the family of two gives p > 0.05, so neither is claimed."""
    d1 = np.array([0.02, 0.05, 0.01, 0.04, -0.005, 0.03])
    d2 = np.array([0.03, 0.01, 0.045, 0.02, -0.004, 0.035])
    units = _units({"baseline": BASE, "+a": list(np.add(BASE, d1)), "+b": list(np.add(BASE, d2))})
    comps = verdict.comparisons(units, ["baseline", "+a", "+b"], "balanced_accuracy")
    for arm, d in (("+a", d1), ("+b", d2)):
        c = comps["baseline"][arm]["balanced_accuracy"]
        assert 0.02 < c["p_ttest"] < 0.05 and c["ci_low"] > 0  # unadjusted: "above zero"
        assert c["p_holm"] > 0.05 and c["adj_low"] < 0 and c["decision"] == "no difference shown"
    text = "\n".join(verdict.answer(comps, ["baseline", "+a", "+b"], "balanced_accuracy", "replicate", 6))
    assert "**No synthetic arm beat baseline by the decision rule" in text


def test_holm_equals_statsmodels_on_random_families_and_in_the_verdict(monkeypatch):
    """stats.holm against statsmodels' multipletests(method="holm") (the oracle): random families
    with ties, ones and untested members (None, nan), then the p_holm the verdict reports for a
    family of three arms."""
    import gc

    from statsmodels.stats.multitest import multipletests  # the dev extra installs it: no skip
    from genaug.harness.stats.paired import holm

    # multipletests runs gc.collect() on every call: 0.1-0.8 s each in a test worker whose heap
    # holds torch and earlier tests' objects (177 s for this test in the suite); nothing here needs it
    monkeypatch.setattr(gc, "collect", lambda *args: 0)

    rng = np.random.default_rng(3)
    for trial in range(200):
        m = int(rng.integers(1, 9))
        ps = rng.choice([0.001, 0.01, 0.02, 0.04, 0.5, 1.0], m) if trial % 4 == 0 else rng.uniform(0, 0.2, m)
        family = {f"arm{i}": float(p) for i, p in enumerate(ps)}
        family.update({"untested": None, "nan": math.nan} if trial % 3 == 0 else {})
        got = holm(family)
        tested = [k for k, p in family.items() if p is not None and not math.isnan(p)]
        expected = multipletests([family[k] for k in tested], method="holm")[1]
        assert [got[k] for k in tested] == pytest.approx(list(expected), abs=1e-12), (trial, family)
        assert all(got[k] is None for k in family if k not in tested)
    arms = {"baseline": BASE, "+a": list(np.add(BASE, [0.02, 0.05, 0.01, 0.04, -0.005, 0.03])),
            "+b": list(np.add(BASE, [0.03, 0.01, 0.045, 0.02, -0.004, 0.035])),
            "+c": list(np.add(BASE, [0.06, 0.07, 0.05, 0.08, 0.065, 0.055]))}
    comps = verdict.comparisons(_units(arms), list(arms), "balanced_accuracy")["baseline"]
    raw = [comps[a]["balanced_accuracy"]["p_ttest"] for a in ("+a", "+b", "+c")]
    assert [comps[a]["balanced_accuracy"]["p_holm"] for a in ("+a", "+b", "+c")] == \
        pytest.approx(list(multipletests(raw, method="holm")[1]), abs=1e-12)


def test_a_constant_difference_is_no_win_and_has_no_interval():
    units = _units({"baseline": [0.50, 0.60, 0.70], "+x": [0.55, 0.65, 0.75]})
    comps = verdict.comparisons(units, ["baseline", "+x"], "balanced_accuracy")
    c = comps["baseline"]["+x"]["balanced_accuracy"]
    assert c["decision"] == "no claim" and "zero variance" in c["reason"]
    assert math.isnan(c["ci_low"]) and math.isnan(c["adj_low"]) and c["p_holm"] is None
    text = "\n".join(verdict.answer(comps, ["baseline", "+x"], "balanced_accuracy", "replicate", 3))
    assert "No synthetic arm beat" in text and "zero variance" in text


def test_decision_agrees_with_holm_and_needs_the_exact_test_floor():
    rng = np.random.default_rng(1)
    for trial in range(80):
        n = int(rng.integers(6, 12))
        arms = {"baseline": list(rng.normal(0.7, 0.03, n))}
        refs = {"baseline-strong": list(np.add(arms["baseline"], rng.normal(0.01, 0.02, n)))}
        for k in range(3):
            arms[f"+g{k}"] = list(np.add(arms["baseline"], rng.normal(rng.choice([0, 0.02, 0.05]), 0.02, n)))
        names = ["baseline", "baseline-strong", *[a for a in arms if a.startswith("+")]]
        comps = verdict.comparisons(_units({**arms, **refs}), names, "balanced_accuracy")
        for ref, block in comps.items():
            for arm, comp in block.items():
                c = comp["balanced_accuracy"]
                if not c["in_family"]:
                    continue
                assert c["family_size"] == 6  # 3 augmented arms x 2 references
                outside = c["adj_low"] > 0 or c["adj_high"] < 0
                assert outside == (c["p_holm"] < 0.05), (trial, arm, ref, c)
                assert (c["decision"] in ("better", "worse")) == outside
    # five units: a clear gain, but no exact test can reach 0.05 with 5 (floor 0.0625): no claim
    five = _units({"baseline": BASE[:5], "+g": [v + 0.05 + 0.001 * i for i, v in enumerate(BASE[:5])]})
    c = verdict.comparisons(five, ["baseline", "+g"], "balanced_accuracy")["baseline"]["+g"]["balanced_accuracy"]
    assert c["p_holm"] < 0.001 and c["decision"] == "no claim" and "at least 6" in c["reason"]
    # six units, one of them tied (as +ddpm against baseline-strong in the pool run): the exact test has 5
    # differences to rank, and the reason says so instead of "with 6 units ... at least 6 are needed"
    tied = [v + 0.05 + 0.001 * i for i, v in enumerate(BASE)]
    tied[2] = BASE[2]
    c = verdict.comparisons(_units({"baseline": BASE, "+g": tied}), ["baseline", "+g"],
                            "balanced_accuracy")["baseline"]["+g"]["balanced_accuracy"]
    assert c["nonzero"] == 5 and c["wilcoxon_min_p"] == 0.0625 and c["decision"] == "no claim"
    assert "with 6 units, 1 of them tied" in c["reason"] and "so only 5 count:" in c["reason"]
    assert "at least 6 nonzero paired differences" in c["reason"]


def test_coverage_simulation_decides_the_intervals():
    """t intervals cover at 3 units (normal and skewed); percentile and BCa bootstraps do not (about
    75%), so the report prints no bootstrap interval at the replicate counts genaug runs."""
    assert 0.93 <= coverage.simulate("t", 3, "normal", sims=3000) <= 0.97
    assert 0.92 <= coverage.simulate("t", 5, "skewed", sims=3000) <= 0.97
    assert coverage.simulate("percentile", 3, "normal", sims=2000, resamples=999) < 0.8
    assert coverage.simulate("bca", 5, "skewed", sims=2000, resamples=999) < 0.88
    table = coverage.committed()["coverage"]
    assert table["t"]["normal"]["3"] == pytest.approx(coverage.simulate("t", 3, "normal", sims=20000), abs=0.01)
    assert not any(coverage.bootstrap_allowed(n) for n in (3, 5, 10, 20))
    assert "at 5 units" in coverage.describe("t", 6) and "95.1% normal" in coverage.describe("t", 5)
    from genaug.harness.stats.paired import paired_difference

    r = paired_difference([0.61, 0.72, 0.80], [0.5, 0.6, 0.7])
    assert math.isnan(r["boot_low"]) and not math.isnan(r["ci_low"])  # no bootstrap interval at 3 units


def test_power_against_the_noncentral_t_by_hand_and_by_simulation():
    sd, n, effect, alpha, m = 0.02, 8, 0.025, 0.05, 3
    crit = stats.t.ppf(1 - alpha / m / 2, n - 1)
    nc = effect * math.sqrt(n) / sd
    hand = 1 - stats.nct.cdf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc)
    assert power.power_of(effect, sd, n, alpha, m) == pytest.approx(hand, rel=1e-9)
    rng = np.random.default_rng(0)
    d = rng.normal(effect, sd, size=(20000, n))
    simulated = np.mean(stats.ttest_1samp(d, 0, axis=1).pvalue < alpha / m)
    assert simulated == pytest.approx(hand, abs=0.015)
    mde = power.min_detectable_effect(sd, n, alpha, m, 0.8)
    assert power.power_of(mde, sd, n, alpha, m) == pytest.approx(0.8, abs=1e-6)
    need = power.units_needed(effect, sd, alpha, m, 0.8)
    assert power.power_of(effect, sd, need["t_test"], alpha, m) >= 0.8 > power.power_of(effect, sd, need["t_test"] - 1, alpha, m)
    assert power.floor_units(0.05) == 6 and power.units_needed(1.0, 0.01)["needed"] == 6  # the exact-test floor
    with pytest.raises(GenaugError, match="power must be between 0 and 1"):
        power.min_detectable_effect(sd, n, power=1.0)


def test_no_seed_serves_two_stages_replicates_or_experiments():
    seen: dict[int, tuple] = {}
    ranges = []
    for experiment in (0, 1):
        for replicate in range(3):
            s = Seeds(experiment, replicate)
            for stage in STAGES:
                for unit in range(4):
                    value = s.of(stage, unit)
                    if stage == "sample":
                        ranges.append((value, value + 1_000_000, (experiment, replicate, unit)))
                        continue
                    assert value not in seen, (value, seen.get(value), (experiment, replicate, stage, unit))
                    seen[value] = (experiment, replicate, stage, unit)
    ranges.sort()
    assert all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:]))  # image seeds of two classes never meet
    assert not any(lo <= v < hi for v in seen for lo, hi, _ in ranges)
    # the offsets this replaces: --seed 0 replicate 1 is --seed 1 replicate 0, and classifier k = generator k
    old0, old1 = Seeds(0, 1, "offset"), Seeds(1, 0, "offset")
    assert old0.of("subset") == old1.of("subset") and old0.of("classifier", 2) == old0.of("generator", 2)


def test_carve_takes_the_declared_validation_share():
    from genaug.data.splits import carve_validation

    labels = np.repeat([0, 1], 20)
    for fraction in (0.2, 0.25, 0.3, 0.4, 0.5):
        train, val = carve_validation(labels, None, fraction, seed=3)
        assert len(val) == round(fraction * 40) and np.bincount(labels[val]).tolist() == [len(val) // 2] * 2
        assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 40
    groups = [f"p{i // 2}" for i in range(40)]  # two images per patient
    train, val = carve_validation(labels, groups, 0.4, seed=3)
    assert len(val) == 16 and not {groups[i] for i in train} & {groups[i] for i in val}


def test_plan_on_a_finished_experiment_and_from_an_sd():
    result = planning.plan_from_experiment(REPO / "samples" / "reports" / "cifar-100-semi")
    rows = {(r["arm"], r["reference"]): r for r in result["rows"]}
    assert set(rows) == {("+dcgan", "baseline"), ("+pseudo", "baseline"), ("+mpl", "baseline"),
                         ("+mpl+dcgan", "baseline")}
    r = rows[("+dcgan", "baseline")]
    assert r["n"] == 3 and r["family"] == 4 and r["units_needed"]["needed"] == 6  # SD 0.0018: the floor decides
    assert r["min_detectable_effect"] == pytest.approx(power.min_detectable_effect(r["sd"], 3, 0.05, 4))
    out = run_cli("plan", "--experiment", REPO / "samples" / "reports" / "cifar-100-semi", "--effect", "0.05")
    assert out.exit_code == 0 and "| +mpl | baseline |" in out.output and "effect 0.05" in out.output
    out = run_cli("plan", "--experiment", REPO / "samples" / "reports" / "cifar-100-semi", "--alpha", "0.1")
    assert out.exit_code == 0 and "alpha 0.1 / family size" in out.output  # the pilot's alpha overridden
    out = run_cli("plan", "--sd", "0.042", "--family", "9")
    assert out.exit_code == 0 and "| 0.0420 | 9 | 6 |" in out.output and "| 30 | 30 |" in out.output


@pytest.mark.parametrize("args, message", [
    (["--sd", "0.02", "--effect", "-0.1"], "the effect must be above 0"),
    (["--sd", "0.02", "--power", "1.5"], "power must be between 0 and 1"),
    (["--sd", "0.02", "--power", "0"], "power must be between 0 and 1"),
    (["--experiment", "/tmp"], "is not a finished augment-and-train experiment"),
    ([], "give --experiment DIR"),
])
def test_plan_bad_input_is_one_line(args, message):
    assert_clean_error(run_cli("plan", *args), message, code=1)


def test_mpl_reward_is_exactly_zero_when_the_student_does_not_move():
    """The reward compares the student before and after its step on the same batch composition, with
    its batch-norm running statistics untouched by the reward pass."""
    from genaug.classifiers import semi
    from genaug.classifiers.training import TrainSettings, build_training

    torch.manual_seed(0)
    settings = TrainSettings(classifier="resnet18", stem="small")
    dev = torch.device("cpu")
    teacher, t_opt, _, _ = build_training(settings, 1, 2, 16, dev)
    student, _, _, _ = build_training(settings, 1, 2, 16, dev)
    s_opt = torch.optim.Adam(student.parameters(), lr=0.0)
    teacher.train(), student.train()
    g = torch.Generator().manual_seed(1)
    xl, xu = torch.randn(6, 1, 16, 16, generator=g), torch.randn(6, 1, 16, 16, generator=g) + 0.5
    yl = torch.tensor([0, 1, 0, 1, 0, 1])
    bn = next(m for m in student.modules() if isinstance(m, torch.nn.BatchNorm2d))
    logged = semi.mpl_step(teacher, student, t_opt, s_opt, xl, yl, xu, xu, dict(semi.DEFAULTS))
    assert logged["reward"] == 0.0
    after_step = bn.running_mean.clone(), int(bn.num_batches_tracked)
    assert after_step[1] == 1  # the training forward updated them once; the reward pass did not
    with semi.running_stats_kept(student):
        student(torch.cat([xl, xu]))
    assert torch.equal(bn.running_mean, after_step[0]) and int(bn.num_batches_tracked) == 1


def test_config_refuses_bad_decision_settings():
    from genaug.harness.design.config import experiment_config

    for key, value, message in (("alpha", 1.5, "alpha must be a number between 0 and 1"),
                                ("min_effect", -0.01, "min_effect must be a number above 0"),
                                ("select_metric", "auc", "unknown select_metric"),
                                ("seed_scheme", "random", "seed_scheme must be one of")):
        with pytest.raises(GenaugError, match=message):
            experiment_config(None, {key: value})
    # the gate's settings are refused when the config is read, not after the subset is drawn
    for gate_setting, message in (({"memorization_robust": "high"}, "memorization_robust must be a number"),
                                  ({"memorization_robust": 1.5}, "memorization_robust must be a whole number"),
                                  ({"memorization_check_kinds": ["warp"]}, "unknown near-copy kind 'warp'"),
                                  ({"memorization_spaces": ["colour"]}, "unknown space colour")):
        with pytest.raises(GenaugError, match=message):
            experiment_config(None, {"acceptance": gate_setting})
    assert experiment_config(None, {"acceptance": {"memorization_robust": 1.0}})["acceptance"]["memorization_robust"] == 1.0


def test_epoch_selection_follows_the_primary_metric():
    """A model whose validation balanced accuracy peaks at epoch 1 and its AUC at epoch 2: each
    metric picks its own epoch."""
    from genaug.classifiers.training import EpochSelector

    val_y = torch.tensor([0, 0, 1, 1])
    scores = [torch.tensor([[2.0, 0.0], [0.0, 0.1], [0.0, 2.0], [0.1, 0.0]]),  # 3 of 4 right, AUC 0.75
              torch.tensor([[0.0, 0.2], [0.0, 0.3], [0.0, 0.9], [0.0, 0.8]])]  # all "1": bacc 0.5, AUC 1

    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.epoch = 0

        def forward(self, x):
            return scores[self.epoch][: len(x)] + 0 * self.w

    for metric, best in (("balanced_accuracy", 1), ("roc_auc_ovr", 2)):
        model, selector = Fixed(), EpochSelector(torch.zeros(4, 1, 4, 4, dtype=torch.uint8), val_y, "cpu",
                                                 metric=metric)
        for epoch in range(2):
            model.epoch = epoch
            selector.after_epoch(model, {})
        assert selector.best_epoch == best, metric
    with pytest.raises(GenaugError, match="unknown select_metric"):
        EpochSelector(torch.zeros(4, 1, 4, 4, dtype=torch.uint8), val_y, "cpu", metric="auc")


def test_full_real_trains_the_baselines_epochs_over_its_own_images(tmp_path):
    from conftest import OCT

    out = tmp_path / "exp"
    (tmp_path / "c.yaml").write_text("quality: false\nval_fraction: 0.34\nbatch_size: 4\nsteps: epochs\n")
    r = run_cli("augment-and-train", "--headroom", "none", "--config", tmp_path / "c.yaml", "--data", OCT, "--group-by", "oct2017",
                "--per-class", "3", "--generator", "none", "--controls", "none", "--full-real", "--seeds", "1",
                "--epochs", "2", "--image-size", "16", "--no-progress", "--device", "cpu", "--out", out)
    assert r.exit_code == 0, r.output
    import json

    base = json.loads((out / "rep-0" / "classifiers" / "baseline" / "seed-0.json").read_text())
    full = json.loads((out / "rep-0" / "classifiers" / "full-real" / "seed-0.json").read_text())
    assert base["optimizer_steps"] == 2 * math.ceil(base["n_real_train"] / 4)
    assert full["optimizer_steps"] == 2 * math.ceil(full["n_real_train"] / 4) > base["optimizer_steps"]
    md = (out / "report.md").read_text()
    assert f"full-real trained {full['optimizer_steps']} optimizer steps on {full['n_real_train']} images" in md


def test_a_folder_of_an_earlier_version_resumes_with_its_own_seeds_and_settings(tmp_path):
    """Settings added since (seed_scheme, select_metric, alpha, new acceptance keys) read as what the
    folder ran with, so an older experiment resumes instead of being refused."""
    import yaml

    from conftest import PNEUMONIA
    from genaug.metrics import acceptance
    from genaug.harness.experiment import Experiment, experiment_config
    from genaug.harness.design.spec import Unit

    config = experiment_config(None, {"per_class": 10, "generators": [], "seeds": 1})
    first = Experiment(str(PNEUMONIA), tmp_path, dict(config), progress=False)
    first.check_settings()
    old = yaml.safe_load((tmp_path / "config.yaml").read_text())
    for key in ("seed_scheme", "select_metric", "alpha", "min_effect"):
        old.pop(key)
    old["acceptance"] = {k: v for k, v in old["acceptance"].items() if k in ("confidence_tau", "fid_max",
                                                                             "memorization_quantile")}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    again = Experiment(str(PNEUMONIA), tmp_path, experiment_config(None, {"per_class": 10, "generators": [],
                                                                          "seeds": 1}), progress=False)
    assert again.config["seed_scheme"] == "offset" and again.spec.settings.select_metric == "balanced_accuracy"
    again.check_settings()  # not refused
    assert again.spec.seeds(Unit(1)).of("subset") == 1  # the offsets it was started with
    assert acceptance.DEFAULTS["memorization_robust"] == 1


def test_gate_calibration_leaves_out_held_out_images_of_training_patients():
    from types import SimpleNamespace

    from genaug.harness.stages.unit_data import UnitData

    rep = SimpleNamespace(train_items=[{"id": "a", "group": "p1"}, {"id": "b", "group": "p2"}],
                          val_items=[{"id": "c", "group": "p2"}, {"id": "d", "group": "p3"}, {"id": "e", "group": "p1"}])
    assert UnitData.heldout_without_training_patients(rep).tolist() == [False, True, False]
    unknown = SimpleNamespace(train_items=[{"id": "a"}], val_items=[{"id": "c"}, {"id": "d"}])
    assert UnitData.heldout_without_training_patients(unknown).tolist() == [True, True]  # no patients: all kept


def test_arm_registry_one_small_class_per_arm():
    """Each arm overrides only what it changes; the kinds drive the report's family and tables."""
    from genaug.harness.design import arms as arm_module
    from genaug.classifiers.training import TrainSettings
    from genaug.harness.design.config import experiment_config

    config = experiment_config(None, {"generators": ["vae"], "full_real": True, "semi": ["pseudo", "mpl"],
                                      "unlabeled": 100})
    plan = arm_module.plan_arms(config)
    assert [(a.name, type(a).__name__, a.kind) for a in plan] == [
        ("baseline", "Arm", "baseline"), ("baseline-strong", "StrongAugmentation", "control"),
        ("+real@100", "ExtraReal", "positive"), ("+dup", "Duplicates", "control"), ("+vae", "Synthetic", "synthetic"),
        ("+pseudo", "SemiSupervised", "semi"), ("+mpl", "SemiSupervised", "semi"),
        ("+mpl+vae", "SemiSupervised", "semi"), ("full-real", "Ceiling", "ceiling")]
    base = TrainSettings()
    strong = plan[1].settings(base, config)
    assert strong.augment == "trivialaugment" and strong.mix and plan[0].settings(base, config) is base
    inputs = type("RunInputs", (), {"data": type("UnitData", (), {"steps_per_epoch": 3})()})()
    assert [a.steps_per_epoch(inputs, 4708, 32) for a in (plan[0], plan[4], plan[-1])] == [3, 3, 148]
    assert plan[4].slug == "plus-vae" and len({a.name for a in plan}) == len(plan)
