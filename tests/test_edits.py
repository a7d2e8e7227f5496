"""Diffusion edits (SDEdit) and the faster diffusion losses of issue 40, on a tiny DDPM."""

from __future__ import annotations

import json

import pytest
import torch

from genaug.config import load_config
from genaug.errors import GenaugError
from genaug.generators.ddpm import DDPM, diffusion_loss, min_snr_weights

TINY = {"block_out_channels": [8, 16], "attention_levels": [], "norm_num_groups": 4, "sampler": "ddim",
        "sample_steps": 5}


def _model(**extra):
    torch.manual_seed(0)
    return DDPM({**TINY, **extra}, channels=1, image_size=8)


def _gens(seed, n):
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def test_edit_at_strength_zero_returns_the_source_and_at_one_ignores_it():
    model = _model()
    a = torch.rand(2, 1, 8, 8) * 2 - 1
    b = torch.rand(2, 1, 8, 8) * 2 - 1
    assert torch.equal(model.edit(a, 0.0, _gens(0, 2)), a)
    assert torch.equal(model.edit(a, 1.0, _gens(0, 2)), model.edit(b, 1.0, _gens(0, 2)))  # the source plays no part
    assert torch.allclose(model.edit(a, 1.0, _gens(0, 2)), model.sample(_gens(0, 2)))
    half_a, half_b = model.edit(a, 0.6, _gens(0, 2)), model.edit(b, 0.6, _gens(0, 2))
    assert not torch.equal(half_a, half_b)  # in between, the source shapes the result
    for bad in (-0.1, 1.5):
        with pytest.raises(GenaugError, match="strength must be in"):
            model.edit(a, bad, _gens(0, 2))


def test_min_snr_weights_by_hand():
    model = _model()
    scheduler = model.noise_scheduler
    t = torch.tensor([0, 10, 500, 999])
    abar = scheduler.alphas_cumprod[t].double()
    snr = abar / (1 - abar)
    expected_eps = torch.minimum(snr, torch.tensor(5.0, dtype=torch.float64)) / snr
    expected_v = torch.minimum(snr, torch.tensor(5.0, dtype=torch.float64)) / (snr + 1)
    torch.testing.assert_close(min_snr_weights(scheduler, t, 5.0, "epsilon").double(), expected_eps, rtol=1e-5, atol=0)
    torch.testing.assert_close(min_snr_weights(scheduler, t, 5.0, "v_prediction").double(), expected_v, rtol=1e-5,
                               atol=0)
    assert float(expected_eps[0]) < 0.01 and float(expected_eps[-1]) == pytest.approx(1.0)  # easy steps damped
    x0, noise, pred = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    per_sample = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
    assert float(diffusion_loss(pred, x0, noise, t, scheduler, 5.0)) == pytest.approx(
        float((per_sample * expected_eps.float()).mean()), rel=1e-5)
    assert float(diffusion_loss(pred, x0, noise, t, scheduler, None)) == pytest.approx(float(per_sample.mean()),
                                                                                       rel=1e-5)


def test_v_prediction_trains_against_the_velocity_and_samples():
    model = _model(prediction_type="v_prediction", snr_gamma=5)
    scheduler = model.noise_scheduler
    x0, noise, t = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8), torch.tensor([100, 900])
    v = scheduler.get_velocity(x0, noise, t)
    assert float(diffusion_loss(v, x0, noise, t, scheduler, None)) == pytest.approx(0.0, abs=1e-12)
    assert model.sample(_gens(0, 1)).shape == (1, 1, 8, 8)
    for bad, message in (({"prediction_type": "sample"}, "prediction_type must be"),
                         ({"snr_gamma": 0}, "snr_gamma must be")):
        with pytest.raises(GenaugError, match=message):
            _model(**bad)


