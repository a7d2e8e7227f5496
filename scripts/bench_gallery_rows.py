"""Benchmark: the memorisation gate's Inception features for a second replicate's pool, with the
per-image cache (`metrics/feature_rows.py`) against extracting the whole pool again.

Two pools of real PneumoniaMNIST training images that differ as two replicates' pools do: the
second swaps `--swap` images of the first for others (each replicate holds out its own labelled
images). Side by side in one run: the second pool extracted cold, the first pool cached, then the
second pool through the cache (only its swapped images extracted); rows checked equal to the cold
ones. Prints one JSON line.

    python scripts/bench_gallery_rows.py --n 400 --swap 100
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import click
import torch

from genaug.data import load_split, open_source
from genaug.inception import WEIGHTS_FILE, default_cache_dir


@click.command()
@click.option("--data", default="../shared/data/pneumoniamnist.npz", show_default=True)
@click.option("--n", default=400, show_default=True, help="images per pool")
@click.option("--swap", default=100, show_default=True, help="images of the first pool the second replaces")
def main(data: str, n: int, swap: int) -> None:
    from genaug.metrics.fidelity import inception_features

    source = open_source(data)
    images = load_split(source, "train", list(range(len(source.classes))), 28).images
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(images), generator=g)[: n + swap]
    pool_a, pool_b = images[order[:n]], images[order[swap: n + swap]]
    with tempfile.TemporaryDirectory() as folder:
        cache = _with_weights(folder, default_cache_dir())  # rows go to a fresh folder, the weights stay
        t0 = time.perf_counter()
        cold = inception_features(pool_b, cache_dir=cache)
        t1 = time.perf_counter()
        inception_features(pool_a, True, cache_dir=cache)
        t2 = time.perf_counter()
        warm = inception_features(pool_b, True, cache_dir=cache)
        t3 = time.perf_counter()
    print(json.dumps({"bench": "gallery_rows", "n_per_pool": n, "swapped": swap, "cold_s": round(t1 - t0, 2),
                      "first_pool_s": round(t2 - t1, 2), "second_pool_cached_s": round(t3 - t2, 2),
                      "speedup": round((t1 - t0) / (t3 - t2), 2),
                      "max_abs_difference": float((cold - warm).abs().max()),
                      "threads": torch.get_num_threads(), "torch": torch.__version__}))


def _with_weights(cache: str, weights_dir: Path) -> str:
    """A cache folder holding links to the converted weights (and their checksum), so none is converted again."""
    for name in (WEIGHTS_FILE, Path(WEIGHTS_FILE).with_suffix(".sha256").name):
        (Path(cache) / name).symlink_to(weights_dir / name)
    return cache


if __name__ == "__main__":
    main()
