"""Copies of one image inside a source: byte-identical items (the content hash every manifest
already records) or, where the model's size is known (`copies_at`: experiments, `genaug datasets
--image-size`), items whose pixels are identical after conversion to that size (two encodings or
sizes of one scan), on two sides of a given split, or twice inside one split.

- Between train and test: refused like a patient on two sides (a test image that is a copy of a
  training image inflates every arm's score and the ceiling), naming a few and the count, with the
  two ways out: `--given-split ignore` (the source is split again with content as a group, as a
  patient is, so copies land on one side) or `--given-split drop-copies` (the test-side copies are
  dropped; recorded in every manifest through the source's options).
- Between train and val: left out of validation draws (the split itself stays as earlier
  manifests recorded it), reported; between train and test with drop-copies: dropped from test.
- Inside one split: counted; every copy after the first is left out of draws (`repeats`), so a
  `--per-class` draw never holds two copies of one image as two items.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np

from ..errors import GenaugError


def content_hashes(source) -> dict[str, list[str]]:
    """Per split, each item's content key (Source.content_keys), in the split's order."""
    return {name: source.content_keys(name, split.ids) for name, split in source.splits.items()}


def pixel_key(raw) -> str:
    """A digest of one converted image's pixels and shape (a Raw or a C x H x W array)."""
    pixels = np.ascontiguousarray(np.asarray(raw.pixels if hasattr(raw, "pixels") else raw))
    return "px:" + hashlib.sha256(f"{pixels.shape}{pixels.dtype}".encode() + pixels.tobytes()).hexdigest()


def _what(source) -> str:
    if not source.copies_at:
        return "byte-identical copies"
    size = source.copies_at[0] or source.default_size()
    return f"copies (identical pixels at {size} px)"


def merge_groups(groups: list[str] | None, hashes: list[str], names: list[str]) -> list[str] | None:
    """Groups in which copies (one content hash) join one group, as a patient's images do: each
    item keeps its own group's name (`names[i]` without groups) unless a copy ties it to another,
    then the first member's. Unchanged (None stays None) when no image is there twice."""
    if len(set(hashes)) == len(hashes):
        return groups
    own = list(groups) if groups is not None else list(names)
    parent = {g: g for g in own}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first_of: dict[str, str] = {}
    for g, h in zip(own, hashes):
        if h in first_of:
            a, b = find(first_of[h]), find(g)
            if a != b:
                parent[max(a, b)] = min(a, b)
        else:
            first_of[h] = g
    return [find(g) for g in own]


def _keep(split, mask: np.ndarray):
    idx = np.flatnonzero(mask)
    return type(split)([split.ids[i] for i in idx], split.labels[idx],
                 [split.groups[i] for i in idx] if split.groups is not None else None)


def check_copies(source, given_split: str) -> dict:
    """Apply the rule above to a source with a given split (in place); returns what was found and
    done, also kept as `source.copies` (reported by `genaug datasets` and in manifests)."""
    hashes = content_hashes(source)
    found: dict = {"within": {}, "across": {}, "dropped": {}}
    source.repeats = {}
    for name, hs in hashes.items():
        seen, later = set(), set()
        for item, h in zip(source.splits[name].ids, hs):
            if h in seen:
                later.add(item)
            seen.add(h)
        source.repeats[name] = later
        found["within"][name] = len(later)
    train = defaultdict(list)
    for item, h in zip(source.splits["train"].ids, hashes["train"]):
        train[h].append(item)
    for other in [s for s in ("val", "test") if s in source.splits]:
        pairs = [(train[h][0], item) for item, h in zip(source.splits[other].ids, hashes[other]) if h in train]
        found["across"][f"train-{other}"] = len(pairs)
        if not pairs:
            continue
        if other == "test" and given_split == "use":
            examples = "; ".join(f"{b} = {a}" if isinstance(a, str) else f"test {b} = train {a}" for a, b in pairs[:3])
            raise GenaugError(f"{source.spec}: {len(pairs)} test image(s) are {_what(source)} of training "
                              f"images (e.g. {examples}); they would inflate every score. Add --given-split ignore "
                              "to split the same files again with copies kept together, or --given-split "
                              "drop-copies to drop the test-side copies")
        copies = {b for _, b in pairs}
        if other == "val":  # left out of validation draws; the split itself stays as manifests recorded it
            source.repeats[other] = source.repeats[other] | copies
        else:
            mask = np.array([item not in copies for item in source.splits[other].ids])
            source.splits[other] = _keep(source.splits[other], mask)
        found["dropped"][other] = len(copies)
    found["compared"] = "pixels" if source.copies_at else "bytes"
    if source.copies_at:
        found["size"] = int(source.copies_at[0] or source.default_size())
    source.copies = found
    return found


def copies_text(found: dict | None) -> list[str]:
    """The lines `genaug datasets` prints about copies."""
    if not found:
        return []
    within = ", ".join(f"{n} in {s}" for s, n in found["within"].items() if n)
    across = ", ".join(f"{n} {pair}" for pair, n in found["across"].items() if n)
    dropped = ", ".join(f"{n} left out of {s} draws" if s == "val" else f"{n} dropped from {s}"
                        for s, n in found["dropped"].items() if n)
    what = f"copies (identical pixels at {found['size']} px)" if found.get("compared") == "pixels" else \
        "byte-identical copies"
    return [f"{what}: {within or 'none'} inside a split (later copies left out of draws); "
            f"{across or 'none'} across splits" + (f" ({dropped})" if dropped else "")]
