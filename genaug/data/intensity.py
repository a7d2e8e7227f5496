"""How pixel values that are not 8-bit become the uint8 images every model sees.

8-bit images pass unchanged. Everything else (16-bit PNG/TIFF, int16, float, DICOM after its
modality rescale) is mapped by one recorded rule, never wrapped or truncated:
- `dataset` (default): one window for the whole training subset, its 0.5 and 99.5 percentiles,
  fitted once, stored in the manifest and reused for every later step (test images included),
  so absolute intensities stay comparable across images;
- `image`: each image stretched by its own min and max (loses absolute intensity);
- `window:LOW,HIGH`: a fixed window, e.g. `window:-1000,400` for Hounsfield units.
Floats that all lie in [0, 1] (common in `.npz` files) are read as intensities scaled by 255.
A DICOM file's own VOI window, when it has one, is applied when decoding (what a radiologist
sees) and its result is 8-bit already; MONOCHROME1 images are inverted after the mapping.
A contrast preprocessing step (`preprocess.py`: none, equalize, clahe) is part of the rule: it
runs on the uint8 result, so every later load of the run repeats it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ..errors import GenaugError
from .preprocess import check_preprocess, preprocess

PERCENTILES = (0.5, 99.5)
FIT_PIXELS_PER_IMAGE = 4096  # strided sample per image when fitting the dataset window


@dataclass
class Raw:
    """One decoded image before the intensity rule: uint8 (done) or float32 raw values, C x H x W."""

    pixels: torch.Tensor
    invert: bool = False  # MONOCHROME1: high values are dark

    @property
    def is_8bit(self) -> bool:
        return self.pixels.dtype == torch.uint8


@dataclass
class IntensityRule:
    rule: str = "dataset"
    window: tuple[float, float] | None = None  # fitted (dataset) or given (window:LOW,HIGH)
    preprocess: str = "none"  # contrast step on the uint8 result (preprocess.PREPROCESS)

    @classmethod
    def parse(cls, text: "str | dict | IntensityRule | None") -> "IntensityRule":
        if isinstance(text, IntensityRule):
            return text
        if isinstance(text, dict):
            window = text.get("window")
            return cls(text["rule"], tuple(window) if window is not None else None,
                       check_preprocess(text.get("preprocess")))
        text = (text or "dataset").strip()
        if text in ("dataset", "image"):
            return cls(text)
        if text.startswith("window:"):
            try:
                low, high = (float(v) for v in text[len("window:"):].split(","))
            except ValueError:
                raise GenaugError(f"--intensity {text!r}: write window:LOW,HIGH, e.g. window:-1000,400") from None
            if not high > low:
                raise GenaugError(f"--intensity {text!r}: HIGH must be greater than LOW")
            return cls("window", (low, high))
        raise GenaugError(f"unknown --intensity {text!r}; choose dataset, image or window:LOW,HIGH")

    def to_dict(self) -> dict:
        return {"rule": self.rule, "window": list(self.window) if self.window is not None else None,
                **({"percentiles": list(PERCENTILES)} if self.rule == "dataset" else {}),
                **({"preprocess": self.preprocess} if self.preprocess != "none" else {})}

    def with_preprocess(self, name: str | None) -> "IntensityRule":
        return replace(self, preprocess=check_preprocess(name))

    def finish(self, images: torch.Tensor) -> torch.Tensor:
        """The preprocessing step on uint8 images already through the rule."""
        return preprocess(images, self.preprocess)

    def fitted(self, raws: list[Raw]) -> "IntensityRule":
        """The `dataset` rule with its window fitted on `raws` (unchanged for other rules or 8-bit data)."""
        if self.rule != "dataset" or self.window is not None:
            return self
        samples = [_pixel_sample(r.pixels) for r in raws if not r.is_8bit]
        if not samples:
            return self  # all 8-bit: nothing to fit, nothing to convert
        low, high = np.percentile(np.concatenate(samples), PERCENTILES)
        if high <= low:
            high = low + 1.0
        return replace(self, window=(float(low), float(high)))

    def to_uint8(self, raw: Raw) -> torch.Tensor:
        if raw.is_8bit:
            out = raw.pixels
        else:
            x = raw.pixels.double()
            if self.rule == "image":
                low, high = float(x.min()), float(x.max())
            elif self.window is None:
                raise GenaugError("the dataset intensity window has not been fitted (internal error)")
            else:
                low, high = self.window
            out = ((x - low) / max(high - low, 1e-12) * 255.0).round().clamp(0, 255).to(torch.uint8)
        return 255 - out if raw.invert else out


def convert(raws: list[Raw], intensity: "IntensityRule | str | dict | None") -> tuple[torch.Tensor, IntensityRule]:
    """uint8 N x C x H x W of `raws` under the rule (a `dataset` rule without a window is fitted on
    them first), with the rule as applied; `raws` must not be empty."""
    rule = IntensityRule.parse(intensity).fitted(raws)
    return rule.finish(torch.stack([rule.to_uint8(r) for r in raws])), rule


def _pixel_sample(pixels: torch.Tensor) -> np.ndarray:
    flat = pixels.reshape(-1).numpy()
    stride = max(1, len(flat) // FIT_PIXELS_PER_IMAGE)
    return flat[::stride].astype(np.float64)


def array_to_raw(arr: np.ndarray, unit_floats: bool = True) -> torch.Tensor:
    """A numeric H x W or H x W x C array as raw pixels: uint8 kept, else float32.

    With `unit_floats`, a float array whose values all lie in [0, 1] is scaled by 255 to uint8
    (decide this once per file or per whole array, never per item of a larger set).
    """
    if arr.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(arr))
    if arr.dtype == np.bool_:
        return torch.from_numpy((arr.astype(np.uint8) * 255))
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise GenaugError(f"unsupported pixel type {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise GenaugError("image holds NaN or infinite values")
        if unit_floats and is_unit_float(arr):
            return torch.from_numpy(np.rint(arr.astype(np.float64) * 255.0).astype(np.uint8))
    return torch.from_numpy(arr.astype(np.float32))


def is_unit_float(arr: np.ndarray) -> bool:
    return bool(np.issubdtype(arr.dtype, np.floating) and arr.size and arr.min() >= 0.0 and arr.max() <= 1.0)
