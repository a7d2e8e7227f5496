"""`augment-and-train`: does adding accepted synthetic images improve the classifier?

Protocol (also written into every report):
1. Replicates repeat everything random: replicate r draws its own `per_class` labelled real
   images per class (seed + r), its own validation part, trains its own generators, draws its
   own samples (each class from its own seed range, so no two classes share a latent) and makes
   its own acceptance decisions. Inside each replicate, `seeds` classifier seeds are shared by
   every arm. The unit of inference is the replicate: its seeds are averaged, and arms are
   paired within it.
2. Validation (epoch selection) is `val_fraction` of the labelled images: drawn from the
   source's own val split when it has one, else a seeded, stratified carve that keeps each
   patient on one side (with `group_by`). Generators and classifiers train on the rest (the
   "real training part"). Test images share no patient with either and are used once per
   trained classifier.
3. Acceptance policies filter each synthetic set per class.
4. Arms (see `arms.py`): `baseline` (real, classical augmentation), `baseline-strong` (real,
   strong augmentation), `+dup` (real plus as many duplicated real images as the largest
   accepted synthetic set), `+<generator>` and `+<external set>`, optionally `full-real`.
   Every arm has the same optimizer-step budget, epoch selection and seeds.
5. One primary metric, declared before the run (`primary_metric`), drives the headline; the
   others are secondary. Differences to the baseline come with t and bootstrap intervals over
   replicates, paired t and exact Wilcoxon tests, and Holm's correction across arms.

Every stage writes its result into the output folder and is skipped on a re-run, so an
interrupted experiment picks up where it stopped; replicates and seeds may be added later
(recorded in `history.json` and the report).
"""

from __future__ import annotations

import hashlib
import math
import signal
import time
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from .. import runs
from ..config import load_config, save_config
from ..data import RealImages, draw_subset, load_split, open_source, reload_subset
from ..data.images import check_image_size, match_channels
from ..data.imagesets import image_files, load_image_folder, slug
from ..data.sources import CIFAR10_CLASSES
from ..data.splits import carve_validation
from ..data.subsets import MANIFEST_NAME, class_manifest, load_manifest
from ..errors import GenaugError
from ..generators.training import TrainingInterrupted, main_thread, raise_interrupt
from ..io import read_json, write_json
from . import acceptance
from .arms import Arm, plan_arms
from .classifier import TrainSettings, predict_proba, train_classifier
from .config import DEFAULTS, DESIGN_KEYS, synthetic_sources
from .config import experiment_config  # noqa: F401 - part of this module's API
from .stats import classification_metrics

FLIP_SAFE_KINDS = {"cifar10", "fashion-mnist"}  # natural images; medical and folder sources: flips off
SAMPLE_SEED_SPAN = 1_000_000  # images per class and replicate never reach the next class's seeds
CONDITIONAL_UNIT = 500  # generator_seed unit of a class-conditional model (per-class models use the label)


