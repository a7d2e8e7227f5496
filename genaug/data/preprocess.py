"""Contrast preprocessing applied to every image a run uses, real and synthetic alike.

Applied on the uint8 images right after the intensity rule, so the generators learn the
preprocessed images and the classifier sees them, train, validation and test the same; the
choice is part of the recorded intensity rule (manifests, saved classifiers).
- `none`: images as converted;
- `equalize`: global histogram equalisation per channel (torchvision's, PIL's algorithm);
- `clahe`: contrast-limited adaptive histogram equalisation per channel (kornia), clip limit
  2.0 on an 8 x 8 grid of tiles (the usual `cv2.createCLAHE(2.0, (8, 8))` setting in retinal and
  chest X-ray papers), 4 x 4 below 64 px, rounded back to uint8.
"""

from __future__ import annotations

import torch
from torchvision.transforms.v2 import functional as TF

from ..errors import GenaugError

PREPROCESS = ("none", "equalize", "clahe")
CLAHE_CLIP = 2.0


def check_preprocess(name: str | None) -> str:
    name = (name or "none").strip().lower()
    if name not in PREPROCESS:
        raise GenaugError(f"unknown --preprocess {name!r}; choose from {', '.join(PREPROCESS)}")
    return name


def clahe_grid(size: int) -> int:
    return 8 if size >= 64 else 4


def preprocess(images: torch.Tensor, name: str, clip_limit: float = CLAHE_CLIP, grid: int | None = None) -> torch.Tensor:
    """uint8 N x C x H x W (or C x H x W) to uint8 of the same shape."""
    name = check_preprocess(name)
    if name == "none" or images.numel() == 0:
        return images
    if images.dtype != torch.uint8:
        raise GenaugError(f"preprocessing expects uint8 images (got {images.dtype})")
    if name == "equalize":
        return TF.equalize(images)
    from kornia.enhance import equalize_clahe

    g = grid or clahe_grid(min(images.shape[-2:]))
    out = equalize_clahe(images.float() / 255.0, clip_limit=float(clip_limit), grid_size=(g, g))
    return (out * 255.0).round().clamp(0, 255).to(torch.uint8)
