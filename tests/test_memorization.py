"""The calibrated memorisation gate and the similarities it rests on, on real images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genaug.data import draw_subset, load_split, open_source
from genaug.errors import GenaugError
from genaug.harness import acceptance
from genaug.metrics import memorization as gate
from genaug.metrics.similarity import cached_inception_features, cosine_similarity, pixel_similarity, top_k

from conftest import PNEUMONIA


@pytest.fixture(scope="module")
def pneumonia():
    """What a pneumonia-50 replicate has: 40 training and 10 validation images per class, plus
    50 test images per class that calibrate nothing."""
    s = open_source(str(PNEUMONIA))
    labels = s.resolve_classes("all")
    train, _ = draw_subset(s, labels, 40, seed=0, image_size=28)
    val, _ = draw_subset(s, labels, 10, seed=0, image_size=28, split="val")
    test = load_split(s, "test", labels, 28)
    pick = torch.cat([torch.nonzero(test.labels == c).flatten()[:50] for c in labels])
    return train.images, train.labels, val.images, val.labels, test.images[pick], test.labels[pick], s.classes


def _shifted(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    padded = torch.nn.functional.pad(images.float(), (3, 3, 3, 3), mode="reflect").to(torch.uint8)
    h, w = images.shape[-2:]
    return padded[..., 3 + dy:3 + dy + h, 3 + dx:3 + dx + w]


def test_pixel_similarity_sees_through_shifts_and_intensity(pneumonia):
    x = pneumonia[0][:6]
    sims = pixel_similarity(x, x)
    assert torch.allclose(sims.diagonal(), torch.ones(6, dtype=torch.float64))
    assert (sims - torch.eye(6, dtype=torch.float64)).max() < 0.99  # different patients
    moved = pixel_similarity(_shifted(x, 2, -1), x)
    assert moved.argmax(dim=1).tolist() == list(range(6)) and moved.diagonal().min() > 0.999
    assert pixel_similarity(_shifted(x, 2, -1), x, max_shift=0).diagonal().max() < 0.99  # no search, no match
    brighter = (x.float() * 0.8 + 30).round().to(torch.uint8)
    assert pixel_similarity(brighter, x).diagonal().min() > 0.999
    mirrored = x.flip(-1)
    assert pixel_similarity(mirrored, x, flips=True).diagonal().min() > 0.999
    assert pixel_similarity(mirrored, x, flips=False).diagonal().max() < 0.99


def test_prediction_bound_keeps_false_rejections_near_the_level():
    """In z space the bound is a t prediction bound: for normal data one more draw exceeds it with
    probability 1 - quantile, whatever n (checked by simulation, 4000 draws of 10 + 1)."""
    rng = np.random.default_rng(0)
    z = rng.normal(1.2, 0.25, size=(4000, 11))
    sims = np.tanh(z)
    over = [sims[i, 10] >= gate.threshold_from(sims[i, :10], 0.95) for i in range(len(sims))]
    assert 0.04 <= np.mean(over) <= 0.06
    assert gate.threshold_from(np.array([0.9]), 0.99) == gate.EXACT  # one image: exact copies only
    assert gate.threshold_from(np.array([0.8, 0.9]), 0.99) == gate.EXACT  # t(1) is too wide to bound anything
    with pytest.raises(GenaugError, match="no held-out"):
        gate.threshold_from(np.array([]), 0.99)


def test_gate_in_acceptance_rejects_near_copies_keeps_new_images(pneumonia):
    train_x, train_y, val_x, val_y, test_x, test_y, classes = pneumonia
    settings = {**acceptance.DEFAULTS, "memorization_spaces": ["pixels"]}
    ctx = acceptance.AcceptanceContext(
        train_x, train_y, classes, settings, heldout_images=val_x, heldout_labels=val_y,
        similarity=lambda q, g, space: pixel_similarity(q, g, 3))
    label = 1
    own = train_x[train_y == label]
    fresh = test_x[test_y == label][:10]
    candidates = torch.cat([own[:1], _shifted(own[1:2], 1, 2), gate.near_copies(own[2:3], "jpeg"), fresh])
    keep, rows = acceptance.accept(candidates, label, ["memorization"], ctx)
    assert keep[:3].tolist() == [False, False, False]
    assert keep[3:].sum() >= 9, rows
    assert rows[0]["thresholds"]["pixels"] < 0.99 and rows[0]["n_calibration"] == 10
    assert rows[0]["pixels_similarity"]["max"] == pytest.approx(1.0, abs=1e-9)


def test_gate_rates_on_pneumoniamnist(pneumonia):
    """The issue's bar, both spaces, as the harness calibrates it: >= 90% of near-copies rejected,
    <= 10% of held-out real images falsely rejected (figures in the README, scripts/gate_rates.py)."""
    train_x, train_y, val_x, val_y, test_x, test_y, classes = pneumonia

    def similarity(q, g, space):
        if space == "pixels":
            return pixel_similarity(q, g, 3)
        return cosine_similarity(cached_inception_features(q, False, "cpu"), cached_inception_features(g, True, "cpu"))

    rates = gate.gate_rates(train_x, train_y, val_x, val_y, classes, similarity, ["inception", "pixels"], 0.99,
                            flips=False, test_x=test_x, test_y=test_y)
    assert rates["near_copy_kinds"] == ["shift", "noise", "jpeg"]  # no mirror images of chest X-rays
    for name, row in rates["per_class"].items():
        for kind in rates["near_copy_kinds"]:
            assert row[f"rejects_{kind}"] >= 0.9, (name, row)
        assert row["false_rejection_heldout"] <= 0.1, (name, row)
        assert row["n_heldout"] == 50 and row["n_calibration"] == 10


def test_near_copies_and_bad_input(pneumonia):
    x = pneumonia[0][:8]
    moved = gate.near_copies(x, "shift", seed=1)
    assert moved.shape == x.shape and not torch.equal(moved, x)
    assert pixel_similarity(moved, x).diagonal().min() > 0.999
    assert gate.near_copies(x, "flip").equal(x.flip(-1))
    assert (gate.near_copies(x, "noise").float() - x.float()).abs().mean() > 1
    with pytest.raises(GenaugError, match="unknown near-copy"):
        gate.near_copies(x, "rotate")
    with pytest.raises(GenaugError, match="gallery is empty"):
        pixel_similarity(x, x[:0])
    with pytest.raises(GenaugError, match="larger than the gallery"):
        top_k(pixel_similarity(x, x[:3]), 4)
    with pytest.raises(GenaugError, match="memorization_quantile"):
        gate.calibrate({"pixels": np.ones(3)}, np.zeros(3, int), ["a"], 1.0)
