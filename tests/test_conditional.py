"""Class-conditional DDPM with classifier-free guidance: training, sampling a class, guidance."""

from __future__ import annotations

import json

import pytest
import torch

from genaug import runs
from genaug.data.imagesets import load_image_folder
from genaug.generators import Trainer, load_trained

from conftest import PNEUMONIA, assert_clean_error, run_cli

TINY = {"block_out_channels": [16, 32, 32], "lr_warmup_steps": 0, "learning_rate": 1e-3, "sample_steps": 4}


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cond") / "run"
    cfg = tmp_path_factory.getbasetemp() / "cond.yaml"
    cfg.write_text(json.dumps({"checkpoint_every": 3, "sample_every": 1000, "grid_size": 4, "model": TINY}))
    r = run_cli("train", "ddpm", "--conditional", "--data", PNEUMONIA, "--class", "all", "--per-class", "16",
                "--steps", "6", "--batch-size", "8", "--config", cfg, "--out", out, "--device", "cpu", "--no-progress")
    assert r.exit_code == 0, r.output
    return out


def test_one_run_for_every_class(conditional_run):
    config = runs.load_run_config(conditional_run)
    assert config["family"] == "ddpm-cond" and config["classes"] == ["normal", "pneumonia"]
    info = json.loads((conditional_run / "model" / "genaug.json").read_text())
    assert info["classes"] == ["normal", "pneumonia"] and info["model_config"]["num_classes"] == 2
    manifest = json.loads((conditional_run / "manifest.json").read_text())
    assert {it["class"] for it in manifest["train"]["items"]} == {"normal", "pneumonia"}
    assert len(manifest["train"]["items"]) == 32


def test_sample_a_class_with_guidance(conditional_run, tmp_path):
    r = run_cli("sample", "--run", conditional_run, "--n", "3", "--out", tmp_path / "p", "--class", "pneumonia",
                "--guidance", "3", "--device", "cpu", "--no-progress")
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "p" / "samples.json").read_text())
    assert meta["class"] == "pneumonia" and meta["guidance"] == 3.0 and meta["family"] == "ddpm-cond"
    assert load_image_folder(tmp_path / "p").shape == (3, 1, 28, 28)
    r = run_cli("sample", "--run", conditional_run, "--n", "3", "--out", tmp_path / "p", "--class", "pneumonia",
                "--guidance", "1", "--device", "cpu", "--no-progress")
    assert_clean_error(r, "other settings", "guidance")
    assert_clean_error(run_cli("sample", "--run", conditional_run, "--n", "1", "--out", tmp_path / "x"),
                       "class-conditional", "normal, pneumonia")
    assert_clean_error(run_cli("sample", "--run", conditional_run, "--n", "1", "--out", tmp_path / "x",
                               "--class", "covid"), "unknown class 'covid'")


def test_guidance_zero_is_the_unconditional_model_and_the_class_matters(conditional_run):
    model = load_trained(conditional_run, "cpu")
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(2)]  # noqa: E731
    normal, pneumonia = torch.zeros(2, dtype=torch.long), torch.ones(2, dtype=torch.long)
    w0_normal = model.sample(gens(), labels=normal, guidance=0)
    w0_pneumonia = model.sample(gens(), labels=pneumonia, guidance=0)
    assert torch.equal(w0_normal, w0_pneumonia)  # W = 0 ignores the class
    c_normal = model.sample(gens(), labels=normal, guidance=1)
    c_pneumonia = model.sample(gens(), labels=pneumonia, guidance=1)
    # the guided two-pass path (uncond + W * (cond - uncond)) meets the one-pass paths at W = 0 and 1
    torch.testing.assert_close(model.sample(gens(), labels=pneumonia, guidance=1e-7), w0_pneumonia, atol=1e-4, rtol=0)
    torch.testing.assert_close(model.sample(gens(), labels=pneumonia, guidance=1 + 1e-7), c_pneumonia, atol=1e-4,
                               rtol=0)
    assert (c_normal - c_pneumonia).abs().max() > 1e-4  # the class embedding changes the output
    guided = model.sample(gens(), labels=pneumonia, guidance=3)
    assert not torch.allclose(guided, c_pneumonia) and torch.isfinite(guided).all()


