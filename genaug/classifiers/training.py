"""The loop that trains one classifier: an arm of an experiment, a teacher, a filter (networks: `networks.py`).

Every arm runs the same number of optimizer steps: `epochs` x `steps_per_epoch`, where
`steps_per_epoch` comes from the real training images alone; an augmented arm draws its batches
from real + synthetic images. After each epoch the model is scored on the real validation split
(balanced accuracy, then lower loss) and the best epoch's weights are kept.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.transforms import v2

from ..data.images import to_model_range
from ..device import resolve_device
from ..errors import GenaugError
from .inference import autocast, predict_proba
from .losses import confusion_rates, cr_cross_entropy
from .metrics import SCALAR_METRICS, classification_metrics
from .networks import build_classifier, freeze_backbone, is_pretrained, train_mode

def classical_augmentation(image_size: int, rotation: float, crop_padding: int, hflip: bool) -> v2.Compose:
    """Crops and small rotations; horizontal flips only when asked (off for medical sources)."""
    steps = [v2.RandomCrop(image_size, padding=crop_padding, padding_mode="reflect")] if crop_padding else []
    steps += [v2.RandomRotation(rotation)] if rotation else []
    steps += [v2.RandomHorizontalFlip()] if hflip else []
    return v2.Compose(steps or [v2.Identity()])  # rotation 0, no crop, no flips: no augmentation


def strong_augmentation(image_size: int, crop_padding: int, hflip: bool, policy: str = "trivialaugment") -> v2.Compose:
    """The classical crop (and flip) followed by TrivialAugmentWide or RandAugment, on uint8 images."""
    if policy not in ("trivialaugment", "randaugment"):
        raise GenaugError(f"unknown strong augmentation {policy!r}; choose trivialaugment or randaugment")
    steps = [v2.RandomCrop(image_size, padding=crop_padding, padding_mode="reflect")] if crop_padding else []
    steps += [v2.RandomHorizontalFlip()] if hflip else []
    steps += [v2.TrivialAugmentWide() if policy == "trivialaugment" else v2.RandAugment()]
    return v2.Compose(steps)


@dataclass
class TrainSettings:
    classifier: str = "resnet18"
    pretrained: bool = False  # torchvision ImageNet weights (inception-v3 is always pretrained)
    finetune: bool = False  # train a pretrained backbone too, not only its new linear head
    stem: str = "auto"  # from-scratch networks: small (full resolution), imagenet (4x cheaper), auto (small < 64 px)
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    lr_step: int = 7
    lr_gamma: float = 0.1
    weight_decay: float = 0.0
    loss: str = "ce"
    cr_k: float = 3.0
    rotation: float = 10.0
    crop_padding: int = 2
    hflip: bool = False
    augment: str = "classical"  # or trivialaugment / randaugment (the baseline-strong recipe)
    mix: bool = False  # CutMix or MixUp (one at random per batch), soft targets
    synthetic_ratio: float | None = None  # share of each batch drawn from the extra images; None: proportional
    mixed_precision: str = "auto"  # bf16 forward passes: auto (on CUDA), no, bf16
    channels_last: bool = False  # NHWC weights and activations: faster convolutions for large inputs
    select_metric: str = "balanced_accuracy"  # epoch selection on the validation part (the primary metric)

    @classmethod
    def from_config(cls, config: dict) -> "TrainSettings":
        return cls(**{k: config[k] for k in cls.__dataclass_fields__ if k in config})


@dataclass
class TrainedClassifier:
    model: nn.Module
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    optimizer_steps: int = 0
    images_seen: dict = field(default_factory=dict)


class _Stream:
    """An endless stream of seeded per-epoch permutations of range(n)."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.generator, self.buffer = n, generator, []

    def take(self, k: int) -> list[int]:
        while len(self.buffer) < k:
            self.buffer += torch.randperm(self.n, generator=self.generator).tolist()
        out, self.buffer = self.buffer[:k], self.buffer[k:]
        return out


