"""The arms of an experiment: what each adds to the real training part, and how it trains.

Every arm shares the optimizer-step budget, epoch selection on the real validation part and the
classifier seeds; only its data or augmentation differs, so its difference to the baseline is
what that difference causes:
- `baseline`: the real training part, classical augmentation (crops, small rotations).
- `baseline-strong`: the same images, strong classical augmentation (TrivialAugmentWide or
  RandAugment, plus CutMix/MixUp): does a generator beat what augmentation alone gives?
- `+dup`: the real training part plus as many extra images as the largest accepted synthetic
  set, drawn (with replacement, then augmented) from the real training part itself: does a
  generator beat "more images" alone?
- `+<name>`: the real training part plus the accepted images of a generator family or of an
  external set (`+<name>@<count>` when several synthetic counts are compared).
- `+pseudo`, `+mpl`, `+mpl+<name>` (with `semi`): the real training part plus unlabelled real
  images through pseudo-labelling or Meta Pseudo Labels (`semi.py`), the last with a source's
  accepted synthetic images added to the labelled set.
- `full-real` (opt-in): every real training image of the split, the ceiling.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from .classifier import TrainSettings
from .config import synthetic_sources

if TYPE_CHECKING:  # pragma: no cover
    from .replicate import Replicate


@dataclass(frozen=True)
class Arm:
    name: str
    kind: str  # baseline | control | synthetic | semi | ceiling
    source: str | None = None  # synthetic set (generator family or external name)
    count: int | None = None  # synthetic images per class drawn (before acceptance)
    method: str | None = None  # semi-supervised method (pseudo, mpl) of a semi arm

    @property
    def slug(self) -> str:
        return self.name.replace("+", "plus-").replace("@", "-at-")

    def settings(self, base: TrainSettings, config: dict) -> TrainSettings:
        if self.name == "baseline-strong":
            return replace(base, augment=config["strong_augment"], mix=bool(config["strong_mix"]))
        return base

    def data(self, rep: "Replicate") -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None]:
        """(real images the arm trains on, extra images or None)."""
        if self.kind == "ceiling":
            return rep.full_real(), None
        if self.name == "+dup":
            return (rep.train_x, rep.train_y), rep.duplicates()
        if self.kind == "synthetic" or (self.kind == "semi" and self.source):
            return (rep.train_x, rep.train_y), rep.accepted_at(self.source, self.count)
        return (rep.train_x, rep.train_y), None


def plan_arms(config: dict) -> list[Arm]:
    """The arms of an experiment, in report order."""
    arms = [Arm("baseline", "baseline")]
    arms += [Arm("baseline-strong", "control")] if "baseline-strong" in config["controls"] else []
    counts = config["synthetic_per_class"]
    sources = list(synthetic_sources(config))
    if "dup" in config["controls"]:
        arms.append(Arm("+dup", "control"))
    for source in sources:
        for count in counts:
            name = f"+{source}" if len(counts) == 1 else f"+{source}@{count}"
            arms.append(Arm(name, "synthetic", source, count))
    for method in config["semi"]:
        arms.append(Arm(f"+{method}", "semi", method=method))
    if "mpl" in config["semi"]:
        arms += [Arm(f"+mpl+{source}", "semi", source, max(counts), method="mpl") for source in sources]
    if config["full_real"]:
        arms.append(Arm("full-real", "ceiling"))
    return arms
