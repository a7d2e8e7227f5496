"""The arms of an experiment: what each adds to the real training part, and how it trains.

Every arm shares the optimizer-step budget, the scored model's rule and the classifier seeds;
only its data or augmentation differs, so its difference to the reference is what that
difference causes:
- `baseline`: the real training part, classical augmentation (crops, small rotations).
- `baseline-strong`: the same images, strong augmentation (TrivialAugmentWide or RandAugment, plus
  CutMix/MixUp): the reference of the primary contrast (`reference`).
- `+<name>`: the real training part plus the accepted images of a generator family or an external
  set (`+<name>@<count>` when several synthetic counts are compared), entering every batch at
  `synthetic_share` and trained with the reference's augmentation (`synthetic_augment: strong`).
- `+dup` (one synthetic arm) or `+dup:<arm>` (several): real training images drawn with
  replacement, per class as many as that arm's accepted images, at the same share and recipe: does
  the generator beat "more images" alone?
- `+real@N` (control `real`): N extra real labelled images per class from outside the subset
  (`headroom.py`), at the same share and recipe: the positive control, what a perfect generator
  gives.
- `headroom@N`, `headroom@all`: the reference recipe on N labelled images per class (or every one
  of the split): the learning curve and its ceiling, measured before any generator.
- `+pseudo`, `+mpl`, `+mpl+<name>` (with `semi`): unlabelled real images through pseudo-labelling
  or Meta Pseudo Labels (`semi.py`).
- `full-real` (opt-in): every real training image of the split, the baseline's recipe.
- `share-<s>:+<source>` and `share-<s>:+dup:<source>` (`share_dose`): a synthetic arm and its matched
  duplicates at another share of every batch: the dose-response over the share, secondary (outside the
  decision family; names that do not start with `+`, so `verdict.augmented` leaves them out).
Folders from before 0.2 (`reference` unset) keep their arms: one `+dup` as large as the largest
accepted set, added images in proportion to their count, classical augmentation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Protocol

import torch

from ...classifiers import semi
from ...classifiers.training import TrainedClassifier, TrainSettings
from .config import HEADROOM_MAX_SCALE, synthetic_sources


class RunInputs(Protocol):
    """What an arm may read to build its training data (`classifier_run.UnitInputs` gives it, per label
    kind): the unit's data and config, a source's accepted images, the +dup draw, every real image, the
    pseudo-label check of the `+pseudo` arm, and the label kind's classifier loop."""

    data: Any  # unit_data.UnitData

    @property
    def config(self) -> dict: ...

    def accepted(self, source: str, count: int): ...

    def duplicates(self): ...

    def full_real(self): ...

    def matched_duplicates(self, source: str, count: int): ...

    def extra_real(self, per_class: int): ...

    def headroom_data(self, per_class: int | None): ...

    def pseudo_label_check(self, pseudo: dict): ...

    def train(self, args: tuple, extra) -> TrainedClassifier: ...


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
    share: float | None = None  # the added images' share of every batch, where it is not the experiment's

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

    def budget(self, settings: TrainSettings, n_images: int, n_subset: int, config: dict) -> TrainSettings:
        """The step budget: the baseline's, whatever the arm adds."""
        return settings

    def fit(self, inputs: RunInputs, args: tuple, extra) -> tuple[TrainedClassifier, dict | None]:
        """(the trained classifier, a diagnostic for the report or None): the shared classifier loop,
        with the label kind's loss and metrics."""
        return inputs.train(args, extra), None


def strong(base: TrainSettings, config: dict) -> TrainSettings:
    """The reference recipe's augmentation: TrivialAugmentWide or RandAugment, plus CutMix/MixUp (not
    with the CR loss, which needs hard labels)."""
    return replace(base, augment=config["strong_augment"], mix=bool(config["strong_mix"]) and base.loss != "cr")


class StrongAugmentation(Arm):
    """baseline-strong: the same images, TrivialAugmentWide or RandAugment plus CutMix/MixUp."""

    kind = "control"

    def settings(self, base: TrainSettings, config: dict) -> TrainSettings:
        return strong(base, config)


class Adding(Arm):
    """An arm that adds images: trained with the reference's augmentation unless
    `synthetic_augment: classical` (and in folders from before 0.2)."""

    def settings(self, base: TrainSettings, config: dict) -> TrainSettings:
        settings = strong(base, config) if config.get("synthetic_augment") == "strong" else base
        return settings if self.share is None else replace(settings, synthetic_share=self.share)


class Duplicates(Adding):
    """+dup: real training images drawn with replacement, matched per class to one synthetic arm's
    accepted set (`source`, `count`), or as large as the largest accepted set (folders before 0.2)."""

    kind = "control"

    def data(self, inputs):
        extra = inputs.duplicates() if self.source is None else inputs.matched_duplicates(self.source, self.count)
        return (inputs.data.train_x, inputs.data.train_y), extra