def test_ddpm_edit_fine_tunes_the_pretrained_model_and_its_edits_record_source_class_and_strength(tmp_path):
    """`genaug train ddpm-edit`: the pooled pretraining, then one conditional fine-tune that starts as the
    pretrained network (its class embedding at zero); `genaug sample --edit-from train` edits every
    training image towards its own class, variant-major, strengths cycled, each edit recorded."""
    from safetensors.torch import load_file

    from genaug.generators.ddpm_pool import EditDDPM
    from genaug.io import read_json

    from conftest import PNEUMONIA, REPO, assert_clean_error, run_cli

    tiny = REPO / "tests" / "helpers" / "ddpm-pool-tiny.yaml"
    train = ["train", "ddpm-edit", "--data", str(PNEUMONIA), "--class", "all", "--per-class", "6", "--image-size", "16",
             "--config", str(tiny), "--device", "cpu", "--no-progress"]
    assert_clean_error(run_cli(*train, "--out", tmp_path / "nopool"), "ddpm-edit trains on unlabelled images too")
    assert not (tmp_path / "nopool").exists()
    r = run_cli(*train, "--unlabeled", "32", "--out", tmp_path / "run")
    assert r.exit_code == 0, r.output
    pretrained = load_file(next((tmp_path / "run" / "pretrained" / "model" / "unet").glob("*.safetensors")))
    from genaug.runs import load_run_config

    model = EditDDPM({**load_run_config(tmp_path / "run" / "all")["model"], "num_classes": 2}, channels=1, image_size=16)
    model.load_weights(tmp_path / "run" / "pretrained" / "model")
    start = model.unet.state_dict()
    assert all(torch.equal(start[k], pretrained[k]) for k in pretrained)  # every pretrained weight carried over
    assert not start["class_embedding.weight"].any()  # the classes start at zero: the pretrained function

    out = tmp_path / "edits"
    edit = ["sample", "--run", str(tmp_path / "run" / "all"), "--edit-from", "train", "--variants", "3",
            "--strength", "0.25,1.0", "--device", "cpu", "--no-progress"]
    r = run_cli(*edit, "--out", out)
    assert r.exit_code == 0, r.output
    made = read_json(out / "samples.json")
    rows = made["images"]
    assert len(rows) == 36 and made["edit"]["strengths"] == [0.25, 1.0]  # 12 training images x 3 variants
    assert [r["variant"] for r in rows[:12]] == [0] * 12 and [r["strength"] for r in rows] == \
        [[0.25, 1.0][(s + v) % 2] for v in range(3) for s in range(12)]  # variant-major, strengths cycled
    sources = read_json(tmp_path / "run" / "all" / "manifest.json")["train"]["items"]
    class_of = {str(it["id"]): it["class"] for it in sources}
    assert all(r["class"] == class_of[r["source"]] for r in rows)  # a variant keeps its source's label
    assert {r["source"] for r in rows} == set(class_of)
    before = sorted(p.stat().st_mtime_ns for p in out.glob("*.png"))
    assert run_cli(*edit, "--out", out).exit_code == 0  # resumable: nothing is drawn again
    assert sorted(p.stat().st_mtime_ns for p in out.glob("*.png")) == before
    for bad, message in ((["--variants", "0"], "variants per real image must be a whole number >= 1"),
                         (["--strength", "0.5,1.5"], "edit strengths must be numbers in [0, 1]")):
        assert_clean_error(run_cli(*edit, *bad, "--out", tmp_path / "bad"), message)
        assert not (tmp_path / "bad").exists()


def test_the_edit_gate_judges_an_edit_against_every_real_image_but_its_own_source():
    """A planted copy of another real image is rejected; an edit equal to its own source (strength 0)
    is not, and its similarity to its source is reported per strength."""
    import numpy as np

    from genaug.metrics import acceptance
    from genaug.metrics.similarity import pixel_similarity

    g = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (12, 1, 8, 8), generator=g, dtype=torch.uint8)
    labels = torch.tensor([0] * 6 + [1] * 6)
    heldout = torch.randint(0, 256, (8, 1, 8, 8), generator=g, dtype=torch.uint8)
    edits = torch.stack([real[2], real[3], heldout[0]])  # an edit of 3 that copies 2; one equal to its own source
    ctx = acceptance.AcceptanceContext(
        real, labels, ["a", "b"], {**acceptance.DEFAULTS, "memorization_spaces": ["pixels"]},
        heldout_images=heldout[1:], heldout_labels=torch.tensor([0, 1] * 3 + [0]),
        similarity=lambda q, gal, space: pixel_similarity(q, gal, 0),
        edit_sources={0: np.array([3, 3, 0])}, edit_strengths={0: np.array([0.5, 0.0, 1.0])})
    keep, rows = acceptance.accept(edits, 0, ["memorization"], ctx)
    assert keep.tolist() == [False, True, True]
    by_strength = rows[0]["source_similarity"]["pixels"]
    assert by_strength["0"] == pytest.approx(1.0) and by_strength["0.5"] < 0.99
    plain = acceptance.AcceptanceContext(real, labels, ["a", "b"], ctx.settings, heldout_images=ctx.heldout_images,
                                         heldout_labels=ctx.heldout_labels, similarity=ctx.similarity)
    assert acceptance.accept(edits, 0, ["memorization"], plain)[0].tolist() == [False, False, True]  # copies alike


