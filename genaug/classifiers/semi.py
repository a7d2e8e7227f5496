"""Semi-supervised arms: unlabelled real images against (and beside) synthetic ones.

- `+pseudo` (pseudo-labelling / self-training): a teacher trained exactly like the baseline
  (same seed, same step budget) labels the unlabelled pool; images whose top class probability is
  strictly above `threshold` join the labelled images as extra images for a student trained with
  the baseline's budget; with `rounds` > 1 the student labels the pool again. A threshold of 1.0
  keeps nothing, and the arm is then the baseline, run for run.
- `+mpl` (Meta Pseudo Labels, Pham et al., CVPR 2021): teacher and student train together. Each
  step the teacher's hard pseudo-labels on strongly augmented unlabelled images train the student
  for one step; the student's labelled loss before minus after that step is the teacher's reward
  `h`, the first-order approximation of the paper's eta_S * grad_l(theta_S')^T grad_u(theta_S), and
  the teacher minimises `h * CE(pseudo-label, teacher)` beside its supervised loss (label
  smoothing) and a UDA consistency loss (sharpened weak-view targets above a confidence threshold
  against the strong view). The last `finetune_epochs` train the student on the labelled images
  alone, as the paper finishes. The student is the arm's classifier; it makes exactly the
  baseline's number of optimizer steps (the teacher's steps are extra compute, not extra student
  steps), with epoch selection on the labelled validation part like every arm.
- `+mpl+<family>`: the same, with the generator's accepted images added to the labelled set.

The true labels of the pool never reach these functions; the replicate scores the pseudo-labels
against them afterwards, as a diagnostic.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.images import to_model_range
from ..device import resolve_device
from ..errors import GenaugError
from .inference import autocast, predict_proba
from .networks import train_mode
from .batches import Stream
from .training import (EpochSelector, TrainedClassifier, TrainSettings, augmenter, build_training,
                                    strong_augmentation, train_classifier)

METHODS = ("pseudo", "mpl")
DEFAULTS = {
    "threshold": 0.95,  # pseudo: a pseudo-label joins when its probability is strictly above this
    "rounds": 1,  # pseudo: rounds of self-training (the student labels the pool for the next round)
    "unlabeled_batch": None,  # mpl: unlabelled images per step; None = the labelled batch size (mu = 1)
    "uda_weight": 1.0,  # mpl: weight of the teacher's consistency loss
    "uda_threshold": 0.95,  # mpl: confidence of the sharpened weak view for its consistency target to count
    "temperature": 0.7,  # mpl: sharpening of the weak view's distribution
    "label_smoothing": 0.15,  # mpl: on the teacher's supervised loss and the student's pseudo-label loss
    "finetune_epochs": 2,  # mpl: last epochs in which the student trains on the labelled images alone
}


@dataclass
class SemiResult:
    trained: TrainedClassifier
    pseudo_labels: dict  # {"indices": pool positions labelled, "labels": their pseudo-labels}
    teacher: nn.Module | None = None  # MPL's teacher network (ddpm-pseudo's teacher when --semi mpl runs)
    teacher_probs: np.ndarray | None = None  # its probabilities on the pool


def check_options(options: dict, epochs: int, mpl: bool = True) -> dict:
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise GenaugError(f"unknown semi_settings key(s) {', '.join(unknown)}; known: {', '.join(DEFAULTS)}")
    o = {**DEFAULTS, **options}
    for key, value in o.items():
        if value is None and DEFAULTS[key] is None:
            continue
        kind = int if key in ("rounds", "finetune_epochs", "unlabeled_batch") else float
        try:
            o[key] = kind(value)
        except (TypeError, ValueError):
            raise GenaugError(f"semi_settings {key} must be a{'' if kind is float else ' whole'} number "
                              f"(got {value!r})") from None
    if o["unlabeled_batch"] is not None and o["unlabeled_batch"] < 1:
        raise GenaugError("semi_settings unlabeled_batch must be at least 1")
    if not 0 <= float(o["threshold"]) <= 1:
        raise GenaugError(f"semi_settings threshold must be in [0, 1] (got {o['threshold']})")
    if int(o["rounds"]) < 1:
        raise GenaugError("semi_settings rounds must be at least 1")
    if mpl and not 0 <= int(o["finetune_epochs"]) < epochs:
        raise GenaugError(f"semi_settings finetune_epochs must be in [0, epochs) (got {o['finetune_epochs']}, "
                          f"epochs {epochs})")
    return o


def train_pseudo(train_x, train_y, val_x, val_y, n_classes: int, settings: TrainSettings, seed: int,
                 steps_per_epoch: int, device: str, pool: torch.Tensor, options: dict, extra=None) -> SemiResult:
    """Teacher = the baseline's run; its confident pseudo-labels on `pool` join as extra images."""
    teacher = train_classifier(train_x, train_y, val_x, val_y, n_classes, settings, seed, steps_per_epoch,
                               device, extra=extra)
    student, labelled = teacher, {"indices": [], "labels": []}
    for _ in range(int(options["rounds"])):
        probs = predict_proba(student.model, pool, device, precision=settings.mixed_precision)
        keep = np.flatnonzero(probs.max(1) > float(options["threshold"]))
        labels = torch.from_numpy(probs.argmax(1)[keep]).long()
        labelled = {"indices": keep.tolist(), "labels": labels.tolist()}
        if not len(keep):
            break  # nothing confident: the student would be this teacher again, run for run
        added = (pool[keep], labels)
        both = added if extra is None else (torch.cat([extra[0], added[0]]), torch.cat([extra[1], added[1]]))
        student = train_classifier(train_x, train_y, val_x, val_y, n_classes, settings, seed, steps_per_epoch,
                                   device, extra=both)
    student.images_seen["pseudo_labelled"] = len(labelled["indices"])
    return SemiResult(student, labelled)


