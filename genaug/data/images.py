"""Image decoding and geometry: each file's bytes decoded once, then fitted to a square.

Decoding handles EXIF orientation, palette (grayscale palettes stay grayscale), alpha (flattened
onto black), 16-bit and float images (kept as raw values for the intensity rule, see
`intensity.py`) and DICOM (`dicom.py`). Geometry is `crop` (resize the short side, centre crop)
or `pad` (letterbox with the image's border value, so wide OCT B-scans keep their full width).

Everything between the data layer and the models is a uint8 tensor `N x C x H x W` (C = 1 for
grayscale sources, 3 for colour). Models see floats in [-1, 1] (`to_model_range`); metrics and
PNG files see uint8 in [0, 255].
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from ..errors import GenaugError
from .intensity import Raw, array_to_raw

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
DICOM_SUFFIXES = {".dcm", ".dicom"}
READABLE_SUFFIXES = IMAGE_SUFFIXES | DICOM_SUFFIXES
GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
HIGH_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
FITS = ("crop", "pad")


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


def check_fit(fit: str | None) -> str:
    fit = fit or "crop"
    if fit not in FITS:
        raise GenaugError(f"unknown --fit {fit!r}; choose crop (centre crop) or pad (letterbox, keeps the full width)")
    return fit


def resize_center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize so the short side is `size` (antialiased), then centre-crop to size x size."""
    if images.shape[-2:] == (size, size):
        return images
    images = TF.resize(images, size, antialias=True)
    return TF.center_crop(images, [size, size])


def border_value(image: torch.Tensor) -> list[float]:
    """Per channel, the median of the image's outermost rows and columns (the letterbox fill)."""
    edge = torch.cat([image[:, 0, :], image[:, -1, :], image[:, :, 0], image[:, :, -1]], dim=1)
    return edge.float().median(dim=1).values.tolist()


def fit_square(image: torch.Tensor, size: int, fit: str = "crop") -> torch.Tensor:
    """One C x H x W image (uint8 or float) to C x size x size: centre crop, or letterbox (`pad`)."""
    fit = check_fit(fit)
    if fit == "pad" and image.shape[-1] != image.shape[-2]:
        c, h, w = image.shape
        side = max(h, w)
        top, left = (side - h) // 2, (side - w) // 2
        fill = torch.tensor(border_value(image), dtype=torch.float32).view(c, 1, 1)
        canvas = fill.expand(c, side, side).clone().to(image.dtype) if image.is_floating_point() \
            else fill.round().expand(c, side, side).to(image.dtype).clone()
        canvas[:, top: top + h, left: left + w] = image
        image = canvas
    return resize_center_crop(image.unsqueeze(0), size)[0]


def probe_channels(path: Path) -> int | None:
    """1 or 3 from the file header (cheap); None when the file is not a readable image."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        try:
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True)
            return 3 if int(getattr(ds, "SamplesPerPixel", 1)) == 3 else 1
        except Exception:  # noqa: BLE001 - reported when decoding
            return None
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode == "P":
                palette = np.asarray(im.getpalette() or [], dtype=np.int64).reshape(-1, 3)
                return 1 if len(palette) and (palette == palette[:, :1]).all() else 3
            return 1 if im.mode in GRAY_MODES else 3
    except Exception:  # noqa: BLE001 - any failure means "not readable"; reported on decode
        return None


def is_gray_content(path: Path) -> bool:
    """Whether a colour-mode file's decoded pixels are all gray (R == G == B)."""
    try:
        px = decode_bytes(path.read_bytes(), path, 3).pixels
    except GenaugError:
        return False
    return bool((px == px[:1]).all())


def decode_bytes(data: bytes, name: Path | str, channels: int) -> Raw:
    """Decode one file's bytes to raw pixels with `channels` channels; errors name the file."""
    name = Path(name)
    if name.suffix.lower() in DICOM_SUFFIXES:
        from .dicom import decode_dicom

        raw = decode_dicom(data, name)
    else:
        raw = _decode_pillow(data, name, channels)
    return Raw(match_channels(raw.pixels, channels), raw.invert)


def _decode_pillow(data: bytes, name: Path, channels: int) -> Raw:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as opened:
            im = ImageOps.exif_transpose(opened)
            im.load()
            if im.mode in HIGH_DEPTH_MODES:
                return Raw(array_to_raw(np.asarray(im)).unsqueeze(0))
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            if im.mode in ("LA", "La", "PA", "RGBA", "RGBa"):
                rgba = im.convert("RGBA")
                im = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
            im = im.convert("L" if channels == 1 else "RGB")
            arr = np.asarray(im, dtype=np.uint8)
    except Image.DecompressionBombError as e:
        raise GenaugError(f"image {name} is too large to decode safely ({e}); "
                          "downscale it first or skip it with --skip-bad") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise GenaugError(f"cannot read image {name}: {e}") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return Raw(torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous())


def match_channels(pixels: torch.Tensor, channels: int) -> torch.Tensor:
    """C x H x W with the source's channel count: gray repeated to 3, colour averaged to 1."""
    if pixels.ndim == 2:
        pixels = pixels.unsqueeze(0)
    if pixels.shape[0] == channels:
        return pixels.contiguous()
    if channels == 3:
        return pixels[:1].expand(3, -1, -1).contiguous()
    weights = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)  # ITU-R 601-2 luma, as Pillow's "L"
    gray = (pixels[:3].float() * weights).sum(0, keepdim=True)
    return gray.round().clamp(0, 255).to(torch.uint8) if pixels.dtype == torch.uint8 else gray


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