def test_the_shared_pretraining_pool_leaves_out_every_replicates_validation_and_test_patients():
    import numpy as np

    from genaug.data.sources import Split
    from genaug.data.unlabeled import shared_candidates

    class Source:
        def split(self, name):
            return Split(list(range(8)), np.array([0, 1] * 4), ["p0", "p0", "p1", "p2", "p4", "p3", "p5", "p6"])

    manifests = [{"train": {"items": [{"id": 4}]}, "test": {"items": [{"id": 0, "group": "p9"}]}},
                 {"train": {"items": [{"id": 5}]}, "test": {"items": [{"id": 1, "group": "p3"}]},
                  "validation": {"split": "val", "items": [{"id": 0, "group": "p0"}]}}]
    carved = [[{"id": 7, "group": "p6"}], []]  # replicate 0 carved its validation item 7 from the train split
    # 0, 1: patient p0 validates replicate 1; 5: patient p3 is tested on; 7: validates replicate 0;
    # 4 and 6 stay (4 is replicate 0's labelled image: replicate 1's unlabelled one)
    assert shared_candidates(Source(), [0, 1], manifests, carved) == [2, 3, 4, 6]


TINY_EDIT = ("steps: 4\nbatch_size: 16\nmodel: {block_out_channels: [16, 32], attention_levels: [], norm_num_groups: 8, "
             "lr_warmup_steps: 1, sample_steps: 4, pretrain_steps: 4}\n")


def _edit_config(tmp_path, **over):
    from genaug.harness.experiment import experiment_config

    (tmp_path / "ddpm-edit.yaml").write_text(TINY_EDIT)
    return experiment_config(None, {
        "per_class": 10, "image_size": 16, "replicates": 2, "seeds": 1, "steps": 2, "generators": "ddpm-edit",
        "generator_configs": {"ddpm-edit": str(tmp_path / "ddpm-edit.yaml")}, "synthetic_per_class": 12,
        "unlabeled": 32, "accept": "all,memorization", "acceptance": {"memorization_spaces": ["pixels"]},
        "edit_strength": "0.25,1.0", "quality": False, "headroom": "none", "controls": "baseline-strong", **over})


