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

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Protocol

import torch

from . import semi
from ..classifiers.training import TrainedClassifier, TrainSettings, train_classifier
from .config import synthetic_sources


class RunInputs(Protocol):
    """What an arm may read to build its training data (`classifier_run.UnitInputs` gives it): the
    unit's data and config, a source's accepted images, the +dup draw, every real image, and the
    pseudo-label check of the `+pseudo` arm."""

    data: Any  # unit_data.UnitData

    @property
    def config(self) -> dict: ...

    def accepted(self, source: str, count: int): ...

    def duplicates(self): ...

    def full_real(self): ...

    def pseudo_label_check(self, pseudo: dict): ...


@dataclass(frozen=True)
class Arm:
    """The baseline: the real training part, classical augmentation, the shared classifier loop.
    Every other arm is a subclass that overrides only what it changes (its data, recipe, budget or
    fit); `kind` names its role in the report."""

    name: str
    kind: ClassVar[str] = "baseline"
    source: str | None = None  # synthetic set (generator family or external name)
    count: int | None = None  # synthetic images per class drawn (before acceptance)
    method: str | None = None  # semi-supervised method (pseudo, mpl) of a semi arm

    @property
    def slug(self) -> str:
        return self.name.replace("+", "plus-").replace("@", "-at-")

    def settings(self, base: TrainSettings, config: dict) -> TrainSettings:
        """The classifier recipe (the baseline's unless the arm changes it)."""
        return base

    def data(self, inputs: RunInputs) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None]:
        """(real images the arm trains on, extra images or None)."""
        return (inputs.data.train_x, inputs.data.train_y), None

    def steps_per_epoch(self, inputs: RunInputs, n_images: int, batch_size: int) -> int:
        """The baseline's budget, whatever the arm adds."""
        return inputs.data.steps_per_epoch

    def fit(self, inputs: RunInputs, args: tuple, extra) -> tuple[TrainedClassifier, dict | None]:
        """(the trained classifier, a diagnostic for the report or None): the shared classifier loop."""
        return train_classifier(*args, extra=extra), None


class StrongAugmentation(Arm):
    """baseline-strong: the same images, TrivialAugmentWide or RandAugment plus CutMix/MixUp."""

    kind = "control"

    def settings(self, base: TrainSettings, config: dict) -> TrainSettings:
        return replace(base, augment=config["strong_augment"], mix=bool(config["strong_mix"]))


class Duplicates(Arm):
    """+dup: as many extra images as the largest accepted synthetic set, drawn from the real training part."""

    kind = "control"

    def data(self, inputs):
        return (inputs.data.train_x, inputs.data.train_y), inputs.duplicates()


class Synthetic(Arm):
    """+<source>: the accepted images of a generator family or an external set."""

    kind = "synthetic"

    def data(self, inputs):
        return (inputs.data.train_x, inputs.data.train_y), inputs.accepted(self.source, self.count)


class SemiSupervised(Arm):
    """+pseudo, +mpl, +mpl+<source>: unlabelled real images through semi.py (with a source's accepted
    images added to the labelled set for +mpl+<source>); the pseudo-label check is its diagnostic."""

    kind = "semi"

    def data(self, inputs):
        return (inputs.data.train_x, inputs.data.train_y), inputs.accepted(self.source, self.count) if self.source else None

    def fit(self, inputs, args, extra):
        c = inputs.config
        outcome = semi.train_semi(self.method, *args, pool=inputs.data.pool, options=c["semi_settings"],
                                  extra=extra, strong_policy=c["strong_augment"])
        return outcome.trained, inputs.pseudo_label_check(outcome.pseudo_labels)


class Ceiling(Arm):
    """full-real: every real training image of the split, trained the baseline's epochs over its own data."""

    kind = "ceiling"

    def data(self, inputs):
        return inputs.full_real(), None

    def steps_per_epoch(self, inputs, n_images, batch_size):
        return math.ceil(n_images / batch_size)


def plan_arms(config: dict) -> list[Arm]:
    """The arms of an experiment, in report order."""
    arms: list[Arm] = [Arm("baseline")]
    arms += [StrongAugmentation("baseline-strong")] if "baseline-strong" in config["controls"] else []
    counts = config["synthetic_per_class"]
    sources = list(synthetic_sources(config))
    if "dup" in config["controls"]:
        arms.append(Duplicates("+dup"))
    for source in sources:
        for count in counts:
            name = f"+{source}" if len(counts) == 1 else f"+{source}@{count}"
            arms.append(Synthetic(name, source, count))
    for method in config["semi"]:
        arms.append(SemiSupervised(f"+{method}", method=method))
    if "mpl" in config["semi"]:
        arms += [SemiSupervised(f"+mpl+{source}", source, max(counts), method="mpl") for source in sources]
    if config["full_real"]:
        arms.append(Ceiling("full-real"))
    return arms
