"""How much there is to gain, measured before any generator trains: the reference recipe at more
labelled images per class (`headroom@N`, `headroom@all`), and the positive control `+real@N`
(the reference recipe with N extra real labelled images per class added through the same share
and budget as a synthetic arm's: what a perfect generator would give).

Extra real images come from the source's train split outside the unit's labelled, validation and
test items and their patients (`data.unlabeled.candidates`), in one seeded order per class and
replicate, so the draws are nested: `+real@50`'s images are the first 50 of `headroom@200`'s.
A source without such images still gets a learning curve inside its labelled set (`headroom@N`
below the labelled count: a seeded share of each class's labelled training images). What the runs
say is read by `ceiling.py`.
"""

from __future__ import annotations

import numpy as np
import torch

from ...data.unlabeled import candidates
from ...errors import GenaugError
from ..design.spec import ExperimentSpec, Unit
from .unit_data import UnitData


def available_per_class(source, source_labels: list[int], per_class: int) -> int:
    """Labelled train-split images per class beyond a subset of `per_class` (before patients are kept apart)."""
    labels = np.asarray([int(y) for y in source.split("train").labels])
    return int(min((labels == k).sum() for k in source_labels)) - per_class


IMBALANCED = 1.5  # largest over smallest class count of the train split above which `all` is no ceiling


def default_headroom(source, source_labels: list[int], config: dict) -> list:
    """2x and 10x the labelled count per class where the source holds them (with half its extra images
    to spare, as keeping patients apart removes some), then the ceiling: all of the split where its
    classes are about balanced, else the most images per class a balanced draw leaves (a classifier on
    a split that is 74% one class leans towards it and loses balanced accuracy, as PneumoniaMNIST's
    headroom@all did); a learning curve inside the labelled set (25% and 50% of it) where the
    source holds no more."""
    n, left = int(config["per_class"]), available_per_class(source, source_labels, int(config["per_class"]))
    if left <= 0:
        return sorted({max(2, round(n * 0.25)), max(2, round(n * 0.5))} - {n})
    points = [k for k in (2 * n, 10 * n) if k - n <= left // 2]
    labels = np.asarray([int(y) for y in source.split("train").labels])
    counts = [int((labels == k).sum()) for k in source_labels]
    if max(counts) <= IMBALANCED * min(counts):
        return points + ["all"]
    top = n + left // 2
    return points + ([top] if not points or top > points[-1] else [])


def check_extra_real(source, source_labels: list[int], config: dict) -> None:
    """Refuse, before anything is written, a `+real@N` the source cannot serve."""
    if "real" not in config["controls"]:
        return
    want = max(config["synthetic_per_class"])
    left = available_per_class(source, source_labels, int(config["per_class"]))
    if want > left:
        raise GenaugError(f"the positive control +real@{want} needs {want} more labelled images per class than the "
                          f"subset, and the source's train split holds {max(left, 0)} more of its smallest class: "
                          "lower --synthetic-per-class, or drop real from --controls")


def extra_real(spec: ExperimentSpec, unit: Unit, data: UnitData, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `per_class` images of each class in the unit's seeded order of extra real images."""
    held = [] if data.manifest.get("validation") else data.val_items
    pool = candidates(spec.source, list(spec.source_labels), data.manifest, held)
    split = spec.source.split("train")
    label_of = {i: int(y) for i, y in zip(split.ids, split.labels)}
    rng = np.random.default_rng(spec.seeds(unit).of("real"))
    chosen, labels = [], []
    for k in spec.source_labels:
        ids = [i for i in pool if label_of[i] == k]
        order = rng.permutation(len(ids))
        if per_class > len(ids):
            raise GenaugError(f"{per_class} extra real images of class {spec.source.classes[k]!r} wanted, and "
                              f"{len(ids)} are left outside the labelled, validation and test items and their "
                              "patients")
        chosen += [ids[j] for j in order[:per_class]]
        labels += [k] * per_class
    if not chosen:
        return data.train_x[:0], data.train_y[:0]
    m = data.manifest
    loaded = spec.source.load("train", chosen, spec.image_size, m["fit"], m["intensity"])
    by_id = dict(zip(chosen, labels))
    return loaded.images, spec.positions(torch.tensor([by_id[i] for i in loaded.ids]))


def labelled_share(spec: ExperimentSpec, unit: Unit, data: UnitData, per_class: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """`per_class` of each class's labelled training images (a seeded draw): the learning curve's points."""
    g = torch.Generator().manual_seed(spec.seeds(unit).of("real"))
    keep = []
    for label in spec.labels:
        idx = torch.nonzero(data.train_y == label).flatten()
        keep += idx[torch.randperm(len(idx), generator=g)[:per_class]].tolist()
    keep = sorted(keep)
    return data.train_x[keep], data.train_y[keep]