def test_ddpm_edit_in_an_experiment_pretrains_once_and_each_replicate_edits_its_own_images(tmp_path):
    """Two replicates: one pool pretraining (one record, on train images neither replicate validates or tests
    on), each replicate's conditional fine-tune starting from it; one source per strength (the dose-response
    line), each edit of the replicate's own training images; the gate's source similarity in the report."""
    from genaug.harness.experiment import Experiment
    from genaug.harness.run.plan import plan
    from genaug.harness.run.store import Store
    from genaug.io import read_json

    from conftest import PNEUMONIA

    out = tmp_path / "exp"
    e = Experiment(str(PNEUMONIA), out, _edit_config(tmp_path), device="cpu", progress=False)
    e.run()
    assert e.spec.sources == ["ddpm-edit-s0.25", "ddpm-edit-s1"]
    pretrain = [r for r in Store(out).records() if r["stage"] == "pretrain"]
    assert len(pretrain) == 1 and pretrain[0]["unit"] == "shared"
    shared = next((out / "shared" / "generators").glob("pretrained-*"))
    seen = {it["sha256"] for it in read_json(shared / "manifest.json")["train"]["items"]}
    assert len(seen) == 32
    source = e.spec.source
    for rep in ("rep-0", "rep-1"):
        unit = read_json(out / rep / "manifest.json")
        assert read_json(out / rep / "generators" / "ddpm-edit" / "manifest.json")["pretrained"] == str(shared)
        held = {it["sha256"] for it in unit["validation"]["items"]} | {source.item_hash("test", it["id"])
                                                                       for it in unit["test"]["items"]}
        assert not seen & held  # no validation or test image in the shared pretraining
        own = {str(it["id"]) for it in unit["train"]["items"]}
        for strength, folder in ((0.25, "ddpm-edit-s0.25"), (1.0, "ddpm-edit-s1")):
            rows = read_json(out / rep / "synthetic" / folder / "normal" / "samples.json")["images"]
            assert len(rows) == 12 and {r["strength"] for r in rows} == {strength} and {r["source"] for r in rows} <= own
    decisions = read_json(out / "rep-0" / "acceptance" / "ddpm-edit-s0.25.json")["rows"]
    assert "0.25" in next(r for r in decisions if r["policy"] == "memorization")["source_similarity"]["pixels"]
    assert "### Edits and their sources" in (out / "report.md").read_text()
    legacy = Experiment(str(PNEUMONIA), tmp_path / "legacy", _edit_config(tmp_path, pretrain="per-replicate"),
                        device="cpu", progress=False)
    labels = [t.label for t in plan(legacy.spec)]
    assert "generator rep-0 ddpm-edit pretrained" in labels and not any(t.startswith("pretrain") for t in labels)


def test_bad_edit_settings_are_refused_in_one_line_with_nothing_written(tmp_path):
    from conftest import PNEUMONIA, assert_clean_error, run_cli

    exp = ["augment-and-train", "--data", str(PNEUMONIA), "--per-class", "10", "--generator", "ddpm-edit",
           "--image-size", "16", "--device", "cpu"]
    assert_clean_error(run_cli(*exp, "--out", tmp_path / "a"), "unlabel")
    cfg = tmp_path / "c.yaml"
    for line, message in (("edit_strength: 1.5", "edit strengths must be numbers in [0, 1]"),
                          ("pretrain: twice", "pretrain must be shared or per-replicate")):
        cfg.write_text(line + "\n")
        assert_clean_error(run_cli(*exp, "--unlabeled", "32", "--config", cfg, "--out", tmp_path / "b"), message)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_one_conditional_fine_tune_serves_every_class_and_shares_the_pool_pretraining(tmp_path):
    """ddpm-finetune-cond: one fine-tune per replicate for all classes (ddpm-finetune: one per class),
    sampled with guidance like ddpm-cond; the packaged 28 px configs of the three families that start
    from the pool give one pretraining, trained once for the experiment and read by every fine-tune."""
    from genaug.harness.experiment import Experiment, experiment_config
    from genaug.harness.run.plan import plan
    from genaug.harness.stages.generation import pretrain_id

    from conftest import PNEUMONIA

    config = experiment_config(None, {"per_class": 10, "replicates": 2, "seeds": 1, "steps": 2, "unlabeled": 32,
                                      "generators": "ddpm-finetune,ddpm-finetune-cond,ddpm-edit", "quality": False,
                                      "headroom": "none", "controls": "baseline-strong", "synthetic_per_class": 12})
    e = Experiment(str(PNEUMONIA), tmp_path / "exp", config, device="cpu", progress=False)
    assert e.image_size == 28 and len({pretrain_id(e.spec, f) for f in config["generators"]}) == 1
    tasks = plan(e.spec)
    pretrain = [t for t in tasks if t.stage == "pretrain"]
    assert len(pretrain) == 1
    generators = [t for t in tasks if t.stage == "generator" and t.unit.name == "rep-0"]
    assert sorted(t.label for t in generators) == ["generator rep-0 ddpm-edit", "generator rep-0 ddpm-finetune normal",
                                                   "generator rep-0 ddpm-finetune pneumonia",
                                                   "generator rep-0 ddpm-finetune-cond"]
    assert all(pretrain[0].label in t.upstream for t in generators)
    assert "ddpm-finetune-cond" in e.spec.sources and e.spec.source_specs["ddpm-finetune-cond"]["guidance"] == 1.0