@contextlib.contextmanager
def running_stats_kept(model: nn.Module):
    """Batch-norm running statistics (and counters) as they were before the block."""
    saved = [(b, b.detach().clone()) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             for b in m.buffers()]
    try:
        yield
    finally:
        for buffer, value in saved:
            buffer.copy_(value)


def mpl_step(teacher: nn.Module, student: nn.Module, t_opt, s_opt, xl, yl, xu_weak, xu_strong,
             options: dict, cast=contextlib.nullcontext) -> dict:
    """One Meta Pseudo Labels step on tensors already on the device; returns the logged losses.
    `cast()` wraps the forward passes (bf16 autocast where the settings ask for it)."""
    smoothing = float(options["label_smoothing"])
    with cast():
        t_logits = teacher(torch.cat([xl, xu_weak, xu_strong])).float()
    t_logits_l, t_logits_uw, t_logits_us = t_logits.split([len(xl), len(xu_weak), len(xu_strong)])
    t_loss_l = F.cross_entropy(t_logits_l, yl, label_smoothing=smoothing)
    soft = F.softmax(t_logits_uw.detach() / float(options["temperature"]), dim=1)
    mask = (soft.max(1).values >= float(options["uda_threshold"])).float()
    t_loss_uda = (-(soft * F.log_softmax(t_logits_us, dim=1)).sum(1) * mask).mean()
    hard = t_logits_us.detach().argmax(1)

    both = torch.cat([xl, xu_strong])
    with cast():
        s_logits = student(both).float()
    s_loss_l_old = F.cross_entropy(s_logits[: len(xl)].detach(), yl)
    s_loss = F.cross_entropy(s_logits[len(xl):], hard, label_smoothing=smoothing)
    s_opt.zero_grad(set_to_none=True)
    s_loss.backward()
    s_opt.step()
    # the reward pass sees the same batch composition as the step (batch-norm statistics of labelled +
    # unlabelled images), so the reward measures the update alone; it leaves the running statistics as they were
    with torch.no_grad(), cast(), running_stats_kept(student):
        s_loss_l_new = F.cross_entropy(student(both)[: len(xl)].float(), yl)
    reward = float(s_loss_l_old - s_loss_l_new)  # > 0: the pseudo-labels helped the student on labelled data
    t_loss_mpl = reward * F.cross_entropy(t_logits_us, hard)
    t_loss = t_loss_l + float(options["uda_weight"]) * t_loss_uda + t_loss_mpl
    t_opt.zero_grad(set_to_none=True)
    t_loss.backward()
    t_opt.step()
    return {"student_loss": float(s_loss.detach()), "teacher_loss": float(t_loss.detach()), "reward": reward,
            "uda_mask": float(mask.mean())}


