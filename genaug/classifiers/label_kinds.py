"""What a label kind gives the one classifier loop (`training.py`): the loss, how a batch is mixed
(CutMix/MixUp), how the model is scored on held-out images, and how well it fits its training
images. `SingleLabel` is one class per image (softmax cross-entropy, or the CR loss); the
multi-label kind (sigmoid binary cross-entropy) lives with the multi-label harness
(`multilabel_kind.py`), which supplies the same methods."""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.transforms import v2

from ..errors import GenaugError
from .inference import predict_proba
from .losses import confusion_rates, cr_cross_entropy
from .metrics import SCALAR_METRICS, classification_metrics


class LabelKind(Protocol):
    stratify: bool  # added images can be drawn class by class (one class per image)
    metric: str  # the validation score that selects a model when selection is asked for

    def prepare(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
                ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def loss(self, logits: torch.Tensor, target: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    def end_interval(self) -> None: ...

    def evaluate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: str, precision: str
                 ) -> tuple[float, float]: ...


class SingleLabel:
    """One class per image: cross-entropy with label smoothing, or the confusion-rate loss (whose
    rates come from the previous interval's training confusion matrix); CutMix or MixUp (one at
    random per batch) with soft targets; scored by `metric` then lower loss."""

    stratify = True

    def __init__(self, n_classes: int, mix: bool = False, loss: str = "ce", cr_k: float = 3.0,
                 label_smoothing: float = 0.0, metric: str = "balanced_accuracy"):
        if loss not in ("ce", "cr"):
            raise GenaugError(f"unknown loss {loss!r}; choose ce or cr")
        if mix and loss == "cr":
            raise GenaugError("the CR loss needs hard labels; it cannot be combined with CutMix/MixUp")
        if metric not in SCALAR_METRICS:
            raise GenaugError(f"unknown select_metric {metric!r}; choose from {', '.join(SCALAR_METRICS)}")
        self.n, self.kind, self.cr_k, self.smoothing, self.metric = n_classes, loss, cr_k, label_smoothing, metric
        self.mixer = v2.RandomChoice([v2.CutMix(num_classes=n_classes), v2.MixUp(num_classes=n_classes)]) if mix else None
        self.cm = torch.zeros(n_classes, n_classes, dtype=torch.int64)
        self.cr: torch.Tensor | None = None

    def prepare(self, x, y, generator):
        return self.mixer(x, y) if self.mixer is not None else (x, y)

    def loss(self, logits, target, y):
        if self.mixer is not None:
            return F.cross_entropy(logits, target, label_smoothing=self.smoothing)
        self.cm += torch.bincount((y * self.n + logits.argmax(1)).cpu(), minlength=self.n ** 2).view(self.n, -1)
        if self.kind == "cr":
            return cr_cross_entropy(logits, y, self.cr, self.cr_k)
        return F.cross_entropy(logits, y, label_smoothing=self.smoothing)

    def end_interval(self) -> None:
        self.cr, self.cm = confusion_rates(self.cm), torch.zeros_like(self.cm)

    def evaluate(self, model, x, y, device, precision):
        """(score, loss) on images `x` with labels `y`; a score that cannot be computed is -inf."""
        probs = predict_proba(model, x, device, precision=precision)
        loss = float(F.nll_loss(torch.log(torch.from_numpy(probs).clamp(min=1e-12)), y))
        score = classification_metrics(y.numpy(), probs, [str(i) for i in range(probs.shape[1])])[self.metric]
        return (-math.inf if score is None or np.isnan(score) else float(score)), loss

    def fit(self, model, x, y, device, precision) -> float:
        """The share of its own (unaugmented) training images the model gets right."""
        probs = predict_proba(model, x, device, precision=precision)
        return float((probs.argmax(1) == y.numpy()).mean())
