"""`genaug fid`: one pair of image sets, or a per-class table against a real data spec."""

from __future__ import annotations

from pathlib import Path

from ..data.imagesets import load_image_folder, slug
from ..data.sources import open_source
from ..data.subsets import load_split
from ..errors import GenaugError
from .fidelity import FEW_IMAGES_WARNING, ImageSet, compute_metrics

__all__ = ["pair", "by_class", "format_pair", "format_table", "FEW_IMAGES_WARNING"]


def pair(a: str, b: str, image_size: int | None = None, data_root: str | None = None, verbose: bool = False,
         **opts) -> dict:
    from . import fid

    return {"a": a, "b": b, **fid(a, b, image_size=image_size, data_root=data_root, progress=verbose, **opts)}


def by_class(real_spec: str, samples_root: str, image_size: int | None = None, data_root: str | None = None,
             split: str = "train", **opts) -> tuple[list[dict], list[str]]:
    """FID of each `samples_root/<class>/` folder against that class of `real_spec`.

    Folders match class names exactly (case-insensitive; a class's folder-safe name, e.g.
    `T-shirt-top`, also matches). Returns the rows and a line for every class without a folder
    and every folder without a class; refuses when nothing matches.
    """
    root = Path(samples_root)
    if not root.is_dir():
        raise GenaugError(f"sample folder not found: {samples_root}")
    source = open_source(real_spec, data_root)
    names = {}
    for i, name in enumerate(source.classes):
        names[name.lower()] = i
        names.setdefault(slug(name).lower(), i)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    matched = [(p, names[p.name.lower()]) for p in folders if p.name.lower() in names]
    if not matched:
        raise GenaugError(f"no folder in {samples_root} is named after a class of {real_spec} "
                          f"(classes: {', '.join(source.classes)}; folders: "
                          f"{', '.join(p.name for p in folders) or 'none'})")
    seen = {label for _, label in matched}
    unmatched = [f"folder {p.name!r} matches no class of {real_spec}; skipped" for p in folders
                 if p.name.lower() not in names]
    unmatched += [f"class {c!r} has no sample folder in {samples_root}" for i, c in enumerate(source.classes)
                  if i not in seen]
    rows = []
    for folder, label in matched:
        fake = load_image_folder(folder, image_size)
        real = load_split(source, split, [label], image_size or fake.shape[-1]).images
        result = compute_metrics(ImageSet(real, f"{real_spec}:{source.classes[label]}", cacheable=True),
                                 ImageSet(fake, str(folder)), **opts)
        rows.append({"class": source.classes[label], "folder": str(folder), **result})
    return rows, unmatched


def _extras(r: dict) -> str:
    out = ""
    if "kid_mean" in r:
        out += f"  KID {r['kid_mean']:.5f} ± {r['kid_std']:.5f}"
    if "precision" in r:
        out += f"  precision {r['precision']:.3f}  recall {r['recall']:.3f}"
    return out


def format_pair(r: dict) -> str:
    return f"FID {r['fid']:.3f}{_extras(r)}  (images: {r['n_a']} vs {r['n_b']})"


def format_table(rows: list[dict]) -> str:
    lines = ["class\tFID\tn_real\tn_synthetic\textra"]
    lines += [f"{r['class']}\t{r['fid']:.3f}\t{r['n_a']}\t{r['n_b']}\t{_extras(r).strip()}" for r in rows]
    return "\n".join(lines)
