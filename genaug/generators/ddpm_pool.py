"""Diffusion models that learn from the unlabelled pool too (Ktena et al. 2024; You et al. 2023):

- `ddpm-semi`: the class-conditional DDPM (ddpm_conditional.py) trained on the labelled images with
  their labels and the pool's images with the null label; `pool_share` of every batch comes from
  the pool. Classifier-free guidance as in `ddpm-cond`.
- `ddpm-pseudo`: the same, with the pool labelled first by a teacher trained on the labelled images:
  an image whose top class probability is above `teacher_threshold` takes the teacher's label, the
  rest the null label (`pool_labels`).
- `ddpm-finetune`: an unconditional DDPM pretrained on the pool and the labelled images together
  (`pretrain_steps`, drawn uniformly from both), then one fine-tune per class on that class's
  labelled images alone (`steps`), each starting from the pretrained weights (`load_weights`).

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
    default_config = {**ConditionalDDPM.default_config, "pool_share": 0.5, "teacher_threshold": 0.95}


class FinetuneDDPM(DDPM):
    family = "ddpm-finetune"
    uses_pool = True
    default_config = {**DDPM.default_config, "pretrain_steps": 2000}

    def load_weights(self, model_folder: Path) -> None:
        """Start from a trained DDPM's weights (the EMA weights its model folder holds)."""
        pretrained = UNet2DModel.from_pretrained(Path(model_folder) / "unet")
        missing = self.unet.load_state_dict(pretrained.state_dict(), strict=False)
        if missing.missing_keys or missing.unexpected_keys:
            raise GenaugError(f"{model_folder} holds a DDPM of another shape than this ddpm-finetune config")
