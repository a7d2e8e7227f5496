"""Scarce real subsets and the manifest that pins them.

`--per-class N` draws a seeded subset of each class from the source's train split. The
manifest (JSON in the run folder) names every drawn item with a content hash and its group,
lists the test (and validation) split's members, and records how pixels were converted (fit,
intensity rule and window). Every later step that names the run reloads exactly those images
with the same conversion, and refuses if the classes, the items or the split membership changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import GenaugError
from ..io import read_json
from .images import check_fit
from .intensity import IntensityRule, Raw, convert
from .sources import Source, open_source

MANIFEST_FORMAT = "genaug-manifest/2"
MANIFEST_NAME = "manifest.json"


@dataclass
class RealImages:
    """Decoded real images with their labels (indices into `classes`) and groups (patients) if known."""

    images: torch.Tensor  # uint8 N x C x S x S
    labels: torch.Tensor  # int64 N
    classes: list[str]
    ids: list
    groups: list[str] | None = None

    def of_class(self, label: int) -> torch.Tensor:
        return self.images[self.labels == label]


def _subset_seed(seed: int, label: int) -> int:
    return seed * 1_000_003 + label


def draw_subset(source: Source, class_indices: list[int], per_class: int | None, seed: int,
                image_size: int, skip_bad: bool = False, fit: str = "crop",
                intensity: "IntensityRule | str | dict | None" = None, split: str = "train"
                ) -> tuple[RealImages, dict]:
    """Draw the scarce train subset; returns the images and the manifest describing them.

    A `dataset` intensity rule is fitted here, on the whole drawn subset, and recorded: every
    later load of this run (test images included) reuses that window.
    """
    fit = check_fit(fit)
    train = source.split(split)
    raws, labels, ids, hashes = [], [], [], []
    skipped = 0
    for label in class_indices:
        pool = train.of_class(label)
        name = source.classes[label]
        if not pool:
            raise GenaugError(f"class {name!r} has no images in the {split} split of {source.spec}")
        if per_class is not None and per_class > len(pool):
            raise GenaugError(f"--per-class {per_class} exceeds the {len(pool)} {split} images of class {name!r}")
        order = np.random.default_rng(_subset_seed(seed, label)).permutation(len(pool))
        repeats = source.repeats.get(split, ())  # a later copy of an image is never a second item
        order = np.asarray([i for i in order if pool[i] not in repeats], dtype=np.int64)
        want = per_class or len(pool)
        kept: list = []
        cursor = 0
        while len(kept) < want and cursor < len(order):
            batch = [pool[i] for i in order[cursor: cursor + want - len(kept)]]
            cursor += len(batch)
            got, ok, digests = source.decode(split, batch, image_size, fit, skip_bad)
            got = [Raw(img) for img in got] if isinstance(got, torch.Tensor) else got
            skipped += len(batch) - len(ok)
            raws += got
            kept += ok
            hashes += digests
        if per_class is not None and len(kept) < want:
            raise GenaugError(f"class {name!r} has only {len(kept)} readable {split} images; {want} requested")
        if not kept:
            raise GenaugError(f"class {name!r} has no readable {split} images")
        labels += [label] * len(kept)
        ids += kept
    images, rule = convert(raws, intensity)
    group_of = train.group_of()
    items = [{"id": i, "label": y, "class": source.classes[y], "sha256": h, **_group_field(group_of, i)}
             for i, y, h in zip(ids, labels, hashes)]
    manifest = {
        "format": MANIFEST_FORMAT,
        "source": source.spec,
        "kind": source.kind,
        "classes": source.classes,
        "selected_classes": [source.classes[c] for c in class_indices],
        "channels": source.channels,
        "image_size": image_size,
        "fit": fit,
        "intensity": rule.to_dict(),
        "split_origin": source.split_origin,
        "split_options": source.options(),
        **({"copies": source.copies} if source.copies else {}),
        "ungrouped_files": len(source.ungrouped),
        "seed": seed,
        "per_class": per_class,
        "train": {"split": split, "count": len(items), "skipped_bad": skipped, "items": items},
        "test": {"split": "test", **_split_items(source, "test", class_indices)},
    }
    if "val" in source.splits:
        manifest["val"] = {"split": "val", **_split_items(source, "val", class_indices)}
    groups = [group_of[i] for i in ids] if group_of else None
    real = RealImages(images, torch.tensor(labels, dtype=torch.int64), source.classes, ids, groups)
    return real, manifest


def _group_field(group_of: dict, item) -> dict:
    return {"group": group_of[item]} if group_of else {}


def _split_items(source: Source, split: str, class_indices: list[int]) -> dict:
    """Membership of a split for the selected classes: id, class, group of every item (never trained on)."""
    s = source.split(split)
    group_of = s.group_of()
    items = [{"id": i, "class": source.classes[int(y)], **_group_field(group_of, i)}
             for i, y in zip(s.ids, s.labels) if int(y) in class_indices]
    return {"count": len(items), "items": items}


def class_manifest(manifest: dict, class_name: str | list[str], train_items: list[dict] | None = None,
                   **extra) -> dict:
    """The manifest of a generator run: the training (and test) items of one class (or of the
    listed classes, for a class-conditional run) only."""
    names = [class_name] if isinstance(class_name, str) else list(class_name)
    items = [it for it in (manifest["train"]["items"] if train_items is None else train_items)
             if it["class"] in names]
    out = {**manifest, "selected_classes": names,
           "train": {**manifest["train"], "count": len(items), "items": items}, **extra}
    for split in ("test", "val"):
        if split in manifest:
            kept = [it for it in manifest[split]["items"] if it["class"] in names]
            out[split] = {**manifest[split], "count": len(kept), "items": kept}
    return out


def load_manifest(run_dir: str | Path) -> dict:
    path = Path(run_dir) / MANIFEST_NAME
    if not path.exists():
        raise GenaugError(f"no {MANIFEST_NAME} in {run_dir}: not a genaug run folder")
    manifest = read_json(path)
    if manifest.get("format") != MANIFEST_FORMAT:
        raise GenaugError(f"{path} is not a {MANIFEST_FORMAT} manifest (made by an older genaug?); "
                          "train or run it again in a new folder")
    return manifest


def open_manifest_source(manifest: dict, data_root: str | Path | None = None) -> Source:
    """The manifest's source, opened with the options (groups, test fraction) it was split with."""
    return open_source(manifest["source"], data_root, **manifest.get("split_options", {}))


