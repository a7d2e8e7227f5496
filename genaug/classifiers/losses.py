"""Confusion-rate weighted cross-entropy for visually similar classes (Lim and Kim, 2021).

From the previous epoch's training confusion matrix CM (rows true, columns predicted):
CR_ij = CM_ij / (CM_ij + CM_ji) for i != j (0 on the diagonal and where both counts are 0).
A misclassified sample with label y and prediction p gets L <- L + k * L * H(CR_yp, CR_py),
with H(a, b) = -a log2 a - b log2 b (0 log 0 = 0), the binary entropy of the pair: largest when
two classes are confused both ways equally. Correct samples keep plain cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def confusion_rates(cm: torch.Tensor) -> torch.Tensor:
    cm = cm.double()
    both = cm + cm.T
    cr = torch.where(both > 0, cm / both.clamp(min=1e-12), torch.zeros_like(cm))
    cr.fill_diagonal_(0.0)
    return cr


def _plogp(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0, x * torch.log2(x.clamp(min=1e-300)), torch.zeros_like(x))


def cr_cross_entropy(logits: torch.Tensor, target: torch.Tensor, cr: torch.Tensor | None, k: float) -> torch.Tensor:
    """Mean CR-weighted cross-entropy; `cr=None` (first epoch) is plain cross-entropy."""
    loss = F.cross_entropy(logits, target, reduction="none")
    if cr is None:
        return loss.mean()
    pred = logits.argmax(1)
    cr = cr.to(logits.device, torch.float64)
    a, b = cr[target, pred], cr[pred, target]
    entropy = -(_plogp(a) + _plogp(b))
    weight = 1.0 + k * entropy * (pred != target).double()
    return (loss * weight.to(loss.dtype)).mean()
