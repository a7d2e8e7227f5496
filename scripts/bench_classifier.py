"""Benchmark: milliseconds per optimizer step of the default classifier recipe (the steps protocol:
ResNet-18, ImageNet stem, batch 32, TrivialAugmentWide + CutMix/MixUp, AdamW) on real
PneumoniaMNIST images at 28 and 64 px, and with the small stem at 28 px, in fp32 and bf16
autocast, with one and two threads, side by side in one process. Prints one JSON line with the CPU's bf16 support (avx512_bf16 / amx), so
the ratios, not the absolute times, compare across machines.

    python scripts/bench_classifier.py --data ../shared/data --steps 20
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import torch

from genaug.classifiers.training import TrainSettings, train_classifier
from genaug.data import draw_subset, open_source


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((x for x in text.splitlines() if x.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


@click.command()
@click.option("--data", "data_root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=Path(__file__).resolve().parent.parent.parent / "shared" / "data")
@click.option("--steps", type=click.IntRange(min=2), default=20, show_default=True)
def main(data_root: Path, steps: int) -> None:
    source = open_source(str(data_root / "pneumoniamnist.npz"))
    rows = {}
    for size, stem in ((28, "imagenet"), (64, "imagenet"), (28, "small")):  # the small stem: 16x the pixels after it
        real, _ = draw_subset(source, [0, 1], 50, seed=0, image_size=size)
        for precision in ("no", "bf16"):
            for threads in (1, 2):
                torch.set_num_threads(threads)
                settings = TrainSettings(steps=steps, stem=stem, scored_model="final", weight_decay=0.05,
                                         augment="trivialaugment", mix=True, mixed_precision=precision,
                                         bn_statistics="training")
                start = time.perf_counter()
                train_classifier(real.images, real.labels, real.images[:10], real.labels[:10], 2, settings, 0, 4,
                                 "cpu")
                name = f"{size}px{'-small-stem' if stem == 'small' else ''}-{'fp32' if precision == 'no' else 'bf16'}"
                rows[f"{name}-{threads}t"] = round((time.perf_counter() - start) / steps * 1000, 1)
    flags = cpu_flags()
    print(json.dumps({"bench": "classifier", "ms_per_step": rows, "steps": steps, "torch": torch.__version__,
                      "native_bf16": bool({"avx512_bf16", "amx_bf16"} & flags),
                      "bf16_over_fp32_28px_2t": round(rows["28px-bf16-2t"] / rows["28px-fp32-2t"], 2),
                      "bf16_over_fp32_28px_small_stem_2t": round(rows["28px-small-stem-bf16-2t"]
                                                                 / rows["28px-small-stem-fp32-2t"], 2)}))


if __name__ == "__main__":
    main()
