"""Several labels per image in the one classifier loop (`classifiers/training.py`): the label kind
`MultiLabel` gives one sigmoid output per label, binary cross-entropy (optionally
positive-weighted per label, negatives / positives in the training part), MixUp/CutMix on
multi-hot targets (the baseline-strong recipe), and macro AUROC on the validation part (then
lower loss) as the score."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .inference import predict_proba
from ..errors import GenaugError
from .training import TrainedClassifier, TrainSettings, train_classifier
from .multilabel_metrics import multilabel_metrics


def positive_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per label: negatives / positives of the training part (1 where a label has no positive)."""
    labels = labels.float()
    pos = labels.sum(0)
    return torch.where(pos > 0, (len(labels) - pos) / pos.clamp(min=1), torch.ones_like(pos))


def mix_multi_hot(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp or CutMix (one at random per batch, Beta(1, 1) share) with the targets mixed by the same share:
    a mixed image carries lam of one label set and 1 - lam of the other."""
    lam = float(torch.rand(1, generator=generator))  # Beta(1, 1) is the uniform distribution
    perm = torch.randperm(len(x), generator=generator).to(x.device)
    if torch.rand(1, generator=generator) < 0.5:  # MixUp
        return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]
    size = x.shape[-1]
    cut = int(round(size * math.sqrt(1 - lam)))
    cy, cx = (int(v) for v in torch.randint(size, (2,), generator=generator))
    top, left = max(cy - cut // 2, 0), max(cx - cut // 2, 0)
    bottom, right = min(top + cut, size), min(left + cut, size)
    mixed = x.clone()
    mixed[..., top:bottom, left:right] = x[perm][..., top:bottom, left:right]
    kept = 1 - (bottom - top) * (right - left) / (size * size)
    return mixed, kept * y + (1 - kept) * y[perm]


class MultiLabel:
    """Several labels per image, for the one classifier loop (`classifiers/training.py`): sigmoid
    binary cross-entropy (optionally positive-weighted), MixUp/CutMix on multi-hot targets, scored by
    macro AUROC then lower loss."""

    stratify = False  # an image has a label set, not one class to draw it by
    metric = "macro_auroc"

    def __init__(self, names: list[str], mix: bool = False, pos_weight: torch.Tensor | None = None):
        self.names, self.mix, self.weights = names, mix, pos_weight

    def prepare(self, x, y, generator):
        y = y.float()
        return mix_multi_hot(x, y, generator) if self.mix else (x, y)

    def loss(self, logits, target, y):
        weights = None if self.weights is None else self.weights.to(logits.device)
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=weights)

    def end_interval(self) -> None:
        pass

    def _probs(self, model, x, device, precision):
        return predict_proba(model, x, device, precision=precision, multilabel=True)

    def evaluate(self, model, x, y, device, precision):
        probs, y = self._probs(model, x, device, precision), y.float()
        loss = float(F.binary_cross_entropy(torch.from_numpy(probs).clamp(1e-7, 1 - 1e-7), y))
        score = multilabel_metrics(y.numpy(), probs, np.full(y.shape[1], 0.5), self.names)["macro_auroc"]
        return (-math.inf if score is None else float(score)), loss

    def fit(self, model, x, y, device, precision) -> float:
        """The share of its own training images' labels the model gets right at 0.5."""
        probs = self._probs(model, x, device, precision)
        return float(((probs >= 0.5) == (y.numpy() >= 0.5)).mean())


def train_multilabel(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                     names: list[str], settings: TrainSettings, seed: int, steps_per_epoch: int, device: str = "auto",
                     extra: tuple[torch.Tensor, torch.Tensor] | None = None, pos_weight: bool = False
                     ) -> TrainedClassifier:
    """`train_y`, `val_y`: N x L 0/1; `extra`: more images with their (possibly soft) label vectors."""
    if settings.loss != "ce":
        raise GenaugError("several labels per image train with binary cross-entropy: drop --loss cr")
    if train_y.ndim != 2 or train_y.shape[1] != len(names):
        raise GenaugError(f"multi-label targets are N x {len(names)} 0/1 vectors (got {tuple(train_y.shape)})")
    kind = MultiLabel(names, settings.mix, positive_weights(train_y) if pos_weight else None)
    extra = None if extra is None else (extra[0], extra[1].float())
    return train_classifier(train_x, train_y.float(), val_x, val_y, len(names), settings, seed, steps_per_epoch,
                            device, extra=extra, kind=kind)
