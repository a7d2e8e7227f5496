"""Scarce real subsets and the manifest that pins them.

`--per-class N` draws a seeded subset of each class from the source's train split. The
manifest (JSON in the run folder) names every drawn item with a content hash, so every later
step that names the run reloads exactly those images, and refuses if the data changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import GenaugError
from ..io import read_json, sha256_bytes
from .sources import Source, open_source

MANIFEST_FORMAT = "genaug-manifest/1"
MANIFEST_NAME = "manifest.json"


@dataclass
class RealImages:
    """Decoded real images with their labels (indices into `classes`)."""

    images: torch.Tensor  # uint8 N x C x S x S
    labels: torch.Tensor  # int64 N
    classes: list[str]
    ids: list

    def of_class(self, label: int) -> torch.Tensor:
        return self.images[self.labels == label]


def _subset_seed(seed: int, label: int) -> int:
    return seed * 1_000_003 + label


def draw_subset(source: Source, class_indices: list[int], per_class: int | None, seed: int,
                image_size: int, skip_bad: bool = False) -> tuple[RealImages, dict]:
    """Draw the scarce train subset; returns the images and the manifest describing them."""
    train = source.split("train")
    images, labels, items, ids = [], [], [], []
    skipped = 0
    for label in class_indices:
        pool = train.of_class(label)
        name = source.classes[label]
        if not pool:
            raise GenaugError(f"class {name!r} has no images in the train split of {source.spec}")
        if per_class is not None and per_class > len(pool):
            raise GenaugError(f"--per-class {per_class} exceeds the {len(pool)} train images of class {name!r}")
        order = np.random.default_rng(_subset_seed(seed, label)).permutation(len(pool))
        want = per_class or len(pool)
        got: list[torch.Tensor] = []
        kept: list = []
        cursor = 0
        while len(kept) < want and cursor < len(order):
            batch = [pool[i] for i in order[cursor: cursor + want - len(kept)]]
            cursor += len(batch)
            imgs, ok = source.load("train", batch, image_size, skip_bad=skip_bad)
            skipped += len(batch) - len(ok)
            if ok:
                got.append(imgs)
                kept += ok
        if per_class is not None and len(kept) < want:
            raise GenaugError(f"class {name!r} has only {len(kept)} readable train images; {want} requested")
        if not kept:
            raise GenaugError(f"class {name!r} has no readable train images")
        images.append(torch.cat(got))
        labels += [label] * len(kept)
        ids += kept
        items += [{"id": i, "label": label, "class": name, "sha256": source.item_hash("train", i)} for i in kept]
    test = source.split("test")
    manifest = {
        "format": MANIFEST_FORMAT,
        "source": source.spec,
        "kind": source.kind,
        "classes": source.classes,
        "selected_classes": [source.classes[c] for c in class_indices],
        "channels": source.channels,
        "image_size": image_size,
        "split_origin": source.split_origin,
        "seed": seed,
        "per_class": per_class,
        "train": {"split": "train", "count": len(items), "skipped_bad": skipped, "items": items},
        "test": {"split": "test", "count": len(test.ids), "ids_sha256": sha256_bytes(repr(test.ids).encode())},
    }
    real = RealImages(torch.cat(images), torch.tensor(labels, dtype=torch.int64), source.classes, ids)
    return real, manifest


def load_manifest(run_dir: str | Path) -> dict:
    path = Path(run_dir) / MANIFEST_NAME
    if not path.exists():
        raise GenaugError(f"no {MANIFEST_NAME} in {run_dir}: not a genaug run folder")
    manifest = read_json(path)
    if manifest.get("format") != MANIFEST_FORMAT:
        raise GenaugError(f"{path} is not a genaug manifest")
    return manifest


def reload_subset(manifest: dict, data_root: str | Path | None = None,
                  source: Source | None = None) -> tuple[Source, RealImages]:
    """Reload exactly the manifest's train items; refuse if any item's content changed."""
    source = source or open_source(manifest["source"], data_root)
    items = manifest["train"]["items"]
    ids = [it["id"] for it in items]
    for it in items:
        if source.item_hash("train", it["id"]) != it["sha256"]:
            raise GenaugError(f"item {it['id']} of {manifest['source']} changed since the manifest was written")
    images, _ = source.load("train", ids, manifest["image_size"])
    labels = torch.tensor([it["label"] for it in items], dtype=torch.int64)
    return source, RealImages(images, labels, source.classes, ids)


def load_split(source: Source, split: str, class_indices: list[int], image_size: int,
               skip_bad: bool = False) -> RealImages:
    """All items of the given classes in one split (e.g. the test split, for evaluation only)."""
    s = source.split(split)
    mask = np.isin(s.labels, class_indices)
    ids = [i for i, m in zip(s.ids, mask) if m]
    images, kept = source.load(split, ids, image_size, skip_bad=skip_bad)
    label_of = dict(zip(s.ids, s.labels))
    labels = torch.tensor([int(label_of[i]) for i in kept], dtype=torch.int64)
    return RealImages(images, labels, source.classes, kept)
