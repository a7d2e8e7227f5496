"""Features kept per image, so real galleries that overlap share one extraction.

A replicate's unlabelled pool is the source's images minus that replicate's labelled ones (and
their patients), so the pools of two replicates share almost every image but no set-level cache
name (torch-fidelity names a cache by the whole set). Here each image's feature row is kept under
the sha256 of its shape and bytes, in 16 shards per feature extractor (safetensors: the digests
and the rows); a lookup extracts only the images not seen before. Extraction holds the folder's
lock (`flock`, released by the OS if the process dies), and looks again once it has it: two
processes that need one gallery at once, such as two drivers judging two replicates' pools,
extract it once, the second waiting for the first's rows rather than computing them again. A
cached row was extracted in another batch than a fresh one would be, so the two can differ in
float rounding (about 1e-6).
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch

SHARDS = 16


def image_digests(images: torch.Tensor) -> list[bytes]:
    shape = repr(tuple(images.shape[1:])).encode()
    flat = images.contiguous().numpy().reshape(len(images), -1)
    return [hashlib.sha256(shape + row.tobytes()).digest() for row in flat]


def _shard(digest: bytes) -> int:
    return digest[0] % SHARDS


def _shard_path(folder: Path, shard: int) -> Path:
    return folder / f"rows-{shard:x}.safetensors"


def _read(path: Path) -> dict[bytes, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.exists():
        return {}
    t = load_file(path)
    return {bytes(k.tolist()): row for k, row in zip(t["digests"], t["rows"])}


def _write(path: Path, rows: dict[bytes, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    from ..io import atomic_path

    digests = torch.tensor([list(k) for k in rows], dtype=torch.uint8)
    with atomic_path(path) as tmp:
        save_file({"digests": digests, "rows": torch.stack(list(rows.values())).contiguous()}, str(tmp))


def cached_rows(images: torch.Tensor, extract: Callable[[torch.Tensor], torch.Tensor], folder: Path) -> torch.Tensor:
    """extract(images), one row per image, with the rows of images met before read from `folder`
    (one folder per feature extractor: the caller names it by the extractor's weights)."""
    digests = image_digests(images)
    known = _known(folder, digests)
    if any(d not in known for d in digests):
        folder.mkdir(parents=True, exist_ok=True)
        with _locked(folder / ".lock"):
            known = _known(folder, digests)  # what another process added while this one waited
            first: dict[bytes, int] = {}  # each unseen image once, however often it repeats
            for i, d in enumerate(digests):
                if d not in known:
                    first.setdefault(d, i)
            if first:
                added = dict(zip(first, extract(images[list(first.values())]).float()))
                known.update(added)
                for shard in sorted({_shard(d) for d in added}):
                    path = _shard_path(folder, shard)
                    merged = _read(path)
                    merged.update({d: row for d, row in added.items() if _shard(d) == shard})
                    _write(path, merged)
    return torch.stack([known[d] for d in digests]) if digests else torch.zeros(0, 0)


def _known(folder: Path, digests: list[bytes]) -> dict[bytes, torch.Tensor]:
    known: dict[bytes, torch.Tensor] = {}
    for shard in sorted({_shard(d) for d in digests}):
        known.update(_read(_shard_path(folder, shard)))
    return known


@contextmanager
def _locked(path: Path):
    """An exclusive lock on `path` for this process (none where fcntl is missing: Windows)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux or macOS
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
