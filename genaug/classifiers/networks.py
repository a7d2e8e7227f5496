"""The classifier networks, and how they are saved, reloaded and read.

- `resnet18`, `resnet50`, `efficientnet_b0` from torchvision, from scratch by default. Below 64 px
  the stem becomes a 3x3 stride-1 conv without max-pool (the usual CIFAR-style stem); the first
  conv takes the data's channel count.
- The same with `pretrained`: torchvision's ImageNet weights (from torch's cache, downloaded when
  online), the original stem and an input adapter (grey to 3 channels, resized to 224 px,
  ImageNet mean and std).
- `inception-v3`: the ImageNet-trained Inception-v3 genaug already ships for FID (converted
  offline, `genaug/inception.py`), so transfer learning works without internet; inputs go to
  3 channels and 299 px, scaled as the network expects.
A pretrained backbone is frozen, with only a new linear head trained, unless `finetune` is set.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from ..data.images import to_model_range
from ..device import resolve_device
from ..errors import GenaugError

TORCHVISION = ("resnet18", "resnet50", "efficientnet_b0")
CLASSIFIERS = (*TORCHVISION, "inception-v3")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INCEPTION_LAYERS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                    "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                    "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")


class ImageNetInput(nn.Module):
    """Model-range images ([-1, 1], 1 or 3 channels, any size) as an ImageNet backbone takes them:
    3 channels, `size` px (bilinear), normalised by the backbone's mean and std (of [0, 1] pixels)."""

    def __init__(self, size: int, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.size = size
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x + 1) / 2
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std


class InceptionV3Classifier(nn.Module):
    """The FID Inception-v3 (pool3, 2048 features) with a linear head; `features[-1]` is its last
    block (Mixed_7c), where heatmaps are read."""

    def __init__(self, n_classes: int):
        super().__init__()
        from ..inception import InceptionPool3, ensure_weights

        net = InceptionPool3("genaug-classifier", ["2048"], feature_extractor_weights_path=str(ensure_weights()[0]))
        # (x + 1) / 2 * 255 then (u - 128) / 128: the network's own input scaling
        adapter = ImageNetInput(299, (128 / 255,) * 3, (128 / 255,) * 3)
        self.features = nn.Sequential(adapter, *(getattr(net, name) for name in INCEPTION_LAYERS))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, n_classes)
        self.requires_grad_(True)  # torch-fidelity hands its extractor over frozen and in eval mode
        self.train()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


def imagenet_weights(name: str):
    """torchvision's default ImageNet weights of `name`, found in torch's cache or downloaded;
    offline and absent, a one-line error naming the file and the folder it belongs in."""
    weights = torchvision.models.get_model_weights(name).DEFAULT
    file = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    if not file.is_file():
        try:
            weights.get_state_dict(progress=False)  # torch.hub stores it in that folder
        except Exception as e:
            raise GenaugError(f"--pretrained {name}: ImageNet weights {file.name} are not in {file.parent} and could "
                              f"not be downloaded ({type(e).__name__}); put the file from {weights.url} there, or "
                              "use --classifier inception-v3, which needs no download") from None
    return weights


STEMS = ("auto", "small", "imagenet")


def check_stem(stem: str) -> str:
    if stem not in STEMS:
        raise GenaugError(f"unknown stem {stem!r}; choose from {', '.join(STEMS)}")
    return stem


def build_classifier(name: str, in_channels: int, n_classes: int, image_size: int, pretrained: bool = False,
                     load_weights: bool = True, stem: str = "auto") -> nn.Module:
    """A classifier for `in_channels` x `image_size`^2 images. `load_weights` False builds a
    pretrained model's structure only (to load a saved classifier into).

    `stem` of a from-scratch network: `small` (3x3 stride-1 first convolution, no max-pool: full
    resolution, the usual choice at 28-32 px), `imagenet` (torchvision's own stride-2 stem and
    max-pool: 4x less resolution after it, about 8x cheaper for a ResNet18 at 32 px), or `auto`
    (small below 64 px)."""
    if name not in CLASSIFIERS:
        raise GenaugError(f"unknown classifier {name!r}; choose from {', '.join(CLASSIFIERS)}")
    if name == "inception-v3":
        return InceptionV3Classifier(n_classes)
    if pretrained:
        model = getattr(torchvision.models, name)(weights=imagenet_weights(name) if load_weights else None)
        adapter = ImageNetInput(224, IMAGENET_MEAN, IMAGENET_STD)
        if name.startswith("resnet"):
            model.conv1 = nn.Sequential(adapter, model.conv1)
            model.fc = nn.Linear(model.fc.in_features, n_classes)
        else:
            model.features[0][0] = nn.Sequential(adapter, model.features[0][0])
            model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, n_classes)
        return model
    small = image_size < 64 if check_stem(stem) == "auto" else stem == "small"
    model = getattr(torchvision.models, name)(weights=None, num_classes=n_classes)
    if name.startswith("resnet"):
        model.conv1 = (nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False) if small
                       else nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False))
        if small:
            model.maxpool = nn.Identity()
    else:
        out = model.features[0][0].out_channels
        model.features[0][0] = nn.Conv2d(in_channels, out, 3, 1 if small else 2, 1, bias=False)
    return model


