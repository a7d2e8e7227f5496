"""Benchmark: classifier training in full precision against bf16 autocast (`mixed_precision: bf16`)
and the channels-last memory format (`channels_last: true`), side by side in one process on real data.

For each architecture (default: the frozen offline Inception-v3 at 299 px, the transfer run's
headline, and a from-scratch ResNet18), trains the same classifier (same seed, same batches) on
PneumoniaMNIST `--per-class` labelled images (a stratified 80/20 train/validation carve of the
train split, epoch selected on validation) four ways (fp32, fp32 channels-last, bf16, bf16
channels-last) and scores the test split. Prints one JSON line: seconds of each run (training,
validation and the test pass), its speed-up over fp32, and its test balanced accuracy, with
torch's version and thread count.

    python scripts/bench_classifier_precision.py --data ../shared/data --epochs 20
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path

import click
import torch

REPO = Path(__file__).resolve().parent.parent


@click.command()
@click.option("--data", "data_root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=REPO.parent / "shared" / "data", show_default=True)
@click.option("--per-class", default=50, show_default=True)
@click.option("--epochs", default=20, show_default=True)
@click.option("--classifiers", default="inception-v3,resnet18", show_default=True)
def main(data_root: Path, per_class: int, epochs: int, classifiers: str) -> None:
    from sklearn.metrics import balanced_accuracy_score

    from genaug.data import draw_subset, load_split, open_source
    from genaug.data.splits import carve_validation
    from genaug.classifiers.inference import predict_proba
    from genaug.classifiers.training import TrainSettings, train_classifier

    source = open_source(str(data_root / "pneumoniamnist.npz"))
    real, manifest = draw_subset(source, [0, 1], per_class, 0, 28)
    train_idx, val_idx = carve_validation(real.labels.numpy(), None, 0.2, seed=0)
    train_x, train_y = real.images[train_idx], real.labels[train_idx]
    val_x, val_y = real.images[val_idx], real.labels[val_idx]
    test = load_split(source, "test", [0, 1], 28, intensity=manifest["intensity"])
    steps = math.ceil(len(train_x) / 32)
    out = {"benchmark": "classifier_precision", "torch": torch.__version__, "threads": torch.get_num_threads(),
           "data": "pneumoniamnist", "per_class": per_class, "epochs": epochs, "steps_per_epoch": steps,
           "n_test": len(test.images)}
    for name in classifiers.split(","):
        base = TrainSettings(classifier=name, epochs=epochs, hflip=False)
        row = {}
        for precision, channels_last in (("no", False), ("no", True), ("bf16", False), ("bf16", True)):
            variant = {"no": "fp32", "bf16": "bf16"}[precision] + ("_channels_last" if channels_last else "")
            t0 = time.perf_counter()
            settings = replace(base, mixed_precision=precision, channels_last=channels_last)
            trained = train_classifier(train_x, train_y, val_x, val_y, 2, settings, 0, steps, "cpu")
            probs = predict_proba(trained.model, test.images, "cpu", precision=precision)
            seconds = time.perf_counter() - t0
            row[variant] = {"seconds": round(seconds, 1), "speedup": round(row["fp32"]["seconds"] / seconds, 2)
                            if row else 1.0, "test_balanced_accuracy": round(float(balanced_accuracy_score(
                                test.labels.numpy(), probs.argmax(1))), 4)}
        out[name] = row
    print(json.dumps(out))


if __name__ == "__main__":
    main()
