"""DICOM pixels as a radiologist sees them, via pydicom.

Stored values go through the modality LUT (RescaleSlope / RescaleIntercept, e.g. to Hounsfield
units). When the file carries a VOI LUT or a window (WindowCenter / WindowWidth), that window is
applied here and the result is 8-bit; otherwise the modality values stay raw for the intensity
rule (`intensity.py`). MONOCHROME1 (high values dark) is inverted after the mapping. Multi-frame
files are refused: genaug works on 2-D images.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from ..errors import GenaugError
from .intensity import Raw, array_to_raw


def decode_dicom(data: bytes, name: Path) -> Raw:
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pragma: no cover - pydicom is a dependency
        raise GenaugError("reading DICOM needs pydicom: pip install pydicom") from None
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 - pydicom raises many kinds for a bad file
        raise GenaugError(f"cannot read DICOM {name}: {e}") from None
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        raise GenaugError(f"DICOM {name} has {int(ds.NumberOfFrames)} frames; genaug reads single-frame 2-D "
                          "images (export the frames you need as separate files)")
    try:
        arr = ds.pixel_array
    except Exception as e:  # noqa: BLE001 - missing pixel data, unsupported compression, ...
        raise GenaugError(f"cannot decode the pixels of DICOM {name}: {e}") from None
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 3:  # colour: RGB (pydicom converts YBR to RGB by default)
        return Raw(array_to_raw(arr, unit_floats=False).permute(2, 0, 1).contiguous())
    values = apply_modality_lut(arr, ds).astype(np.float64)
    invert = photometric == "MONOCHROME1"
    if "VOILUTSequence" in ds:
        out = apply_voi_lut(values, ds, prefer_lut=True).astype(np.float64)
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return Raw(_to_uint8(out / (2 ** bits - 1)), invert)
    center, width = _window(ds)
    if center is not None:
        low = center - width / 2.0
        return Raw(_to_uint8((values - low) / width), invert)
    return Raw(torch.from_numpy(values.astype(np.float32)).unsqueeze(0), invert)


def _window(ds) -> tuple[float | None, float | None]:
    """The file's first linear VOI window (center, width), or (None, None)."""
    from pydicom.multival import MultiValue

    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None, None
    center, width = (float(v[0] if isinstance(v, MultiValue) else v) for v in (ds.WindowCenter, ds.WindowWidth))
    return (center, width) if width > 0 else (None, None)


def _to_uint8(unit: np.ndarray) -> torch.Tensor:
    """Values in [0, 1] (clipped) to uint8 1 x H x W."""
    return torch.from_numpy(np.rint(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)).unsqueeze(0)
