"""Image-set metrics: FID, KID, precision/recall with offline Inception weights (torch-fidelity)."""

from __future__ import annotations

import torch


def fid(a: "str | torch.Tensor", b: "str | torch.Tensor", *, kid: bool = False, prc: bool = False,
        image_size: int | None = None, data_root: str | None = None, device: str = "auto",
        progress: bool = False, **options) -> dict:
    """FID (and optionally KID, precision/recall) between two image sets.

    Each set is an image folder, `SPEC:CLASS[@SPLIT]` (real data; its features are cached), or a
    uint8 `N x C x H x W` tensor. Returns `fid`, `n_a`, `n_b` (and `kid_mean`, `kid_std`,
    `precision`, `recall` when asked), as `genaug fid` prints them. `options`: `batch_size`,
    `cache_dir`, `weights` (an official Inception weights file).
    """
    from ..data.imagesets import resolve_image_set
    from .fidelity import ImageSet, compute_metrics

    sets = []
    for name, arg in (("a", a), ("b", b)):
        if isinstance(arg, torch.Tensor):
            sets.append(ImageSet(arg, f"tensor {name}"))
        else:
            images, real = resolve_image_set(str(arg), data_root, image_size)
            sets.append(ImageSet(images, str(arg), cacheable=real))
    return compute_metrics(*sets, kid=kid, prc=prc, device=device, verbose=progress, **options)


__all__ = ["fid"]