def test_label_dropout_and_refusals(tmp_path):
    from genaug.data import draw_subset, open_source

    real, _ = draw_subset(open_source(str(PNEUMONIA)), [0, 1], 8, seed=0, image_size=28)
    cfg = {"steps": 1, "batch_size": 8, "checkpoint_every": 1000, "sample_every": 1000, "grid_size": 2,
           "model": {**TINY, "label_dropout": 0.5}}
    trainer = Trainer("ddpm-cond", real.images, tmp_path, cfg, device="cpu", progress=False,
                      labels=real.labels, classes=real.classes)
    labels = trainer.model._training_labels(torch.zeros(1000, dtype=torch.long), torch.Generator().manual_seed(0),
                                            torch.device("cpu"))
    assert 400 < int((labels == trainer.model.null_label).sum()) < 600
    with pytest.raises(Exception, match="class-conditional"):
        Trainer("ddpm-cond", real.images, tmp_path / "b", cfg, device="cpu", progress=False)
    r = run_cli("train", "vae", "--conditional", "--data", PNEUMONIA, "--class", "all")
    assert r.exit_code != 0 and "ddpm and ddpm-finetune only" in r.output


def test_resume_conditional_run(tmp_path):
    common = ["--data", PNEUMONIA, "--class", "all", "--per-class", "8", "--batch-size", "8", "--device", "cpu",
              "--no-progress", "--conditional"]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({"checkpoint_every": 2, "sample_every": 1000, "grid_size": 2, "model": TINY}))
    assert run_cli("train", "ddpm", *common, "--config", cfg, "--steps", "4", "--out", tmp_path / "a").exit_code == 0
    assert run_cli("train", "ddpm", *common, "--config", cfg, "--steps", "2", "--out", tmp_path / "b").exit_code == 0
    r = run_cli("train", "ddpm", "--conditional", "--steps", "4", "--out", tmp_path / "b", "--resume", "--no-progress")
    assert r.exit_code == 0, r.output
    assert runs.model_hash(tmp_path / "a") == runs.model_hash(tmp_path / "b")


def test_harness_guidance_sweep_from_one_conditional_model(tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(json.dumps({"sample_steps": 4, "quality": False}))
    out = tmp_path / "exp"
    r = run_cli("augment-and-train", "--headroom", "none", "--data", PNEUMONIA, "--per-class", "10", "--generator", "ddpm-cond",
                "--guidance", "3,0", "--synthetic-per-class", "4", "--replicates", "1", "--seeds", "1", "--steps", "1",
                "--generator-steps", "3", "--controls", "none", "--config", cfg, "--out", out, "--no-progress",
                "--image-size", "16", "--device", "cpu")
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert list(report["arms"]) == ["baseline", "+ddpm-cond-w0", "+ddpm-cond-w3"]
    assert report["config"]["guidance"] == [0.0, 3.0]
    run = out / "rep-0" / "generators" / "ddpm-cond"
    config = runs.load_run_config(run)
    assert config["classes"] == ["normal", "pneumonia"] and config["steps"] == 3
    assert len(json.loads((run / "manifest.json").read_text())["train"]["items"]) == 16  # 8 + 8, validation apart
    hashes = report["generators"]
    assert hashes["ddpm-cond-w0"] == hashes["ddpm-cond-w3"]  # one model serves every weight
    for cls in ("normal", "pneumonia"):
        w0 = json.loads((out / "rep-0" / "synthetic" / "ddpm-cond-w0" / cls / "samples.json").read_text())
        w3 = json.loads((out / "rep-0" / "synthetic" / "ddpm-cond-w3" / cls / "samples.json").read_text())
        assert (w0["guidance"], w3["guidance"], w0["class"]) == (0.0, 3.0, cls)
        assert [im["seed"] for im in w0["images"]] == [im["seed"] for im in w3["images"]]  # paired latents
