"""Real image sources behind one data spec.

A spec is one of
- a folder `ROOT/<class>/**` of images, subfolders included (or `ROOT/{train,val,test}/<class>/**`
  with its own split);
- a label file `labels.csv` with columns `path,label` and optional `group,split` (paths
  relative to the CSV), so labels need not come from folder names;
- a MedMNIST-style `.npz` (`train_images`, `train_labels`, optional `val_*`, `test_*`), or
  `medmnist:NAME` resolved as `DATA_ROOT/NAME.npz` (downloaded when missing and online);
- `cifar10` (torchvision's layout under DATA_ROOT, downloaded when missing and online);
- `fashion-mnist` (Debian's `/usr/share/datasets/fashion-mnist/`, else torchvision's download).

Sources hold item ids only (array indices or relative paths) until `load` decodes the
requested items (files in parallel threads, each read once: the same bytes are hashed and
decoded), so listing classes and counts stays cheap. Splits: see `splits.py`.
"""

from __future__ import annotations

import gzip
import os
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..errors import GenaugError
from ..io import sha256_bytes, sha256_file
from .images import (READABLE_SUFFIXES, check_fit, decode_bytes, fit_square, is_gray_content, probe_channels,
                     resize_center_crop)
from . import label_files
from .intensity import IntensityRule, Raw, array_to_raw, convert, is_unit_float
from .copies import check_copies, merge_groups, pixel_key
from .multilabel_splits import SPLIT_SEED, stratified_split
from .splits import DEFAULT_TEST_FRACTION, groups_from_paths, hash_split

DEFAULT_DATA_ROOT = Path(os.environ.get("GENAUG_DATA_ROOT", Path.home() / ".cache" / "genaug" / "data"))
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_FOLDER_SIZE = 64

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
# Class names of MedMNIST files (by file stem), as published by MedMNIST v2.
MEDMNIST_CLASSES = {
    "pneumoniamnist": ["normal", "pneumonia"],
    "octmnist": ["CNV", "DME", "DRUSEN", "NORMAL"],
    "breastmnist": ["malignant", "benign"],
    "bloodmnist": ["basophil", "eosinophil", "erythroblast", "immature granulocytes",
                   "lymphocyte", "monocyte", "neutrophil", "platelet"],
    "dermamnist": ["actinic keratoses", "basal cell carcinoma", "benign keratosis", "dermatofibroma",
                   "melanoma", "melanocytic nevi", "vascular lesions"],
    "retinamnist": ["grade 0", "grade 1", "grade 2", "grade 3", "grade 4"],
}
MEDMNIST_URL = "https://zenodo.org/records/10519652/files/{name}.npz?download=1"


@dataclass
class Split:
    """The items of one split: ids (array indices or paths relative to the root), labels, groups."""

    ids: list
    labels: np.ndarray
    groups: list[str] | None = None

    def of_class(self, label: int) -> list:
        return [i for i, y in zip(self.ids, self.labels) if y == label]

    def group_of(self) -> dict:
        return dict(zip(self.ids, self.groups)) if self.groups is not None else {}


class Loaded(NamedTuple):
    """Decoded items: uint8 N x C x S x S, the ids actually loaded, their content hashes, the intensity rule used."""

    images: torch.Tensor
    ids: list
    hashes: list[str]
    intensity: IntensityRule


def decode_workers() -> int:
    """Threads for decoding files: $GENAUG_WORKERS, else every core."""
    return max(1, int(os.environ.get("GENAUG_WORKERS", 0)) or os.cpu_count() or 1)


