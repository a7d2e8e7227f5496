"""Unlabelled real images and the semi-supervised arms (+pseudo, +mpl): disjoint pools, labels that
never reach training, the Meta Pseudo Labels teacher step by hand, threshold 1.0 = baseline,
resume after an interruption, bad input."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from genaug.data import draw_subset, open_source
from genaug.data.unlabeled import candidates, draw_unlabeled
from genaug.errors import GenaugError
from genaug.generators.training import TrainingInterrupted
from genaug.classifiers import semi
from genaug.classifiers.inference import predict_proba
from genaug.classifiers.training import TrainSettings, train_classifier
from genaug.harness.stages.unit_data import pseudo_label_check
from genaug.harness.experiment import Experiment, experiment_config

from conftest import OCT, PNEUMONIA, assert_clean_error, run_cli

SETTINGS = {"data": str(PNEUMONIA), "per_class": 10, "generators": "none", "controls": "none", "seeds": 1,
            "steps": "epochs", "epochs": 2, "batch_size": 16, "quality": False, "unlabeled": 48, "semi": "pseudo,mpl",
            "semi_settings": {"threshold": 0.5, "finetune_epochs": 1}, "save_models": "none"}


def _experiment(out, **extra) -> Experiment:
    return Experiment(str(PNEUMONIA), out, experiment_config(None, {**SETTINGS, **extra}), device="cpu",
                      progress=False)


def _probs(out, arm):
    return json.loads((out / "rep-0" / "classifiers" / arm / "seed-0.json").read_text())["test_probs"]


def test_unlabeled_pool_is_disjoint_recorded_and_patient_disjoint(tmp_path):
    e = _experiment(tmp_path / "exp")
    rep = e.unit_data(0)
    manifest = json.loads((tmp_path / "exp" / "rep-0" / "manifest.json").read_text())
    block = manifest["unlabeled"]
    pool_ids = {it["id"] for it in block["items"]}
    assert block["count"] == 48 == len(pool_ids) and set(block["items"][0]) == {"id", "sha256"}  # no labels kept
    labelled = {it["id"] for it in manifest["train"]["items"]}  # the train part; validation: the val split
    assert block["split"] == "train" and manifest["validation"]["split"] == "val" and not pool_ids & labelled
    assert rep.pool.shape == (48, 1, 28, 28)
    every = _experiment(tmp_path / "all", unlabeled="all").unit_data(0)
    # ids number each split from 0: test or val ids must not remove train images
    assert every.manifest["unlabeled"]["count"] == 4708 - 16
    again = e.unit_data(0)
    assert torch.equal(again.pool, rep.pool)  # reloaded from the manifest, same pixels
    other = _experiment(tmp_path / "other", seed=1).unit_data(0)
    assert {it["id"] for it in other.manifest["unlabeled"]["items"]} != pool_ids  # seeded per replicate

    s = open_source(str(OCT), group_by="oct2017")
    real, manifest = draw_subset(s, [0, 1, 2, 3], 2, seed=0, image_size=32)
    labelled_groups = {it["group"] for it in manifest["train"]["items"]}
    train = s.split("train")
    mates = [i for i, g in zip(train.ids, train.groups) if g in labelled_groups and i not in set(real.ids)]
    pool = candidates(s, [0, 1, 2, 3], manifest, [])
    assert mates, "the OCT sample should hold a second scan of a labelled patient"
    assert not set(mates) & set(pool) and not {train.group_of()[i] for i in pool} & labelled_groups
    with pytest.raises(GenaugError, match="only .* train images .* are left"):
        draw_unlabeled(s, [0, 1, 2, 3], len(pool) + 1, 0, manifest, [])


def test_pool_labels_never_reach_training_and_an_interrupted_run_resumes(tmp_path, monkeypatch):
    """Run A is interrupted in +mpl and resumed; run B, in a folder holding A's manifest, sees every
    unlabelled image with a wrong label: the classifiers of both are identical, only the diagnostic differs."""
    a = tmp_path / "a"  # 16 px: a third of the classifiers' time at 28 px
    real_mpl = semi.train_mpl

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(semi, "train_mpl", killed)
    with pytest.raises(TrainingInterrupted, match="run the same command again"):
        _experiment(a, image_size=16).run()
    assert (a / "rep-0" / "classifiers" / "plus-pseudo" / "seed-0.json").exists()
    assert not (a / "rep-0" / "classifiers" / "plus-mpl").exists()
    monkeypatch.setattr(semi, "train_mpl", real_mpl)
    report = _experiment(a, image_size=16).run()

    b = tmp_path / "b"
    (b / "rep-0").mkdir(parents=True)
    shutil.copy(a / "rep-0" / "manifest.json", b / "rep-0" / "manifest.json")
    e = _experiment(b, image_size=16)
    pool_ids = [it["id"] for it in json.loads((a / "rep-0" / "manifest.json").read_text())["unlabeled"]["items"]]
    labels = e.source.split("train").labels
    position = {i: n for n, i in enumerate(e.source.split("train").ids)}
    for i in pool_ids:
        labels[position[i]] = 1 - labels[position[i]]  # every unlabelled image now carries the wrong class
    wrong = e.run()
    for arm in ("baseline", "plus-pseudo", "plus-mpl"):
        assert _probs(a, arm) == _probs(b, arm), arm
    pa, pb = (r["semi"]["+pseudo"] for r in (report, wrong))
    assert pa["labelled_share"] == pb["labelled_share"] and pa["labelled_share"] > 0
    assert pa["accuracy"] == pytest.approx(1 - pb["accuracy"])  # the diagnostic alone sees the true labels
    result = json.loads((a / "rep-0" / "classifiers" / "plus-mpl" / "seed-0.json").read_text())
    assert result["optimizer_steps"] == 2 and result["images_seen"]["unlabeled"] == 16  # epoch 2 fine-tunes
    md = (a / "report.md").read_text()
    assert "## Unlabelled images: pseudo-label check" in md and "| +mpl |" in md
    shown = round(pa["pseudo_labelled"])  # the arm table says what each semi-supervised arm added
    assert f"| +pseudo | 0 + {shown} pseudo-labelled |" in md and f"| +mpl | 0 + unlabelled pool of {round(pa['pool'])} |" in md


def test_mpl_teacher_step_matches_a_hand_computation():
    """Teacher and student: one weight per class on a scalar input (two parameters each), SGD."""
    torch.manual_seed(0)
    teacher, student = torch.nn.Linear(1, 2, bias=False), torch.nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        teacher.weight.copy_(torch.tensor([[0.3], [-0.2]]))
        student.weight.copy_(torch.tensor([[0.1], [0.4]]))
    eta_s, eta_t = 0.5, 0.1
    t_opt = torch.optim.SGD(teacher.parameters(), lr=eta_t)
    s_opt = torch.optim.SGD(student.parameters(), lr=eta_s)
    xl, yl = torch.tensor([[1.0], [-2.0]]), torch.tensor([0, 1])
    xu = torch.tensor([[0.5], [-1.5]])
    options = {**semi.DEFAULTS, "uda_weight": 0.0, "label_smoothing": 0.0}
    logged = semi.mpl_step(teacher, student, t_opt, s_opt, xl, yl, xu, xu, options)

    def softmax(z):
        e = np.exp(z - z.max())
        return e / e.sum()

    def ce_and_grad(w, x, y):  # mean CE of logits w * x, and its gradient in w
        loss, grad = 0.0, np.zeros(2)
        for xi, yi in zip(x, y):
            p = softmax(w * xi)
            loss -= math.log(p[yi]) / len(x)
            grad += (p - np.eye(2)[yi]) * xi / len(x)
        return loss, grad

    wt, ws = np.array([0.3, -0.2]), np.array([0.1, 0.4])
    x_l, x_u = [1.0, -2.0], [0.5, -1.5]
    hard = [int(np.argmax(wt * x)) for x in x_u]
    old, _ = ce_and_grad(ws, x_l, [0, 1])
    _, g_u = ce_and_grad(ws, x_u, hard)
    ws_new = ws - eta_s * g_u
    new, _ = ce_and_grad(ws_new, x_l, [0, 1])
    h = old - new
    _, g_sup = ce_and_grad(wt, x_l, [0, 1])
    _, g_mpl = ce_and_grad(wt, x_u, hard)
    wt_new = wt - eta_t * (g_sup + h * g_mpl)
    assert logged["reward"] == pytest.approx(h, rel=1e-5)
    np.testing.assert_allclose(student.weight.detach().numpy().ravel(), ws_new, rtol=1e-6)
    np.testing.assert_allclose(teacher.weight.detach().numpy().ravel(), wt_new, rtol=1e-6)
    # with a small student step the reward is the paper's eta_S * grad_l(theta_S')^T grad_u(theta_S)
    small = 1e-3
    with torch.no_grad():
        student.weight.copy_(torch.tensor([[0.1], [0.4]]))
        teacher.weight.copy_(torch.tensor([[0.3], [-0.2]]))
    s_opt = torch.optim.SGD(student.parameters(), lr=small)
    logged = semi.mpl_step(teacher, student, t_opt, s_opt, xl, yl, xu, xu, options)
    _, g_l_after = ce_and_grad(ws - small * g_u, x_l, [0, 1])
    assert logged["reward"] == pytest.approx(small * g_l_after @ g_u, rel=1e-2)


def test_pseudo_with_threshold_one_is_the_baseline():
    from genaug.data import draw_subset

    s = open_source(str(PNEUMONIA))
    real, _ = draw_subset(s, [0, 1], 12, seed=0, image_size=28)
    val, _ = draw_subset(s, [0, 1], 4, seed=1, image_size=28, split="val")
    pool, _ = draw_subset(s, [0, 1], 20, seed=2, image_size=28)
    settings = TrainSettings(epochs=2, batch_size=8)
    args = (real.images, real.labels, val.images, val.labels, 2, settings, 5, 3, "cpu")
    base = train_classifier(*args)
    none = semi.train_pseudo(*args, pool=pool.images, options={**semi.DEFAULTS, "threshold": 1.0})
    assert none.pseudo_labels["indices"] == [] and none.trained.images_seen["extra"] == 0
    np.testing.assert_array_equal(predict_proba(base.model, val.images, "cpu"),
                                  predict_proba(none.trained.model, val.images, "cpu"))
    some = semi.train_pseudo(*args, pool=pool.images, options={**semi.DEFAULTS, "threshold": 0.0})
    assert len(some.pseudo_labels["indices"]) == 40 and some.trained.images_seen["extra"] > 0


def test_mpl_in_bf16_runs_both_networks_forward_in_bf16_with_fp32_weights():
    s = open_source(str(PNEUMONIA))
    real, _ = draw_subset(s, [0, 1], 8, seed=0, image_size=28)
    pool, _ = draw_subset(s, [0, 1], 8, seed=2, image_size=28)
    dtypes = []
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda m, i, o: dtypes.append(o.dtype) if isinstance(m, torch.nn.Linear) else None)
    try:
        settings = TrainSettings(stem="imagenet", epochs=2, batch_size=8, mixed_precision="bf16")
        out = semi.train_mpl(real.images, real.labels, real.images, real.labels, 2, settings, 0, 1, "cpu",
                             pool=pool.images, options={**semi.DEFAULTS, "finetune_epochs": 1})
    finally:
        hook.remove()
    # MPL epoch: teacher, student, student again (its new labelled loss); fine-tune epoch: student; each
    # epoch's validation and the teacher's final labelling of the pool
    assert dtypes and set(dtypes) == {torch.bfloat16} and len(dtypes) == 3 + 1 + 2 + 1
    assert all(t.dtype == torch.float32 for t in out.trained.model.parameters())
    assert out.trained.optimizer_steps == 2 and len(out.pseudo_labels["labels"]) == 16


def test_bad_semi_input_is_refused_before_anything_is_written(tmp_path):
    common = ["augment-and-train", "--headroom", "none", "--data", PNEUMONIA, "--per-class", "10", "--generator", "none",
              "--controls", "none", "--device", "cpu", "--no-progress"]
    out = tmp_path / "x"
    assert_clean_error(run_cli(*common, "--semi", "pseudo", "--unlabeled", "999999", "--out", out),
                       "--unlabeled 999999", "at most")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_clean_error(run_cli(*common, "--semi", "mpl", "--unlabeled-data", empty, "--out", out), "no images")
    assert_clean_error(run_cli(*common, "--semi", "pseudo", "--out", out), "needs unlabelled images")
    assert_clean_error(run_cli(*common, "--unlabeled", "10", "--out", out), "add --semi")
    assert_clean_error(run_cli(*common, "--semi", "fixmatch", "--unlabeled", "10", "--out", out), "fixmatch")
    assert_clean_error(run_cli(*common, "--semi", "pseudo", "--unlabeled", "lots", "--out", out), "whole number")
    assert not out.exists()
    for settings, message in (({"threshold": "high"}, "threshold must be a number"),
                              ({"rounds": 0}, "rounds must be at least 1"),
                              ({"unlabeled_batch": 0}, "unlabeled_batch must be at least 1"),
                              ({"finetune_epochs": 2}, "finetune_epochs must be in")):
        with pytest.raises(GenaugError, match=message):
            experiment_config(None, {**SETTINGS, "epochs": 2, "semi_settings": settings})


def test_an_unlabelled_folder_is_recorded_and_reloaded(tmp_path):
    from PIL import Image

    folder = tmp_path / "unlabelled"
    folder.mkdir()
    test_images = np.load(PNEUMONIA)["test_images"]
    for i in range(5):
        Image.fromarray(test_images[i]).save(folder / f"scan-{i}.png")
    e = _experiment(tmp_path / "exp", unlabeled=None, unlabeled_data=str(folder), semi="pseudo")
    rep = e.unit_data(0)
    block = rep.manifest["unlabeled"]
    assert block["folder"] == str(folder) and [it["id"] for it in block["items"]] == [f"scan-{i}.png" for i in range(5)]
    assert torch.equal(rep.pool[:, 0], torch.from_numpy(test_images[:5]))  # 28 px, unchanged
    assert pseudo_label_check(e.spec, rep, {"indices": [], "labels": []}) is None  # no true labels for a folder
    again = e.unit_data(0)
    assert torch.equal(again.pool, rep.pool)
    Image.fromarray(test_images[9]).save(folder / "scan-0.png")  # an image changed since it was recorded
    with pytest.raises(GenaugError, match="changed since"):
        e.unit_data(0)
