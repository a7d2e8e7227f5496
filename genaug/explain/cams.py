"""Class-activation heatmaps through pytorch-grad-cam: Grad-CAM, Grad-CAM++, Score-CAM, and the
original CAM (Zhou et al. 2016) for global-average-pooled heads.

Each method reads the last convolutional block (`target_layer`) and returns, per image, a map
in [0, 1] at the input's size (the package's per-image min-max scaling), for a chosen class.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import torch
import torch.nn as nn

from ..data.images import to_model_range
from ..device import resolve_device
from ..errors import GenaugError
from ..classifiers.networks import head, target_layer

METHODS = ("gradcam", "gradcam++", "scorecam", "cam")


def _head(model: nn.Module) -> nn.Linear:
    layer = head(model)
    if not isinstance(layer, nn.Linear):
        raise GenaugError("CAM needs a global-average-pooled network with a linear head")
    return layer


def _cam_class():
    from pytorch_grad_cam.base_cam import BaseCAM

    class CAM(BaseCAM):
        """The original CAM: the head's weights for the class weight the last block's channels."""

        def __init__(self, model, target_layers):
            super().__init__(model, target_layers, uses_gradients=False)
            self.head_weight = _head(model).weight.detach().cpu().numpy()

        def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
            return np.stack([self.head_weight[t.category] for t in targets])

    return CAM


def heatmaps(model: nn.Module, images: torch.Tensor, classes: list[int] | torch.Tensor, method: str = "gradcam",
             device: str = "auto", batch_size: int = 32) -> np.ndarray:
    """N x H x W maps in [0, 1]: where `model` finds evidence for class `classes[i]` in image i."""
    if method not in METHODS:
        raise GenaugError(f"unknown heatmap method {method!r}; choose from {', '.join(METHODS)}")
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    dev = resolve_device(device)
    model = model.to(dev).eval()
    kind = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "scorecam": ScoreCAM, "cam": _cam_class()}[method]
    classes = [int(c) for c in classes]
    out = []
    with kind(model=model, target_layers=[target_layer(model)]) as cam:
        if method == "scorecam":
            cam.batch_size = 128
        for i in range(0, len(images), batch_size):
            x = to_model_range(images[i:i + batch_size]).to(dev)
            targets = [ClassifierOutputTarget(c) for c in classes[i:i + batch_size]]
            with contextlib.redirect_stderr(io.StringIO()):  # Score-CAM's per-image progress bars
                out.append(cam(input_tensor=x, targets=targets))
    return np.concatenate(out).astype(np.float32)


def heatmap_correlation(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    """Pearson correlation of two mean heatmaps; None when either is missing or flat (no pattern)."""
    if a is None or b is None or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
