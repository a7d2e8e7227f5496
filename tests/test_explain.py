"""Heatmaps on a classifier whose evidence is known: a bright square in one corner of real X-rays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genaug.data import draw_subset, open_source
from genaug.errors import GenaugError
from genaug.explain.cams import METHODS, heatmaps
from genaug.classifiers.inference import predict_proba
from genaug.classifiers.training import TrainSettings, train_classifier

from conftest import PNEUMONIA

SQUARE = (slice(2, 9), slice(2, 9))  # rows, columns of the top-left square


def _marked(images: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Class 1 carries a bright square in the top-left corner, class 0 does not."""
    out = images.clone()
    out[label == 1, :, SQUARE[0], SQUARE[1]] = 255
    return out


@pytest.fixture(scope="module")
def square_model():
    s = open_source(str(PNEUMONIA))
    real, _ = draw_subset(s, s.resolve_classes("all"), 48, seed=5, image_size=28)
    y = torch.arange(len(real.images)) % 2  # the label is the square, not the diagnosis
    x = _marked(real.images, y)
    settings = TrainSettings(epochs=4, batch_size=16, lr_step=100, rotation=0, crop_padding=0)
    trained = train_classifier(x[:80], y[:80], x[80:], y[80:], 2, settings, seed=0, steps_per_epoch=5,
                               device="cpu")
    return trained.model, x[80:], y[80:]


def test_square_classifier_learned_the_square(square_model):
    model, x, y = square_model
    assert (predict_proba(model, x, "cpu").argmax(1) == y.numpy()).mean() >= 0.9


@pytest.mark.parametrize("method", METHODS)
def test_heatmap_peaks_in_the_corner(square_model, method):
    model, x, y = square_model
    marked = x[y == 1][:4]
    maps = heatmaps(model, marked, [1] * len(marked), method, device="cpu")
    assert maps.shape == (len(marked), 28, 28) and maps.min() >= 0 and maps.max() <= 1 + 1e-6
    for m in maps:
        r, c = np.unravel_index(m.argmax(), m.shape)
        assert r < 12 and c < 12, (method, r, c)
        assert m[:14, :14].mean() > m[14:, 14:].mean()


def test_unknown_method(square_model):
    with pytest.raises(GenaugError, match="unknown heatmap method"):
        heatmaps(square_model[0], square_model[1][:1], [0], "lime", device="cpu")


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "efficientnet_b0", "inception-v3"])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_architecture_and_channel_count(arch, channels):
    """Every classifier genaug builds gives a map per image at the input's size (CAM and Grad-CAM)."""
    from genaug.classifiers.networks import build_classifier

    s = open_source(str(PNEUMONIA))
    real, _ = draw_subset(s, s.resolve_classes("all"), 2, seed=0, image_size=32)
    images = real.images.expand(-1, channels, -1, -1).contiguous()
    torch.manual_seed(0)
    model = build_classifier(arch, channels, 2, 32)
    for method in ("gradcam", "cam"):
        maps = heatmaps(model, images, real.labels, method, device="cpu")
        assert maps.shape == (len(images), 32, 32) and np.isfinite(maps).all()
