"""The classifier loop for several labels per image: one sigmoid output per label, binary
cross-entropy (optionally positive-weighted per label, negatives / positives in the training part),
the shared step budget and augmentation, MixUp/CutMix on multi-hot targets (the baseline-strong
recipe), and epoch selection by macro AUROC on the validation part (then lower loss). Networks
and the optimizer come from the single-label loop (classifier.build_training)."""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..classifiers.inference import autocast, predict_proba
from ..classifiers.networks import train_mode
from ..data.images import to_model_range
from ..device import resolve_device
from ..errors import GenaugError
from ..classifiers.training import TrainedClassifier, TrainSettings, _Stream, augmenter, build_training
from .multilabel_stats import multilabel_metrics


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


class MultiLabelSelector:
    """Keeps the epoch with the best validation macro AUROC (then lower loss)."""

    def __init__(self, val_x, val_y, device, precision, names):
        self.val_x, self.val_y, self.device, self.precision, self.names = val_x, val_y, device, precision, names
        self.best, self.best_state, self.best_epoch, self.history = (-math.inf, math.inf), None, 0, []

    def after_epoch(self, model, logged: dict) -> None:
        probs = predict_proba(model, self.val_x, self.device, precision=self.precision, multilabel=True)
        y = self.val_y.float()
        val_loss = float(F.binary_cross_entropy(torch.from_numpy(probs).clamp(1e-7, 1 - 1e-7), y))
        scores = multilabel_metrics(y.numpy(), probs, np.full(y.shape[1], 0.5), self.names)
        score = -math.inf if scores["macro_auroc"] is None else scores["macro_auroc"]
        self.history.append({"epoch": len(self.history) + 1, **logged, "val_macro_auroc": scores["macro_auroc"],
                             "val_loss": val_loss})
        if (score, -val_loss) > (self.best[0], -self.best[1]):
            self.best, self.best_epoch = (score, val_loss), len(self.history)
            self.best_state = copy.deepcopy(model.state_dict())

    def finish(self, model, optimizer_steps: int, seen: dict) -> TrainedClassifier:
        model.load_state_dict(self.best_state)
        return TrainedClassifier(model.cpu(), self.best_epoch, self.history, optimizer_steps, seen)


def train_multilabel(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                     names: list[str], settings: TrainSettings, seed: int, steps_per_epoch: int, device: str = "auto",
                     extra: tuple[torch.Tensor, torch.Tensor] | None = None, pos_weight: bool = False
                     ) -> TrainedClassifier:
    """`train_y`, `val_y`: N x L 0/1; `extra`: more images with their (possibly soft) label vectors."""
    if settings.loss != "ce":
        raise GenaugError("several labels per image train with binary cross-entropy: drop --loss cr")
    if train_y.ndim != 2 or train_y.shape[1] != len(names):
        raise GenaugError(f"multi-label targets are N x {len(names)} 0/1 vectors (got {tuple(train_y.shape)})")
    dev = resolve_device(device)
    torch.manual_seed(seed)
    model, optimizer, scheduler, frozen = build_training(settings, train_x.shape[1], len(names), train_x.shape[-1], dev)
    augment = augmenter(settings, train_x.shape[-1])
    pool_x, pool_y = train_x, train_y.float()
    if extra is not None and len(extra[0]):
        pool_x, pool_y = torch.cat([train_x, extra[0]]), torch.cat([pool_y, extra[1].float()])
    weights = positive_weights(train_y).to(dev) if pos_weight else None
    order = torch.Generator().manual_seed(seed)
    stream = _Stream(len(pool_x), order)
    seen = {"real": 0, "extra": 0}
    selector = MultiLabelSelector(val_x, val_y, device, settings.mixed_precision, names)
    for _ in range(settings.epochs):
        train_mode(model, frozen)
        total = 0.0
        for _ in range(steps_per_epoch):
            idx = stream.take(settings.batch_size)
            n_extra = sum(1 for i in idx if i >= len(train_x))
            seen["extra"] += n_extra
            seen["real"] += len(idx) - n_extra
            x = to_model_range(torch.stack([augment(img) for img in pool_x[idx]])).to(dev)
            y = pool_y[idx].to(dev)
            if settings.mix:
                x, y = mix_multi_hot(x, y, order)
            with autocast(dev, settings.mixed_precision):
                logits = model(x).float()
            loss = F.binary_cross_entropy_with_logits(logits, y, pos_weight=weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        scheduler.step()
        selector.after_epoch(model, {"train_loss": total / steps_per_epoch})
    return selector.finish(model, settings.epochs * steps_per_epoch, seen)
