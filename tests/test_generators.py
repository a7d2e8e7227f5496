"""VAE, DCGAN and DDPM on real data: learning, shapes, save/load, exact resume, sampling."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from genaug import runs
from genaug.data import draw_subset, open_source
from genaug.data.imagesets import load_image_folder
from genaug.generators import Trainer, load_trained

from conftest import CIFAR, PNEUMONIA, assert_clean_error, run_cli

FAST = {"vae": {}, "dcgan": {"base_width": 16}, "ddpm": {"block_out_channels": [16, 32, 32], "lr_warmup_steps": 0,
                                                        "sample_steps": 3, "learning_rate": 1e-3}}


def _config(family, steps, **extra):
    return {"steps": steps, "batch_size": 16, "log_every": 1, "checkpoint_every": 1000, "sample_every": 1000,
            "grid_size": 4, "model": FAST[family], **extra}


@pytest.fixture(scope="module")
def normal_class():
    real, manifest = draw_subset(open_source(str(PNEUMONIA)), [0], 64, seed=0, image_size=28)
    return real.images


@pytest.mark.parametrize("family,key,steps", [("vae", "loss", 40), ("dcgan", "loss_d", 40), ("ddpm", "loss", 40)])
def test_short_run_lowers_loss(tmp_path, normal_class, family, key, steps):
    Trainer(family, normal_class, tmp_path, _config(family, steps), device="cpu", progress=False).fit()
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == steps and {"step", key, "images_per_s"} <= set(log[0])
    first = sum(r[key] for r in log[:5]) / 5
    last = sum(r[key] for r in log[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    assert (tmp_path / "samples" / f"step-{steps:07d}.png").exists()


@pytest.mark.parametrize("family", ["vae", "dcgan", "ddpm"])
@pytest.mark.parametrize("data,label,size,channels", [(PNEUMONIA, 1, 28, 1), (CIFAR, 3, 32, 3)])
def test_samples_shape_channels_range_and_roundtrip(tmp_path, family, data, label, size, channels):
    real, _ = draw_subset(open_source(str(data)), [label], 16, seed=0, image_size=size)
    cfg = _config(family, 2)
    if family == "ddpm" and size == 32:
        cfg["model"] = {**cfg["model"], "block_out_channels": [16, 32, 32, 32], "attention_levels": [3]}
    trainer = Trainer(family, real.images, tmp_path, cfg, device="cpu", progress=False)
    trainer.fit()
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(3)]  # noqa: E731
    with trainer.model.sampling_mode():
        in_memory = trainer.model.sample(gens())
    loaded = load_trained(tmp_path, "cpu").sample(gens())
    assert loaded.shape == (3, channels, size, size)
    assert loaded.min() >= -1 and loaded.max() <= 1
    torch.testing.assert_close(loaded, in_memory, atol=1e-5, rtol=0)


def _weights(run_dir):
    return {f.relative_to(run_dir / "model").as_posix(): load_file(f) for f in (run_dir / "model").rglob("*.safetensors")}


@pytest.mark.parametrize("family", ["vae", "dcgan", "ddpm"])
def test_resume_gives_the_same_weights(tmp_path, family):
    common = ["--data", PNEUMONIA, "--class", "normal", "--per-class", "24", "--batch-size", "8", "--device", "cpu",
              "--no-progress", "--seed", "3"]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({"checkpoint_every": 3, "sample_every": 4, "grid_size": 2, "model": FAST[family]}))
    assert run_cli("train", family, *common, "--config", cfg, "--steps", "8", "--out", tmp_path / "a").exit_code == 0
    assert run_cli("train", family, *common, "--config", cfg, "--steps", "4", "--out", tmp_path / "b").exit_code == 0
    r = run_cli("train", family, *common, "--config", cfg, "--steps", "8", "--out", tmp_path / "b")
    assert_clean_error(r, "already holds a run", "--resume")
    r = run_cli("train", family, *common, "--config", cfg, "--steps", "8", "--out", tmp_path / "b", "--resume")
    assert r.exit_code == 0, r.output
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and a
    for name in a:
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), (name, key)
    steps = [json.loads(x)["step"] for x in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))


def test_ddpm_folder_loads_in_diffusers_and_samplers(tmp_path, normal_class):
    from diffusers import DDPMPipeline

    Trainer("ddpm", normal_class, tmp_path, _config("ddpm", 2), device="cpu", progress=False).fit()
    pipe = DDPMPipeline.from_pretrained(tmp_path / "model")
    assert pipe.unet.config.in_channels == 1 and pipe.unet.config.sample_size == 28
    model = load_trained(tmp_path, "cpu")
    for sampler, steps in (("ddim", 3), ("dpm-solver", 3), ("ddpm", 4), ("unipc", 3), ("heun", 2)):
        out = model.sample([torch.Generator().manual_seed(0)], sampler, steps)
        assert out.shape == (1, 1, 28, 28) and torch.isfinite(out).all()


def test_ddim_starts_at_the_last_training_step():
    from genaug.cli import sample
    from genaug.generators.ddpm import DDPM, SAMPLERS, sampling_scheduler

    config = DDPM({}, 1, 28).noise_scheduler.config
    for steps in (50, 20, 10):
        timesteps = sampling_scheduler(config, "ddim", steps).timesteps
        assert int(timesteps[0]) == 999 and len(timesteps) == steps
    assert int(sampling_scheduler(config, "ddpm", 1000).timesteps[0]) == 999
    choices = next(p for p in sample.params if p.name == "sampler").type.choices
    assert list(choices) == list(SAMPLERS)


def test_sampling_reproducible_and_resumable(tmp_path, normal_class):
    Trainer("dcgan", normal_class, tmp_path / "run", _config("dcgan", 2), device="cpu", progress=False).fit()
    r = run_cli("sample", "--run", tmp_path / "run", "--n", "5", "--out", tmp_path / "s1", "--seed", "4",
                "--batch-size", "2", "--no-progress")
    assert r.exit_code == 0, r.output
    runs.sample(tmp_path / "run", 5, tmp_path / "s2", seed=4, batch_size=5, progress=False)
    one, two = load_image_folder(tmp_path / "s1"), load_image_folder(tmp_path / "s2")
    assert one.shape == (5, 1, 28, 28) and torch.equal(one, two)
    manifest = json.loads((tmp_path / "s1" / "samples.json").read_text())
    assert [im["seed"] for im in manifest["images"]] == [4, 5, 6, 7, 8] and len(manifest["model_sha256"]) == 64
    (tmp_path / "s1" / "000002.png").unlink()
    before = (tmp_path / "s1" / "000001.png").stat().st_mtime_ns
    runs.sample(tmp_path / "run", 5, tmp_path / "s1", seed=4, batch_size=2, progress=False)
    assert (tmp_path / "s1" / "000001.png").stat().st_mtime_ns == before
    assert torch.equal(load_image_folder(tmp_path / "s1"), two)
    r = run_cli("sample", "--run", tmp_path / "run", "--n", "5", "--out", tmp_path / "s1", "--seed", "9")
    assert_clean_error(r, "other settings")


def test_bad_arguments(tmp_path):
    assert_clean_error(run_cli("train", "gan", "--data", PNEUMONIA, "--class", "0"), "'gan' is not one of", code=2)
    assert_clean_error(run_cli("train", "vae", "--data", PNEUMONIA, "--class", "cat"), "unknown class 'cat'", code=1)
    assert_clean_error(run_cli("sample", "--run", tmp_path / "none", "--n", "3", "--out", tmp_path / "o"),
                       "run folder not found", code=1)
    assert_clean_error(run_cli("sample", "--run", tmp_path, "--n", "0", "--out", tmp_path / "o"), "--n", code=2)
    assert_clean_error(run_cli("sample", "--run", tmp_path, "--n", "2", "--out", tmp_path / "o"), "no trained model")


def test_interrupted_run_says_where_and_resumes(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "genaug.cli", "train", "vae", "--data", str(PNEUMONIA), "--class", "normal",
           "--per-class", "32", "--steps", "100000", "--batch-size", "8", "--device", "cpu", "--no-progress"]
    cfg = tmp_path / "c.yaml"
    cfg.write_text("checkpoint_every: 20\nsample_every: 100000\n")
    proc = subprocess.Popen(cmd + ["--config", str(cfg), "--out", str(out)], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    deadline = time.time() + 120
    while not list((out / "checkpoints").glob("step-*")) and time.time() < deadline:
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted at step" in err and "last checkpoint: step" in err and "Traceback" not in err
    last = int(sorted((out / "checkpoints").glob("step-*"))[-1].name.split("-")[1])
    assert f"last checkpoint: step {last}" in err
    # a resumed run keeps its settings: fewer steps than recorded is refused, naming the key
    r = run_cli("train", "vae", "--out", out, "--resume", "--steps", last + 5)
    assert_clean_error(r, "was trained with steps = 100000, not %d" % (last + 5))


def test_resume_with_other_model_settings_is_refused(tmp_path):
    common = ["--data", PNEUMONIA, "--class", "normal", "--per-class", "8", "--batch-size", "4", "--device", "cpu",
              "--no-progress", "--out", tmp_path / "r"]
    assert run_cli("train", "vae", *common, "--steps", "2").exit_code == 0
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  latent_dim: 8\n")
    r = run_cli("train", "vae", *common, "--steps", "4", "--resume", "--config", cfg)
    assert_clean_error(r, "was trained with model")


def test_class_all_trains_one_model_per_class(tmp_path):
    from conftest import OCT

    r = run_cli("train", "vae", "--data", OCT, "--class", "all", "--image-size", "32", "--steps", "2",
                "--batch-size", "4", "--out", tmp_path, "--no-progress", "--device", "cpu")
    assert r.exit_code == 0, r.output
    source = open_source(str(OCT))
    for label, name in enumerate(("CNV", "DME", "DRUSEN", "NORMAL")):
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        assert manifest["selected_classes"] == [name]
        assert manifest["train"]["count"] == len(source.split("train").of_class(label))
        assert {it["class"] for it in manifest["test"]["items"]} == {name}
        assert (tmp_path / name / "model" / "vae" / "config.json").exists()
    assert load_image_folder(runs.sample(tmp_path / "DME", 2, tmp_path / "s", progress=False)).shape == (2, 1, 32, 32)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    r = run_cli("train", "vae", "--data", PNEUMONIA, "--class", "0", "--per-class", "4", "--steps", "1",
                "--device", "cuda", "--out", tmp_path / "r")
    assert_clean_error(r, "--device cuda was asked for but no CUDA device is available", code=1)
    r = run_cli("fid", f"{PNEUMONIA}:normal@val", f"{PNEUMONIA}:pneumonia@val", "--device", "cuda")
    assert_clean_error(r, "no CUDA device is available", code=1)


def test_mixed_precision_follows_the_training_device(monkeypatch, normal_class, tmp_path):
    from genaug.generators.training import mixed_precision_for

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with a GPU, training on the CPU
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert mixed_precision_for("auto", torch.device("cpu")) == "no"
    assert mixed_precision_for("auto", torch.device("cuda")) == "bf16"
    assert mixed_precision_for("bf16", torch.device("cpu")) == "bf16"
    trainer = Trainer("vae", normal_class, tmp_path, _config("vae", 1), device="cpu", progress=False)
    assert trainer.accelerator.mixed_precision == "no"
    with pytest.raises(Exception, match="mixed_precision must be"):
        mixed_precision_for("fp32", torch.device("cpu"))


def test_resumed_ema_lands_on_the_training_device(tmp_path, normal_class):
    """accelerate loads the EMA state to the CPU; it must end where the model trains. Simulated by
    declaring the `meta` device as the training device of the EMA before resuming."""
    cfg = _config("ddpm", 2, checkpoint_every=2)
    Trainer("ddpm", normal_class, tmp_path, cfg, device="cpu", progress=False).fit()
    trainer = Trainer("ddpm", normal_class, tmp_path, {**cfg, "steps": 3}, device="cpu", progress=False)
    trainer.model.ema_state.device = torch.device("meta")
    assert trainer.resume() == 2
    assert {p.device.type for p in trainer.model.ema.shadow_params} == {"meta"}
    trainer = Trainer("ddpm", normal_class, tmp_path, {**cfg, "steps": 3}, device="cpu", progress=False)
    trainer.resume()
    trainer.fit()  # ema.step after a resume: shadow weights and parameters on one device
    assert {p.device for p in trainer.model.ema.shadow_params} == {trainer.accelerator.device}


def test_run_recorded_before_a_setting_existed_still_resumes(tmp_path):
    """A run folder written by an older genaug lacks settings added since; they count as their defaults."""
    import yaml

    common = ["--data", PNEUMONIA, "--class", "normal", "--per-class", "16", "--batch-size", "8", "--device", "cpu",
              "--no-progress", "--checkpoint-every", "2"]
    assert run_cli("train", "dcgan", *common, "--steps", "2", "--out", tmp_path / "r").exit_code == 0
    path = tmp_path / "r" / "config.yaml"
    recorded = yaml.safe_load(path.read_text())
    for key in ("channels_last", "compile", "select_by_fid"):
        recorded.pop(key)
    for key in ("ema_decay", "sample_weights"):  # model settings added since, too
        recorded["model"].pop(key)
    path.write_text(yaml.safe_dump(recorded))
    r = run_cli("train", "dcgan", *common, "--steps", "4", "--out", tmp_path / "r", "--resume")
    assert r.exit_code == 0, r.output
    r = run_cli("train", "dcgan", *common, "--steps", "6", "--out", tmp_path / "r", "--resume", "--config",
                _write(tmp_path / "c.yaml", {"channels_last": True}))
    assert_clean_error(r, "channels_last = False, not True")


def _write(path, data):
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("family", ["dcgan", "ddpm"])
def test_channels_last_keeps_the_loss_curve(tmp_path, normal_class, family):
    curves = {}
    for fmt in (False, True):
        run = tmp_path / str(fmt)
        Trainer(family, normal_class, run, _config(family, 4, channels_last=fmt), device="cpu", progress=False).fit()
        curves[fmt] = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    key = "loss_d" if family == "dcgan" else "loss"
    for a, b in zip(curves[False], curves[True]):
        assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-4)


def test_dcgan_keeps_an_ema_and_checkpoint_selection_by_fid(tmp_path, normal_class):
    """The EMA follows the generator and is checkpointed; select_by_fid scores every kept checkpoint with raw
    and EMA weights at the real count and writes the best as the model."""
    cfg = _write(tmp_path / "c.yaml", {"checkpoint_every": 2, "keep_checkpoints": 2, "select_by_fid": True,
                                        "sample_every": 1000, "grid_size": 2, "model": FAST["dcgan"]})
    common = ["train", "dcgan", "--data", PNEUMONIA, "--class", "normal", "--per-class", "24", "--steps", "4",
              "--batch-size", "8", "--config", cfg, "--out", tmp_path / "run", "--device", "cpu", "--no-progress"]
    r = run_cli(*common)
    assert r.exit_code == 0, r.output
    run = tmp_path / "run"
    info = json.loads((run / "model" / "genaug.json").read_text())
    selection = info["selection"]
    assert selection["images"] == 24 and len(selection["candidates"]) == 4
    assert {(c["step"], c["weights"]) for c in selection["candidates"]} == {(2, "raw"), (2, "ema"), (4, "raw"),
                                                                             (4, "ema")}
    best = min(selection["candidates"], key=lambda c: c["fid"])
    assert selection["chosen"] == best and info["step"] == best["step"] and info["trained_steps"] == 4
    assert info["model_config"]["sample_weights"] == best["weights"]
    assert list((run / "checkpoints" / "step-0000004").glob("custom_checkpoint_1.pkl"))  # the EMA
    model = load_trained(run, "cpu")
    assert model.sample([torch.Generator().manual_seed(0)]).shape == (1, 1, 28, 28)
    assert run_cli(*common, "--resume").exit_code == 0
    assert json.loads((run / "model" / "genaug.json").read_text()) == info  # finished: nothing redone


@pytest.mark.parametrize("family", ["vae", "dcgan", "ddpm"])
def test_compiled_training_saves_loads_and_resumes(tmp_path, normal_class, family):
    """torch.compile wraps the networks (`_orig_mod.` state keys): saving, EMA and resume see the bare network.
    The `eager` backend puts the same wrapper in place as inductor without its minute of code generation."""
    cfg = _config(family, 2, compile="eager", checkpoint_every=1)
    first = Trainer(family, normal_class[:16], tmp_path, cfg, device="cpu", progress=False)
    assert any(hasattr(net, "_orig_mod") for net in vars(first.model).values())
    first.fit()
    load_trained(tmp_path, "cpu").sample([torch.Generator().manual_seed(0)])
    again = Trainer(family, normal_class[:16], tmp_path, {**cfg, "steps": 3}, device="cpu", progress=False)
    assert again.resume() == 2
    again.fit()
    with pytest.raises(Exception, match="dynamo backend"):
        Trainer(family, normal_class[:16], tmp_path / "x", {**cfg, "compile": "nonsense"}, device="cpu")


def test_runs_in_one_process_each_get_their_own_precision_and_compile_setting(tmp_path, normal_class):
    """augment-and-train trains families with different configs in one process: accelerate's shared
    state must not carry one run's mixed precision or compile setting into the next."""
    plain = Trainer("vae", normal_class[:16], tmp_path / "a", _config("vae", 1), device="cpu", progress=False)
    assert plain.accelerator.mixed_precision == "no" and not hasattr(plain.model.vae, "_orig_mod")
    tuned = Trainer("vae", normal_class[:16], tmp_path / "b", _config("vae", 1, mixed_precision="bf16",
                                                                      compile="eager"), device="cpu", progress=False)
    assert tuned.accelerator.mixed_precision == "bf16" and hasattr(tuned.model.vae, "_orig_mod")


def test_training_curves_go_to_tensorboard_through_accelerate(tmp_path):
    """`--log-with tensorboard`: accelerate's tracker writes the logged losses as TensorBoard events
    under RUN/trackers, the same steps train_log.jsonl holds; an unknown tracker is one line."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    r = run_cli("train", "vae", "--data", PNEUMONIA, "--class", "normal", "--per-class", "16", "--steps", "6",
                "--batch-size", "8", "--log-with", "tensorboard", "--device", "cpu", "--no-progress", "--out", out)
    assert r.exit_code == 0, r.output
    events = list((out / "trackers").rglob("events.out.tfevents.*"))
    assert events, list(out.rglob("*"))
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    logged = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e.step for e in acc.Scalars("loss")] == [row["step"] for row in logged]
    assert acc.Scalars("loss")[-1].value == pytest.approx(logged[-1]["loss"], rel=1e-5)
    assert_clean_error(run_cli("train", "vae", "--data", PNEUMONIA, "--class", "normal", "--per-class", "16",
                               "--steps", "2", "--log-with", "tensorbord", "--device", "cpu", "--out", tmp_path / "x"),
                       "unknown tracker 'tensorbord'")
    assert not (tmp_path / "x").exists()  # refused before anything was written
