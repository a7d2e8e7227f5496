"""The one loop that trains a classifier: an arm of an experiment, a teacher, a filter, a CAS
classifier, for one label per image or several (the label kind: `label_kinds.py`).

Two protocols:
- **steps** (`steps` set; the default of experiments since 0.2): a fixed number of optimizer
  steps, the same for every arm whatever its image count; AdamW with weight decay, a linear
  warm-up then cosine decay, stepped per optimizer step (torchvision's reference recipe). The
  scored model is the final one (`scored_model: final`) or its exponential moving average
  (`ema`, `swa_utils.AveragedModel`), with batch-norm statistics recomputed on the real training
  images (`swa_utils.update_bn`; `bn_statistics`: through the arm's augmentation, unaugmented, or
  the training batches' own); `best` keeps the best of 20 checkpoints on the validation part.
- **epochs** (`steps` None; folders started before 0.2): `epochs` x `steps_per_epoch` steps of
  Adam with StepLR per epoch, and the best epoch on the validation part kept.
Added images (synthetic, duplicates, extra real ones) enter every batch at `synthetic_share`
(`batches.py`). Every run records how well the scored model fits its own real training images
and whether that reaches `CONVERGED_FIT`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torchvision.transforms import v2

from ..data.images import to_model_range
from ..device import resolve_device
from ..errors import GenaugError
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn

from .batches import BatchDraw, check_share
from .inference import autocast
from .label_kinds import LabelKind, SingleLabel
from .networks import build_classifier, freeze_backbone, is_pretrained, train_mode

CONVERGED_FIT = 0.95  # a run whose scored model gets fewer of its own training images right is flagged
SCORED_MODELS = ("final", "ema", "best")
# where the scored model's batch-norm statistics come from (steps protocol, final or ema): the running
# statistics of the training batches (PyTorch's own), or recomputed on the real training images through the
# arm's augmentation or unaugmented (`clean`, how 0.2 folders before this setting ran). Measured on pbc28 at
# 50 per class, 2,000 steps, replicate 0: the reference scores 0.838 / 0.840 / 0.817 and +real@50, whose
# batches were half extra images, 0.870 / 0.767 / 0.781: statistics of a part of what an arm trained on
# misdescribe its features, and the positive control lost its gain
BN_STATISTICS = ("training", "augmented", "clean")
BN_PASSES = 4  # augmented passes over the real training images that batch-norm statistics are averaged over
CHECKPOINTS = 20  # validation looks of the steps protocol (history; the candidates of `best`)

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
    steps: int | None = None  # optimizer steps (the steps protocol); None: epochs x steps_per_epoch
    warmup: float = 0.05  # steps protocol: share of the steps with a linear warm-up of the rate
    scored_model: str = "best"  # steps protocol: final, ema or best (of CHECKPOINTS looks at validation)
    bn_statistics: str = "clean"  # steps protocol, final or ema: BN_STATISTICS
    ema_decay: float = 0.999
    label_smoothing: float = 0.0
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
    synthetic_share: float | None = None  # share of each batch drawn from the added images; None: proportional
    mixed_precision: str = "auto"  # bf16 forward passes: auto (on CUDA), no, bf16
    channels_last: bool = False  # NHWC weights and activations: faster convolutions for large inputs
    select_metric: str = "balanced_accuracy"  # model selection on the validation part (the primary metric)

    @classmethod
    def from_config(cls, config: dict) -> "TrainSettings":
        return cls(**{k: config[k] for k in cls.__dataclass_fields__ if k in config})

    def total_steps(self, steps_per_epoch: int) -> int:
        return int(self.steps) if self.steps is not None else self.epochs * steps_per_epoch

    def interval(self, steps_per_epoch: int) -> int:
        """Steps between two looks at the validation part (an epoch in the epochs protocol)."""
        return steps_per_epoch if self.steps is None else max(1, int(self.steps) // CHECKPOINTS)

    def check(self) -> "TrainSettings":
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 1):
            raise GenaugError(f"steps must be a whole number of optimizer steps, 1 or more (got {self.steps!r})")
        if self.scored_model not in SCORED_MODELS:
            raise GenaugError(f"scored_model must be one of {', '.join(SCORED_MODELS)} (got {self.scored_model!r})")
        if self.bn_statistics not in BN_STATISTICS:
            raise GenaugError(f"bn_statistics must be one of {', '.join(BN_STATISTICS)} (got {self.bn_statistics!r})")
        if not 0 <= self.warmup < 1:
            raise GenaugError(f"warmup must be a share of the steps in [0, 1) (got {self.warmup!r})")
        check_share(self.synthetic_share)
        return self


@dataclass
class TrainedClassifier:
    model: nn.Module
    best_epoch: int | None  # the epochs protocol's (or `best`'s) chosen look; None for a final or EMA model
    history: list[dict] = field(default_factory=list)
    optimizer_steps: int = 0
    images_seen: dict = field(default_factory=dict)
    train_fit: float | None = None  # the scored model on its own unaugmented real training images
    converged: bool | None = None  # train_fit >= CONVERGED_FIT
    scored: str = "best-epoch"


def single_label_kind(settings: TrainSettings, n_classes: int) -> SingleLabel:
    return SingleLabel(n_classes, mix=settings.mix, loss=settings.loss, cr_k=settings.cr_k,
                       label_smoothing=settings.label_smoothing, metric=settings.select_metric)


def train_classifier(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                     n_classes: int, settings: TrainSettings, seed: int, steps_per_epoch: int,
                     device: str = "auto", extra: tuple[torch.Tensor, torch.Tensor] | None = None,
                     kind: LabelKind | None = None) -> TrainedClassifier:
    """Train under the settings' protocol (module docstring) and return the scored model. A
    pretrained backbone is frozen (only the new head trains) unless `settings.finetune`.

    `extra` (added images and their labels) enters every batch at `settings.synthetic_share`;
    `kind` is the label kind (one class per image when None).
    """
    settings.check()
    kind = kind or single_label_kind(settings, n_classes)
    dev = resolve_device(device)
    torch.manual_seed(seed)
    total, interval = settings.total_steps(steps_per_epoch), settings.interval(steps_per_epoch)
    model, optimizer, schedule, frozen = build_training(settings, train_x.shape[1], n_classes, train_x.shape[-1], dev,
                                                        total_steps=total, steps_per_epoch=steps_per_epoch)
    augment = augmenter(settings, train_x.shape[-1])
    order = torch.Generator().manual_seed(seed)
    draw = BatchDraw((train_x, train_y), extra, settings.batch_size, settings.synthetic_share, order, kind.stratify)
    ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(settings.ema_decay), use_buffers=True)
           if settings.steps is not None and settings.scored_model == "ema" else None)
    selecting = settings.steps is None or settings.scored_model == "best"
    looks = Looks(val_x, val_y, kind, device, settings.mixed_precision, keep_best=selecting)
    seen, running = {"real": 0, "extra": 0}, 0.0
    train_mode(model, frozen)
    for step in range(1, total + 1):
        images, labels, n_added = draw.next()
        seen["extra"] += n_added
        seen["real"] += len(labels) - n_added
        x = to_model_range(torch.stack([augment(img) for img in images])).to(dev)
        y = labels.to(dev)
        x, target = kind.prepare(x, y, order)
        with autocast(dev, settings.mixed_precision):
            logits = model(x).float()
        loss = kind.loss(logits, target, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.after_step()
        if ema is not None:
            ema.update_parameters(model)
        running += float(loss.detach())
        if step % interval == 0 or step == total:
            schedule.after_epoch()
            kind.end_interval()
            n = interval if step % interval == 0 else step % interval
            looks.look(ema.module if ema is not None else model, step,
                       {"train_loss": running / n, "lr": optimizer.param_groups[0]["lr"]})
            running = 0.0
            train_mode(model, frozen)
    if selecting:
        model.load_state_dict(looks.best_state)
        scored, chosen = model, looks.best_look
    else:
        scored, chosen = (ema.module if ema is not None else model), None
        if not frozen and settings.bn_statistics != "training":  # the real images', not the mixed batches'
            recompute_batch_norm(scored, train_x, dev, settings.batch_size,
                                 augment if settings.bn_statistics == "augmented" else None, seed=seed)
    fit = kind.fit(scored, train_x, train_y, device, settings.mixed_precision)
    label = "best-epoch" if settings.steps is None else settings.scored_model
    return TrainedClassifier(scored.cpu(), chosen, looks.history, total, seen, fit, fit >= CONVERGED_FIT, label)


def recompute_batch_norm(model: nn.Module, images: torch.Tensor, dev: torch.device, batch_size: int,
                         augment: v2.Compose | None = None, seed: int = 0) -> None:
    """Batch-norm running statistics as the cumulative average over `images` (uint8): as they are, or
    through `augment` in BN_PASSES passes drawn from `seed` (without mixing: a mixed image is a blend
    of two real ones)."""
    if augment is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            images = torch.cat([torch.stack([augment(img) for img in images]) for _ in range(BN_PASSES)])
    batches = [to_model_range(images[i: i + batch_size]).to(dev) for i in range(0, len(images), batch_size)]
    update_bn(batches, model)


class Looks:
    """The looks at the validation part during training: the history, and the best model seen
    (primary metric, then lower loss) when the protocol selects one."""

    def __init__(self, val_x, val_y, kind: LabelKind, device: str, precision: str, keep_best: bool = True):
        self.val_x, self.val_y, self.kind, self.device, self.precision = val_x, val_y, kind, device, precision
        self.keep_best = keep_best
        self.best, self.best_state, self.best_look, self.history = (-math.inf, math.inf), None, 0, []

    def look(self, model: nn.Module, step: int, logged: dict) -> None:
        score, loss = self.kind.evaluate(model, self.val_x, self.val_y, self.device, self.precision)
        self.history.append({"epoch": len(self.history) + 1, "step": step, **logged,
                             f"val_{self.kind.metric}": score, "val_loss": loss})
        if self.keep_best and (score, -loss) > (self.best[0], -self.best[1]):
            self.best, self.best_look = (score, loss), len(self.history)
            self.best_state = copy.deepcopy(model.state_dict())


class Schedule:
    """The learning-rate schedule, stepped where its protocol steps it: per optimizer step (warm-up
    then cosine) or per epoch (StepLR)."""

    def __init__(self, optimizer: torch.optim.Optimizer, settings: TrainSettings, total_steps: int):
        self.per_step = settings.steps is not None
        if self.per_step:
            warm = int(round(settings.warmup * total_steps))
            cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warm))
            self.scheduler = cosine if warm == 0 else torch.optim.lr_scheduler.SequentialLR(
                optimizer, [torch.optim.lr_scheduler.LinearLR(optimizer, 0.01, 1.0, total_iters=warm), cosine], [warm])
        else:
            self.scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=settings.lr_step,
                                                             gamma=settings.lr_gamma)

    def after_step(self) -> None:
        if self.per_step:
            self.scheduler.step()

    def after_epoch(self) -> None:
        if not self.per_step:
            self.scheduler.step()


def build_training(settings: TrainSettings, channels: int, n_classes: int, size: int, dev: torch.device,
                   total_steps: int | None = None, steps_per_epoch: int = 1):
    """A fresh classifier on `dev` with its optimizer (AdamW in the steps protocol, Adam in the
    epochs one) and schedule; a pretrained backbone is frozen (only the new head trains) unless
    `settings.finetune`; NHWC with `channels_last` (a frozen Inception at 299 px: about 1.5x faster
    on a CPU). Returns (model, optimizer, schedule, frozen)."""
    model = build_classifier(settings.classifier, channels, n_classes, size, pretrained=settings.pretrained,
                             stem=settings.stem).to(dev)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    frozen = is_pretrained(settings.classifier, settings.pretrained) and not settings.finetune
    params = freeze_backbone(model) if frozen else list(model.parameters())
    if settings.steps is not None:
        optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    else:
        optimizer = torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    total = total_steps if total_steps is not None else settings.total_steps(steps_per_epoch)
    return model, optimizer, Schedule(optimizer, settings, total), frozen


def augmenter(settings: TrainSettings, size: int) -> v2.Compose:
    """The arm's augmentation of uint8 training images (classical, or the strong recipe)."""
    if settings.augment == "classical":
        return classical_augmentation(size, settings.rotation, settings.crop_padding, settings.hflip)
    return strong_augmentation(size, settings.crop_padding, settings.hflip, settings.augment)


class EpochSelector(Looks):
    """The looks of a loop that is not `train_classifier`'s (MPL's student): `after_epoch` after each
    epoch, `finish` loads the best one."""

    def __init__(self, val_x, val_y, device: str, precision: str = "auto", metric: str = "balanced_accuracy",
                 n_classes: int | None = None):
        super().__init__(val_x, val_y, SingleLabel(n_classes or 2, metric=metric), device, precision)

    def after_epoch(self, model: nn.Module, logged: dict) -> None:
        self.look(model, len(self.history) + 1, logged)

    @property
    def best_epoch(self) -> int:
        return self.best_look

    def finish(self, model: nn.Module, optimizer_steps: int, seen: dict) -> TrainedClassifier:
        model.load_state_dict(self.best_state)
        return TrainedClassifier(model.cpu(), self.best_look, self.history, optimizer_steps, seen)