def train_mpl(train_x, train_y, val_x, val_y, n_classes: int, settings: TrainSettings, seed: int,
              steps_per_epoch: int, device: str, pool: torch.Tensor, options: dict, extra=None,
              strong_policy: str = "randaugment") -> SemiResult:
    """Meta Pseudo Labels; the student (selected by epoch on validation) is the arm's classifier."""
    dev = resolve_device(device)
    torch.manual_seed(seed)
    size, channels = train_x.shape[-1], train_x.shape[1]
    # the steps protocol: as many epochs of the labelled images as the budget holds (the last ones
    # fine-tune the student), the rate scheduled per step over the whole budget
    epochs = settings.epochs if settings.steps is None else math.ceil(settings.steps / steps_per_epoch)
    total = epochs * steps_per_epoch
    teacher, t_opt, t_sched, t_frozen = build_training(settings, channels, n_classes, size, dev, total_steps=total)
    student, s_opt, s_sched, s_frozen = build_training(settings, channels, n_classes, size, dev, total_steps=total)
    weak = augmenter(settings, size)
    strong = strong_augmentation(size, settings.crop_padding, settings.hflip, strong_policy)
    labelled_x, labelled_y = ((train_x, train_y) if extra is None or not len(extra[0]) else
                              (torch.cat([train_x, extra[0]]), torch.cat([train_y, extra[1]])))
    order = torch.Generator().manual_seed(seed)
    l_stream, u_stream = Stream(len(labelled_x), order), Stream(len(pool), order)
    u_batch = int(options["unlabeled_batch"] or settings.batch_size)
    mpl_epochs = epochs - int(options["finetune_epochs"])
    selector = EpochSelector(val_x, val_y, device, settings.mixed_precision, settings.select_metric, n_classes)
    seen = {"real": 0, "extra": 0, "unlabeled": 0}

    def cast():
        return autocast(dev, settings.mixed_precision)

    def batch(images, augment):
        return to_model_range(torch.stack([augment(img) for img in images])).to(dev)

    for epoch in range(epochs):
        train_mode(teacher, t_frozen)
        train_mode(student, s_frozen)
        logged: dict[str, float] = {}
        for _ in range(steps_per_epoch):
            idx = l_stream.take(settings.batch_size)
            seen["extra"] += sum(1 for i in idx if i >= len(train_x))
            seen["real"] += sum(1 for i in idx if i < len(train_x))
            xl, yl = batch(labelled_x[idx], weak), labelled_y[idx].to(dev)
            if epoch < mpl_epochs:
                uidx = u_stream.take(u_batch)
                seen["unlabeled"] += len(uidx)
                losses = mpl_step(teacher, student, t_opt, s_opt, xl, yl, batch(pool[uidx], weak),
                                  batch(pool[uidx], strong), options, cast)
            else:  # the paper's last stage: the student fine-tuned on labelled images
                with cast():
                    logits = student(xl).float()
                loss = F.cross_entropy(logits, yl)
                s_opt.zero_grad(set_to_none=True)
                loss.backward()
                s_opt.step()
                losses = {"student_loss": float(loss)}
            s_sched.after_step()
            if epoch < mpl_epochs:
                t_sched.after_step()
            for key, value in losses.items():
                logged[key] = logged.get(key, 0.0) + value / steps_per_epoch
        s_sched.after_epoch()
        if epoch < mpl_epochs:
            t_sched.after_epoch()
        selector.after_epoch(student, {"train_loss": logged.pop("student_loss"), **logged})
    probs = predict_proba(teacher, pool, device, precision=settings.mixed_precision)
    labels = {"indices": list(range(len(pool))), "labels": probs.argmax(1).tolist()}
    return SemiResult(selector.finish(student, total, seen), labels, teacher.cpu(), probs)


def train_semi(method: str, *args, **kwargs) -> SemiResult:
    if method == "pseudo":
        kwargs.pop("strong_policy", None)
        return train_pseudo(*args, **kwargs)
    if method == "mpl":
        return train_mpl(*args, **kwargs)
    raise GenaugError(f"unknown semi-supervised method {method!r}; choose from {', '.join(METHODS)}")


def pseudo_label_accuracy(pseudo: dict, true: np.ndarray, classes: list[str], pool_size: int) -> dict:
    """Per class (by true label): how many pool images got a pseudo-label, and how many of those are right.
    A diagnostic: computed after training, never used for training or selection."""
    idx = np.asarray(pseudo["indices"], dtype=int)
    given = np.asarray(pseudo["labels"], dtype=int)
    out = {"labelled": len(idx), "pool": pool_size,
           "accuracy": float((true[idx] == given).mean()) if len(idx) else None, "per_class": {}}
    for label, name in enumerate(classes):
        in_class = true == label
        mine = true[idx] == label
        out["per_class"][name] = {"pool": int(in_class.sum()), "labelled": int(mine.sum()),
                                  "accuracy": float((given[mine] == label).mean()) if mine.any() else None}
    return out
