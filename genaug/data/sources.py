"""Real image sources behind one data spec.

A spec is one of
- a folder `ROOT/<class>/*` of images (or `ROOT/{train,test}/<class>/*` with its own split);
- a MedMNIST-style `.npz` (`train_images`, `train_labels`, optional `val_*`, `test_*`), or
  `medmnist:NAME` resolved as `DATA_ROOT/NAME.npz` (downloaded when missing and online);
- `cifar10` (torchvision's layout under DATA_ROOT, downloaded when missing and online);
- `fashion-mnist` (Debian's `/usr/share/datasets/fashion-mnist/`, else torchvision's download).

Sources hold item ids only (array indices or relative paths) until `load` decodes the
requested items, so listing classes and counts stays cheap.
"""

from __future__ import annotations

import gzip
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import GenaugError
from ..io import sha256_bytes, sha256_file
from .images import GRAY_MODES, IMAGE_SUFFIXES, decode_image, image_mode, resize_center_crop

DEFAULT_DATA_ROOT = Path(os.environ.get("GENAUG_DATA_ROOT", Path.home() / ".cache" / "genaug" / "data"))
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
TEST_FRACTION = 0.2  # for sources without their own test split
SPLIT_SEED = 0  # fixed, so a source's test split never depends on a run's seed
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
    """The items of one split: ids (array indices or paths relative to the root) and labels."""

    ids: list
    labels: np.ndarray

    def of_class(self, label: int) -> list:
        return [i for i, y in zip(self.ids, self.labels) if y == label]


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split: round(test_fraction * n) of each class (at least 1 when n >= 2) to test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        idx = idx[rng.permutation(len(idx))]
        n_test = max(1, round(test_fraction * len(idx))) if len(idx) >= 2 else 0
        test.extend(idx[:n_test])
        train.extend(idx[n_test:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(test, dtype=np.int64))


class Source:
    """Common face of every source: classes, channels, splits, and `load`."""

    spec: str
    kind: str
    classes: list[str]
    channels: int
    native_size: int | None
    splits: dict[str, Split]
    split_origin: str  # "source" or a description of the seeded split

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

    def load(self, split: str, ids: list, image_size: int | None = None,
             skip_bad: bool = False) -> tuple[torch.Tensor, list]:
        """Decode items to a uint8 N x C x S x S tensor; returns it with the ids actually loaded."""
        raise NotImplementedError

    def item_hash(self, split: str, item) -> str:
        raise NotImplementedError


class ArraySource(Source):
    """Images already in memory as uint8 arrays (npz files, IDX files, torchvision datasets)."""

    def __init__(self, spec: str, kind: str, arrays: dict[str, tuple[np.ndarray, np.ndarray]],
                 classes: list[str] | None):
        self.spec, self.kind = spec, kind
        self.arrays = {}
        for split, (images, labels) in arrays.items():
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
            self.arrays[split] = (images.astype(np.uint8, copy=False), labels.astype(np.int64))
        first = next(iter(self.arrays.values()))[0]
        self.channels = 1 if first.ndim == 3 else 3
        self.native_size = int(first.shape[1]) if first.shape[1] == first.shape[2] else None
        n_classes = int(max(lab.max() for _, lab in self.arrays.values())) + 1
        self.classes = classes if classes and len(classes) >= n_classes else [str(i) for i in range(n_classes)]
        self.split_origin = "source"
        if "test" not in self.arrays:
            images, labels = self.arrays["train"]
            tr, te = stratified_split(labels, TEST_FRACTION, SPLIT_SEED)
            self.arrays = {"train": (images, labels), "test": (images, labels)}
            self.splits = {"train": Split(tr.tolist(), labels[tr]), "test": Split(te.tolist(), labels[te])}
            self.split_origin = f"stratified, {TEST_FRACTION:.0%} test, seed {SPLIT_SEED}"
        else:
            self.splits = {s: Split(list(range(len(lab))), lab) for s, (_, lab) in self.arrays.items()}

    def load(self, split, ids, image_size=None, skip_bad=False):
        images = self.arrays[split][0][np.asarray(ids, dtype=np.int64)]
        t = torch.from_numpy(images)
        t = t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2)
        return resize_center_crop(t.contiguous(), image_size or self.default_size()), list(ids)

    def item_hash(self, split, item):
        return sha256_bytes(self.arrays[split][0][int(item)].tobytes())


