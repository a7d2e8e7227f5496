"""`augment-and-train`: does adding accepted synthetic images improve the classifier?

Protocol (also written into every report):
1. `per_class` labelled real images per class are the only real data that trains or selects
   anything (`manifest.json`). Validation (epoch selection) is `val_fraction` of them: drawn
   from the source's own val split when it has one, else a seeded, stratified carve of the
   subset that keeps each patient on one side (with `group_by`). Generators and classifiers
   train on the rest (the "real training part"). Test images share no patient with either.
2. One generator per family and class trains on that class's real training part (or is reused
   from `--runs DIR`), then draws `synthetic_per_class` images.
3. Acceptance policies filter the synthetic images per class.
4. Arms: `baseline` (real only) and `+<family>` (real + accepted synthetic), each with the same
   classical augmentation, the same optimizer-step budget and the same seeds; K seeds give K
   paired runs. The source's test split is used once per trained classifier, for evaluation.

Every stage writes its result into the output folder and is skipped on a re-run, so an
interrupted experiment picks up where it stopped.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from .. import runs
from ..config import load_config, merge, save_config
from ..data import RealImages, draw_subset, load_split, open_source, reload_subset
from ..data.imagesets import load_image_folder, slug
from ..data.images import check_image_size
from ..data.sources import CIFAR10_CLASSES
from ..data.splits import carve_validation
from ..data.subsets import MANIFEST_NAME, class_manifest, load_manifest
from ..errors import GenaugError
from ..generators.base import get_family
from ..io import read_json, write_json
from . import acceptance
from .classifier import TrainSettings, predict_proba, train_classifier
from .stats import classification_metrics

DEFAULTS: dict[str, Any] = {
    "classes": "all", "per_class": 50, "image_size": None, "seed": 0, "seeds": 3,
    "generators": ["ddpm"], "synthetic_per_class": 100, "accept": ["all"],
    "classifier": "resnet18", "epochs": 20, "batch_size": 32, "lr": 1e-3, "lr_step": 7, "lr_gamma": 0.1,
    "weight_decay": 0.0, "loss": "ce", "cr_k": 3.0, "val_fraction": 0.2, "validation": "auto",
    "group_by": None, "test_fraction": None, "fit": "crop", "intensity": "dataset",
    "rotation": 10.0, "crop_padding": 2, "hflip": None,
    "generator_configs": {}, "generator_steps": None, "sampler": None, "sample_steps": None,
    "acceptance": dict(acceptance.DEFAULTS),
}
FLIP_SAFE_KINDS = {"cifar10", "fashion-mnist"}  # natural images; medical and folder sources: flips off


def experiment_config(config_file: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    config = merge(merge(DEFAULTS, load_config(config_file)), overrides)
    for key in ("generators", "accept"):
        if isinstance(config[key], str):
            config[key] = [p.strip() for p in config[key].split(",") if p.strip()]
    for family in config["generators"]:
        get_family(family)
    acceptance.parse_policies(config["accept"])
    if int(config["synthetic_per_class"]) < 1:
        raise GenaugError(f"synthetic_per_class must be at least 1 (got {config['synthetic_per_class']})")
    if int(config["seeds"]) < 1:
        raise GenaugError("seeds must be at least 1")
    return config


class Experiment:
    def __init__(self, data: str, out: str | Path, config: dict[str, Any], runs_dir: str | None = None,
                 data_root: str | None = None, device: str = "auto", progress: bool = True):
        self.data, self.out, self.config = data, Path(out), config
        self.runs_dir = Path(runs_dir) if runs_dir else self.out / "generators"
        self.data_root, self.device, self.progress = data_root, device, progress
        self.source = open_source(data, data_root, group_by=config["group_by"], test_fraction=config["test_fraction"])
        self.source_labels = self.source.resolve_classes(str(config["classes"]))
        if len(self.source_labels) < 2:
            raise GenaugError("augment-and-train needs at least two classes")
        self.classes = [self.source.classes[i] for i in self.source_labels]
        self.labels = list(range(len(self.classes)))  # classifier labels: positions in self.classes
        self.image_size = check_image_size(config["image_size"] or self.source.default_size())
        if config["hflip"] is None:
            config["hflip"] = self.source.kind in FLIP_SAFE_KINDS or self.source.classes == CIFAR10_CLASSES
        self.settings = TrainSettings.from_config(config)
        self._probs_model = None
        self._feature_cache: dict[str, torch.Tensor] = {}

    # -- stage 1: real data ---------------------------------------------------------------
    def real_data(self) -> None:
        """The scarce real subset, its validation part and the test split (see `validation_plan`)."""
        c = self.config
        manifest_path = self.out / MANIFEST_NAME
        n_val = self.validation_per_class()
        n_train = c["per_class"] - n_val if n_val else c["per_class"]
        if manifest_path.exists():
            manifest = load_manifest(self.out)
            if (manifest["source"], manifest["per_class"], manifest["seed"], manifest["image_size"],
                    manifest["selected_classes"]) != (self.data, n_train, c["seed"], self.image_size, self.classes):
                raise GenaugError(f"{self.out} holds an experiment with other data settings; choose another --out")
            _, real = reload_subset(manifest, self.data_root, self.source)
            val = reload_subset(manifest, self.data_root, self.source, block="validation")[1] if n_val else None
        else:
            real, manifest = draw_subset(self.source, self.source_labels, n_train, c["seed"], self.image_size,
                                         fit=c["fit"], intensity=c["intensity"])
            val = None
            if n_val:
                val, val_manifest = draw_subset(self.source, self.source_labels, n_val, c["seed"], self.image_size,
                                                fit=c["fit"], intensity=manifest["intensity"], split="val")
                manifest["validation"] = val_manifest["train"]
        real.labels = self._positions(real.labels)
        if val is None:
            train_idx, val_idx = carve_validation(real.labels.numpy(), real.groups, c["val_fraction"], c["seed"])
            val_items = [manifest["train"]["items"][i] for i in val_idx]
            train_items = [manifest["train"]["items"][i] for i in train_idx]
            val = RealImages(real.images[val_idx], real.labels[val_idx], real.classes, [])
            real = RealImages(real.images[train_idx], real.labels[train_idx], real.classes, [])
        else:
            val.labels = self._positions(val.labels)
            val_items, train_items = manifest["validation"]["items"], manifest["train"]["items"]
        for label in self.labels:
            if not (real.labels == label).any() or not (val.labels == label).any():
                raise GenaugError(f"too few images for the train/validation split: class {self.classes[label]!r} "
                                  f"needs at least 2 real images (per_class {c['per_class']}, "
                                  f"val_fraction {c['val_fraction']})")
        self._check_same_settings()
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(manifest_path, manifest)
        save_config(self._saved_config(), self.out / "config.yaml")
        self.manifest = manifest
        self.train_x, self.train_y, self.train_items = real.images, real.labels, train_items
        self.val_x, self.val_y, self.val_items = val.images, val.labels, val_items
        test = load_split(self.source, "test", self.source_labels, self.image_size, fit=manifest["fit"],
                          intensity=manifest["intensity"])
        self.test_x, self.test_y = test.images, self._positions(test.labels)
        self.steps_per_epoch = math.ceil(len(self.train_x) / self.settings.batch_size)

    def validation_per_class(self) -> int:
        """Validation images per class drawn from the source's own val split (0: carve from the subset).

        `validation: auto` uses the source's val split when it has one (MedMNIST `val_*`,
        `ROOT/val/<class>`, a label file's `val` rows), drawing `round(per_class * val_fraction)` of
        each class there and `per_class` minus that from train, so the labelled budget per class
        stays `per_class`. `carve` always carves a stratified, group-disjoint part off the subset.
        """
        mode = self.config["validation"]
        if mode not in ("auto", "carve", "source"):
            raise GenaugError(f"validation must be auto, carve or source (got {mode!r})")
        has_val = "val" in self.source.splits
        if mode == "source" and not has_val:
            raise GenaugError(f"validation: source, but {self.data} has no val split")
        if mode == "carve" or not has_val:
            return 0
        n_val = max(1, round(self.config["per_class"] * self.config["val_fraction"]))
        if n_val >= self.config["per_class"]:
            raise GenaugError(f"too few images for the train/validation split: per_class {self.config['per_class']} "
                              f"with val_fraction {self.config['val_fraction']} leaves no training images")
        return n_val

    def validation_plan(self) -> str:
        if self.manifest.get("validation"):
            return (f"the source's own val split, {self.manifest['validation']['count']} images "
                    f"({self.validation_per_class()} per class, seeded draw)")
        unit = "patient-disjoint" if self.manifest["train"]["items"] and "group" in self.manifest["train"]["items"][0] \
            else "image-level"
        return f"a stratified, {unit} {self.config['val_fraction']:.0%} carve of the real subset (seeded)"

    def _saved_config(self) -> dict[str, Any]:
        return {**self.config, "data": self.data, "image_size": self.image_size}

    def _check_same_settings(self) -> None:
        """A re-run resumes only the same experiment; more `seeds` may be added."""
        path = self.out / "config.yaml"
        if not path.exists():
            return
        old, new = yaml.safe_load(path.read_text()), self._saved_config()
        changed = sorted(k for k in set(old) | set(new) if k != "seeds" and old.get(k) != new.get(k))
        if changed:
            raise GenaugError(f"{self.out} holds an experiment with other settings ({', '.join(changed)}); "
                              "choose another --out")

    def _positions(self, source_labels: torch.Tensor) -> torch.Tensor:
        lookup = {s: i for i, s in enumerate(self.source_labels)}
        return torch.tensor([lookup[int(v)] for v in source_labels], dtype=torch.int64)

    # -- stage 2: generators and samples ---------------------------------------------------
    def generator_run(self, family: str, label: int) -> Path:
        run_dir = self.runs_dir / family / slug(self.classes[label])
        manifest = class_manifest(self.manifest, self.classes[label], self.train_items,
                                  note="real training part of an augment-and-train experiment (validation "
                                       "images removed)")
        items = manifest["train"]["items"]
        if self.runs_dir != self.out / "generators":
            if not (run_dir / "model").exists():
                raise GenaugError(f"--runs: no trained {family} model for class {self.classes[label]!r} in {run_dir}")
            old = [it["sha256"] for it in load_manifest(run_dir)["train"]["items"]]
            if old != [it["sha256"] for it in items]:
                raise GenaugError(f"--runs: {run_dir} was trained on other real images than this experiment's")
            return run_dir
        default = f"{family}-{self.image_size}"
        config = load_config(self.config["generator_configs"].get(family)
                             or (default if _has_config(family, self.image_size) else None))
        if self.config["generator_steps"]:
            config["steps"] = int(self.config["generator_steps"])
        config = {**config, "family": family, "data": self.data, "class": self.classes[label],
                  "image_size": self.image_size, "seed": self.config["seed"]}
        images = self.train_x[self.train_y == label]
        return runs.train_on(family, images, manifest, run_dir, config, resume=True, device=self.device,
                             progress=self.progress)

    def synthetic(self, family: str, label: int) -> torch.Tensor:
        run_dir = self.generator_run(family, label)
        folder = self.out / "synthetic" / family / slug(self.classes[label])
        sampler = self.config["sampler"] if family == "ddpm" else None
        steps = self.config["sample_steps"] if family == "ddpm" else None
        runs.sample(run_dir, int(self.config["synthetic_per_class"]), folder, sampler, steps,
                    seed=self.config["seed"], device=self.device, progress=self.progress)
        return load_image_folder(folder)[: int(self.config["synthetic_per_class"])]

    # -- stage 3: acceptance ---------------------------------------------------------------
    def accepted(self, family: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
        path = self.out / "acceptance" / f"{family}.json"
        synthetic = {label: self.synthetic(family, label) for label in self.labels}
        if path.exists():
            decisions = read_json(path)
        else:
            ctx = self._acceptance_context()
            policies = acceptance.parse_policies(self.config["accept"])
            decisions = {"policies": policies, "settings": ctx.settings, "rows": [], "kept": {}}
            for label in self.labels:
                keep, rows = acceptance.accept(synthetic[label], label, policies, ctx)
                decisions["rows"] += rows
                decisions["kept"][self.classes[label]] = np.flatnonzero(keep).tolist()
            write_json(path, decisions)
        xs, ys = [], []
        for label in self.labels:
            kept = decisions["kept"][self.classes[label]]
            xs.append(synthetic[label][kept])
            ys.append(torch.full((len(kept),), label, dtype=torch.int64))
        return torch.cat(xs), torch.cat(ys), {"decisions": decisions, "synthetic": synthetic}

    def _acceptance_context(self) -> acceptance.AcceptanceContext:
        from ..metrics.fidelity import ImageSet, compute_metrics, inception_features

        def features(images):
            key = hashlib.sha256(images.numpy().tobytes()).hexdigest()
            if key not in self._feature_cache:
                self._feature_cache[key] = inception_features(images, device=self.device)
            return self._feature_cache[key]

        def fid(real, fake):
            return compute_metrics(ImageSet(real, "real", True), ImageSet(fake, "synthetic"), device=self.device)["fid"]

        def class_probs(images):
            return predict_proba(self._filter_classifier(), images, self.device)

        settings = {**acceptance.DEFAULTS, **self.config["acceptance"]}
        return acceptance.AcceptanceContext(self.train_x, self.train_y, self.classes, settings,
                                            class_probs=class_probs, fid=fid, features=features)

    def _filter_classifier(self):
        """A classifier on the real training part only, for the `confidence` policy."""
        if self._probs_model is None:
            self._probs_model = train_classifier(self.train_x, self.train_y, self.val_x, self.val_y,
                                                 len(self.classes), self.settings, self.config["seed"],
                                                 self.steps_per_epoch, self.device).model
        return self._probs_model

    # -- stage 4: classifier arms ------------------------------------------------------------
    def arm_result(self, arm: str, seed_index: int, extra: tuple[torch.Tensor, torch.Tensor] | None) -> dict:
        path = self.out / "classifiers" / arm.replace("+", "plus-") / f"seed-{seed_index}.json"
        if path.exists():
            return read_json(path)
        seed = int(self.config["seed"]) + seed_index
        x, y = self.train_x, self.train_y
        if extra is not None and len(extra[0]):
            x, y = torch.cat([x, extra[0]]), torch.cat([y, extra[1]])
        trained = train_classifier(x, y, self.val_x, self.val_y, len(self.classes), self.settings, seed,
                                   self.steps_per_epoch, self.device)
        probs = predict_proba(trained.model, self.test_x, self.device)
        result = {"arm": arm, "seed": seed, "n_real_train": len(self.train_x), "n_synthetic": len(x) - len(self.train_x),
                  "optimizer_steps": trained.optimizer_steps, "best_epoch": trained.best_epoch,
                  "history": trained.history, "test": classification_metrics(self.test_y.numpy(), probs, self.classes)}
        write_json(path, result)
        return result

    def run(self) -> dict:
        from .report import write_report

        self.real_data()
        arms: dict[str, Any] = {"baseline": None}
        acceptance_info = {}
        for family in self.config["generators"]:
            xs, ys, info = self.accepted(family)
            arms[f"+{family}"] = (xs, ys)
            acceptance_info[family] = info
        results: dict[str, list[dict]] = {arm: [] for arm in arms}
        total = len(arms) * int(self.config["seeds"])
        with tqdm(total=total, desc="classifier arms", unit="run", disable=not self.progress) as bar:
            for k in range(int(self.config["seeds"])):
                for arm, extra in arms.items():
                    results[arm].append(self.arm_result(arm, k, extra))
                    bar.update(1)
        return write_report(self, results, acceptance_info)


def _has_config(family: str, image_size: int) -> bool:
    from ..config import packaged_config

    return packaged_config(f"{family}-{image_size}") is not None
