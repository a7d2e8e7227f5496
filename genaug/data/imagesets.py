"""Image sets named on the command line: a plain image folder, or a data spec with a class.

- `DIR`: every image file directly in DIR (a `genaug sample` output, or any folder of images).
  Files without an image suffix (manifest.json, notes) are ignored; an image file that cannot
  be decoded is an error naming it. Mixed grayscale and colour images are all read as RGB.
  Images of different sizes need `--image-size`.
- `SPEC:CLASS[@SPLIT]`: the images of one class of a data source, train split by default,
  e.g. `../shared/data/pneumoniamnist.npz:normal` or `fashion-mnist:Shirt@test`.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..errors import GenaugError
from .images import READABLE_SUFFIXES, decode_bytes, fit_square, probe_channels
from .intensity import IntensityRule, Raw, convert
from .sources import open_source
from .subsets import load_split


def slug(name: str) -> str:
    """A class name as a folder name: `T-shirt/top` -> `T-shirt-top`."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "class"


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in READABLE_SUFFIXES
                  and not p.name.startswith("."))


def load_image_folder(folder: str | Path, image_size: int | None = None, fit: str = "crop",
                      intensity: "IntensityRule | str | dict | None" = None) -> torch.Tensor:
    """All images directly in `folder` as uint8 N x C x H x W (a `dataset` window is fitted on the folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GenaugError(f"image folder not found: {folder}")
    files = image_files(folder)
    if not files:
        if any(p.is_dir() and image_files(p) for p in folder.iterdir()):
            raise GenaugError(f"{folder} holds no images directly, only class folders: name one class as "
                              f"{folder}:CLASS (a data spec), or compare every class with --by-class")
        raise GenaugError(f"{folder} holds no images ({', '.join(sorted(READABLE_SUFFIXES))})")
    probed = {probe_channels(p) for p in files}
    channels = 3 if 3 in probed else 1
    raws = [decode_bytes(p.read_bytes(), p, channels) for p in files]
    if image_size:
        raws = [Raw(fit_square(r.pixels, image_size, fit), r.invert) for r in raws]
    sizes = {tuple(r.pixels.shape[1:]) for r in raws}
    if len(sizes) > 1:
        raise GenaugError(f"images in {folder} have {len(sizes)} different sizes; pass --image-size to resize them")
    return convert(raws, intensity)[0]


def parse_class_spec(arg: str) -> tuple[str, str, str]:
    """`SPEC:CLASS[@SPLIT]` -> (spec, class, split)."""
    if ":" not in arg:
        raise GenaugError(f"{arg!r} is neither a folder nor SPEC:CLASS (e.g. data.npz:normal, fashion-mnist:Shirt@test)")
    spec, cls = arg.rsplit(":", 1)
    split = "train"
    if "@" in cls:
        cls, split = cls.rsplit("@", 1)
    return spec, cls, split


def resolve_image_set(arg: str, data_root: str | None = None, image_size: int | None = None) -> tuple[torch.Tensor, bool]:
    """Images named by `arg`; the flag says whether they are real data (their features may be cached)."""
    if Path(arg).is_dir():
        return load_image_folder(arg, image_size), False
    spec, cls, split = parse_class_spec(arg)
    source = open_source(spec, data_root)
    label = source.class_index(cls)
    return load_split(source, split, [label], image_size or source.default_size()).images, True
