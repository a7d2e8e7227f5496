"""The newcomer's path: packaged configs, interruptions that keep work, resume that remembers,
help that tells, matching that says what it skipped, and a README snippet that runs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import OCT, PNEUMONIA, REPO, SHARED, assert_clean_error, run_cli

CONFIG_NAMES = sorted(p.stem for p in (REPO / "genaug" / "configs").glob("*.yaml"))


@pytest.mark.slow
def test_wheel_ships_every_config_and_names_resolve_outside_the_checkout(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
                        str(REPO)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("genaug-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(Path(n).stem for n in names if n.startswith("genaug/configs/") and n.endswith(".yaml")) == CONFIG_NAMES
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    away = tmp_path / "elsewhere"
    away.mkdir()
    code = ("import genaug, genaug.config as c; assert str(genaug.__file__).startswith(%r); "
            "print(c.load_config('pneumonia-50')['per_class'], len(c.list_configs()))" % str(target))
    r = subprocess.run([sys.executable, "-c", code], cwd=away, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(target)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["50", str(len(CONFIG_NAMES))]


def test_config_by_name_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run_cli("train", "vae", "--config", "vae-28", "--data", PNEUMONIA, "--class", "normal", "--per-class", "4",
                "--steps", "1", "--out", "run", "--no-progress")
    assert r.exit_code == 0, r.output
    assert yaml.safe_load(Path("run/config.yaml").read_text())["model"]["latent_dim"] > 0
    r = run_cli("configs")
    assert r.exit_code == 0 and all(name in r.output for name in CONFIG_NAMES)
    assert_clean_error(run_cli("train", "vae", "--config", "vae-29", "--data", PNEUMONIA, "--class", "0"),
                       "config not found: vae-29", "vae-28")


def test_interrupted_200_step_run_resumes_past_zero_with_a_clean_log(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "genaug.cli", "train", "vae", "--data", str(PNEUMONIA), "--class", "normal",
           "--per-class", "32", "--steps", "200", "--batch-size", "8", "--device", "cpu", "--no-progress",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    deadline = time.time() + 120
    while not list((out / "checkpoints").glob("step-*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    last = int(sorted((out / "checkpoints").glob("step-*"))[-1].name.split("-")[1])
    assert 0 < last < 200 and last % 20 == 0  # default cadence: every 10% of the steps
    assert f"last checkpoint: step {last}" in err
    r = run_cli("train", "vae", "--out", out, "--resume", "--no-progress")  # no other option: the run's own settings
    assert r.exit_code == 0, r.output
    assert json.loads((out / "model" / "genaug.json").read_text())["step"] == 200
    steps = [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 200
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["steps"] == 200 and saved["checkpoint_every"] == "auto" and "history" not in saved


def test_interruption_before_the_first_checkpoint_says_nothing_can_be_resumed(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "genaug.cli", "train", "vae", "--data", str(PNEUMONIA), "--class", "normal",
           "--per-class", "32", "--steps", "100000", "--checkpoint-every", "100000", "--batch-size", "8",
           "--device", "cpu", "--no-progress", "--out", str(out)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    deadline = time.time() + 120
    while not (out / "train_log.jsonl").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "before the first checkpoint" in err and "nothing was saved to resume from" in err


def test_resume_takes_settings_from_the_run_and_refuses_conflicts(tmp_path):
    out = tmp_path / "r"
    assert run_cli("train", "vae", "--data", PNEUMONIA, "--class", "normal", "--per-class", "8", "--batch-size", "4",
                   "--steps", "3", "--seed", "5", "--out", out, "--no-progress").exit_code == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    for key in ("steps", "batch_size", "seed", "per_class", "checkpoint_every", "log_every", "intensity", "fit"):
        assert key in saved  # every default recorded
    assert saved["model"]["latent_dim"] and saved["seed"] == 5
    r = run_cli("train", "vae", "--out", out, "--resume", "--no-progress")
    assert r.exit_code == 0, r.output  # nothing to do: still 3 steps
    assert yaml.safe_load((out / "config.yaml").read_text()) == saved
    r = run_cli("train", "vae", "--out", out, "--resume", "--batch-size", "8")
    assert_clean_error(r, "was trained with batch_size = 4, not 8")
    r = run_cli("train", "dcgan", "--out", out, "--resume")
    assert_clean_error(r, "family = 'vae', not 'dcgan'")
    r = run_cli("train", "vae", "--out", out, "--resume", "--steps", "5", "--no-progress")
    assert r.exit_code == 0, r.output
    grown = yaml.safe_load((out / "config.yaml").read_text())
    assert grown["steps"] == 5 and grown["history"][0]["steps"] == [3, 5]
    assert json.loads((out / "model" / "genaug.json").read_text())["step"] == 5
    assert_clean_error(run_cli("train", "vae", "--out", tmp_path / "nothing", "--resume"), "--data and --class")


def test_help_shows_defaults_and_a_line_for_every_option():
    for command in ("train", "sample", "fid", "augment-and-train", "datasets"):
        r = run_cli(command, "--help")
        assert r.exit_code == 0
        options = re.findall(r"^  (--[a-z-]+)([^\n]*)", r.output, flags=re.M)
        assert options
        for name, rest in options:
            assert rest.strip() or name == "--checkpoint-every", f"{command} {name} has no help"
    r = run_cli("train", "--help")
    assert "[default: 32]" in r.output and "[default: auto]" in r.output and "10% of" in r.output
    assert "vae-28" not in r.output and "genaug configs" in r.output


def test_fid_by_class_names_unmatched_folders_and_classes(tmp_path):
    from genaug.data import load_split, open_source, save_png

    s = open_source(str(OCT))
    for name in ("CNV", "dme"):
        for i, img in enumerate(load_split(s, "train", [s.class_index(name)], 32).images[:3]):
            save_png(img.flip(-1), tmp_path / "samples" / name / f"{i}.png")
            save_png(img, tmp_path / "samples" / "normal100" / f"{i}.png")
    r = run_cli("fid", OCT, tmp_path / "samples", "--by-class", "--image-size", "32", "--no-progress",
                "--json", tmp_path / "f.json")
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "f.json").read_text())
    assert [row["class"] for row in result["per_class"]] == ["CNV", "DME"]
    assert "folder 'normal100' matches no class" in r.output and "class 'NORMAL' has no sample folder" in r.output
    assert "inception_score" not in result
    (tmp_path / "none" / "x").mkdir(parents=True)
    assert_clean_error(run_cli("fid", OCT, tmp_path / "none", "--by-class"), "no folder", "classes: CNV")
    assert_clean_error(run_cli("fid", OCT, tmp_path / "samples" / "CNV"), "holds no images directly", ":CLASS")


def test_identical_sets_print_zero_fid(tmp_path):
    from genaug.data import load_split, open_source, save_png

    s = open_source(str(PNEUMONIA))
    for i, img in enumerate(load_split(s, "test", [0], 28).images[:6]):
        save_png(img, tmp_path / "a" / f"{i}.png")
    r = run_cli("fid", tmp_path / "a", tmp_path / "a", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "FID 0.000" in r.output and "-0.000" not in r.output


def test_readme_python_snippet_runs(tmp_path, monkeypatch):
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Python API"):]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    code = code.replace("../shared/data", str(SHARED))  # the README runs from the repository root
    monkeypatch.chdir(tmp_path)
    for _ in range(2):  # a second run (the README followed twice) must work too
        exec(compile(code, "README.md", "exec"), {})
    assert len(list((tmp_path / "api-samples" / "normal").glob("*.png"))) == 64


def test_a_signal_landing_just_after_a_checkpoint_is_renamed_names_that_checkpoint(tmp_path, monkeypatch):
    """The window the subprocess test above can hit by chance: the checkpoint is in place on disk,
    the loop has not yet noted it. The message must name what --resume will use."""
    import torch

    from genaug.generators import training
    from genaug.generators.training import Trainer, TrainingInterrupted

    real = torch.randint(0, 256, (16, 1, 16, 16), dtype=torch.uint8)
    trainer = Trainer("vae", real, tmp_path / "run", {"steps": 4, "batch_size": 8, "checkpoint_every": 2,
                                                      "sample_every": 100},
                      device="cpu", progress=False)
    renamed = training.replace_dir

    def rename_then_interrupt(partial, target):
        renamed(partial, target)
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "replace_dir", rename_then_interrupt)
    with pytest.raises(TrainingInterrupted, match="last checkpoint: step 2 in"):
        trainer.fit()
    assert [p.name for p in training.checkpoints(tmp_path / "run")] == ["step-0000002"]
