"""Diffusion models that learn from the unlabelled pool too (Ktena et al. 2024; You et al. 2023):

- `ddpm-semi`: the class-conditional DDPM (ddpm_conditional.py) trained on the labelled images with
  their labels and the pool's images with the null label; `pool_share` of every batch comes from
  the pool. Classifier-free guidance as in `ddpm-cond`.
- `ddpm-pseudo`: the same, with the pool labelled first by a teacher trained on the labelled images:
  an image whose top class probability is above `teacher_threshold` takes the teacher's label, the
  rest the null label (`pool_labels`); with `pool_balance` (default) each of those labels has an equal
  share of the pool's part of every batch, whatever the pool's class balance.
- `ddpm-finetune`: an unconditional DDPM pretrained on the pool and the labelled images together
  (`pretrain_steps`, drawn uniformly from both), then one fine-tune per class on that class's
  labelled images alone (`steps`), each starting from the pretrained weights (`load_weights`).
- `ddpm-finetune-cond`: the same pretrained model, fine-tuned once as a class-conditional DDPM on
  every labelled image (its class embedding starts at zero, so the fine-tune starts from the
  pretrained network's function): one model for many classes, sampled with guidance.
- `ddpm-edit`: that conditional fine-tune, used to edit real images (SDEdit, `DDPM.edit`): each labelled image
  noised to a strength from `strengths` and denoised towards its own class, `variants` per image
  (DA-Fusion, Trabucco et al. 2024).

The Trainer takes the pool beside the labelled images (`pool`, and for the conditional two
`pool_labels`, -1 for "no label").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import UNet2DModel

from ..errors import GenaugError
from .ddpm import DDPM
from .ddpm_conditional import ConditionalDDPM


def _fraction(name: str, value) -> float:
    """A number strictly between 0 and 1, or a one-line refusal naming the setting."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not 0 < number < 1:
        raise GenaugError(f"{name} must be a number between 0 and 1 (got {value!r})")
    return number


def check_pool_size(size: int, batch_size: int) -> None:
    if size < batch_size:
        raise GenaugError(f"the unlabelled pool has {size} images, fewer than a batch ({batch_size}): "
                          "give more (--unlabeled) or a smaller --batch-size")


def check_share(share) -> float:
    return _fraction("pool_share", share)


def check_threshold(threshold) -> float:
    return _fraction("teacher_threshold", threshold)


def pool_labels(probs: np.ndarray, threshold: float) -> torch.Tensor:
    """The teacher's label where its top probability is above `threshold`, else -1 (the null label)."""
    probs = np.asarray(probs)
    labels = probs.argmax(1)
    return torch.from_numpy(np.where(probs.max(1) > check_threshold(threshold), labels, -1)).long()


class SemiDDPM(ConditionalDDPM):
    family = "ddpm-semi"
    uses_pool = True
    default_config = {**ConditionalDDPM.default_config, "pool_share": 0.5}


class PseudoDDPM(ConditionalDDPM):
    family = "ddpm-pseudo"
    uses_pool = True
    # pool_balance: each teacher label (and the null label) an equal share of the pool's part of a batch, so
    # a pool that is 75% one class does not pull the other classes' images towards it
    default_config = {**ConditionalDDPM.default_config, "pool_share": 0.5, "teacher_threshold": 0.95,
                      "pool_balance": True}


class FinetuneDDPM(DDPM):
    family = "ddpm-finetune"
    uses_pool = True
    starts_from_pretrained = True
    default_config = {**DDPM.default_config, "pretrain_steps": 2000}

    def load_weights(self, model_folder: Path) -> None:
        """Start from a trained DDPM's weights (the EMA weights its model folder holds)."""
        pretrained = UNet2DModel.from_pretrained(Path(model_folder) / "unet")
        missing = self.unet.load_state_dict(pretrained.state_dict(), strict=False)
        if missing.missing_keys or missing.unexpected_keys:
            raise GenaugError(f"{model_folder} holds a DDPM of another shape than this ddpm-finetune config")


def check_strengths(strengths) -> list[float]:
    """Edit strengths: a non-empty list of numbers in [0, 1]."""
    values = strengths if isinstance(strengths, (list, tuple)) else str(strengths).split(",")
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        out = []
    if not out or any(not 0 <= v <= 1 for v in out):
        raise GenaugError(f"edit strengths must be numbers in [0, 1] (got {strengths!r})")
    return out


def check_variants(variants) -> int:
    try:
        number = int(variants)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or str(variants).strip() != str(number):
        raise GenaugError(f"variants per real image must be a whole number >= 1 (got {variants!r})")
    return number


class ConditionalFinetuneDDPM(ConditionalDDPM):
    """One class-conditional fine-tune of the pool-pretrained DDPM on every labelled image, where
    ddpm-finetune trains one model per class: with many classes one model, each class's few images
    helping the others', at the cost of one fine-tune instead of K. Sampled from noise with
    classifier-free guidance as `ddpm-cond`."""

    family = "ddpm-finetune-cond"
    uses_pool = True  # its pretraining; the conditional fine-tune sees the labelled images alone
    starts_from_pretrained = True
    default_config = {**ConditionalDDPM.default_config, "pretrain_steps": 2000}

    def load_weights(self, model_folder: Path) -> None:
        """Start from the pretrained unconditional DDPM: every weight but the class embedding, which
        starts at zero so that the conditional network begins as the pretrained one."""
        pretrained = UNet2DModel.from_pretrained(Path(model_folder) / "unet")
        result = self.unet.load_state_dict(pretrained.state_dict(), strict=False)
        if result.unexpected_keys or any(not k.startswith("class_embedding") for k in result.missing_keys):
            raise GenaugError(f"{model_folder} holds a DDPM of another shape than this {self.family} config")
        with torch.no_grad():
            self.unet.class_embedding.weight.zero_()


class EditDDPM(ConditionalFinetuneDDPM):
    """The conditional fine-tune of `ddpm-finetune-cond`, used to edit real images (SDEdit)."""

    family = "ddpm-edit"
    edits = True
    default_config = {**ConditionalFinetuneDDPM.default_config, "variants": 10, "strengths": [0.25, 0.5, 0.75, 1.0]}

    def __init__(self, config, channels, image_size):
        super().__init__(config, channels, image_size)
        check_strengths(self.config["strengths"])
        check_variants(self.config["variants"])