def verify_source(manifest: dict, source: Source) -> None:
    """Refuse, with a clear message, a source whose classes or split membership changed."""
    where = manifest["source"]
    if list(source.classes) != list(manifest["classes"]):
        raise GenaugError(f"the classes of {where} changed since the manifest was written: "
                          f"were {', '.join(manifest['classes'])}; now {', '.join(source.classes)}")
    selected = [source.classes.index(c) for c in manifest["selected_classes"]]
    for split in ("test", "val"):
        if split not in manifest:
            continue
        if split not in source.splits:
            raise GenaugError(f"{where} no longer has a {split} split; the manifest lists {manifest[split]['count']} "
                              f"{split} items")
        now = _split_items(source, split, selected)["items"]
        old_ids, now_ids = {it["id"] for it in manifest[split]["items"]}, {it["id"] for it in now}
        if old_ids != now_ids or now != manifest[split]["items"]:
            added, removed = sorted(map(str, now_ids - old_ids)), sorted(map(str, old_ids - now_ids))
            detail = ", ".join(filter(None, [f"{len(added)} added (e.g. {added[0]})" if added else "",
                                             f"{len(removed)} removed (e.g. {removed[0]})" if removed else ""]))
            raise GenaugError(f"the {split} split of {where} changed since the manifest was written "
                              f"({detail or 'classes or patients of its items changed'}); results would mix "
                              "training and test images. Use the data as it was, or start a new run folder")
    train = source.split("train")
    label_of = dict(zip(train.ids, train.labels))
    for it in manifest["train"]["items"]:
        if it["id"] not in label_of:
            raise GenaugError(f"training item {it['id']} of {where} is no longer in its train split "
                              "(moved, renamed or removed since the manifest was written)")
        if source.classes[int(label_of[it["id"]])] != it["class"]:
            raise GenaugError(f"training item {it['id']} of {where} changed class since the manifest was written")


def reload_subset(manifest: dict, data_root: str | Path | None = None, source: Source | None = None,
                  block: str = "train") -> tuple[Source, RealImages]:
    """Reload exactly the manifest's drawn items (`train`, or `validation` when drawn from a val
    split); refuse if the data, classes or splits changed."""
    source = source or open_manifest_source(manifest, data_root)
    verify_source(manifest, source)
    items = manifest[block]["items"]
    ids = [it["id"] for it in items]
    loaded = source.load(manifest[block]["split"], ids, manifest["image_size"], manifest["fit"],
                         manifest["intensity"])
    for it, digest in zip(items, loaded.hashes):
        if digest != it["sha256"]:
            raise GenaugError(f"item {it['id']} of {manifest['source']} changed since the manifest was written")
    labels = torch.tensor([it["label"] for it in items], dtype=torch.int64)
    groups = [it["group"] for it in items] if items and "group" in items[0] else None
    return source, RealImages(loaded.images, labels, source.classes, ids, groups)


def load_split(source: Source, split: str, class_indices: list[int], image_size: int,
               skip_bad: bool = False, fit: str = "crop", intensity: "IntensityRule | str | dict | None" = None
               ) -> RealImages:
    """All items of the given classes in one split (e.g. the test split, for evaluation only).

    Pass the run's recorded intensity rule, so test images get the training subset's window.
    """
    s = source.split(split)
    mask = np.isin(s.labels, class_indices)
    ids = [i for i, m in zip(s.ids, mask) if m]
    loaded = source.load(split, ids, image_size, fit, intensity, skip_bad=skip_bad)
    label_of, group_of = dict(zip(s.ids, s.labels)), s.group_of()
    labels = torch.tensor([int(label_of[i]) for i in loaded.ids], dtype=torch.int64)
    groups = [group_of[i] for i in loaded.ids] if group_of else None
    return RealImages(loaded.images, labels, source.classes, loaded.ids, groups)
