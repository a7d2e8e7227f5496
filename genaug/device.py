"""One rule for `--device auto|cpu|cuda`: auto means CUDA when it is present, else the CPU."""

from __future__ import annotations

import torch

from .errors import GenaugError


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise GenaugError(f"--device {device} was asked for but no CUDA device is available")
    return torch.device(device)