def test_train_ddpm_finetune_conditional_fine_tunes_one_model_from_the_pretraining(tmp_path):
    from safetensors.torch import load_file

    from genaug.generators.ddpm_pool import ConditionalFinetuneDDPM
    from genaug.runs import load_run_config

    from conftest import PNEUMONIA, REPO, assert_clean_error, run_cli

    tiny = REPO / "tests" / "helpers" / "ddpm-pool-tiny.yaml"
    train = ["train", "ddpm-finetune", "--conditional", "--data", str(PNEUMONIA), "--class", "all", "--per-class", "6",
             "--image-size", "16", "--config", str(tiny), "--device", "cpu", "--no-progress", "--unlabeled", "32"]
    r = run_cli(*train, "--out", tmp_path / "run")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["all", "pretrained"]  # not one run per class
    saved = load_run_config(tmp_path / "run" / "all")
    assert saved["family"] == "ddpm-finetune-cond" and saved["classes"] == ["normal", "pneumonia"]
    model = ConditionalFinetuneDDPM({**saved["model"], "num_classes": 2}, channels=1, image_size=16)
    model.load_weights(tmp_path / "run" / "pretrained" / "model")
    pretrained = load_file(next((tmp_path / "run" / "pretrained" / "model" / "unet").glob("*.safetensors")))
    start = model.unet.state_dict()
    assert all(torch.equal(start[k], pretrained[k]) for k in pretrained) and not start["class_embedding.weight"].any()
    assert_clean_error(run_cli("train", "dcgan", "--conditional", "--data", str(PNEUMONIA), "--out", tmp_path / "x"),
                       "--conditional applies to ddpm and ddpm-finetune only (not dcgan)")


def test_a_mixed_strength_edit_source_reports_fid_and_label_fidelity_per_strength(tmp_path):
    """`edit_strength: mixed` cycles the strengths inside one source: its quality stage splits the accepted
    edits by their recorded strength (count, FID, label fidelity), the dose-response without more arms."""
    from genaug.harness.experiment import Experiment
    from genaug.io import read_json

    from conftest import PNEUMONIA

    out = tmp_path / "exp"
    e = Experiment(str(PNEUMONIA), out, _edit_config(tmp_path, edit_strength="mixed", quality=True, replicates=1,
                                                     accept="all"), device="cpu", progress=False)
    e.run()
    quality = read_json(out / "rep-0" / "quality" / "ddpm-edit.json")
    rows = quality["by_strength"]
    assert set(rows) == {"0.25", "0.5", "0.75", "1"}  # ddpm-edit's default strengths, cycled over the variants
    assert sum(r["n"] for r in rows.values()) == quality["n_synthetic"] == 24
    assert all(r["fid"] is not None and set(r["label_fidelity"]["per_class"]) == {"normal", "pneumonia"}
               for r in rows.values())
    assert "Edits per strength" in (out / "report.md").read_text()


def test_the_experiments_diffusion_loss_reaches_every_diffusion_family_and_epsilon_keeps_the_keys_from_before(tmp_path):
    """`diffusion_loss` sets each diffusion family's prediction and weighting and keys its stages; at
    epsilon (the default) a generator's settings are its config file's, as before the setting existed
    (the carried stores' byte-for-byte re-runs check that their keys stay)."""
    from genaug.harness.experiment import Experiment
    from genaug.harness.stages.generation import generator_config, pretrain_id

    from conftest import PNEUMONIA

    config = _edit_config(tmp_path, diffusion_loss="v-minsnr5")
    model = generator_config(config, "ddpm-edit", 16)["model"]
    assert (model["prediction_type"], model["snr_gamma"]) == ("v_prediction", 5.0)
    assert generator_config(config, "ddpm-cond", 28)["model"]["prediction_type"] == "v_prediction"
    assert "prediction_type" not in generator_config(config, "dcgan", 28).get("model", {})
    before = _edit_config(tmp_path)
    assert before["diffusion_loss"] == "epsilon"
    assert generator_config(before, "ddpm-edit", 16) == load_config(str(tmp_path / "ddpm-edit.yaml"))
    v = Experiment(str(PNEUMONIA), tmp_path / "v", config, device="cpu", progress=False)
    eps = Experiment(str(PNEUMONIA), tmp_path / "eps", before, device="cpu", progress=False)
    assert v.spec.upstream_hash != eps.spec.upstream_hash
    assert pretrain_id(v.spec, "ddpm-edit") != pretrain_id(eps.spec, "ddpm-edit")
    assert v.spec.settings_hash != eps.spec.settings_hash