class FolderSource(Source):
    """`ROOT/<class>/*.jpeg` (seeded split) or `ROOT/{train,val,test}/<class>/*` (own split)."""

    kind = "folder"
    native_size = None

    def __init__(self, root: Path, spec: str):
        self.root, self.spec = root, spec
        subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
        if "train" in subdirs and "test" in subdirs:
            split_dirs = {s: subdirs[s] for s in ("train", "val", "test") if s in subdirs}
            self.split_origin = "source"
        else:
            split_dirs = {"all": root}
            self.split_origin = f"stratified, {TEST_FRACTION:.0%} test, seed {SPLIT_SEED}"
        class_names = sorted({p.name for d in split_dirs.values() for p in d.iterdir()
                              if p.is_dir() and not p.name.startswith(".")})
        if not class_names:
            raise GenaugError(f"{root} holds no class folders; expected ROOT/<class>/<images>")
        self.classes = class_names
        per_split: dict[str, tuple[list, list]] = {}
        for split, d in split_dirs.items():
            ids, labels = [], []
            for label, name in enumerate(class_names):
                cdir = d / name
                files = sorted(p for p in cdir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                               and not p.name.startswith(".")) if cdir.is_dir() else []
                if not files and (split in ("all", "train")):
                    raise GenaugError(f"class folder {cdir} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
                ids += [str(p.relative_to(root)) for p in files]
                labels += [label] * len(files)
            per_split[split] = (ids, np.array(labels, dtype=np.int64))
        if "all" in per_split:
            ids, labels = per_split.pop("all")
            tr, te = stratified_split(labels, TEST_FRACTION, SPLIT_SEED)
            per_split = {"train": ([ids[i] for i in tr], labels[tr]), "test": ([ids[i] for i in te], labels[te])}
        self.splits = {s: Split(ids, labels) for s, (ids, labels) in per_split.items()}
        modes = {image_mode(root / i) for s in self.splits.values() for i in s.ids}
        modes.discard(None)
        self.channels = 1 if modes and modes <= GRAY_MODES else 3

    def load(self, split, ids, image_size=None, skip_bad=False):
        size = image_size or self.default_size()
        images, kept = [], []
        for item in ids:
            try:
                img = decode_image(self.root / item, self.channels)
            except GenaugError:
                if skip_bad:
                    continue
                raise
            images.append(resize_center_crop(img.unsqueeze(0), size))
            kept.append(item)
        if not images:
            return torch.empty((0, self.channels, size, size), dtype=torch.uint8), kept
        return torch.cat(images), kept

    def item_hash(self, split, item):
        return sha256_file(self.root / item)


def _npz_source(path: Path, spec: str) -> Source:
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
    return ArraySource(spec, kind, arrays, classes)


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


def open_source(spec: str, data_root: str | Path | None = None) -> Source:
    """Resolve a data spec (see module docstring) to a Source."""
    data_root = Path(data_root) if data_root else DEFAULT_DATA_ROOT
    lowered = spec.lower()
    if lowered in ("fashion-mnist", "fashion_mnist", "fashionmnist"):
        return _fashion_mnist(data_root)
    if lowered == "cifar10":
        return ArraySource("cifar10", "cifar10", _torchvision_arrays("CIFAR10", data_root), CIFAR10_CLASSES)
    if lowered.startswith("medmnist:"):
        name = spec.split(":", 1)[1]
        path = data_root / f"{name}.npz"
        if not path.exists():
            _download(MEDMNIST_URL.format(name=name), path)
        return _npz_source(path, spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        return FolderSource(path, spec)
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise GenaugError(f"{spec} is a file but not an .npz; give a folder, an .npz or a named source")
        return _npz_source(path, spec)
    raise GenaugError(f"data not found: {spec} (a folder, an .npz file, medmnist:NAME, cifar10 or fashion-mnist)")