class Source:
    """Common face of every source: classes, channels, splits, and `load`."""

    spec: str
    kind: str
    classes: list[str]
    channels: int
    native_size: int | None
    splits: dict[str, Split]
    split_origin: str  # "source" or a description of the hash split
    group_by: str | None = None
    test_fraction: float = DEFAULT_TEST_FRACTION
    ungrouped: list[str] = []  # files the --group-by pattern did not match (each its own group)
    unused: list[str] = []  # top-level folders the source does not read (named by `genaug datasets`)
    layout: str = ""  # how a folder's top level was read (`genaug datasets` says it)
    copies: dict | None = None  # byte-identical copies found and what was done (copies.py)
    repeats: dict = {}  # per split: items that repeat an earlier item's content (left out of draws)
    split_folders: dict | None = None  # --split-folders: {folder name: split}
    given_split: str = "use"  # ignore: a given split re-split by patient (and copy); drop-copies: copies.py
    copies_at: tuple | None = None  # (size or None, fit): copies compared by their pixels at the model's size
    multilabel: bool = False  # labels are N x L 0/1 (label_files.py), not one class per image
    label_columns: dict | None = None

    def class_index(self, name: str | int) -> int:
        """Resolve a class given by name (exact, then case-insensitive) or by index."""
        name = str(name)
        if name in self.classes:
            return self.classes.index(name)
        lowered = [c.lower() for c in self.classes]
        if name.lower() in lowered:
            return lowered.index(name.lower())
        if name.isdigit() and int(name) < len(self.classes):
            return int(name)
        raise GenaugError(f"unknown class {name!r} in {self.spec}; known classes: {', '.join(self.classes)}")

    def resolve_classes(self, selection: str) -> list[int]:
        """`all`, one class, or a comma-separated list, by name or index."""
        if selection.strip().lower() == "all":
            return list(range(len(self.classes)))
        return [self.class_index(part.strip()) for part in selection.split(",")]

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise GenaugError(f"{self.spec} has no split {name!r}; it has: {', '.join(self.splits)}")
        return self.splits[name]

    def default_size(self) -> int:
        return self.native_size or DEFAULT_FOLDER_SIZE

    def options(self) -> dict:
        """What, beside the spec, determines this source's splits (recorded in manifests)."""
        out = {"group_by": self.group_by, "test_fraction": self.test_fraction}
        if self.given_split != "use":  # recorded only where it differs: older manifests reopen unchanged
            out["given_split"] = self.given_split
        if self.label_columns:
            out["label_columns"] = self.label_columns
        if self.split_folders:
            out["split_folders"] = self.split_folders
        if self.copies_at:
            out["copies_at"] = list(self.copies_at)
        return out

    def content_keys(self, split: str | None, ids: list) -> list[str]:
        """What copies are compared on (copies.py): each file's bytes, or with `copies_at` its pixels
        after conversion to the model's size, so two encodings of one image are copies too."""
        size, fit = self.copies_at or (None, None)
        if not self.copies_at or int(size or self.default_size()) == self.native_size:  # arrays at the model's size
            return [self.item_hash(split, i) for i in ids]
        keys: dict = {}
        for start in range(0, len(ids), 512):  # a chunk at a time: a folder of large scans stays small in memory
            chunk = ids[start:start + 512]
            raws, kept, _ = self.decode(split, chunk, int(size or self.default_size()), check_fit(fit), True)
            keys.update(zip(kept, map(pixel_key, raws)))
        return [keys.get(i, f"unreadable:{i}") for i in ids]

    def load(self, split: str, ids: list, image_size: int | None = None, fit: str = "crop",
             intensity: "IntensityRule | str | dict | None" = None, skip_bad: bool = False) -> Loaded:
        """Decode items to uint8 at `image_size`; a `dataset` intensity rule without a window is fitted on them."""
        size = image_size or self.default_size()
        raws, kept, hashes = self.decode(split, ids, size, check_fit(fit), skip_bad)
        if isinstance(raws, torch.Tensor):  # an 8-bit batch already: no second copy
            rule = IntensityRule.parse(intensity)
            return Loaded(rule.finish(raws), kept, hashes, rule)
        if not raws:
            empty = torch.empty((0, self.channels, size, size), dtype=torch.uint8)
            return Loaded(empty, kept, hashes, IntensityRule.parse(intensity))
        images, rule = convert(raws, intensity)
        return Loaded(images, kept, hashes, rule)

    def decode(self, split: str, ids: list, size: int, fit: str, skip_bad: bool
               ) -> tuple["list[Raw] | torch.Tensor", list, list[str]]:
        """Raw pixels fitted to size x size (or one uint8 batch when all are 8-bit), the ids decoded,
        and their content hashes."""
        raise NotImplementedError

    def item_hash(self, split: str, item) -> str:
        raise NotImplementedError


