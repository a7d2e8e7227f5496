"""Why a positive control can score below its reference: one replicate's reference (baseline-strong)
and +real@N trained once each under the steps protocol, the same final weights scored on the test
split with each `bn_statistics` mode: the training batches' running statistics, statistics
recomputed on the real subset through the arm's augmentation, and on it unaugmented (`clean`).
Prints one JSON line per arm (docs/evidence/headroom.md has pbc28's).

    python scripts/bn_statistics_study.py --data ../shared/data/pbc28.npz --out runs/bn-study --steps 2000
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import replace
from pathlib import Path

import click
import torch

from genaug.classifiers import training
from genaug.classifiers.inference import predict_proba
from genaug.classifiers.metrics import classification_metrics
from genaug.harness.design.arms import strong
from genaug.harness.design.spec import Unit
from genaug.harness.experiment import Experiment, experiment_config
from genaug.harness.stages import headroom
from genaug.harness.stages.unit_data import real_subset


@click.command()
@click.option("--data", required=True)
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--per-class", default=50, show_default=True)
@click.option("--extra", default=50, show_default=True, help="N of +real@N")
@click.option("--steps", default=2000, show_default=True)
@click.option("--replicate", default=0, show_default=True)
@click.option("--recipe", type=click.Choice(["strong", "classical"]), default="strong", show_default=True)
@click.option("--arms", default="reference,real", show_default=True)
def main(data, out, per_class, extra, steps, replicate, recipe, arms):
    config = experiment_config(None, {"data": data, "per_class": per_class, "steps": steps, "headroom": "none",
                                      "generators": "none", "quality": False, "synthetic_per_class": extra,
                                      "save_models": "none"})
    spec = Experiment(data, out, config, progress=False).spec
    unit = Unit(replicate)
    subset = real_subset(spec, unit)
    settings = replace(spec.settings, bn_statistics="training")
    settings = strong(settings, spec.config) if recipe == "strong" else settings
    device = torch.device("cpu")

    def score(model) -> float:
        probs = predict_proba(model, subset.test_x, "cpu", precision=settings.mixed_precision)
        return round(classification_metrics(subset.test_y.numpy(), probs, list(spec.classes))["balanced_accuracy"], 4)

    for arm in arms.split(","):
        added = headroom.extra_real(spec, unit, subset, extra) if arm == "real" else None
        clock = time.perf_counter()
        trained = training.train_classifier(subset.train_x, subset.train_y, subset.val_x, subset.val_y,
                                            len(spec.classes), settings, spec.seeds(unit).of("classifier", 0),
                                            subset.steps_per_epoch, "cpu", extra=added)
        scores = {"training": score(trained.model)}
        for mode, augment in (("augmented", training.augmenter(settings, spec.image_size)), ("clean", None)):
            model = copy.deepcopy(trained.model)
            training.recompute_batch_norm(model, subset.train_x, device, settings.batch_size, augment, seed=0)
            scores[mode] = score(model)
        if added is not None:
            model = copy.deepcopy(trained.model)
            training.recompute_batch_norm(model, torch.cat([subset.train_x, added[0]]), device, settings.batch_size)
            scores["clean, subset and extra images"] = score(model)
        print(json.dumps({"study": "bn_statistics", "data": data, "replicate": replicate, "steps": steps,
                          "recipe": recipe, "arm": "+real@%d" % extra if added is not None else "reference",
                          "balanced_accuracy": scores, "train_fit_training_statistics": trained.train_fit,
                          "wall_s": round(time.perf_counter() - clock)}), flush=True)


if __name__ == "__main__":
    main()