def is_pretrained(name: str, pretrained: bool) -> bool:
    return name == "inception-v3" or pretrained


def head(model: nn.Module) -> nn.Linear:
    """The final linear layer (the only trained part of a frozen backbone)."""
    return model.fc if hasattr(model, "fc") else model.classifier[-1]


def freeze_backbone(model: nn.Module) -> list[nn.Parameter]:
    """Stop gradients everywhere but the head; returns the head's parameters."""
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(head(model).parameters())
    for p in params:
        p.requires_grad_(True)
    return params


def train_mode(model: nn.Module, frozen: bool) -> None:
    """Training mode; a frozen backbone keeps its batch-norm statistics (eval) and only the head trains."""
    model.train()
    if frozen:
        model.eval()
        head(model).train()


# -- saved classifiers ------------------------------------------------------------------------

def save_classifier(model: nn.Module, path, name: str, classes: list[str], image_size: int, in_channels: int,
                    extra: dict | None = None) -> None:
    """Weights as safetensors, with what rebuilds the model in the file's metadata (atomic write)."""
    from safetensors.torch import save_file

    from ..io import atomic_path

    meta = {"genaug_classifier": name, "classes": json.dumps(list(classes)), "image_size": str(image_size),
            "in_channels": str(in_channels), **{k: json.dumps(v) for k, v in (extra or {}).items()}}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)


def load_classifier(path) -> tuple[nn.Module, dict]:
    """A classifier saved by `save_classifier`, in eval mode, and its metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise GenaugError(f"{path}: no saved classifier there")
    try:
        with safe_open(str(path), "pt") as f:
            raw = f.metadata() or {}
    except Exception as e:  # not a safetensors file
        raise GenaugError(f"{path}: not a safetensors file ({e})") from None
    if "genaug_classifier" not in raw:
        raise GenaugError(f"{path}: a safetensors file without genaug's classifier metadata")
    meta = {"classifier": raw["genaug_classifier"], "classes": json.loads(raw["classes"]),
            "image_size": int(raw["image_size"]), "in_channels": int(raw["in_channels"])}
    meta.update({k: json.loads(v) for k, v in raw.items()
                 if k not in ("genaug_classifier", "classes", "image_size", "in_channels")})
    model = build_classifier(meta["classifier"], meta["in_channels"], len(meta["classes"]), meta["image_size"],
                             pretrained=bool(meta.get("pretrained")), load_weights=False, stem=meta.get("stem", "auto"))
    model.load_state_dict(load_file(str(path)))
    return model.eval(), meta


def penultimate(model: nn.Module) -> nn.Module:
    """A copy of `model` that returns its pooled features instead of class scores."""
    body = copy.deepcopy(model).eval()
    if hasattr(body, "fc"):
        body.fc = nn.Identity()
    else:
        body.classifier = nn.Identity()
    return body


@torch.no_grad()
def embed(model: nn.Module, images: torch.Tensor, device: str = "auto", batch_size: int = 256) -> torch.Tensor:
    """Penultimate-layer features of uint8 images."""
    dev = resolve_device(device)
    body = penultimate(model).to(dev)
    return torch.cat([body(to_model_range(images[i:i + batch_size]).to(dev)).float().cpu()
                      for i in range(0, len(images), batch_size)])


def target_layer(model: nn.Module) -> nn.Module:
    """The last convolutional block: where CAM-style heatmaps are read."""
    return model.layer4[-1] if hasattr(model, "layer4") else model.features[-1]