class Experiment:
    """One experiment folder: its settings, its replicates, its arms."""

    def __init__(self, data: str, out: str | Path, config: dict[str, Any], runs_dir: str | None = None,
                 data_root: str | None = None, device: str = "auto", progress: bool = True):
        self.data, self.out, self.config = data, Path(out), config
        self.runs_dir = Path(runs_dir) if runs_dir else None
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
        self.arms = plan_arms(config)
        self._external: dict[str, dict[int, torch.Tensor]] = {}
        self._tests: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.n_val = self._validation_per_class()

    # -- settings and history -----------------------------------------------------------------
    def saved_config(self) -> dict[str, Any]:
        return {**self.config, "data": self.data, "image_size": self.image_size}

    def check_settings(self) -> None:
        """A re-run resumes only the same experiment; replicates and seeds may change (recorded)."""
        path = self.out / "config.yaml"
        new = self.saved_config()
        if path.exists():
            old = yaml.safe_load(path.read_text())
            # a setting added by a later genaug version is absent from older folders: read it as its default
            changed = sorted(k for k in set(old) | set(new)
                             if k not in DESIGN_KEYS and old.get(k, DEFAULTS.get(k)) != new.get(k, DEFAULTS.get(k)))
            if changed:
                raise GenaugError(f"{self.out} holds an experiment with other settings ({', '.join(changed)}); "
                                  "choose another --out (only replicates and seeds may change on a re-run)")
        history = read_json(self.out / "history.json") if (self.out / "history.json").exists() else []
        design = {k: int(new[k]) for k in DESIGN_KEYS}
        if not history or {k: history[-1][k] for k in DESIGN_KEYS} != design:
            history.append({**design, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(new, path)
        write_json(self.out / "history.json", history)
        self.history = history

    def _validation_per_class(self) -> int:
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

    def positions(self, source_labels: torch.Tensor) -> torch.Tensor:
        lookup = {s: i for i, s in enumerate(self.source_labels)}
        return torch.tensor([lookup[int(v)] for v in source_labels], dtype=torch.int64)

    def test_set(self, manifest: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The test split, converted with the replicate's recorded intensity rule (loaded once per rule)."""
        key = repr((manifest["fit"], manifest["intensity"]))
        if key not in self._tests:
            test = load_split(self.source, "test", self.source_labels, self.image_size, fit=manifest["fit"],
                              intensity=manifest["intensity"])
            self._tests[key] = (test.images, self.positions(test.labels))
        return self._tests[key]

    def external(self, name: str) -> dict[int, torch.Tensor]:
        """An external synthetic set `DIR/<class>/*.png`, per class, at the experiment's size and channels."""
        if name not in self._external:
            root = Path(self.config["synthetic"][name])
            if not root.is_dir():
                raise GenaugError(f"--synthetic {name}={root}: folder not found")
            folders = {p.name.lower(): p for p in root.iterdir() if p.is_dir() and image_files(p)}
            wanted = {c.lower(): c for c in self.classes} | {slug(c).lower(): c for c in self.classes}
            unknown = sorted(f for f in folders if f not in wanted)
            if unknown:
                raise GenaugError(f"--synthetic {name}: folder {folders[unknown[0]].name!r} in {root} is not a class "
                                  f"of this experiment ({', '.join(self.classes)})")
            sets = {}
            for label, cls in enumerate(self.classes):
                folder = folders.get(cls.lower()) or folders.get(slug(cls).lower())
                if folder is None:
                    raise GenaugError(f"--synthetic {name}: no folder for class {cls!r} in {root} "
                                      f"(expected {root}/{slug(cls)}/*.png)")
                images = load_image_folder(folder, self.image_size)
                sets[label] = torch.stack([match_channels(img, self.source.channels) for img in images])
            self._external[name] = sets
        return self._external[name]

    # -- the run ------------------------------------------------------------------------------
    def replicate(self, index: int) -> "Replicate":
        return Replicate(self, index)

    def run(self) -> dict:
        from .report import write_report

        self.check_settings()
        replicates = [self.replicate(r) for r in range(int(self.config["replicates"]))]
        seeds = int(self.config["seeds"])
        total = len(replicates) * len(self.arms) * seeds
        previous = signal.signal(signal.SIGTERM, raise_interrupt) if main_thread() else None
        try:
            with tqdm(total=total, desc="classifier runs", unit="run", disable=not self.progress) as bar:
                for rep in replicates:
                    rep.prepare()
                    for k in range(seeds):
                        for arm in self.arms:
                            rep.arm_result(arm, k)
                            bar.update(1)
                    if self.config["quality"]:
                        for source in rep.sources:
                            rep.quality(source)
        except (KeyboardInterrupt, TrainingInterrupted):
            raise TrainingInterrupted(f"interrupted; every finished stage is kept in {self.out}: run the same "
                                      "command again to continue where it stopped") from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        return write_report(self, replicates)


class Replicate:
    """Every stage of one replicate, each cached in `OUT/rep-<r>/`."""

    def __init__(self, experiment: Experiment, index: int):
        self.e, self.index = experiment, index
        self.folder = experiment.out / f"rep-{index}"
        self.seed = int(experiment.config["seed"]) + index
        self.source_specs = synthetic_sources(experiment.config)
        self.sources = list(self.source_specs)
        self._feature_cache: dict[str, torch.Tensor] = {}
        self._filter_model = None

    # seeds: every stage derives its own from (replicate, stage, unit)
    def generator_seed(self, label: int) -> int:
        return self.seed * 1000 + label

    def sample_seed(self, label: int) -> int:
        """Image i of class `label` comes from seed `sample_seed(label) + i`: classes never share a latent."""
        return (self.seed * 1000 + label) * SAMPLE_SEED_SPAN

    def classifier_seed(self, k: int) -> int:
        return self.seed * 1000 + k

    # -- stage 1: real data -------------------------------------------------------------------
    def prepare(self) -> None:
        self.real_data()
        for source in self.sources:
            self.decisions(source)

    def real_data(self) -> None:
        if hasattr(self, "train_x"):
            return
        e, c = self.e, self.e.config
        path = self.folder / MANIFEST_NAME
        n_train = c["per_class"] - e.n_val if e.n_val else c["per_class"]
        if path.exists():
            manifest = load_manifest(self.folder)
            _, real = reload_subset(manifest, e.data_root, e.source)
            val = reload_subset(manifest, e.data_root, e.source, block="validation")[1] if e.n_val else None
        else:
            real, manifest = draw_subset(e.source, e.source_labels, n_train, self.seed, e.image_size,
                                         fit=c["fit"], intensity=c["intensity"])
            val = None
            if e.n_val:
                val, val_manifest = draw_subset(e.source, e.source_labels, e.n_val, self.seed, e.image_size,
                                                fit=c["fit"], intensity=manifest["intensity"], split="val")
                manifest["validation"] = val_manifest["train"]
        real.labels = e.positions(real.labels)
        if val is None:
            train_idx, val_idx = carve_validation(real.labels.numpy(), real.groups, c["val_fraction"], self.seed)
            self.val_items = [manifest["train"]["items"][i] for i in val_idx]
            self.train_items = [manifest["train"]["items"][i] for i in train_idx]
            val = RealImages(real.images[val_idx], real.labels[val_idx], real.classes, [])
            real = RealImages(real.images[train_idx], real.labels[train_idx], real.classes, [])
        else:
            val.labels = e.positions(val.labels)
            self.val_items, self.train_items = manifest["validation"]["items"], manifest["train"]["items"]
        for label in e.labels:
            if not (real.labels == label).any() or not (val.labels == label).any():
                raise GenaugError(f"too few images for the train/validation split: class {e.classes[label]!r} "
                                  f"needs at least 2 real images (per_class {c['per_class']}, "
                                  f"val_fraction {c['val_fraction']})")
        write_json(path, manifest)
        self.manifest = manifest
        self.train_x, self.train_y = real.images, real.labels
        self.val_x, self.val_y = val.images, val.labels
        self.test_x, self.test_y = e.test_set(manifest)
        self.steps_per_epoch = math.ceil(len(self.train_x) / e.settings.batch_size)

    def validation_plan(self) -> str:
        if self.manifest.get("validation"):
            return (f"the source's own val split, {self.manifest['validation']['count']} images "
                    f"({self.e.n_val} per class, seeded draw)")
        unit = "patient-disjoint" if self.train_items and "group" in self.train_items[0] else "image-level"
        return f"a stratified, {unit} {self.e.config['val_fraction']:.0%} carve of the labelled subset (seeded)"

    # -- stage 2: generators and samples -------------------------------------------------------
    def generator_run(self, family: str, label: int | None) -> Path:
        """The trained run of `family` for class `label`, or for every class (`label` None) when the
        family is class-conditional."""
        e = self.e
        names = e.classes if label is None else e.classes[label]
        manifest = class_manifest(self.manifest, names, self.train_items,
                                  note="real training part of an augment-and-train replicate (validation removed)")
        if e.runs_dir is not None and self.index == 0:
            return self._reused_run(family, label, manifest)
        default = f"{family}-{e.image_size}"
        config = load_config(e.config["generator_configs"].get(family)
                             or (default if _has_config(family, e.image_size) else None))
        steps = e.config["generator_steps"]
        steps = steps.get(family) if isinstance(steps, dict) else steps
        if steps:
            config["steps"] = int(steps)
        if label is None:  # one class-conditional model on the whole real training part
            config = {**config, "data": e.data, "class": "all", "classes": list(e.classes),
                      "image_size": e.image_size, "seed": self.generator_seed(CONDITIONAL_UNIT)}
            return runs.train_on(family, self.train_x, manifest, self.folder / "generators" / family, config,
                                 resume=True, device=e.device, progress=e.progress, labels=self.train_y)
        config = {**config, "data": e.data, "class": names, "image_size": e.image_size,
                  "seed": self.generator_seed(label)}
        run_dir = self.folder / "generators" / family / slug(names)
        return runs.train_on(family, self.train_x[self.train_y == label], manifest, run_dir, config, resume=True,
                             device=e.device, progress=e.progress)

    def _reused_run(self, family: str, label: int | None, manifest: dict) -> Path:
        """A generator from `--runs R` (R/<family>/<class> or `genaug train --class all --out R`'s R/<class>;
        for a class-conditional family R/<family>, R/<family>/all or R itself)."""
        e = self.e
        if label is None:
            what, candidates = "class-conditional", [e.runs_dir / family, e.runs_dir / family / "all", e.runs_dir]
        else:
            what = f"class {e.classes[label]!r}"
            candidates = [e.runs_dir / family / slug(e.classes[label]), e.runs_dir / slug(e.classes[label])]
        run_dir = next((p for p in candidates if (p / "model").exists()
                        and runs.load_run_config(p).get("family") == family), None)
        if run_dir is None:
            raise GenaugError(f"--runs: no trained {family} model ({what}) in "
                              f"{' or '.join(str(p) for p in candidates)}")
        if label is None and runs.load_run_config(run_dir).get("classes") != list(e.classes):
            raise GenaugError(f"--runs: {run_dir} was trained on the classes "
                              f"{runs.load_run_config(run_dir).get('classes')}, this experiment has {list(e.classes)}")
        seen = {it["sha256"] for it in load_manifest(run_dir)["train"]["items"]}
        train = {it["sha256"] for it in manifest["train"]["items"]}
        held_out = {it["sha256"] for it in self.val_items if "sha256" in it}
        if seen & held_out or not seen <= train:
            n = e.config["per_class"] - e.n_val if e.n_val else e.config["per_class"]
            how = (f"`genaug train {family} --data {e.data} --class all --per-class {n} --seed {self.seed} --out R`"
                   if e.n_val else "this experiment (drop --runs): it trains generators on the real training part")
            raise GenaugError(f"--runs: {run_dir} was trained on real images this experiment does not train on "
                              f"({len(seen - train)} of its {len(seen)} images are outside replicate 0's real "
                              f"training part, {len(seen & held_out)} are its validation images); train compatible "
                              f"generators with {how}")
        return run_dir

    def synthetic(self, source: str, label: int) -> torch.Tensor:
        """The `max(synthetic_per_class)` images of one class, in drawing order."""
        e = self.e
        n = max(e.config["synthetic_per_class"])
        spec = self.source_specs[source]
        if "folder" in spec:
            return e.external(source)[label][:n]
        family = spec["family"]
        conditional = spec["guidance"] is not None
        run_dir = self.generator_run(family, None if conditional else label)
        folder = self.folder / "synthetic" / source / slug(e.classes[label])
        diffusion = family in ("ddpm", "ddpm-cond")
        sampler = e.config["sampler"] if diffusion else None
        steps = e.config["sample_steps"] if diffusion else None
        condition = {"class_name": e.classes[label], "guidance": spec["guidance"]} if conditional else {}
        # every guidance weight starts class `label` from the same latents: the sweep is paired
        runs.sample(run_dir, n, folder, sampler, steps, seed=self.sample_seed(label), device=e.device,
                    progress=e.progress, **condition)
        return load_image_folder(folder)[:n]

    @cached_property
    def synthetic_sets(self) -> dict[str, dict[int, torch.Tensor]]:
        return {s: {label: self.synthetic(s, label) for label in self.e.labels} for s in self.sources}

    # -- stage 3: acceptance -------------------------------------------------------------------
    def decisions(self, source: str) -> dict:
        path = self.folder / "acceptance" / f"{slug(source)}.json"
        if path.exists():
            return read_json(path)
        synthetic = self.synthetic_sets[source]
        ctx = self._acceptance_context()
        policies = acceptance.parse_policies(self.e.config["accept"])
        out = {"policies": policies, "settings": ctx.settings, "rows": [], "kept": {}}
        for label in self.e.labels:
            keep, rows = acceptance.accept(synthetic[label], label, policies, ctx)
            out["rows"] += rows
            out["kept"][self.e.classes[label]] = np.flatnonzero(keep).tolist()
        write_json(path, out)
        return out

    def accepted_at(self, source: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Accepted images among the first `count` drawn per class."""
        kept = self.decisions(source)["kept"]
        xs, ys = [], []
        for label in self.e.labels:
            idx = [i for i in kept[self.e.classes[label]] if i < count]
            xs.append(self.synthetic_sets[source][label][idx])
            ys.append(torch.full((len(idx),), label, dtype=torch.int64))
        return torch.cat(xs), torch.cat(ys)

    def duplicates(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Real training images drawn with replacement, per class as many as the largest accepted set."""
        e = self.e
        counts = {label: 0 for label in e.labels}
        for source in self.sources:
            _, ys = self.accepted_at(source, max(e.config["synthetic_per_class"]))
            for label in e.labels:
                counts[label] = max(counts[label], int((ys == label).sum()))
        if not self.sources:
            counts = {label: max(e.config["synthetic_per_class"]) for label in e.labels}
        g = torch.Generator().manual_seed(self.seed * 1000 + 999)
        xs, ys = [], []
        for label in e.labels:
            pool = torch.nonzero(self.train_y == label).flatten()
            pick = pool[torch.randint(len(pool), (counts[label],), generator=g)]
            xs.append(self.train_x[pick])
            ys.append(torch.full((counts[label],), label, dtype=torch.int64))
        return torch.cat(xs), torch.cat(ys)

    def full_real(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every train-split image of the classes except this replicate's validation images (the ceiling)."""
        e = self.e
        split = e.source.split("train")
        held = {it["id"] for it in self.val_items} if not self.manifest.get("validation") else set()
        ids = [i for i, y in zip(split.ids, split.labels) if int(y) in e.source_labels and i not in held]
        loaded = e.source.load("train", ids, e.image_size, self.manifest["fit"], self.manifest["intensity"])
        label_of = dict(zip(split.ids, split.labels))
        return loaded.images, e.positions(torch.tensor([int(label_of[i]) for i in loaded.ids]))

    def _acceptance_context(self) -> acceptance.AcceptanceContext:
        from ..metrics.fidelity import ImageSet, compute_metrics, inception_features

        def features(images):
            key = hashlib.sha256(images.numpy().tobytes()).hexdigest()
            if key not in self._feature_cache:
                self._feature_cache[key] = inception_features(images, device=self.e.device)
            return self._feature_cache[key]

        def fid(real, fake):
            return compute_metrics(ImageSet(real, "real", True), ImageSet(fake, "synthetic"), device=self.e.device)["fid"]

        def class_probs(images):
            if self._filter_model is None:  # a classifier on the real training part only
                self._filter_model = train_classifier(
                    self.train_x, self.train_y, self.val_x, self.val_y, len(self.e.classes), self.e.settings,
                    self.classifier_seed(998), self.steps_per_epoch, self.e.device).model
            return predict_proba(self._filter_model, images, self.e.device)

        settings = {**acceptance.DEFAULTS, **self.e.config["acceptance"]}
        return acceptance.AcceptanceContext(self.train_x, self.train_y, self.e.classes, settings,
                                            class_probs=class_probs, fid=fid, features=features)

    # -- stage 4: classifier runs ----------------------------------------------------------------
    def arm_result(self, arm: Arm, k: int) -> dict:
        path = self.folder / "classifiers" / arm.slug / f"seed-{k}.json"
        if path.exists():
            return read_json(path)
        e = self.e
        (x, y), extra = arm.data(self)
        steps_per_epoch = self.steps_per_epoch  # the baseline's budget, whatever the arm adds
        trained = train_classifier(x, y, self.val_x, self.val_y, len(e.classes), arm.settings(e.settings, e.config),
                                   self.classifier_seed(k), steps_per_epoch, e.device, extra=extra)
        probs = predict_proba(trained.model, self.test_x, e.device)
        result = {"arm": arm.name, "replicate": self.index, "seed_index": k, "seed": self.classifier_seed(k),
                  "n_real_train": len(x), "n_extra": len(extra[0]) if extra is not None else 0,
                  "optimizer_steps": trained.optimizer_steps, "images_seen": trained.images_seen,
                  "best_epoch": trained.best_epoch, "history": trained.history,
                  "test": classification_metrics(self.test_y.numpy(), probs, e.classes)}
        write_json(path, result)
        return result

    # -- stage 5: quality of each synthetic set -------------------------------------------------
    def quality(self, source: str) -> dict:
        """FID, KID, precision/recall of the accepted images against the real training part, and the
        Classification Accuracy Score (a classifier trained on them alone, tested on the real test split)."""
        path = self.folder / "quality" / f"{slug(source)}.json"
        if path.exists():
            return read_json(path)
        from ..metrics.fidelity import ImageSet, compute_metrics

        e = self.e
        x, y = self.accepted_at(source, max(e.config["synthetic_per_class"]))
        out: dict[str, Any] = {"source": source, "n_real": len(self.train_x), "n_synthetic": len(x)}
        if len(x) >= 4:
            out.update(compute_metrics(ImageSet(self.train_x, "real training part", True), ImageSet(x, source),
                                       kid=True, prc=True, device=e.device))
            trained = train_classifier(x, y, self.val_x, self.val_y, len(e.classes), e.settings,
                                       self.classifier_seed(0), self.steps_per_epoch, e.device)
            probs = predict_proba(trained.model, self.test_x, e.device)
            out["cas"] = classification_metrics(self.test_y.numpy(), probs, e.classes)
            out["classes_without_images"] = [e.classes[label] for label in e.labels if not (y == label).any()]
            out["per_class"] = self.class_fids(x, y)
        else:
            out["note"] = "fewer than 4 accepted images: no FID, KID, precision/recall or CAS"
        write_json(path, out)
        return out


    def class_fids(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, dict]:
        """Per class: FID of the accepted images against the class's real training images, beside the
        real-vs-real floor at the same real count and (up to) the same synthetic count."""
        from ..metrics.fidelity import ImageSet, compute_metrics

        floors = self.floor_fids()
        out = {}
        for label in self.e.labels:
            name = self.e.classes[label]
            real, fake = self.train_x[self.train_y == label], x[y == label]
            row = {"n_real": len(real), "n_synthetic": len(fake), "fid": None, **floors.get(name, {})}
            if len(fake) >= 2 and len(real) >= 2:
                row["fid"] = compute_metrics(ImageSet(real, f"real training {name}", True),
                                             ImageSet(fake, f"synthetic {name}"), device=self.e.device)["fid"]
            out[name] = row
        return out

    def floor_fids(self) -> dict[str, dict]:
        """Per class: FID between the class's real training images and as many other real train-split
        images of the class as synthetic images are drawn (never validation or test images)."""
        path = self.folder / "quality" / "floor.json"
        if path.exists():
            return read_json(path)
        from ..metrics.fidelity import ImageSet, compute_metrics

        e = self.e
        split = e.source.split("train")
        used = {it["id"] for it in self.train_items} | {it["id"] for it in self.val_items}
        g = torch.Generator().manual_seed(self.seed * 1000 + 997)
        out = {}
        for label, source_label in zip(e.labels, e.source_labels):
            pool = [i for i, lab in zip(split.ids, split.labels) if int(lab) == source_label and i not in used]
            n = min(max(e.config["synthetic_per_class"]), len(pool))
            real = self.train_x[self.train_y == label]
            if n < 2 or len(real) < 2:
                out[e.classes[label]] = {"floor_fid": None, "n_floor": n}
                continue
            pick = [pool[int(i)] for i in torch.randperm(len(pool), generator=g)[:n]]
            other = e.source.load("train", pick, e.image_size, self.manifest["fit"], self.manifest["intensity"]).images
            fid = compute_metrics(ImageSet(real, f"real training {e.classes[label]}", True),
                                  ImageSet(other, f"other real {e.classes[label]}"), device=e.device)["fid"]
            out[e.classes[label]] = {"floor_fid": fid, "n_floor": n}
        write_json(path, out)
        return out


def _has_config(family: str, image_size: int) -> bool:
    from ..config import packaged_config

    return packaged_config(f"{family}-{image_size}") is not None