class ExtraReal(Adding):
    """+real@N: N extra real labelled images per class from outside the subset: the positive control."""

    kind = "positive"

    def data(self, inputs):
        return (inputs.data.train_x, inputs.data.train_y), inputs.extra_real(self.count)


class Headroom(Arm):
    """headroom@N: the reference recipe on N labelled images per class (all: the whole split)."""

    kind = "headroom"

    def settings(self, base: TrainSettings, config: dict) -> TrainSettings:
        return strong(base, config) if config.get("reference") == "baseline-strong" else base

    def data(self, inputs):
        return inputs.headroom_data(self.count), None

    def budget(self, settings, n_images, n_subset, config):
        """With `headroom_steps: scaled`, steps x (its images / the subset's), between 1x and HEADROOM_MAX_SCALE x."""
        return replace(settings, steps=headroom_steps(settings.steps, n_images, n_subset, config))


def headroom_steps(steps: int | None, n_images: int, n_subset: int, config: dict) -> int | None:
    if steps is None or config.get("headroom_steps", "same") != "scaled":
        return steps
    return round(steps * min(max(n_images / max(n_subset, 1), 1.0), HEADROOM_MAX_SCALE))


class Synthetic(Adding):
    """+<source>: the accepted images of a generator family or an external set."""

    kind = "synthetic"

    def data(self, inputs):
        return (inputs.data.train_x, inputs.data.train_y), inputs.accepted(self.source, self.count)


class ShareDose(Synthetic):
    """share-<s>:+<source>: a synthetic arm at another share of every batch (`share_dose`)."""

    kind = "share-dose"


class ShareDoseDuplicates(Duplicates):
    """share-<s>:+dup:<source>: that arm's matched duplicates (the same draw) at the same share."""

    kind = "share-dose"


def share_dose_names(share: float, arm: str) -> tuple[str, str]:
    """The names of a synthetic arm (`+<source>`) and of its matched +dup at another share."""
    return f"share-{share:g}:{arm}", f"share-{share:g}:+dup:{arm[1:]}"


def share_dose_arms(config: dict, synthetic: list[Synthetic]) -> list[Arm]:
    """Per source of `share_dose` and share: its arm at the largest synthetic count, and its +dup."""
    arms: list[Arm] = []
    dose, count = config.get("share_dose") or {}, max(config["synthetic_per_class"])
    for arm in (a for a in synthetic if a.source in dose and a.count == count):
        for share in dose[arm.source]:
            name, dup = share_dose_names(share, arm.name)
            arms.append(ShareDose(name, arm.source, count, share=share))
            if "dup" in config["controls"]:
                arms.append(ShareDoseDuplicates(dup, arm.source, count, share=share))
    return arms


class SemiSupervised(Adding):
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


def headroom_arms(config: dict) -> list[Arm]:
    """The headroom stage's arms: the learning curve's sizes per class, and the positive control."""
    sizes = config.get("headroom") if isinstance(config.get("headroom"), list) else []  # auto: resolved later
    arms: list[Arm] = [Headroom(f"headroom@{n}", count=None if n == "all" else int(n)) for n in sizes]
    if "real" in config["controls"] and config.get("reference") is not None:
        arms.append(ExtraReal(f"+real@{max(config['synthetic_per_class'])}", count=max(config["synthetic_per_class"])))
    return arms


def plan_arms(config: dict, sources: list[str] | None = None) -> list[Arm]:
    """The arms of an experiment, in report order; `sources`: the synthetic sets where the label kind
    names them (a label-set generator's targeted source), else those of the config."""
    arms: list[Arm] = [Arm("baseline")]
    arms += [StrongAugmentation("baseline-strong")] if "baseline-strong" in config["controls"] else []
    arms += headroom_arms(config)
    counts = config["synthetic_per_class"]
    sources = list(synthetic_sources(config)) if sources is None else sources
    synthetic = [Synthetic(f"+{source}" if len(counts) == 1 else f"+{source}@{count}", source, count)
                 for source in sources for count in counts]
    if "dup" in config["controls"]:
        if config.get("reference") is None or not synthetic:  # before 0.2, or no synthetic arm: one +dup
            arms.append(Duplicates("+dup", count=None if synthetic else max(counts)))
        else:
            arms += [Duplicates("+dup" if len(synthetic) == 1 else f"+dup:{a.name[1:]}", a.source, a.count)
                     for a in synthetic]
    arms += synthetic
    for method in config["semi"]:
        arms.append(SemiSupervised(f"+{method}", method=method))
    if "mpl" in config["semi"]:
        arms += [SemiSupervised(f"+mpl+{source}", source, max(counts), method="mpl") for source in sources]
    if config["full_real"]:
        arms.append(Ceiling("full-real"))
    return arms + share_dose_arms(config, synthetic)