def _hash_split(ids: list, labels: np.ndarray, groups: list[str] | None, test_fraction: float,
                classes: list[str], group_by: str | None) -> tuple[dict[str, Split], str]:
    tr, te = hash_split(ids, labels, groups, test_fraction, classes)

    def pick(pos):
        return Split([ids[i] for i in pos], labels[pos], [groups[i] for i in pos] if groups is not None else None)

    unit = f"patient (--group-by {group_by})" if groups is not None else "item"
    return {"train": pick(tr), "test": pick(te)}, f"hash of each {unit}, {test_fraction:.0%} test"


class ArraySource(Source):
    """Images already in memory as arrays (npz files, IDX files, torchvision datasets).

    uint8 arrays pass unchanged; a float array whose values all lie in [0, 1] is scaled by 255;
    any other dtype (uint16, int16, float) keeps its values for the intensity rule.
    """

    def __init__(self, spec: str, kind: str, arrays: dict[str, tuple[np.ndarray, np.ndarray]],
                 classes: list[str] | None, test_fraction: float = DEFAULT_TEST_FRACTION, given_split: str = "use",
                 copies_at: tuple | None = None):
        self.spec, self.kind, self.test_fraction = spec, kind, test_fraction
        self.given_split, self.copies_at = check_given_split(given_split), copies_at
        self.arrays = {}
        for split, (images, labels) in arrays.items():
            images = np.asarray(images)
            if images.ndim == 4 and images.shape[-1] == 1:
                images = images[..., 0]
            if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
                raise GenaugError(f"{spec}: {split} images have shape {images.shape}; "
                                  "expected N x H x W (grayscale) or N x H x W x 3 (colour)")
            labels = np.asarray(labels)
            if labels.ndim == 2 and labels.shape[1] == 1:
                labels = labels[:, 0]
            if labels.ndim != 1 or len(labels) != len(images):
                raise GenaugError(f"{spec}: {split} labels have shape {labels.shape}; expected one "
                                  f"integer label per image ({len(images)}); multi-label sets are not supported")
            if is_unit_float(images):
                images = np.rint(images.astype(np.float64) * 255.0).astype(np.uint8)
            elif images.dtype != np.uint8:
                images = np.asarray(array_to_raw(images, unit_floats=False))  # checks dtype and finiteness
            self.arrays[split] = (images, labels.astype(np.int64))
        first = next(iter(self.arrays.values()))[0]
        self.channels = 1 if first.ndim == 3 else 3
        self.native_size = int(first.shape[1]) if first.shape[1] == first.shape[2] else None
        n_classes = int(max(lab.max() for _, lab in self.arrays.values())) + 1
        self.classes = classes if classes and len(classes) >= n_classes else [str(i) for i in range(n_classes)]
        self.split_origin = "source"
        if "test" in self.arrays and self.given_split == "ignore":  # one pool, split again with copies kept together
            self.arrays = {"train": tuple(np.concatenate([self.arrays[s][k] for s in ("train", "val", "test")
                                                          if s in self.arrays]) for k in (0, 1))}
        if "test" not in self.arrays:
            images, labels = self.arrays["train"]
            ids = list(range(len(labels)))
            groups = (merge_groups(None, self.content_keys("train", ids), [str(i) for i in ids])
                      if self.given_split == "ignore" else None)
            self.splits, self.split_origin = _hash_split(ids, labels, groups, test_fraction, self.classes, None)
            self.arrays["test"] = self.arrays["train"]
        else:
            self.splits = {s: Split(list(range(len(lab))), lab) for s, (_, lab) in self.arrays.items()}

    def decode(self, split, ids, size, fit, skip_bad):
        images = self.arrays[split][0][np.asarray(ids, dtype=np.int64)]
        t = torch.from_numpy(np.ascontiguousarray(images))
        t = t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2)
        if t.dtype == torch.uint8 and (fit == "crop" or t.shape[-1] == t.shape[-2]):
            raws = resize_center_crop(t.contiguous(), size)
        elif fit == "crop" or t.shape[-1] == t.shape[-2]:
            raws = [Raw(img) for img in resize_center_crop(t.contiguous(), size)]
        else:
            raws = [Raw(fit_square(img, size, fit)) for img in t]
        return raws, list(ids), [self.item_hash(split, i) for i in ids]

    def item_hash(self, split, item):
        return sha256_bytes(self.arrays[split][0][int(item)].tobytes())


