"""Unlabelled real images for the semi-supervised arms: a seeded draw from the source's train split
outside every labelled, validation and test item (and outside their patients), or a separate folder.

Labels never leave this module with the images: `UnlabeledPool` holds pixels and ids only. The
true labels of a pool drawn from a labelled source are looked up separately (`true_labels`), for
the pseudo-label accuracy diagnostic alone. The pool is recorded in the replicate's manifest
(`unlabeled`: ids and content hashes, no labels) and reloaded from there, so a re-run trains on
exactly the same images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import GenaugError
from ..io import sha256_file
from .images import match_channels
from .imagesets import image_files, load_image_folder
from .sources import Source


@dataclass
class UnlabeledPool:
    images: torch.Tensor  # uint8 N x C x S x S
    ids: list


def parse_count(value) -> int | str | None:
    """`--unlabeled N`, `all`, or nothing."""
    if value is None or str(value).strip().lower() in ("", "none", "0"):
        return None
    if str(value).strip().lower() == "all":
        return "all"
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise GenaugError(f"unlabeled must be a whole number of images or all (got {value!r})") from None
    if n < 1:
        raise GenaugError(f"unlabeled must be at least 1 (got {n})")
    return n


def candidates(source: Source, class_indices: list[int], manifest: dict, held_items: list[dict]) -> list:
    """`held_items`: train-split items held out of the manifest's train block (a validation carve).
    Train-split items of the experiment's classes that are neither labelled, validation nor test
    items, and share no patient with any of them. (Class membership only decides which images are
    in scope, as a team's unlabelled scans come from the same clinical question.)"""
    train = source.split("train")
    group_of = train.group_of()
    # ids name items within one split (an array source numbers each split from 0): only train-split blocks
    same_split = [manifest["train"]["items"], held_items]
    if manifest.get("validation", {}).get("split") == "train":
        same_split.append(manifest["validation"]["items"])
    every = same_split + [manifest["test"]["items"]] + ([manifest["validation"]["items"]]
                                                        if manifest.get("validation") else [])
    used = {it["id"] for block in same_split for it in block}
    used_groups = {it["group"] for block in every for it in block if "group" in it}  # patients, across splits
    return [i for i, y in zip(train.ids, train.labels)
            if int(y) in class_indices and i not in used and group_of.get(i, object()) not in used_groups]


def shared_candidates(source: Source, class_indices: list[int], manifests: list[dict], carved: list[list[dict]]
                      ) -> list:
    """Train-split items of the experiment's classes that no replicate validates or tests on and that
    share no patient with such an item: what a model trained once for every replicate may see (a
    replicate's labelled images are other replicates' unlabelled ones, so they stay). `carved`: per
    replicate, the validation items carved from its train-split subset (their ids name train items)."""
    train = source.split("train")
    group_of = train.group_of()
    held = {it["id"] for items in carved for it in items}
    blocks = [m["test"]["items"] for m in manifests] + [m["validation"]["items"] for m in manifests
                                                        if m.get("validation")] + list(carved)
    groups = {it["group"] for block in blocks for it in block if "group" in it}
    return [i for i, y in zip(train.ids, train.labels)
            if int(y) in class_indices and i not in held and group_of.get(i, object()) not in groups]


def draw_unlabeled(source: Source, class_indices: list[int], count: int | str, seed: int, manifest: dict,
                   held_items: list[dict]) -> tuple[UnlabeledPool, dict]:
    """A seeded draw of `count` (or all) candidate items, converted with the manifest's recorded rule;
    returns the pool and its manifest block."""
    pool = candidates(source, class_indices, manifest, held_items)
    want = len(pool) if count == "all" else int(count)
    if want > len(pool) or not pool:
        raise GenaugError(f"--unlabeled {count}: only {len(pool)} train images of {source.spec} are left outside "
                          "the labelled, validation and test items (and their patients)")
    order = np.random.default_rng(seed * 7_919 + 17).permutation(len(pool))[:want]
    ids = [pool[i] for i in sorted(order)]
    loaded = source.load("train", ids, manifest["image_size"], manifest["fit"], manifest["intensity"])
    block = {"split": "train", "count": len(loaded.ids),
             "items": [{"id": i, "sha256": h} for i, h in zip(loaded.ids, loaded.hashes)]}
    return UnlabeledPool(loaded.images, list(loaded.ids)), block


def folder_files(folder: str | Path) -> list[Path]:
    """The image files of an `--unlabeled-data` folder; a one-line error when there are none."""
    folder = Path(folder)
    files = image_files(folder) if folder.is_dir() else []
    if not files:
        raise GenaugError(f"--unlabeled-data {folder}: " + ("no images in it" if folder.is_dir() else "folder not found"))
    return files


def folder_pool(folder: str | Path, manifest: dict) -> tuple[UnlabeledPool, dict]:
    """Every image directly in `folder` (`--unlabeled-data`), at the run's size, channels and intensity rule."""
    files = folder_files(folder)
    images = load_image_folder(folder, manifest["image_size"], manifest["fit"], manifest["intensity"])
    images = torch.stack([match_channels(img, manifest["channels"]) for img in images])
    block = {"folder": str(folder), "count": len(files),
             "items": [{"id": f.name, "sha256": sha256_file(f)} for f in files]}
    return UnlabeledPool(images, [f.name for f in files]), block


def reload_unlabeled(source: Source, manifest: dict) -> UnlabeledPool:
    """The recorded pool again; refuses if an image changed since it was drawn."""
    block = manifest["unlabeled"]
    if "folder" in block:
        pool, now = folder_pool(block["folder"], manifest)
        if now["items"] != block["items"]:
            raise GenaugError(f"--unlabeled-data {block['folder']} changed since this experiment recorded it; "
                              "use the images as they were, or start a new --out")
        return pool
    ids = [it["id"] for it in block["items"]]
    loaded = source.load("train", ids, manifest["image_size"], manifest["fit"], manifest["intensity"])
    if list(loaded.hashes) != [it["sha256"] for it in block["items"]]:
        raise GenaugError(f"unlabelled items of {source.spec} changed since this experiment recorded them")
    return UnlabeledPool(loaded.images, list(loaded.ids))


def true_labels(source: Source, ids: list) -> np.ndarray:
    """The withheld labels of pool items drawn from the source (for the diagnostic only)."""
    train = source.split("train")
    label_of = dict(zip(train.ids, train.labels))
    return np.array([int(label_of[i]) for i in ids])
