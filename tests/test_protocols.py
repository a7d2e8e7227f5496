"""The classifier protocols of medical imaging papers: pretrained backbones (torchvision weights,
the offline Inception), every architecture at every size, equalisation and CLAHE, ensembles
over architectures, and the composite score."""

from __future__ import annotations

import copy
import json
import urllib.error
from dataclasses import replace

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image, ImageOps

from genaug.data import draw_subset, load_split, open_source, reload_subset
from genaug.data.images import to_model_range
from genaug.data.intensity import IntensityRule
from genaug.data.preprocess import preprocess
from genaug.errors import GenaugError
from genaug.classifiers.inference import predict_proba
from genaug.classifiers.training import TrainSettings, train_classifier
from genaug.classifiers.networks import build_classifier, head, load_classifier, save_classifier
from genaug.classifiers.metrics import classification_metrics

from conftest import PNEUMONIA, assert_clean_error, run_cli


# -- the composite score ------------------------------------------------------------------------


def assert_config_refused(tmp_path, setting: str, message: str) -> None:
    """augment-and-train with `setting` in its config file ends in `message`, one line, nothing written."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(setting + "\n")
    r = run_cli("augment-and-train", "--headroom", "none", "--config", cfg, "--data", PNEUMONIA, "--per-class", "10", "--generator", "none",
                "--controls", "none", "--out", tmp_path / "exp")
    assert_clean_error(r, message)
    assert not (tmp_path / "exp").exists()

def test_composite_score_matches_a_hand_computation():
    y = np.array([0, 0, 0, 1, 1, 1])
    p1 = np.array([0.1, 0.4, 0.6, 0.3, 0.8, 0.9])  # predictions 0 0 1 0 1 1: TN 2, FP 1, FN 1, TP 2
    m = classification_metrics(y, np.stack([1 - p1, p1], 1), ["a", "b"])
    f1 = 2 * 2 / (2 * 2 + 1 + 1)  # both classes: 2 TP, 1 FP, 1 FN
    kappa = (4 / 6 - 0.5) / (1 - 0.5)  # observed agreement 4/6, chance 0.5
    auc = 7 / 9  # positive-negative pairs ranked right: 1 + 3 + 3 of 9
    assert m["macro_f1"] == pytest.approx(f1) and m["cohen_kappa"] == pytest.approx(kappa)
    assert m["roc_auc_ovr"] == pytest.approx(auc)
    assert m["final_score"] == pytest.approx((f1 + kappa + auc) / 3) == pytest.approx(0.5925926, abs=1e-7)


# -- preprocessing --------------------------------------------------------------------------------

def _low_contrast(n=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, size, size, generator=g) * 60 + 80).to(torch.uint8)


def test_equalize_is_pils_histogram_equalisation():
    x = _low_contrast()
    ours = preprocess(x, "equalize")
    for img, out in zip(x, ours):
        assert np.array_equal(out[0].numpy(), np.array(ImageOps.equalize(Image.fromarray(img[0].numpy()))))
    two = torch.zeros(1, 1, 32, 32, dtype=torch.uint8)
    two[..., :16], two[..., 16:] = 100, 150
    assert preprocess(two, "equalize").unique().tolist() == [0, 255]


def test_clahe_is_the_documented_cdf_mapping_and_raises_contrast():
    x = _low_contrast()
    # one tile and no clipping: CLAHE is OpenCV's histogram mapping round(cdf(v) * 255 / N)
    one_tile = preprocess(x, "clahe", clip_limit=0.0, grid=1)
    for img, out in zip(x, one_tile):
        v = img[0].numpy()
        cdf = np.cumsum(np.bincount(v.ravel(), minlength=256))
        assert np.array_equal(out[0].numpy(), np.round(cdf * 255 / v.size).clip(0, 255)[v])
    out = preprocess(x, "clahe")  # clip 2.0, 4x4 tiles below 64 px
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert out.float().std() > 2 * x.float().std()
    assert not torch.equal(out, one_tile)  # tiles and clipping do something
    with pytest.raises(GenaugError, match="unknown --preprocess 'gamma'"):
        preprocess(x, "gamma")


def test_preprocessing_is_recorded_and_repeated_on_every_load():
    s = open_source(str(PNEUMONIA))
    rule = IntensityRule.parse("dataset").with_preprocess("equalize")
    real, manifest = draw_subset(s, [0, 1], 4, 0, 28, intensity=rule)
    plain, _ = draw_subset(s, [0, 1], 4, 0, 28)
    assert manifest["intensity"]["preprocess"] == "equalize"
    assert torch.equal(real.images, preprocess(plain.images, "equalize"))
    assert torch.equal(reload_subset(manifest, None, s)[1].images, real.images)
    test = load_split(s, "test", [0, 1], 28, intensity=manifest["intensity"])
    raw_test = load_split(s, "test", [0, 1], 28)
    assert torch.equal(test.images, preprocess(raw_test.images, "equalize"))


# -- networks ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["resnet18", "resnet50", "efficientnet_b0", "inception-v3"])
@pytest.mark.parametrize("size", [28, 64, 224])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_architecture_trains_a_step_at_every_size(name, size, channels):
    g = torch.Generator().manual_seed(size + channels)
    x = torch.randint(0, 256, (4, channels, size, size), generator=g, dtype=torch.uint8)
    y = torch.tensor([0, 1, 0, 1])
    settings = TrainSettings(classifier=name, epochs=1, batch_size=2, crop_padding=0, rotation=0,
                             finetune=name == "inception-v3" and size == 28)
    trained = train_classifier(x, y, x[:2], y[:2], 2, settings, 0, 1, "cpu")
    assert trained.optimizer_steps == 1
    probs = predict_proba(trained.model, x, "cpu")
    assert probs.shape == (4, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_stem_choice_sets_the_first_layers_and_survives_saving(tmp_path):
    x = torch.rand(2, 3, 32, 32)
    small, imagenet = (build_classifier("resnet18", 3, 10, 32, stem=s) for s in ("auto", "imagenet"))
    assert small.conv1.stride == (1, 1) and isinstance(small.maxpool, torch.nn.Identity)
    assert imagenet.conv1.stride == (2, 2) and isinstance(imagenet.maxpool, torch.nn.MaxPool2d)
    assert build_classifier("resnet18", 3, 10, 64, stem="small").conv1.stride == (1, 1)  # auto would pick imagenet
    assert build_classifier("efficientnet_b0", 1, 2, 28, stem="imagenet").features[0][0].stride == (2, 2)
    imagenet.eval()
    save_classifier(imagenet, tmp_path / "m.safetensors", "resnet18", [str(i) for i in range(10)], 32, 3,
                    extra={"stem": "imagenet"})
    loaded, meta = load_classifier(tmp_path / "m.safetensors")
    assert meta["stem"] == "imagenet" and loaded.conv1.stride == (2, 2)
    torch.testing.assert_close(loaded(x), imagenet(x))
    with pytest.raises(GenaugError, match="unknown stem 'tiny'"):
        build_classifier("resnet18", 3, 10, 32, stem="tiny")
    assert_config_refused(tmp_path, "stem: tiny", "unknown stem 'tiny'; choose from auto, small, imagenet")


@pytest.mark.parametrize("avx512_bf16, amx", [(False, False), (True, False), (False, True)])
def test_native_precision_follows_the_cpus_bf16_instructions_and_auto_stays_fp32(monkeypatch, avx512_bf16, amx):
    from genaug.classifiers.inference import uses_bf16
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    cpu = torch.device("cpu")
    assert uses_bf16(cpu, "native") is (avx512_bf16 or amx)
    assert uses_bf16(cpu, "auto") is False and uses_bf16(cpu, "no") is False and uses_bf16(cpu, "bf16") is True
    model = build_classifier("resnet18", 1, 2, 28, stem="imagenet")
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    dtypes = []
    hook = model.fc.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    predict_proba(model, images, "cpu", precision="native")
    hook.remove()
    assert dtypes == [torch.bfloat16 if avx512_bf16 or amx else torch.float32]


def test_frozen_inception_trains_only_its_head_and_finetune_trains_all():
    x = torch.randint(0, 256, (4, 1, 28, 28), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    y = torch.tensor([0, 1, 0, 1])
    before = build_classifier("inception-v3", 1, 2, 28).state_dict()
    settings = TrainSettings(classifier="inception-v3", epochs=2, batch_size=2, crop_padding=0, rotation=0, lr=0.1)
    after = train_classifier(x, y, x, y, 2, settings, 0, 2, "cpu").model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= {"fc.weight", "fc.bias"}  # batch-norm statistics untouched too
    tuned = train_classifier(x, y, x, y, 2, replace(settings, finetune=True, lr=1e-3), 0, 2, "cpu").model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], tuned[k])}
    assert "features.1.conv.weight" in changed and "features.18.branch_pool.bn.running_mean" in changed


def test_pretrained_inception_learns_pneumonia_and_reloads(tmp_path):
    s = open_source(str(PNEUMONIA))
    train, _ = draw_subset(s, [0, 1], 40, 0, 28)
    val, _ = draw_subset(s, [0, 1], 10, 1, 28, split="val")
    test = load_split(s, "test", [0, 1], 28)
    pick = torch.cat([torch.nonzero(test.labels == c).flatten()[:40] for c in (0, 1)])
    settings = TrainSettings(classifier="inception-v3", epochs=2, batch_size=16, lr=3e-3)  # 0.875 measured
    model = train_classifier(train.images, train.labels, val.images, val.labels, 2, settings, 0, 5, "cpu").model
    probs = predict_proba(model, test.images[pick], "cpu")
    bacc = classification_metrics(test.labels[pick].numpy(), probs, ["normal", "pneumonia"])["balanced_accuracy"]
    assert bacc > 0.7, bacc  # chance is 0.5
    save_classifier(model, tmp_path / "m.safetensors", "inception-v3", ["normal", "pneumonia"], 28, 1)
    again, meta = load_classifier(tmp_path / "m.safetensors")
    assert meta["classifier"] == "inception-v3"
    assert np.allclose(predict_proba(again, test.images[pick[::8]], "cpu"), probs[::8], atol=1e-6)


def _offline(monkeypatch):
    """No download can succeed, whether or not this machine is online."""
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)


def test_pretrained_torchvision_weights_offline_error_then_the_cached_file(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    _offline(monkeypatch)
    with pytest.raises(GenaugError) as err:
        build_classifier("resnet18", 1, 2, 28, pretrained=True)
    msg = str(err.value)
    assert "resnet18-f37072fd.pth" in msg and str(hub / "checkpoints") in msg and "inception-v3" in msg
    assert "\n" not in msg
    monkeypatch.undo()
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    # a weights file placed in the cache is used, with no download
    placed = torchvision.models.resnet18(weights=None).state_dict()
    (hub / "checkpoints").mkdir(parents=True)
    torch.save(placed, hub / "checkpoints" / "resnet18-f37072fd.pth")
    model = build_classifier("resnet18", 1, 2, 28, pretrained=True)
    assert torch.equal(model.conv1[1].weight, placed["conv1.weight"])
    assert torch.equal(model.layer4[1].bn2.running_var, placed["layer4.1.bn2.running_var"])
    assert head(model).out_features == 2
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    assert predict_proba(model, x, "cpu").shape == (2, 2)


def test_offline_pretrained_from_the_cli_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    _offline(monkeypatch)
    r = run_cli("augment-and-train", "--headroom", "none", "--data", PNEUMONIA, "--per-class", "6", "--generator", "none",
                "--controls", "none", "--seeds", "1", "--steps", "1", "--classifier", "resnet18", "--pretrained",
                "--no-progress", "--device", "cpu", "--out", tmp_path / "exp")
    assert_clean_error(r, "--pretrained resnet18", "resnet18-f37072fd.pth")
    assert_clean_error(run_cli("augment-and-train", "--headroom", "none", "--data", PNEUMONIA, "--classifier", "resnet18,vgg",
                               "--out", tmp_path / "x"), "unknown classifier 'vgg'")
    assert_clean_error(run_cli("augment-and-train", "--headroom", "none", "--data", PNEUMONIA, "--finetune", "--out", tmp_path / "y"),
                       "--finetune trains a pretrained backbone", "--pretrained")
    assert not (tmp_path / "y").exists()


# -- several architectures and their ensembles ---------------------------------------------------

def test_two_architectures_each_train_and_their_ensemble_is_the_mean(tmp_path):
    out = tmp_path / "exp"
    r = run_cli("augment-and-train", "--headroom", "none", "--data", PNEUMONIA, "--per-class", "10", "--generator", "none",
                "--controls", "dup", "--synthetic-per-class", "6", "--seeds", "2", "--steps", "1",
                "--classifier", "resnet18,efficientnet_b0", "--preprocess", "clahe", "--image-size", "16",
                "--no-progress", "--device", "cpu", "--out", out)
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    names = sorted(p.name for p in (out / "rep-0" / "classifiers" / "baseline").glob("*.json"))
    assert names == ["efficientnet_b0-seed-0.json", "efficientnet_b0-seed-1.json", "seed-0.json", "seed-1.json"]
    assert report["classifiers"]["architectures"] == ["resnet18", "efficientnet_b0"]
    assert list(report["classifiers"]["others"]) == ["efficientnet_b0"]
    assert report["data"]["intensity"]["preprocess"] == "clahe"
    s = open_source(str(PNEUMONIA))
    y = load_split(s, "test", [0, 1], 16).labels.numpy()
    for key, members in (("ensembles", ["seed-0", "seed-1"]),
                         ("ensembles_all_architectures", ["seed-0", "seed-1", "efficientnet_b0-seed-0",
                                                          "efficientnet_b0-seed-1"])):
        for row in report[key]["runs"]:
            folder = out / "rep-0" / "classifiers" / row["arm"].replace("+", "plus-")
            probs = [np.asarray(json.loads((folder / f"{m}.json").read_text())["test_probs"]) for m in members]
            expected = classification_metrics(y, np.mean(probs, 0), ["normal", "pneumonia"])
            assert row["members"] == len(members)
            assert row["balanced_accuracy"] == pytest.approx(expected["balanced_accuracy"], abs=1e-12)
            assert row["final_score"] == pytest.approx(expected["final_score"], abs=1e-12)
    md = (out / "report.md").read_text()
    assert "## Architecture efficientnet_b0" in md and "## Ensembles of each arm's seeds and architectures" in md
    assert "final_score" in md


# -- cross-validation -------------------------------------------------------------------------------

def test_cv_folds_are_disjoint_stratified_and_patient_disjoint():
    from genaug.data.splits import cv_folds
    from conftest import OCT

    labels = np.repeat([0, 1, 2], [10, 15, 5])
    folds = cv_folds(labels, None, 5, seed=3)
    held = np.concatenate([va for _, va in folds])
    assert sorted(held.tolist()) == list(range(30))  # every image held out exactly once
    for tr, va in folds:
        assert not set(tr) & set(va) and len(tr) + len(va) == 30
        assert np.bincount(labels[va], minlength=3).tolist() == [2, 3, 1]  # stratified
    assert [va.tolist() for _, va in cv_folds(labels, None, 5, seed=4)] != [va.tolist() for _, va in folds]
    s = open_source(str(OCT), group_by="oct2017")
    real, _ = draw_subset(s, [0, 1, 2, 3], None, seed=0, image_size=32)
    for tr, va in cv_folds(real.labels.numpy(), real.groups, 2, seed=0):
        assert not {real.groups[i] for i in tr} & {real.groups[i] for i in va}
        assert set(real.labels[va].tolist()) == {0, 1, 2, 3}
    with pytest.raises(GenaugError, match="cv 9: a class has only"):
        cv_folds(real.labels.numpy(), real.groups, 9, seed=0)


def test_cv_experiment_generators_never_see_a_folds_held_out_images(tmp_path):
    """Also with --explain: the heatmaps of the first fold's classifiers and report.json are written
    (this ended in "not a genaug run folder" after all training)."""
    out = tmp_path / "exp"
    (tmp_path / "no-quality.yaml").write_text("quality: false\n")  # FIDs per fold are not what is tested here
    r = run_cli("augment-and-train", "--headroom", "none", "--config", tmp_path / "no-quality.yaml", "--data", PNEUMONIA, "--per-class",
                "9", "--cv", "3", "--generator", "vae", "--generator-steps", "5", "--synthetic-per-class", "4",
                "--accept", "all", "--controls", "none", "--seeds", "1", "--steps", "1", "--image-size", "16",
                "--no-progress", "--explain", "cam", "--device", "cpu", "--out", out)
    assert r.exit_code == 0, r.output
    assert (out / "explain" / "heatmaps-cam.png").stat().st_size > 0 and (out / "report.json").exists()
    assert json.loads((out / "report.json").read_text())["explain"]["models"] == ["baseline", "plus-vae"]
    held_out, subset = [], None
    for f in range(3):
        unit = out / "rep-0" / f"fold-{f}"
        manifest = json.loads((unit / "manifest.json").read_text())
        ids = {it["id"] for it in manifest["train"]["items"]}
        subset = subset or ids
        assert ids == subset and len(ids) == 18  # one labelled subset per replicate
        result = json.loads((unit / "classifiers" / "plus-vae" / "seed-0.json").read_text())
        assert result["fold"] == f and result["test"]["n_test"] == 624
        seen = set()
        for cls in ("normal", "pneumonia"):
            run = json.loads((unit / "generators" / "vae" / cls / "manifest.json").read_text())
            seen |= {it["id"] for it in run["train"]["items"]}
        held = subset - seen  # what no generator of this fold saw
        assert len(held) == 6 and len(seen) == 12
        held_out.append(held)
    assert set().union(*held_out) == subset and sum(map(len, held_out)) == 18  # each held out once
    report = json.loads((out / "report.json").read_text())
    assert report["design"]["cv_folds"] == 3 and report["design"]["unit_of_inference"] == "fold"
    assert list(report["folds"]["baseline"]["cells"]) == ["0/0", "0/1", "0/2"]
    md = (out / "report.md").read_text()
    assert "## Cross-validation folds" in md and "3-fold cross-validation" in md and "optimistic" in md
    listed = run_cli("datasets", out)
    assert listed.exit_code == 0 and listed.output.count("per class 9") == 3, listed.output
    assert_clean_error(run_cli("augment-and-train", "--headroom", "none", "--data", PNEUMONIA, "--per-class", "4", "--cv", "5",
                               "--generator", "none", "--out", tmp_path / "x"), "cv 5: a class has only 4 images")


def test_pair_confusion_on_a_hand_example():
    from genaug.harness.stats.analysis import pair_confusion

    cm = [[8, 2, 0], [1, 9, 0], [0, 5, 5]]  # rows: true a, b, c
    runs = [{"arm": "baseline", "test": {"confusion_matrix": cm}}]
    rates = pair_confusion(runs, ["a", "b", "c"], ["baseline"])["baseline"]
    assert rates == pytest.approx({"a / b": 3 / 20, "a / c": 0.0, "b / c": 5 / 20})


def test_compare_two_recipes_pairs_replicates_and_refuses_other_subsets(tmp_path):
    base = ["augment-and-train", "--headroom", "none", "--data", PNEUMONIA, "--per-class", "10", "--generator", "none", "--controls", "dup",
            "--synthetic-per-class", "5", "--seeds", "2", "--steps", "2", "--image-size", "16", "--no-progress",
            "--device", "cpu"]  # 16 px: a third of the classifiers' time at 28 px
    for name, extra in (("ce", []), ("cr", ["--loss", "cr"])):
        r = run_cli(*base, *extra, "--out", tmp_path / name)
        assert r.exit_code == 0, r.output
    other = json.loads((tmp_path / "ce" / "report.json").read_text())
    other["data"]["manifest_sha256"] = ["0" * 64]  # as if another seed had drawn another subset
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "report.json").write_text(json.dumps(other))
    r = run_cli("compare", tmp_path / "ce", tmp_path / "cr", "--out", tmp_path / "cmp.md")
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "cmp.json").read_text())
    assert result["differs_in"] == ["loss"] and list(result["arms"]) == ["baseline", "+dup"]
    ce = json.loads((tmp_path / "ce" / "report.json").read_text())["arms"]["baseline"]["runs"]
    cr = json.loads((tmp_path / "cr" / "report.json").read_text())["arms"]["baseline"]["runs"]
    d = result["arms"]["baseline"]["balanced_accuracy"]
    assert d["n"] == 2 and d["diffs"] == pytest.approx([b["balanced_accuracy"] - a["balanced_accuracy"]
                                                        for a, b in zip(ce, cr)])
    assert_clean_error(run_cli("compare", tmp_path / "ce", tmp_path / "other"), "different real subsets")
    assert_clean_error(run_cli("compare", tmp_path / "ce", tmp_path / "nothing"), "no report.json")


def test_bf16_runs_the_forward_passes_in_bf16_keeps_fp32_weights_and_agrees_with_fp32(tmp_path):
    s = open_source(str(PNEUMONIA))
    real, _ = draw_subset(s, [0, 1], 8, 0, 28)
    x, y = real.images, real.labels
    seen = {}

    def record(module, inputs, output):
        seen.setdefault("dtype", output.dtype)

    base = TrainSettings(classifier="resnet18", stem="imagenet", epochs=1, batch_size=8, crop_padding=0, rotation=0)
    runs = {}
    for precision in ("auto", "no", "bf16"):
        seen.clear()
        handle = torch.nn.modules.module.register_module_forward_hook(
            lambda m, i, o: record(m, i, o) if isinstance(m, torch.nn.Conv2d) else None)
        try:
            runs[precision] = train_classifier(x, y, x, y, 2, replace(base, mixed_precision=precision), 0, 2, "cpu")
        finally:
            handle.remove()
        runs[precision].conv_dtype = seen["dtype"]
    assert runs["bf16"].conv_dtype == torch.bfloat16 and runs["no"].conv_dtype == torch.float32
    assert runs["auto"].conv_dtype == torch.float32  # auto: bf16 on CUDA only
    for name, tensor in runs["bf16"].model.state_dict().items():
        assert tensor.dtype in (torch.float32, torch.int64), name
    for a, b in zip(runs["auto"].model.state_dict().values(), runs["no"].model.state_dict().values()):
        assert torch.equal(a, b)  # on a CPU auto is exactly full precision

    # the frozen Inception backbone (the transfer run's headline) gives near-identical features in bf16
    inception = build_classifier("inception-v3", 1, 2, 28).eval()
    test = load_split(s, "test", [0, 1], 28)
    images = to_model_range(test.images[torch.arange(0, len(test.images), 78)])  # 8 real test images
    with torch.no_grad():
        full = inception.avgpool(inception.features(images)).flatten(1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = inception.avgpool(inception.features(images)).flatten(1).float()
    cosine = torch.nn.functional.cosine_similarity(half, full)
    assert cosine.min() > 0.995 and not torch.equal(half, full)  # bf16 keeps ~3 digits; it did run in bf16

    assert_config_refused(tmp_path, "mixed_precision: fp16",
                          "unknown classifier mixed_precision 'fp16'; choose from auto, native, no, bf16")


def test_channels_last_computes_the_same_outputs_and_gradients_and_saves_plainly(tmp_path):
    s = open_source(str(PNEUMONIA))
    real, _ = draw_subset(s, [0, 1], 8, 0, 28)
    x = to_model_range(real.images)
    # a fixed initialisation: for some (1 in 8 tried) a max-pool tie or a ReLU at 0 sends an fp32 gradient,
    # NCHW or NHWC alike, down another branch than float64's, a discrete jump rather than rounding
    torch.manual_seed(0)
    plain = build_classifier("resnet18", 1, 2, 28, stem="imagenet")
    nhwc = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    exact = copy.deepcopy(plain).double()  # the reference both are rounded versions of
    for model, inputs in ((plain, x), (nhwc, x), (exact, x.double())):
        torch.nn.functional.cross_entropy(model(inputs), real.labels).backward()
    torch.testing.assert_close(nhwc(x), plain(x), rtol=1e-4, atol=1e-5)  # same maths, another loop order
    for layer in ("conv1", "fc"):  # first and last layer: the whole backward pass
        truth = getattr(exact, layer).weight.grad.float()
        errors = [(getattr(m, layer).weight.grad - truth).abs().max() / truth.abs().max() for m in (plain, nhwc)]
        assert errors[1] < 1e-4 and errors[0] < 1e-4, (layer, errors)  # both at fp32 rounding (~1e-5)

    base = TrainSettings(classifier="resnet18", stem="imagenet", epochs=1, batch_size=8, crop_padding=0, rotation=0)
    trained = train_classifier(real.images, real.labels, real.images, real.labels, 2,
                               replace(base, channels_last=True), 0, 2, "cpu").model
    assert trained.layer1[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    save_classifier(trained, tmp_path / "m.safetensors", "resnet18", ["a", "b"], 28, 1, extra={"stem": "imagenet"})
    loaded, _ = load_classifier(tmp_path / "m.safetensors")
    np.testing.assert_allclose(predict_proba(loaded, real.images, "cpu"), predict_proba(trained, real.images, "cpu"),
                               atol=1e-5)
    assert_config_refused(tmp_path, "channels_last: maybe", "channels_last must be true or false (got 'maybe')")