class FileSource(Source):
    """Image files under a root, each with a label, an optional group and an optional given split."""

    native_size = None

    def __init__(self, root: Path, spec: str, kind: str, items: list[tuple[str, int, str | None, str | None]],
                 classes: list[str], group_by: str | None, test_fraction: float, given_split: str = "use",
                 copies_at: tuple | None = None):
        self.root, self.spec, self.kind, self.classes = root, spec, kind, classes
        self.group_by, self.test_fraction, self.given_split = group_by, test_fraction, check_given_split(given_split)
        self.copies_at = copies_at
        paths = [it[0] for it in items]
        self.channels = _source_channels([root / p for p in paths])
        regex_groups, self.ungrouped = groups_from_paths(paths, group_by)
        given = [it[2] for it in items]
        has_groups = regex_groups is not None or any(g for g in given)
        groups = ([g or (regex_groups[i] if regex_groups else f"file:{paths[i]}") for i, g in enumerate(given)]
                  if has_groups else None)
        labels = np.array([it[1] for it in items], dtype=np.int64)
        split_of = [it[3] if self.given_split != "ignore" else None for it in items]
        if any(split_of):
            if not all(split_of):
                raise GenaugError(f"{spec}: some items name a split and some do not; give every item a split "
                                  "(train, val or test) or none")
            _check_groups_disjoint(split_of, groups, spec)
            self.splits = {}
            for name in ("train", "val", "test"):
                pos = [i for i, sp in enumerate(split_of) if sp == name]
                if pos:
                    self.splits[name] = Split([paths[i] for i in pos], labels[pos],
                                              [groups[i] for i in pos] if groups is not None else None)
            if "train" not in self.splits or "test" not in self.splits:
                raise GenaugError(f"{spec}: a given split needs both train and test items")
            self.split_origin = "source"
        else:
            if self.given_split == "ignore":  # copies of one image are kept together, as a patient's images are
                groups = merge_groups(groups, self.content_keys(None, paths), [f"file:{p}" for p in paths])
            self.splits, self.split_origin = _hash_split(paths, labels, groups, test_fraction, classes, group_by)

    def decode(self, split, ids, size, fit, skip_bad):
        def one(item):
            path = self.root / item
            try:
                data = path.read_bytes()
            except OSError as e:
                raise GenaugError(f"cannot read image {path}: {e.strerror or e}") from None
            raw = decode_bytes(data, path, self.channels)
            return Raw(fit_square(raw.pixels, size, fit), raw.invert), sha256_bytes(data)

        raws, kept, hashes = [], [], []
        with ThreadPoolExecutor(decode_workers()) as pool:
            futures = [pool.submit(one, item) for item in ids]
            for item, future in zip(ids, futures):
                try:
                    raw, digest = future.result()
                except GenaugError:
                    if skip_bad:
                        continue
                    for f in futures:
                        f.cancel()
                    raise
                raws.append(raw)
                kept.append(item)
                hashes.append(digest)
        return raws, kept, hashes

    def item_hash(self, split, item):
        return sha256_file(self.root / item)


def _check_groups_disjoint(split_of: list[str], groups: list[str] | None, spec: str) -> None:
    if groups is None:
        return
    where: dict[str, set[str]] = {}
    for sp, g in zip(split_of, groups):
        where.setdefault(g, set()).add(sp)
    shared = sorted(g for g, s in where.items() if len(s) > 1)
    if shared:
        raise GenaugError(f"{spec}: {len(shared)} patient(s) appear in more than one of the given splits "
                          f"(e.g. {shared[0]!r}); that leaks patients into the test split. Add --given-split ignore "
                          "to let genaug split the same files by patient (nothing moves), or fix the split")


def _source_channels(paths: list[Path]) -> int:
    """1 when every file is grayscale: by header, or, in a folder that mixes modes, by content."""
    with ThreadPoolExecutor(decode_workers()) as pool:
        probed = list(pool.map(probe_channels, paths))
    colour = [p for p, c in zip(paths, probed) if c == 3]
    if not colour:
        return 1
    if len(colour) == sum(c is not None for c in probed):
        return 3  # a colour data set: no need to decode anything to know
    with ThreadPoolExecutor(decode_workers()) as pool:
        return 1 if all(pool.map(is_gray_content, colour)) else 3


DEBRIS = {"__macosx", "thumbs.db", "desktop.ini"}  # what archives and operating systems leave beside the images