def train_classifier(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                     n_classes: int, settings: TrainSettings, seed: int, steps_per_epoch: int,
                     device: str = "auto", extra: tuple[torch.Tensor, torch.Tensor] | None = None
                     ) -> TrainedClassifier:
    """Train with a fixed step budget; keep the best epoch on the validation split. A pretrained
    backbone is frozen (only the new head trains) unless `settings.finetune`.

    `extra` (synthetic or duplicated images) joins the real training images: drawn in proportion
    to its size (`synthetic_ratio` None), or as a fixed share of every batch.
    """
    if settings.loss not in ("ce", "cr"):
        raise GenaugError(f"unknown loss {settings.loss!r}; choose ce or cr")
    if settings.mix and settings.loss == "cr":
        raise GenaugError("the CR loss needs hard labels; it cannot be combined with CutMix/MixUp")
    ratio = settings.synthetic_ratio
    if ratio is not None and not 0 <= ratio < 1:
        raise GenaugError(f"synthetic_ratio must be in [0, 1) (got {ratio})")
    dev = resolve_device(device)
    torch.manual_seed(seed)
    model, optimizer, scheduler, frozen = build_training(settings, train_x.shape[1], n_classes, train_x.shape[-1], dev)
    augment = augmenter(settings, train_x.shape[-1])
    mixer = (v2.RandomChoice([v2.CutMix(num_classes=n_classes), v2.MixUp(num_classes=n_classes)])
             if settings.mix else None)
    has_extra = extra is not None and len(extra[0]) > 0
    if has_extra and ratio is None:
        pool_x, pool_y = torch.cat([train_x, extra[0]]), torch.cat([train_y, extra[1]])
        n_extra_per_batch = 0
    else:
        pool_x, pool_y = train_x, train_y
        n_extra_per_batch = round(ratio * settings.batch_size) if has_extra else 0
    order = torch.Generator().manual_seed(seed)
    real_stream = _Stream(len(pool_x), order)
    extra_stream = _Stream(len(extra[0]), order) if n_extra_per_batch else None
    seen = {"real": 0, "extra": 0}
    selector = EpochSelector(val_x, val_y, device, settings.mixed_precision, settings.select_metric)
    cr = None
    for epoch in range(settings.epochs):
        train_mode(model, frozen)
        cm = torch.zeros(n_classes, n_classes, dtype=torch.int64)
        total_loss = 0.0
        for _ in range(steps_per_epoch):
            idx = real_stream.take(settings.batch_size - n_extra_per_batch)
            images, labels = pool_x[idx], pool_y[idx]
            n_extra = sum(1 for i in idx if i >= len(train_x))
            if extra_stream is not None:
                eidx = extra_stream.take(n_extra_per_batch)
                images, labels = torch.cat([images, extra[0][eidx]]), torch.cat([labels, extra[1][eidx]])
                n_extra = len(eidx)
            seen["extra"] += n_extra
            seen["real"] += len(labels) - n_extra
            x = torch.stack([augment(img) for img in images])
            x, y = to_model_range(x).to(dev), labels.to(dev)
            if mixer is not None:
                x, target = mixer(x, y)
            with autocast(dev, settings.mixed_precision):
                logits = model(x).float()
            if mixer is not None:
                loss = F.cross_entropy(logits, target)
            else:
                loss = cr_cross_entropy(logits, y, cr if settings.loss == "cr" else None, settings.cr_k)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += float(loss.detach())
            cm += torch.bincount((y * n_classes + logits.argmax(1)).cpu(), minlength=n_classes ** 2).view(n_classes, -1)
        scheduler.step()
        cr = confusion_rates(cm)
        selector.after_epoch(model, {"train_loss": total_loss / steps_per_epoch})
    return selector.finish(model, settings.epochs * steps_per_epoch, seen)


def build_training(settings: TrainSettings, channels: int, n_classes: int, size: int, dev: torch.device):
    """A fresh classifier on `dev` with its Adam optimizer and StepLR schedule; a pretrained backbone
    is frozen (only the new head trains) unless `settings.finetune`; NHWC with `channels_last` (a
    frozen Inception at 299 px: about 1.5x faster on a CPU). Returns (model, optimizer,
    scheduler, frozen)."""
    model = build_classifier(settings.classifier, channels, n_classes, size, pretrained=settings.pretrained,
                             stem=settings.stem).to(dev)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    frozen = is_pretrained(settings.classifier, settings.pretrained) and not settings.finetune
    params = freeze_backbone(model) if frozen else list(model.parameters())
    optimizer = torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=settings.lr_step, gamma=settings.lr_gamma)
    return model, optimizer, scheduler, frozen


def augmenter(settings: TrainSettings, size: int) -> v2.Compose:
    """The arm's augmentation of uint8 training images (classical, or the strong recipe)."""
    if settings.augment == "classical":
        return classical_augmentation(size, settings.rotation, settings.crop_padding, settings.hflip)
    return strong_augmentation(size, settings.crop_padding, settings.hflip, settings.augment)


class EpochSelector:
    """Scores the model on the real validation part after each epoch (`metric`, the experiment's
    primary metric by default, then lower loss) and keeps the best epoch's weights."""

    def __init__(self, val_x: torch.Tensor, val_y: torch.Tensor, device: str, precision: str = "auto",
                 metric: str = "balanced_accuracy"):
        if metric not in SCALAR_METRICS:
            raise GenaugError(f"unknown select_metric {metric!r}; choose from {', '.join(SCALAR_METRICS)}")
        self.val_x, self.val_y, self.device, self.precision, self.metric = val_x, val_y, device, precision, metric
        self.best, self.best_state, self.best_epoch, self.history = (-math.inf, math.inf), None, 0, []

    def after_epoch(self, model: nn.Module, logged: dict) -> None:
        probs = predict_proba(model, self.val_x, self.device, precision=self.precision)
        val_loss = float(F.nll_loss(torch.log(torch.from_numpy(probs).clamp(min=1e-12)), self.val_y))
        n_classes = probs.shape[1]
        scores = classification_metrics(self.val_y.numpy(), probs, [str(i) for i in range(n_classes)])
        score = scores[self.metric]
        score = -math.inf if math.isnan(score) else float(score)  # AUC with one class present: no information
        self.history.append({"epoch": len(self.history) + 1, **logged,
                             "val_balanced_accuracy": float(scores["balanced_accuracy"]), "val_loss": val_loss,
                             **({f"val_{self.metric}": score} if self.metric != "balanced_accuracy" else {})})
        if (score, -val_loss) > (self.best[0], -self.best[1]):
            self.best, self.best_epoch = (score, val_loss), len(self.history)
            self.best_state = copy.deepcopy(model.state_dict())

    def finish(self, model: nn.Module, optimizer_steps: int, seen: dict) -> TrainedClassifier:
        model.load_state_dict(self.best_state)
        return TrainedClassifier(model.cpu(), self.best_epoch, self.history, optimizer_steps, seen)
