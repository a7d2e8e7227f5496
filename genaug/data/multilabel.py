"""The multi-label training subset of a source (a label file read by `label_files.py`): drawn over
patients (`multilabel_splits.py`), decoded, recorded in a manifest with each item's findings, and
reloaded from that manifest, refused if an image changed."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import GenaugError
from .intensity import IntensityRule
from .multilabel_splits import draw_positives, draw_total
from .sources import open_source
from .subsets import MANIFEST_FORMAT


def draw_subset(source, per_label: int | None, seed: int, image_size: int, fit: str = "crop", intensity=None,
                total: int | None = None):
    """The labelled training subset of a multi-label source: at least `per_label` positives of every
    label and as many images without one (whole patients; every train image with None), or about
    `total` images stratified over patients (`draw_total`), decoded, and its manifest (each item's
    labels by name, what the draw took, the test split's members)."""
    train = source.split("train")
    if total is not None:
        picked, took = draw_total(train.labels, train.groups, int(total), seed)
    elif per_label is None:
        picked, took = np.arange(len(train.ids)), {"images": len(train.ids), "per_label": None}
    else:
        picked, took = draw_positives(train.labels, train.groups, int(per_label), seed)
    ids = [train.ids[i] for i in picked]
    loaded = source.load("train", ids, image_size, fit, IntensityRule.parse(intensity))
    labels = train.labels[picked]

    def names(row):
        return [n for n, v in zip(source.classes, row) if v]

    def item(i, k):
        row = {"id": train.ids[i], "labels": names(train.labels[i])}
        return {**row, **({"group": train.groups[i]} if train.groups else {}), **k}

    test = source.split("test")
    manifest = {
        "format": MANIFEST_FORMAT, "source": source.spec, "kind": source.kind, "multilabel": True,
        "classes": source.classes, "selected_classes": source.classes, "channels": source.channels,
        "image_size": image_size, "fit": fit, "intensity": loaded.intensity.to_dict(),
        "split_origin": source.split_origin, "split_options": source.options(),
        "ungrouped_files": len(source.ungrouped), "seed": seed, "per_class": per_label, "took": took,
        "train": {"split": "train", "count": len(ids), "skipped_bad": 0,
                  "items": [item(i, {"sha256": h}) for i, h in zip(picked, loaded.hashes)]},
        "test": {"split": "test", "count": len(test.ids),
                 "items": [{"id": i, "labels": names(row),
                            **({"group": g} if test.groups else {})}
                           for i, row, g in zip(test.ids, test.labels, test.groups or [None] * len(test.ids))]},
    }
    return loaded.images, torch.from_numpy(labels.astype(np.int64)), manifest


def load_split(source, split: str, image_size: int, fit: str = "crop", intensity=None):
    """Every image of a multi-label source's split, decoded with a recorded size, fit and intensity rule, and
    its N x L 0/1 labels (int64)."""
    part = source.split(split)
    loaded = source.load(split, list(part.ids), image_size, fit, intensity)
    return loaded.images, torch.from_numpy(np.asarray(part.labels, dtype=np.int64))


def training_label_sets(manifest: dict, n: int, seed: int) -> list[list[str]]:
    """`n` label sets drawn (seeded, with replacement) from a run's training items: the training
    part's own distribution of findings, the empty set included."""
    sets = [it["labels"] for it in manifest["train"]["items"]]
    order = np.random.default_rng(seed).integers(len(sets), size=n)
    return [list(sets[i]) for i in order]


def reload_subset(manifest: dict, data_root=None, source=None):
    """The recorded multi-label subset again (images, 0/1 label vectors), refused if an image changed."""
    source = source or open_source(manifest["source"], data_root, **manifest.get("split_options", {}))
    items = manifest["train"]["items"]
    loaded = source.load("train", [it["id"] for it in items], manifest["image_size"], manifest["fit"],
                         manifest["intensity"])
    changed = [it["id"] for it, h in zip(items, loaded.hashes) if it["sha256"] != h]
    if changed:
        raise GenaugError(f"{len(changed)} image(s) of this run changed since it was drawn, e.g. {changed[0]}")
    names = manifest["classes"]
    labels = torch.zeros(len(items), len(names), dtype=torch.int64)
    for i, it in enumerate(items):
        labels[i, [names.index(n) for n in it["labels"]]] = 1
    return loaded.images, labels
