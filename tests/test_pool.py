"""Generators that learn from the unlabelled pool too (generators/ddpm_pool.py): null labels for pool
images, teacher labels above the threshold, fine-tunes from the pretrained weights, the gate against
the pool, label fidelity, resume in the middle of pretraining, and the bad inputs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from genaug.data import draw_subset, open_source
from genaug.generators.ddpm_pool import pool_labels
from genaug.generators.training import Trainer

from conftest import OCT, PNEUMONIA, REPO, assert_clean_error, run_cli

TINY = REPO / "tests" / "helpers" / "ddpm-pool-tiny.yaml"
MODEL = {"block_out_channels": [16, 32], "attention_levels": [], "norm_num_groups": 8, "lr_warmup_steps": 1}


@pytest.fixture(scope="module")
def images():
    source = open_source(str(PNEUMONIA))
    real, _ = draw_subset(source, [0, 1], 20, 0, 16)
    pool, _ = draw_subset(source, [0, 1], 20, 1, 16, split="val")  # other images than the labelled ones
    order = torch.randperm(len(real.images), generator=torch.Generator().manual_seed(0))  # classes mixed
    return real.images[order], real.labels.long()[order], pool.images


def _trainer(tmp_path, family, images, **kwargs):
    real, labels, pool = images
    config = {"steps": 2, "batch_size": 16, "seed": 0, "model": {**MODEL, **kwargs.pop("model", {})}}
    conditional = family != "ddpm-finetune"
    return Trainer(family, real, tmp_path / family, config, device="cpu", progress=False,
                   labels=labels if conditional else None, classes=["normal", "pneumonia"] if conditional else None,
                   **kwargs)


def test_ddpm_semi_gives_pool_images_the_null_label_and_its_class_embedding_matters(tmp_path, images):
    trainer = _trainer(tmp_path, "ddpm-semi", images, pool=images[2], model={"pool_share": 0.25})
    idx = trainer.batch_at(0)
    from_pool = [i for i in idx if i >= trainer.n_labelled]
    assert len(idx) == 16 and len(from_pool) == 4  # pool_share 0.25 of the batch
    labels = trainer.labels[idx]
    assert (labels[[i >= trainer.n_labelled for i in idx]] == -1).all()
    fed = trainer.model._training_labels(labels, torch.Generator().manual_seed(0), "cpu")
    assert (fed[[i >= trainer.n_labelled for i in idx]] == trainer.model.null_label).all()  # null: class 2 of 2
    assert set(fed[[i < trainer.n_labelled for i in idx]].tolist()) <= {0, 1, 2}  # labels (2: the 10% dropout)
    trainer.fit()
    unet = trainer.model._bare_unet().eval()
    x, t = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1)), torch.tensor([500, 500])
    with torch.no_grad():
        by_class = [unet(x, t, class_labels=torch.tensor([k, k])).sample for k in (0, 1, 2)]
    assert not torch.allclose(by_class[0], by_class[1]) and not torch.allclose(by_class[0], by_class[2])


def test_ddpm_pseudo_takes_the_teachers_label_above_the_threshold_and_null_below(tmp_path, images):
    probs = np.array([[0.97, 0.03], [0.40, 0.60], [0.02, 0.98], [0.95, 0.05]] * 10)  # a teacher's fixed output
    given = pool_labels(probs, 0.95)
    assert given[:4].tolist() == [0, -1, 1, -1]  # strictly above 0.95: 0.95 itself is not
    trainer = _trainer(tmp_path, "ddpm-pseudo", images, pool=images[2], pool_labels=given)
    assert torch.equal(trainer.labels[trainer.n_labelled:], given)
    idx = trainer.batch_at(1)
    fed = trainer.model._training_labels(trainer.labels[idx], torch.Generator().manual_seed(0), "cpu")
    for i, label in zip(idx, fed.tolist()):
        if i >= trainer.n_labelled and given[i - trainer.n_labelled] < 0:
            assert label == 2  # below the threshold: the null label
    with pytest.raises(Exception, match="teacher_threshold must be a number between 0 and 1"):
        pool_labels(probs, 1.0)


def test_ddpm_finetune_starts_each_class_from_the_pretrained_weights(tmp_path, images):
    pretrain = Trainer("ddpm", images[0], tmp_path / "pretrained", {"steps": 2, "batch_size": 16, "seed": 0,
                                                                    "model": MODEL},
                       device="cpu", progress=False, pool=images[2])
    assert pretrain.pool_share is None and len(pretrain.real) == 80  # uniform over labelled and pool images
    pretrain.fit()
    saved = load_file(next((tmp_path / "pretrained" / "model" / "unet").glob("*.safetensors")))
    tune = _trainer(tmp_path, "ddpm-finetune", images, init_from=tmp_path / "pretrained" / "model")
    now = tune.model._bare_unet().state_dict()
    assert saved.keys() == now.keys() and all(torch.equal(saved[k], now[k].cpu()) for k in saved)
    fresh = _trainer(tmp_path / "fresh", "ddpm-finetune", images)
    assert not torch.equal(fresh.model._bare_unet().state_dict()["conv_in.weight"], now["conv_in.weight"])


def test_the_gate_rejects_a_sample_that_copies_a_pool_image(images):
    from genaug.metrics import acceptance
    from genaug.metrics.similarity import pixel_similarity

    real, labels, pool = images
    settings = {**acceptance.DEFAULTS, "memorization_spaces": ["pixels"]}

    def context(pool_images):
        return acceptance.AcceptanceContext(real[:24], labels[:24], ["normal", "pneumonia"], settings,
                                            heldout_images=real[24:], heldout_labels=labels[24:],
                                            similarity=lambda q, g, space: pixel_similarity(q, g, 2),
                                            pool_images=pool_images)

    label = int(labels[24])
    kept_alone, _ = acceptance.accept(pool, label, ["memorization"], context(None))
    copies = pool[np.flatnonzero(kept_alone)[:3]]  # pool images the labelled gallery alone lets through
    assert len(copies) == 3
    keep, rows = acceptance.accept(torch.cat([copies, real[24:25]]), label, ["memorization"], context(pool))
    assert keep.tolist() == [False, False, False, True]  # exact copies of pool images; a held-out image kept
    assert rows[0]["rejected_pool"] == 3 and rows[0]["rejected_labelled"] == 0


def test_label_fidelity_of_a_classifier_that_always_says_one_class():
    from genaug.harness.stages.teacher import label_fidelity

    always_normal = np.tile([0.9, 0.1], (6, 1))
    out = label_fidelity(always_normal, torch.tensor([0, 0, 0, 1, 1, 1]), ["normal", "pneumonia"])
    assert out == {"per_class": {"normal": 1.0, "pneumonia": 0.0}, "mean": 0.5}
    assert label_fidelity(always_normal[:2], torch.tensor([0, 0]), ["normal", "pneumonia"])["per_class"] == {
        "normal": 1.0, "pneumonia": None}


def test_the_pool_of_a_pool_generator_holds_no_labelled_validation_or_test_patient(tmp_path):
    from genaug.harness.experiment import Experiment, experiment_config

    config = experiment_config(None, {"per_class": 4, "image_size": 32, "group_by": "oct2017", "seeds": 1,
                                      "generators": ["ddpm-semi"], "unlabeled": "all", "val_fraction": 0.5})
    e = Experiment(str(OCT), tmp_path, config, progress=False)
    data = e.unit_data(0)
    groups = lambda items: {it["group"] for it in items}  # noqa: E731
    source = open_source(str(OCT), group_by="oct2017")
    group_of = dict(zip(source.split("train").ids, source.split("train").groups))
    pool = {group_of[it["id"]] for it in data.manifest["unlabeled"]["items"]}
    used = groups(data.train_items) | groups(data.val_items) | groups(data.manifest["test"]["items"])
    assert pool and not pool & used and len(data.pool) == data.manifest["unlabeled"]["count"]


def test_a_finetune_killed_in_the_middle_of_pretraining_resumes_to_the_uninterrupted_weights(tmp_path):
    cfg = tmp_path / "pretrain.yaml"
    cfg.write_text(TINY.read_text().replace("pretrain_steps: 4 ", "pretrain_steps: 20 "))
    args = ["train", "ddpm-finetune", "--data", str(PNEUMONIA), "--class", "all", "--per-class", "10",
            "--unlabeled", "48", "--image-size", "16", "--config", str(cfg), "--device", "cpu", "--no-progress"]
    straight = run_cli(*args, "--out", tmp_path / "straight")
    assert straight.exit_code == 0, straight.output
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "genaug.cli", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())})
    deadline = time.time() + 300
    while not list((out / "pretrained" / "checkpoints").glob("step-0000002")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # in the middle of pretraining: no chance to clean up
    proc.wait()
    assert not (out / "pretrained" / "model").exists()
    resumed = run_cli(*args, "--out", out, "--resume")
    assert resumed.exit_code == 0, resumed.output
    for run in ("pretrained", "normal", "pneumonia"):
        a = load_file(next((tmp_path / "straight" / run / "model" / "unet").glob("*.safetensors")))
        b = load_file(next((out / run / "model" / "unet").glob("*.safetensors")))
        assert all(torch.equal(a[k], b[k]) for k in a), run


def test_bad_pool_inputs_are_refused_in_one_line_with_nothing_written(tmp_path):
    train = ["train", "ddpm-semi", "--data", str(PNEUMONIA), "--class", "all", "--per-class", "10",
             "--image-size", "16", "--config", str(TINY), "--device", "cpu"]
    assert_clean_error(run_cli(*train, "--out", tmp_path / "a"), "ddpm-semi trains on unlabelled images too",
                       "--unlabeled N|all")
    assert_clean_error(run_cli(*train, "--out", tmp_path / "b", "--unlabeled", "8"),
                       "the unlabelled pool has 8 images, fewer than a batch (16)")
    bad = tmp_path / "threshold.yaml"
    bad.write_text(TINY.read_text().replace("teacher_threshold: 0.6", "teacher_threshold: 1.5"))
    pseudo = [a if a != "ddpm-semi" else "ddpm-pseudo" for a in train]
    assert_clean_error(run_cli(*pseudo, "--out", tmp_path / "c", "--unlabeled", "32", "--config", bad),
                       "teacher_threshold must be a number between 0 and 1 (got 1.5)")
    assert_clean_error(run_cli("train", "ddpm", "--data", PNEUMONIA, "--class", "normal", "--unlabeled", "32",
                               "--out", tmp_path / "d"), "ddpm trains on labelled images only")
    exp = ["augment-and-train", "--headroom", "none", "--data", PNEUMONIA, "--per-class", "10", "--generator", "ddpm-pseudo",
           "--no-progress"]
    assert_clean_error(run_cli(*exp, "--out", tmp_path / "e"), "--generator ddpm-pseudo trains on unlabelled images")
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"generator_configs: {{ddpm-pseudo: {bad}}}\n")
    assert_clean_error(run_cli(*exp, "--unlabeled", "32", "--config", cfg, "--out", tmp_path / "f"),
                       "teacher_threshold must be a number between 0 and 1")
    assert_clean_error(run_cli(*exp, "--unlabeled", "8", "--out", tmp_path / "g"),
                       "the unlabelled pool has 8 images, fewer than a batch (32)")
    assert not any((tmp_path / x).exists() for x in "abcdefg")


def test_with_semi_mpl_the_mpl_teacher_labels_the_pool_and_scores_label_fidelity_too(tmp_path):
    from genaug.harness.experiment import Experiment, experiment_config
    from genaug.harness.design.spec import Unit
    from genaug.harness.stages.teacher import pool_probs, teacher_fidelity, teacher_folder, train_teacher

    config = experiment_config(None, {"per_class": 10, "generators": ["ddpm-pseudo"], "unlabeled": 48,
                                      "semi": ["mpl"], "semi_settings": {"finetune_epochs": 1}, "steps": 2,
                                      "batch_size": 16, "image_size": 16, "seeds": 1})
    e = Experiment(str(PNEUMONIA), tmp_path, config, device="cpu", progress=False)
    data = e.unit_data(0)
    out = train_teacher(e.spec, Unit(0), data)
    assert out["labels_pool"] == "mpl" and pool_probs(e.spec, Unit(0)).shape == (48, 2)
    assert (teacher_folder(e.spec, Unit(0)) / "mpl-teacher.safetensors").exists()
    fidelity = teacher_fidelity(e.spec, Unit(0), data.train_x, data.train_y)
    assert set(fidelity) == {"per_class", "mean", "mpl_teacher"} and 0 <= fidelity["mpl_teacher"]["mean"] <= 1


def test_ddpm_pseudo_draws_the_pool_class_balanced_on_a_fixed_teachers_labels(tmp_path, images):
    """A pool the teacher labels 30 : 6 : 4 (class 0, class 1, null): with pool_balance each label has a
    third of the pool's part of every batch; without it, the pool's own proportions."""
    given = torch.tensor([0] * 30 + [1] * 6 + [-1] * 4)
    counts = {}
    for balance in (True, False):
        trainer = _trainer(tmp_path / str(balance), "ddpm-pseudo", images, pool=images[2], pool_labels=given,
                           model={"pool_share": 0.75, "batch_size": 16, "pool_balance": balance})
        seen = torch.zeros(3)
        for step in range(60):
            pool = [i - trainer.n_labelled for i in trainer.batch_at(step) if i >= trainer.n_labelled]
            assert len(pool) == 12  # pool_share 0.75 of 16
            for v in given[pool].tolist():
                seen[v if v >= 0 else 2] += 1
        counts[balance] = (seen / seen.sum()).tolist()
    assert counts[True] == pytest.approx([1 / 3] * 3, abs=0.02)
    assert counts[False] == pytest.approx([30 / 40, 6 / 40, 4 / 40], abs=0.03)
