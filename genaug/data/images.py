"""Image decoding and the one geometric transform genaug uses: resize the short side, centre crop.

Everything between the data layer and the models is a uint8 tensor `N x C x H x W` (C = 1 for
grayscale sources, 3 for colour). Models see floats in [-1, 1] (`to_model_range`); metrics and
PNG files see uint8 in [0, 255].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from ..errors import GenaugError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def check_image_size(size: int) -> int:
    """Sizes every generator can build: s0 * 2**k with 3 <= s0 <= 7, k >= 2 (16, 28, 32, 64, 128...)."""
    s = int(size)
    base = s // 4 if s % 4 == 0 else 0
    while base > 7 and base % 2 == 0:
        base //= 2
    if 12 <= s <= 512 and 3 <= base <= 7:
        return s
    raise GenaugError(
        f"--image-size {size} is not supported: use s0 * 2^k with 3 <= s0 <= 7 and k >= 2, "
        "12..512 (e.g. 16, 28, 32, 48, 56, 64, 96, 128, 224, 256)"
    )


def resize_center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize so the short side is `size` (antialiased), then centre-crop to size x size."""
    if images.shape[-2:] == (size, size):
        return images
    images = TF.resize(images, size, antialias=True)
    return TF.center_crop(images, [size, size])


def decode_image(path: Path, channels: int) -> torch.Tensor:
    """Decode one file to a uint8 C x H x W tensor; a corrupt file raises GenaugError naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                arr = np.asarray(im, dtype=np.float64)
                lo, hi = float(arr.min()), float(arr.max())
                arr = ((arr - lo) / max(hi - lo, 1e-12) * 255.0).round().astype(np.uint8)
                im = Image.fromarray(arr, mode="L")
            im = im.convert("L" if channels == 1 else "RGB")
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise GenaugError(f"cannot read image {path}: {e}") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def image_mode(path: Path) -> str | None:
    """The PIL mode from the file header (cheap), or None when the file is not an image."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.mode
    except Exception:  # noqa: BLE001 - any failure means "not readable"; reported on decode
        return None


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return images.float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255] (clamped, rounded)."""
    return images.detach().float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8).cpu()


def save_png(image: torch.Tensor, path: Path) -> None:
    """Write one uint8 C x H x W tensor as PNG (atomically)."""
    from PIL import Image

    from ..io import atomic_path

    arr = image.permute(1, 2, 0).numpy()
    im = Image.fromarray(arr[:, :, 0], mode="L") if arr.shape[2] == 1 else Image.fromarray(arr, mode="RGB")
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def save_grid(images: torch.Tensor, path: Path, nrow: int | None = None) -> None:
    """Write uint8 images (N x C x H x W) as one PNG grid."""
    import math

    from torchvision.utils import make_grid

    nrow = nrow or max(1, math.ceil(math.sqrt(len(images))))
    save_png(make_grid(images, nrow=nrow, padding=2, pad_value=255), Path(path))