def _debris(name: str) -> bool:
    """Hidden files and folders (.DS_Store, ._*, .ipynb_checkpoints) and archive or OS leftovers."""
    return name.startswith(".") or name.lower() in DEBRIS


def _list_images(folder: Path) -> list[Path]:
    """Image files in `folder` and its subfolders (hidden files, folders and debris skipped), sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in READABLE_SUFFIXES
                  and not any(_debris(part) for part in p.relative_to(folder).parts))


# folder names read as a given split, matched case-insensitively
SPLIT_NAMES = {"train": ("train", "training"), "val": ("val", "valid", "validation", "dev"),
               "test": ("test", "testing")}
VAL_NAMES = SPLIT_NAMES["val"]


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _debris(p.name))


def _unwrap(root: Path) -> Path:
    """A downloaded archive's wrapping folders (`chest_xray/chest_xray/...`): while a folder holds no
    image of its own and one subfolder that itself holds folders, read that subfolder."""
    while True:
        subs = _subfolders(root)
        own = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in READABLE_SUFFIXES and not _debris(p.name)]
        if len(subs) != 1 or own or not _subfolders(subs[0]):
            return root
        root = subs[0]


def parse_split_folders(value) -> dict[str, str] | None:
    """`NAME=train,NAME=test[,NAME=val]` (or a mapping) to {folder name: split}."""
    if value in (None, "", {}):
        return None
    pairs = value.items() if isinstance(value, dict) else (
        item.split("=", 1) if "=" in item else (item, "") for item in str(value).split(",") if item.strip())
    out = {}
    for name, split in pairs:
        name, split = str(name).strip(), str(split).strip().lower()
        if not name or split not in SPLIT_NAMES:
            raise GenaugError(f"--split-folders {value!r}: write FOLDER=train,FOLDER=test (and FOLDER=val), "
                              "one folder per split")
        out[name] = split
    if sorted(set(out.values())) not in (["test", "train"], ["test", "train", "val"]) or len(out) != len(set(out.values())):
        raise GenaugError(f"--split-folders {value!r}: name one folder for train, one for test, and optionally "
                          "one for val")
    return out


def _split_layout(root: Path, split_folders: dict[str, str] | None) -> tuple[dict, list[str], str]:
    """{split or None: folder}, the top-level folders not read, and how the layout was read."""
    subdirs = {p.name: p for p in _subfolders(root)}
    if split_folders:
        missing = [n for n in split_folders if n not in subdirs]
        if missing:
            raise GenaugError(f"--split-folders names {missing[0]!r}, which is not a folder of {root} "
                              f"(it has {', '.join(sorted(subdirs)) or 'none'})")
        dirs = {split: subdirs[name] for name, split in split_folders.items()}
    else:
        dirs = {}
        for split, names in SPLIT_NAMES.items():
            found = [p for n, p in subdirs.items() if n.lower() in names]
            if len(found) > 1:
                raise GenaugError(f"{root} has two folders for the {split} split ({', '.join(p.name for p in found)});"
                                  " keep one, or choose with --split-folders")
            if found:
                dirs[split] = found[0]
        if not ("train" in dirs and "test" in dirs):
            _refuse_repeated_classes(root, subdirs)
            return {None: root}, [], "class folders at the top level"
    unused = sorted(n for n, p in subdirs.items() if p not in dirs.values())
    read = ", ".join(f"{p.name}/ as {split}" for split, p in dirs.items())
    return {k: dirs[k] for k in ("train", "val", "test") if k in dirs}, unused, read


def _refuse_repeated_classes(root: Path, subdirs: dict[str, Path]) -> None:
    """Top-level folders that are not split names genaug knows, over the same class folders: never
    read as classes (a classifier would learn to tell the splits apart)."""
    inner = {name: {p.name.lower() for p in _subfolders(d)} for name, d in subdirs.items()}
    shared = [n for n in inner if inner[n]]
    if len(shared) >= 2:
        common = set.intersection(*(inner[n] for n in shared))
        if len(common) >= 2:  # one shared subfolder name (visit1) is a class's own structure, not a split
            example = ",".join(f"{n}={'train' if i == 0 else 'test'}" for i, n in enumerate(shared[:2]))
            raise GenaugError(f"{root}: the top-level folders {', '.join(shared)} hold the same class folders "
                              f"({', '.join(sorted(common)[:4])}), so they look like splits, not classes; "
                              f"name them with --split-folders {example}")


def _folder_source(root: Path, spec: str, group_by: str | None, test_fraction: float, copies_at,
                   given_split: str = "use", split_folders: dict[str, str] | None = None) -> FileSource:
    """`ROOT/<class>/**/*` (hash split) or `ROOT/<split>/<class>/**/*` with split folders named
    train/training, val/valid/validation/dev, test/testing in any case, or as `split_folders` says
    (own split, or with `given_split` ignore re-split by patient). A wrapping folder is looked
    through and debris skipped; other top-level folders of a split layout are named in `unused`."""
    root = _unwrap(root)
    split_dirs, unused, read = _split_layout(root, split_folders)
    classes = sorted({p.name for d in split_dirs.values() for p in _subfolders(d)})
    if not classes:
        raise GenaugError(f"{root} holds no class folders; expected ROOT/<class>/<images>")
    items = []
    for split, d in split_dirs.items():
        for label, name in enumerate(classes):
            files = _list_images(d / name) if (d / name).is_dir() else []
            if not files and split in (None, "train"):
                raise GenaugError(f"class folder {d / name} holds no images "
                                  f"({', '.join(sorted(READABLE_SUFFIXES))}, subfolders included)")
            items += [(p.relative_to(root).as_posix(), label, None, split) for p in files]
    source = FileSource(root, spec, "folder", items, classes, group_by, test_fraction, given_split, copies_at)
    source.unused, source.layout, source.split_folders = unused, read, split_folders
    return source


GIVEN_SPLIT = ("use", "ignore", "drop-copies")


def check_given_split(value: str) -> str:
    if value not in GIVEN_SPLIT:
        raise GenaugError(f"--given-split must be use, ignore or drop-copies (got {value!r})")
    return value


def _given(source: Source, given_split: str) -> Source:
    """A source with a given split of one label per image: its copies checked (copies.py)."""
    if source.split_origin == "source":
        check_copies(source, given_split)
    return source


CSV_COLUMNS = ("path", "label", "group", "split")


def _csv_source(path: Path, spec: str, group_by: str | None, test_fraction: float, copies_at, given_split: str = "use",
                label_columns=None) -> Source:
    """A label file: columns `path,label` and optional `group,split`; paths relative to the CSV. A
    multi-label file (several labels per image) is read by label_files.py."""
    columns, rows = label_files.read_rows(path)
    spec_columns = label_files.LabelColumns.parse(label_columns)
    if label_files.is_multilabel(columns, rows, spec_columns):
        return MultiLabelSource(path, spec, group_by, test_fraction, given_split, spec_columns or
                                label_files.LabelColumns(), columns, rows, copies_at)
    unknown = [c for c in columns if c not in CSV_COLUMNS]
    if unknown:
        raise GenaugError(f"{path}: unknown column(s) {', '.join(map(repr, unknown))}; "
                          f"the columns are {', '.join(CSV_COLUMNS)} (path and label required)")
    if not {"path", "label"} <= set(columns):
        raise GenaugError(f"{path}: needs the columns path and label (found: {', '.join(columns) or 'none'})")
    if not rows:
        raise GenaugError(f"{path} lists no images")
    root = path.parent
    classes = sorted({r["label"] for r in rows})
    if "" in classes:
        raise GenaugError(f"{path}: a row has an empty label")
    items = []
    for n, r in enumerate(rows, start=2):
        rel = r["path"]
        if not (root / rel).is_file():
            raise GenaugError(f"{path}, line {n}: image not found: {root / rel}")
        split = r.get("split", "").lower() or None
        if split not in (None, "train", "val", "test"):
            raise GenaugError(f"{path}, line {n}: split {r['split']!r} is not train, val or test")
        items.append((Path(rel).as_posix(), classes.index(r["label"]), r.get("group") or None, split))
    return FileSource(root, spec, "labels", items, classes, group_by, test_fraction, given_split, copies_at)


class MultiLabelSource(FileSource):
    """A label file with several labels per image: `classes` are the labels, each split's `labels` an
    N x L 0/1 matrix; the test split by iterative stratification over patients (multilabel_splits.py)."""

    multilabel = True

    def __init__(self, path: Path, spec: str, group_by: str | None, test_fraction: float, given_split: str,
                 columns_spec, columns: list[str], rows: list[dict], copies_at: tuple | None = None):
        if not rows:
            raise GenaugError(f"{path} lists no images")
        parsed = label_files.parse_rows(path, columns, rows, columns_spec)
        root = path.parent
        unlisted = label_files.unlisted_images(root, parsed.paths)
        if unlisted:
            raise GenaugError(f"{path}: {len(unlisted)} image(s) beside it have no row, e.g. {unlisted[0]}; list "
                              "them, or keep the label file's images in a folder of their own")
        self.root, self.spec, self.kind, self.classes = root, spec, "labels (multi-label)", parsed.names
        self.group_by, self.test_fraction = group_by, test_fraction
        self.given_split, self.copies_at = check_given_split(given_split), copies_at
        self.label_columns = columns_spec.to_dict() if columns_spec.named else None
        paths = parsed.paths
        self.channels = _source_channels([root / p for p in paths])
        regex_groups, self.ungrouped = groups_from_paths(paths, group_by)
        groups = parsed.groups or regex_groups
        split_of = parsed.splits if self.given_split != "ignore" else [None] * len(paths)
        labels = parsed.labels
        if self.given_split == "ignore":  # copies of one image are kept together, as a patient's images are
            groups = merge_groups(groups, self.content_keys(None, paths), [f"file:{p}" for p in paths])

        def pick(pos):
            pos = np.asarray(pos, dtype=np.int64)
            return Split([paths[i] for i in pos], labels[pos], [groups[i] for i in pos] if groups else None)

        if any(split_of):
            if not all(split_of):
                raise GenaugError(f"{spec}: some rows name a split and some do not; give every row a split or none")
            _check_groups_disjoint(split_of, groups, spec)
            self.splits = {n: pick([i for i, s in enumerate(split_of) if s == n])
                           for n in ("train", "val", "test") if n in split_of}
            self.split_origin = "source"
        else:
            train, test = stratified_split(labels, groups, test_fraction)
            self.splits = {"train": pick(train), "test": pick(test)}
            unit = "patient" if groups else "image"
            self.split_origin = f"iterative stratification by {unit} (seed {SPLIT_SEED}), {test_fraction:.0%} test"
        empty = [name for name, n in zip(self.classes, self.splits["train"].labels.sum(0)) if n == 0]
        if empty:
            raise GenaugError(f"{spec}: label {empty[0]!r} has no positive image in the train split; drop it "
                              "(--label-columns) or give it training images")

    def resolve_classes(self, selection: str) -> list[int]:
        raise GenaugError(f"{self.spec} is multi-label ({len(self.classes)} labels per image): train its label-set "
                          "generator with `genaug train ddpm-multilabel`, and classifiers with `genaug augment-and-train "
                          "--generator ddpm-multilabel`")


def _npz_source(path: Path, spec: str, test_fraction: float = DEFAULT_TEST_FRACTION, given_split: str = "use",
                copies_at: tuple | None = None) -> Source:
    try:
        data = np.load(path, allow_pickle=False)
        keys = set(data.files)
    except Exception as e:  # noqa: BLE001 - np.load raises many kinds for a bad file
        raise GenaugError(f"cannot read {path} as .npz: {e}") from None
    if not {"train_images", "train_labels"} <= keys:
        raise GenaugError(f"{path} lacks the expected keys train_images and train_labels "
                          f"(found: {', '.join(sorted(keys)) or 'none'})")
    arrays = {}
    for split in ("train", "val", "test"):
        if f"{split}_images" in keys:
            if f"{split}_labels" not in keys:
                raise GenaugError(f"{path} has {split}_images but no {split}_labels")
            arrays[split] = (data[f"{split}_images"], data[f"{split}_labels"])
    stem = path.stem.lower().split("_")[0]
    classes = [str(c) for c in data["classes"]] if "classes" in keys else (
        MEDMNIST_CLASSES.get(stem) or (CIFAR10_CLASSES if stem.startswith("cifar10") else None))
    kind = "medmnist" if stem in MEDMNIST_CLASSES else "npz"
    return ArraySource(spec, kind, arrays, classes, test_fraction, given_split, copies_at)


def _download(url: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        urllib.request.urlretrieve(url, tmp)
    except (urllib.error.URLError, OSError) as e:
        tmp.unlink(missing_ok=True)
        raise GenaugError(f"cannot download {url} to {dest} ({e}); place the file there by hand") from None
    os.replace(tmp, dest)


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _fashion_mnist(data_root: Path) -> Source:
    if (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        d = DEBIAN_FASHION_MNIST
        arrays = {s: (_read_idx(d / f"{p}-images-idx3-ubyte.gz"), _read_idx(d / f"{p}-labels-idx1-ubyte.gz"))
                  for s, p in (("train", "train"), ("test", "t10k"))}
    else:
        arrays = _torchvision_arrays("FashionMNIST", data_root)
    return ArraySource("fashion-mnist", "fashion-mnist", arrays, FASHION_MNIST_CLASSES)


def _torchvision_arrays(name: str, data_root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    import torchvision.datasets as tvd

    arrays = {}
    for split, train in (("train", True), ("test", False)):
        try:
            ds = getattr(tvd, name)(str(data_root), train=train, download=True)
        except (urllib.error.URLError, OSError, RuntimeError) as e:
            raise GenaugError(f"{name} is not under {data_root} and cannot be downloaded ({e}); "
                              f"install it there or pass --data-root") from None
        images = ds.data.numpy() if isinstance(ds.data, torch.Tensor) else np.asarray(ds.data)
        arrays[split] = (images, np.asarray(ds.targets))
    return arrays


def open_source(spec: str, data_root: str | Path | None = None, group_by: str | None = None,
                test_fraction: float | None = None, given_split: str = "use", label_columns=None,
                split_folders=None, copies_at=None) -> Source:
    """Resolve a data spec (see module docstring) to a Source.

    `group_by` (a regex or built-in name, folder and label-file sources) keeps each patient on one
    side of every split; `test_fraction` applies to sources without their own test split;
    `given_split` ignore re-splits a source's own split by patient; `label_columns` names the columns
    of a multi-label label file (label_files.LabelColumns); `copies_at` ((size, fit), size None for
    the source's default) compares images for copies by their pixels at the model's size rather than
    by their files' bytes (copies.py).
    """
    copies_at = tuple(copies_at) if copies_at else None
    data_root = Path(data_root) if data_root else DEFAULT_DATA_ROOT
    test_fraction = DEFAULT_TEST_FRACTION if test_fraction is None else float(test_fraction)
    if not 0 < test_fraction < 1:
        raise GenaugError(f"--test-fraction must be between 0 and 1 (got {test_fraction})")
    lowered = spec.lower()
    path = Path(spec).expanduser()
    if group_by and not (path.is_dir() or path.suffix.lower() == ".csv"):
        raise GenaugError("--group-by applies to image folders and label files (CSV); "
                          f"{spec} has no file paths to take patient ids from")
    if lowered in ("fashion-mnist", "fashion_mnist", "fashionmnist"):
        return _fashion_mnist(data_root)
    if lowered == "cifar10":
        return ArraySource("cifar10", "cifar10", _torchvision_arrays("CIFAR10", data_root), CIFAR10_CLASSES)
    if lowered.startswith("medmnist:"):
        name = spec.split(":", 1)[1]
        npz = data_root / f"{name}.npz"
        if not npz.exists():
            _download(MEDMNIST_URL.format(name=name), npz)
        return _npz_source(npz, spec, test_fraction)
    if path.is_dir():
        return _given(_folder_source(path, spec, group_by, test_fraction, copies_at, given_split,
                                     parse_split_folders(split_folders)), given_split)
    if split_folders:
        raise GenaugError("--split-folders names the split folders of an image folder; "
                          f"{spec} is not a folder")
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return _given(_csv_source(path, spec, group_by, test_fraction, copies_at, given_split, label_columns),
                          given_split)
        if path.suffix.lower() != ".npz":
            raise GenaugError(f"{spec} is a file but not an .npz or a .csv label file; "
                              "give a folder, an .npz, a .csv or a named source")
        return _given(_npz_source(path, spec, test_fraction, given_split, copies_at), given_split)
    raise GenaugError(f"data not found: {spec} (a folder, an .npz file, a .csv label file, medmnist:NAME, "
                      "cifar10 or fashion-mnist)")