def test_a_bad_diffusion_loss_or_a_generator_config_that_says_another_is_refused_in_one_line(tmp_path):
    from conftest import PNEUMONIA, assert_clean_error, run_cli

    cfg, gen = tmp_path / "c.yaml", tmp_path / "g.yaml"
    gen.write_text("steps: 2\nmodel: {prediction_type: epsilon}\n")
    exp = ["augment-and-train", "--data", str(PNEUMONIA), "--per-class", "10", "--generator", "ddpm",
           "--image-size", "16", "--device", "cpu", "--config", cfg, "--out", tmp_path / "out"]
    cfg.write_text("diffusion_loss: v\n")
    assert_clean_error(run_cli(*exp), "diffusion_loss must be one of epsilon, epsilon-minsnr5, v-minsnr5")
    cfg.write_text(f"generator_configs: {{ddpm: {gen}}}\nheadroom: none\ndiffusion_loss: v-minsnr5\n")
    assert_clean_error(run_cli(*exp), "sets prediction_type = 'epsilon', and the experiment's diffusion_loss is v-minsnr5")
    assert not (tmp_path / "out").exists()


def test_pretrain_steps_sets_the_pool_pretraining_of_every_family_that_starts_from_it(tmp_path):
    """One experiment setting instead of a near-copy of each generator config: `pretrain_steps: 6000`
    resolves to the packaged config with that one value changed (so the pretraining id such a copy
    had), the families that start from no pretraining are untouched, the default keeps the
    keys of folders from before the setting, and a bad value or one no family reads is refused."""
    from genaug.harness.experiment import Experiment, experiment_config
    from genaug.harness.stages.generation import generator_config, pretrain_id

    from conftest import PNEUMONIA
    from test_protocols import assert_config_refused

    pool = {"generators": "ddpm-edit,ddpm-finetune-cond,ddpm-cond", "unlabeled": "all", "diffusion_loss": "v-minsnr5"}
    setting, packaged = experiment_config(None, {**pool, "pretrain_steps": 6000}), experiment_config(None, pool)
    for family in ("ddpm-edit", "ddpm-finetune-cond"):
        copy = generator_config(packaged, family, 28)  # what a near-copy of the packaged config would say
        copy["model"] = {**copy["model"], "pretrain_steps": 6000}
        assert copy != generator_config(packaged, family, 28) and generator_config(setting, family, 28) == copy
    assert generator_config(setting, "ddpm-cond", 28) == generator_config(experiment_config(None, pool), "ddpm-cond", 28)
    config = _edit_config(tmp_path)
    six = Experiment(str(PNEUMONIA), tmp_path / "six", _edit_config(tmp_path, pretrain_steps=6), device="cpu",
                     progress=False)
    default = Experiment(str(PNEUMONIA), tmp_path / "default", config, device="cpu", progress=False)
    assert pretrain_id(six.spec, "ddpm-edit") != pretrain_id(default.spec, "ddpm-edit")
    before = Experiment(str(PNEUMONIA), tmp_path / "before", {k: v for k, v in config.items() if k != "pretrain_steps"},
                        device="cpu", progress=False)  # a folder's config from before the setting existed
    assert json.loads(default.spec.config_json)["pretrain_steps"] is None
    assert default.spec.upstream_hash == before.spec.upstream_hash != six.spec.upstream_hash
    assert_config_refused(tmp_path, "pretrain_steps: 0", "pretrain_steps must be a whole number of steps, 1 or more")
    assert_config_refused(tmp_path, "pretrain_steps: lots", "pretrain_steps must be a whole number of steps")
    assert_config_refused(tmp_path, "pretrain_steps: 500", "pretrain_steps 500: no generator of this experiment starts")
