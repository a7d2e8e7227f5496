"""Running a classifier: softmax probabilities of uint8 images, in fp32 or bf16 autocast.

Below the harness and `explain`, so both (and `genaug nearest`) use it without an import circle.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.images import to_model_range
from ..device import resolve_device
from ..errors import GenaugError

PRECISIONS = ("auto", "native", "no", "bf16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise GenaugError(f"unknown classifier mixed_precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    return precision


def autocast(dev: torch.device, precision: str):
    """bf16 autocast of the classifier's forward passes where asked (`auto`: on a CUDA device with bf16,
    full precision elsewhere; `native`: also on a CPU with bf16 instructions). Weights, optimizer state
    and the losses stay fp32. On a CPU with avx512_bf16, `bf16` about halves the cost of a frozen
    Inception-v3 at 299 px (benchmark: scripts/bench_classifier_precision.py); fp16 is not offered (it
    would need loss scaling)."""
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=uses_bf16(dev, precision))


def uses_bf16(dev: torch.device, precision: str) -> bool:
    check_precision(precision)
    if precision in ("auto", "native") and dev.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return precision == "bf16" or (precision == "native" and dev.type == "cpu" and cpu_has_bf16())


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): without it bf16 autocast is emulated and
    slower than fp32. torch only exposes the check privately, so its absence reads as no."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check is not None and check() for check in checks)


@torch.no_grad()
def predict_proba(model: nn.Module, images: torch.Tensor, device: str = "auto", batch_size: int = 256,
                  precision: str = "auto", multilabel: bool = False) -> np.ndarray:
    """Softmax probabilities for uint8 images (`precision`: as the classifier's `mixed_precision`);
    with `multilabel`, one sigmoid probability per label."""
    dev = resolve_device(device)
    model = model.to(dev).eval()
    out = []
    for i in range(0, len(images), batch_size):
        with autocast(dev, precision):
            logits = model(to_model_range(images[i: i + batch_size]).to(dev))
        out.append((torch.sigmoid(logits.float()) if multilabel else F.softmax(logits.float(), 1)).cpu())
    return torch.cat(out).numpy()
