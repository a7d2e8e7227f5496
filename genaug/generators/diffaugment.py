"""Differentiable augmentation for GANs on little data (Zhao et al., NeurIPS 2020).

The same random colour, translation and cutout transforms are applied to real and fake images
before the discriminator sees them, and gradients flow through them to the generator, so the
discriminator cannot simply memorise the few real images. Randomness comes from the caller's
`torch.Generator`, which keeps training exactly reproducible and resumable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _rand(x: torch.Tensor, rng: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand((x.shape[0], *shape), generator=rng, device=rng.device).to(x.device, x.dtype)


def color(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Random brightness, saturation (colour only) and contrast, on images in [-1, 1]."""
    x = x + (_rand(x, rng, 1, 1, 1) - 0.5)
    if x.shape[1] == 3:
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (_rand(x, rng, 1, 1, 1) * 2) + mean
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (_rand(x, rng, 1, 1, 1) + 0.5) + mean


def translation(x: torch.Tensor, rng: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to `ratio` of its size, filling with zeros."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = (_rand(x, rng) * (2 * sh + 1)).long().clamp(max=2 * sh) - sh
    dx = (_rand(x, rng) * (2 * sw + 1)).long().clamp(max=2 * sw) - sw
    padded = F.pad(x, [sw, sw, sh, sh])
    rows = (torch.arange(h, device=x.device).view(1, h) + sh - dy.view(n, 1)).clamp(0, h + 2 * sh - 1)
    cols = (torch.arange(w, device=x.device).view(1, w) + sw - dx.view(n, 1)).clamp(0, w + 2 * sw - 1)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, rng: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    """Zero one random square of `ratio` times the image size per image."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = (_rand(x, rng) * (h + 1 - ch % 2)).long()
    cx = (_rand(x, rng) * (w + 1 - cw % 2)).long()
    top = (cy - ch // 2).view(n, 1, 1)
    left = (cx - cw // 2).view(n, 1, 1)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (ys >= top) & (ys < top + ch) & (xs >= left) & (xs < left + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


POLICIES = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policy: str, rng: torch.Generator) -> torch.Tensor:
    """Apply the comma-separated `policy` (e.g. "color,translation,cutout")."""
    for name in filter(None, (p.strip() for p in policy.split(","))):
        x = POLICIES[name](x, rng)
    return x
