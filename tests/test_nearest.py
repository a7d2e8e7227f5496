"""`genaug nearest` and saved classifiers, on PneumoniaMNIST images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genaug.data import draw_subset, open_source, save_png
from genaug.classifiers.inference import predict_proba
from genaug.classifiers.training import TrainSettings, train_classifier
from genaug.classifiers.networks import embed, load_classifier, save_classifier

from conftest import PNEUMONIA, assert_clean_error, run_cli


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """A gallery of 12 real images and queries: an exact copy of gallery image 2, a 2-px shift of
    image 7 and two images from outside the gallery."""
    s = open_source(str(PNEUMONIA))
    real, _ = draw_subset(s, s.resolve_classes("all"), 8, seed=3, image_size=28)
    root = tmp_path_factory.mktemp("nearest")
    gallery, query = root / "gallery", root / "query"
    for i, img in enumerate(real.images[:12]):
        save_png(img, gallery / f"g{i:02d}.png")
    moved = torch.nn.functional.pad(real.images[7:8].float(), (2, 2, 2, 2), mode="reflect")[..., 4:32, 2:30]
    queries = [real.images[2], moved[0].to(torch.uint8), real.images[12], real.images[13]]
    for i, img in enumerate(queries):
        save_png(img, query / f"q{i}.png")
    return real, gallery, query, root


def _top1(out):
    pairs = json.loads((out / "nearest.json").read_text())["pairs"]
    return {p["query"]: (p["neighbour"], p["similarity"]) for p in pairs if p["rank"] == 1}, pairs


@pytest.mark.parametrize("features", ["pixels", "inception"])
def test_nearest_finds_copies(sets, features):
    real, gallery, query, root = sets
    out = root / f"out-{features}"
    r = run_cli("nearest", query, gallery, "--out", out, "--k", 3, "--features", features, "--device", "cpu")
    assert r.exit_code == 0, r.output
    top, pairs = _top1(out)
    assert len(pairs) == 4 * 3 and (out / "nearest.png").stat().st_size > 0
    assert top["q0.png"][0] == "g02.png" and top["q0.png"][1] == pytest.approx(1.0, abs=1e-6)
    assert top["q1.png"][0] == "g07.png"  # the shifted copy ranks its original first
    if features == "pixels":
        assert top["q1.png"][1] > 0.999 and max(top["q2.png"][1], top["q3.png"][1]) < 0.99


def test_saved_classifier_reloads_and_embeds(sets, tmp_path):
    real, gallery, query, root = sets
    x, y = real.images, real.labels
    trained = train_classifier(x, y, x, y, 2, TrainSettings(epochs=2, batch_size=8), seed=0, steps_per_epoch=2,
                               device="cpu")
    path = tmp_path / "model.safetensors"
    save_classifier(trained.model, path, "resnet18", ["normal", "pneumonia"], 28, 1, extra={"arm": "baseline"})
    model, meta = load_classifier(path)
    assert meta["classes"] == ["normal", "pneumonia"] and meta["arm"] == "baseline" and meta["image_size"] == 28
    np.testing.assert_array_equal(predict_proba(model, x, "cpu"), predict_proba(trained.model, x, "cpu"))
    assert embed(model, x[:3], "cpu").shape == (3, 512)
    out = tmp_path / "out"
    r = run_cli("nearest", query, gallery, "--out", out, "--k", 2, "--features", "classifier", "--model", path,
                "--device", "cpu")
    assert r.exit_code == 0, r.output
    top, _ = _top1(out)
    assert top["q0.png"] == ("g02.png", pytest.approx(1.0, abs=1e-5))


def test_nearest_bad_input(sets, tmp_path):
    real, gallery, query, root = sets
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_clean_error(run_cli("nearest", query, empty, "--out", tmp_path / "o"), "holds no images")
    assert_clean_error(run_cli("nearest", query, gallery, "--out", tmp_path / "o", "--k", 13, "--features", "pixels"),
                       "larger than the gallery (12 images")
    assert_clean_error(run_cli("nearest", query, gallery, "--out", tmp_path / "o", "--features", "classifier"),
                       "needs --model")
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"not a model")
    assert_clean_error(run_cli("nearest", query, gallery, "--out", tmp_path / "o", "--features", "classifier",
                               "--model", bogus), "not a safetensors file")
    assert not (tmp_path / "o" / "nearest.json").exists()

