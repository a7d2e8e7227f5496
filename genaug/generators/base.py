"""The one small interface every generator family implements (the families are listed in registry.py).

A family trains on real images in [-1, 1] (one class), saves a final model folder that its own
library can read back (diffusers' `from_pretrained`), and samples images in [-1, 1] from one
`torch.Generator` per image, so image i depends only on its own seed, not on the batch it was
drawn in.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..errors import GenaugError

def base_size(image_size: int) -> tuple[int, int]:
    """(s0, k) with image_size = s0 * 2**k, 3 <= s0 <= 7: the start size of up-sampling stacks."""
    s, k = image_size, 0
    while s > 7 and s % 2 == 0:
        s, k = s // 2, k + 1
    if not 3 <= s <= 7 or k < 2:
        raise GenaugError(f"image size {image_size} is not s0 * 2^k with 3 <= s0 <= 7, k >= 2")
    return s, k


class GenerativeModel(ABC):
    """A generator family: build, train step, save, load, sample."""

    family: ClassVar[str]
    default_config: ClassVar[dict[str, Any]]
    ddp_kwargs: ClassVar[dict[str, Any]] = {}  # DistributedDataParallel options under `accelerate launch`
    # A conditional family trains one model on every class: `train_step(..., labels=)` gets each
    # image's class (0..K-1) and `sample(..., labels=, guidance=)` draws the asked classes.
    conditional: ClassVar[bool] = False
    # A pool family also trains on unlabelled images (ddpm_pool.py): the Trainer's `pool`.
    uses_pool: ClassVar[bool] = False
    # A multi-label family is conditioned on label sets: `labels` are 0/1 vectors (ddpm_multilabel.py).
    multilabel: ClassVar[bool] = False
    # An edit family turns real images into variants (SDEdit, ddpm_pool.EditDDPM) instead of drawing new ones.
    edits: ClassVar[bool] = False
    # A family that fine-tunes a DDPM pretrained on the pool (`pretrain_steps`; ddpm_pool.py), trained
    # once per experiment or per replicate by the harness, once per run by `genaug train`.
    starts_from_pretrained: ClassVar[bool] = False

    def __init__(self, config: dict[str, Any], channels: int, image_size: int):
        self.config = {**self.default_config, **(config or {})}
        self.channels, self.image_size = channels, image_size

    @abstractmethod
    def prepare(self, accelerator, n_train: int) -> None:
        """Build optimizers and hand models/optimizers to `accelerator`; register extra state."""

    @abstractmethod
    def train_step(self, batch: torch.Tensor, rng: torch.Generator, step: int, accelerator) -> dict[str, float]:
        """One optimisation step on a batch in [-1, 1]; returns the losses to log."""

    @abstractmethod
    def sample(self, generators: list[torch.Generator], sampler: str | None = None,
               steps: int | None = None) -> torch.Tensor:
        """One image in [-1, 1] per generator (N x C x S x S)."""

    @abstractmethod
    def save_pretrained(self, folder: Path, accelerator=None) -> None:
        """Write the model for sampling (for DDPM: the EMA weights) into `folder`."""

    @classmethod
    @abstractmethod
    def from_pretrained(cls, folder: Path, config: dict[str, Any], channels: int, image_size: int,
                        device: torch.device) -> "GenerativeModel":
        """Rebuild a model written by `save_pretrained`, ready to sample."""

    def late_checkpoint_state(self) -> list:
        """Objects to checkpoint that a family gained after genaug 0.1 (registered after the run's own
        state, so older checkpoints keep their numbering)."""
        return []

    def sampling_mode(self):
        """Context in which `sample` runs during training (e.g. EMA weights swapped in)."""
        return contextlib.nullcontext()


class EMAOnDevice:
    """The EMA as a checkpointed object whose loaded weights land on the training device.

    accelerate loads custom states with `map_location="cpu"` and `EMAModel.load_state_dict`
    adopts the loaded tensors, so after a resume on a GPU the shadow weights would stay on the CPU
    and the next `ema.step` would mix devices.
    """

    def __init__(self, ema, device: torch.device):
        self.ema, self.device = ema, device

    def state_dict(self) -> dict:
        return self.ema.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.ema.load_state_dict(state)
        self.ema.to(self.device)


@contextlib.contextmanager
def ema_weights(ema, module: torch.nn.Module):
    """Inside the block `module` holds the EMA weights; afterwards its own weights, exactly."""
    params = list(bare(module).parameters())
    ema.store(params)
    ema.copy_to(params)
    try:
        yield
    finally:
        ema.restore(params)


def bare(module: torch.nn.Module) -> torch.nn.Module:
    """The network inside DistributedDataParallel (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while True:
        inner = getattr(module, "module", None) or getattr(module, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            return module
        module = inner


def latents(generators: list[torch.Generator], shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Standard normal draws, one per generator (drawn on the CPU so every device agrees)."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device)
