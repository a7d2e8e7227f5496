"""One replicate of an experiment: its real subset and validation part, its synthetic sets and their
acceptance, the data of every arm and the classifier runs; each stage cached in `OUT/rep-<r>/`.
Generators and samples live in `generation.py`, quality in `quality.py`."""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..data import RealImages, draw_subset, reload_subset
from ..data.imagesets import slug
from ..data.intensity import IntensityRule
from ..data import unlabeled
from ..data.splits import carve_validation, cv_folds
from ..data.subsets import MANIFEST_NAME, load_manifest
from ..device import resolve_device
from ..errors import GenaugError
from ..io import read_json, write_json
from . import acceptance, generation, quality, semi
from .arms import Arm
from ..classifiers.inference import predict_proba, uses_bf16
from .classifier import train_classifier
from ..classifiers.networks import save_classifier
from .config import synthetic_sources
from .seeds import Seeds
from .timing import timed
from .stats import classification_metrics

if TYPE_CHECKING:
    from .experiment import Experiment



class Replicate:
    """Every stage of one replicate, each cached in `OUT/rep-<r>/`."""

    def __init__(self, experiment: Experiment, index: int, fold: int | None = None):
        self.e, self.index, self.fold = experiment, index, fold
        self.folder = experiment.out / f"rep-{index}" / ("" if fold is None else f"fold-{fold}")
        self.seeds = Seeds(int(experiment.config["seed"]), index, experiment.config["seed_scheme"])
        self.source_specs = synthetic_sources(experiment.config)
        self.sources = list(self.source_specs)
        self._feature_cache: dict[str, torch.Tensor] = {}
        self._filter_model = None
        self._pool: unlabeled.UnlabeledPool | None = None  # drawn or reloaded on first use

    # seeds: every stage derives its own from (experiment seed, replicate, stage, unit): seeds.py
    def generator_seed(self, label: int) -> int:
        return self.seeds.of("generator", label)

    def sample_seed(self, label: int) -> int:
        """Image i of class `label` comes from seed `sample_seed(label) + i`: classes never share a latent."""
        return self.seeds.of("sample", label)

    def classifier_seed(self, k: int) -> int:
        return self.seeds.of("classifier", k)

    # -- stage 1: real data -------------------------------------------------------------------
    def prepare(self) -> None:
        self.real_data()
        if self.sources and "memorization" in acceptance.parse_policies(self.e.config["accept"]):
            self.gate_check()
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
            rule = IntensityRule.parse(c["intensity"]).with_preprocess(c["preprocess"])
            real, manifest = draw_subset(e.source, e.source_labels, n_train, self.seeds.of("subset"), e.image_size,
                                         fit=c["fit"], intensity=rule)
            val = None
            if e.n_val:
                val, val_manifest = draw_subset(e.source, e.source_labels, e.n_val, self.seeds.of("validation"),
                                                e.image_size,
                                                fit=c["fit"], intensity=manifest["intensity"], split="val")
                manifest["validation"] = val_manifest["train"]
        real.labels = e.positions(real.labels)
        if val is None:
            if self.fold is None:
                train_idx, val_idx = carve_validation(real.labels.numpy(), real.groups, c["val_fraction"],
                                                      self.seeds.of("validation"))
            else:  # the replicate's whole labelled subset in K folds; this unit holds out fold `self.fold`
                train_idx, val_idx = cv_folds(real.labels.numpy(), real.groups, int(c["cv"]),
                                              self.seeds.of("validation"))[self.fold]
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
        self.manifest = manifest
        if (c["unlabeled"] is not None or c["unlabeled_data"]) and "unlabeled" not in manifest:
            self._pool, manifest["unlabeled"] = self._draw_unlabeled()
        write_json(path, manifest)
        self.train_x, self.train_y = real.images, real.labels
        self.val_x, self.val_y = val.images, val.labels
        self.test_x, self.test_y = e.test_set(manifest)
        self.steps_per_epoch = math.ceil(len(self.train_x) / e.settings.batch_size)

    def _draw_unlabeled(self):
        c = self.e.config
        if c["unlabeled_data"]:
            return unlabeled.folder_pool(c["unlabeled_data"], self.manifest)
        carved = [] if self.manifest.get("validation") else self.val_items  # validation carved from train items
        return unlabeled.draw_unlabeled(self.e.source, self.e.source_labels, c["unlabeled"], self.seeds.of("unlabeled"),
                                        self.manifest, carved)

    @property
    def unlabeled_pool(self) -> unlabeled.UnlabeledPool:
        """The replicate's unlabelled images and ids (drawn once, recorded in its manifest by id and hash)."""
        if self._pool is None:
            self._pool = unlabeled.reload_unlabeled(self.e.source, self.manifest)
        return self._pool

    def validation_plan(self) -> str:
        if self.fold is not None:
            unit = "patient-disjoint" if self.patients_known else "image-level"
            return (f"{self.e.config['cv']}-fold cross-validation of the labelled subset (stratified, {unit}, "
                    "seeded per replicate): each fold's held-out part selects the epoch of classifiers trained, "
                    "and generators fitted, on the other folds")
        if self.manifest.get("validation"):
            return (f"the source's own val split, {self.manifest['validation']['count']} images "
                    f"({self.e.n_val} per class, seeded draw)")
        unit = "patient-disjoint" if self.patients_known else "image-level"
        n_val, n_all = len(self.val_items), len(self.val_items) + len(self.train_items)
        return (f"a stratified, {unit} carve of the labelled subset (seeded): {n_val} of {n_all} images "
                f"({n_val / n_all:.0%}; val_fraction {self.e.config['val_fraction']:g})")

    @property
    def patients_known(self) -> bool:
        """True when the labelled items carry patient (group) ids."""
        return bool(self.train_items) and "group" in self.train_items[0]

    # -- stage 2: generators and samples (generation.py) ---------------------------------------
    @cached_property
    def synthetic_sets(self) -> dict[str, dict[int, torch.Tensor]]:
        """Every synthetic set per class, through the run's preprocessing step like the real images."""
        rule = IntensityRule.parse(self.manifest["intensity"])
        return {s: {label: rule.finish(generation.synthetic(self, s, label)) for label in self.e.labels}
                for s in self.sources}

    # -- stage 3: acceptance -------------------------------------------------------------------
    def decisions(self, source: str) -> dict:
        path = self.folder / "acceptance" / f"{slug(source)}.json"
        if path.exists():
            return read_json(path)
        synthetic = self.synthetic_sets[source]
        ctx = self.acceptance_context
        policies = acceptance.parse_policies(self.e.config["accept"])
        out = {"policies": policies, "settings": ctx.settings, "rows": [], "kept": {}}
        with timed(self.folder, "acceptance", source):
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
        g = torch.Generator().manual_seed(self.seeds.of("duplicates"))
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

    @cached_property
    def acceptance_context(self) -> acceptance.AcceptanceContext:
        """What the policies need, each piece computed on first use; the memorisation gate is
        calibrated on the validation images (held-out real images of the same source)."""
        from ..metrics.fidelity import ImageSet, compute_metrics, inception_features
        from ..metrics.similarity import cosine_similarity, pixel_similarity

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
                    self.seeds.of("filter"), self.steps_per_epoch, self.e.device).model
            return predict_proba(self._filter_model, images, self.e.device, precision=self.e.settings.mixed_precision)

        settings = {**acceptance.DEFAULTS, **self.e.config["acceptance"]}

        def similarity(queries, gallery, space):
            if space == "pixels":
                return pixel_similarity(queries, gallery, int(settings["memorization_max_shift"]),
                                        flips=bool(self.e.config["hflip"]))
            return cosine_similarity(features(queries), features(gallery))

        keep = self.heldout_without_training_patients()
        return acceptance.AcceptanceContext(self.train_x, self.train_y, self.e.classes, settings,
                                            class_probs=class_probs, fid=fid, features=features,
                                            heldout_images=self.val_x[keep], heldout_labels=self.val_y[keep],
                                            similarity=similarity)

    def heldout_without_training_patients(self) -> torch.Tensor:
        """Validation positions whose patient has no training image (all of them where patients are
        unknown): a held-out image of a training patient would raise the gate's threshold."""
        train_groups = {it.get("group") for it in self.train_items} - {None}
        return torch.tensor([it.get("group") not in train_groups for it in self.val_items], dtype=torch.bool)

    def gate_check(self) -> dict:
        """How the memorisation gate of this replicate does: per class, the share of near-copies of
        the training images it rejects and its leave-one-out false-rejection rate on the validation
        images (cached in `acceptance/gate.json`)."""
        from ..metrics.memorization import gate_rates

        path = self.folder / "acceptance" / "gate.json"
        if path.exists():
            return read_json(path)
        ctx = self.acceptance_context
        with timed(self.folder, "memorisation gate check", "gate"):
            out = gate_rates(self.train_x, self.train_y, ctx.heldout_images, ctx.heldout_labels, self.e.classes,
                             ctx.similarity, ctx.spaces, ctx.gate_settings, flips=bool(self.e.config["hflip"]),
                             seed=self.seeds.of("gate"), kinds=list(ctx.settings["memorization_check_kinds"]))
        write_json(path, out)
        return out

    # -- stage 4: classifier runs ----------------------------------------------------------------
    def result_path(self, arm: Arm, k: int, arch: str | None = None):
        """`classifiers/<arm>/seed-<k>.json` for the first architecture, `<arch>-seed-<k>.json` for others."""
        arch = arch or self.e.architectures[0]
        stem = f"seed-{k}" if arch == self.e.architectures[0] else f"{arch}-seed-{k}"
        return self.folder / "classifiers" / arm.slug / f"{stem}.json"

    def arm_result(self, arm: Arm, k: int, arch: str | None = None) -> dict:
        arch = arch or self.e.architectures[0]
        path = self.result_path(arm, k, arch)
        if path.exists():
            return read_json(path)
        e = self.e
        (x, y), extra = arm.data(self)
        settings = replace(arm.settings(e.settings, e.config), classifier=arch)
        args = (x, y, self.val_x, self.val_y, len(e.classes), settings, self.classifier_seed(k),
                arm.steps_per_epoch(self, len(x), settings.batch_size), e.device)
        with timed(self.folder, f"classifier ({arm.kind})", f"{arm.name}/{arch}/{k}"):
            trained, diagnostic = arm.fit(self, args, extra)
            probs = predict_proba(trained.model, self.test_x, e.device, precision=settings.mixed_precision)
        if e.config["save_models"] == "all" or (e.config["save_models"] == "first" and k == 0):
            save_classifier(trained.model, path.with_suffix(".safetensors"), arch, e.classes,
                            e.image_size, int(x.shape[1]),
                            extra={"arm": arm.name, "replicate": self.index, "fold": self.fold, "seed_index": k,
                                   "data": e.data,
                                   "fit": self.manifest["fit"], "intensity": self.manifest["intensity"],
                                   "pretrained": settings.pretrained, "finetune": settings.finetune,
                                   "stem": settings.stem})
        result = {"arm": arm.name, "classifier": arch, "replicate": self.index, "fold": self.fold, "seed_index": k,
                  "seed": self.classifier_seed(k), "bf16": uses_bf16(resolve_device(e.device), settings.mixed_precision),
                  "n_real_train": len(x), "n_extra": len(extra[0]) if extra is not None else 0,
                  "optimizer_steps": trained.optimizer_steps, "images_seen": trained.images_seen,
                  "best_epoch": trained.best_epoch, "history": trained.history,
                  "test": classification_metrics(self.test_y.numpy(), probs, e.classes),
                  "test_probs": np.round(probs, 6).tolist()}  # for ensembles
        if arm.kind == "semi":
            result["pseudo_labels"] = diagnostic
        write_json(path, result)
        return result

    def pseudo_label_check(self, pseudo: dict) -> dict | None:
        """Pseudo-labels against the pool's withheld true labels (None for a folder without labels)."""
        if "folder" in self.manifest["unlabeled"]:
            return None
        ids = self.unlabeled_pool.ids
        true = self.e.positions(torch.from_numpy(unlabeled.true_labels(self.e.source, ids))).numpy()
        return semi.pseudo_label_accuracy(pseudo, true, self.e.classes, len(true))

    # -- stage 5: quality of each synthetic set (quality.py) ------------------------------------
    def quality(self, source: str) -> dict:
        return quality.assess(self, source)

    def finished(self) -> bool:
        """Every classifier result of this unit, and its quality stage when asked, is on disk."""
        e = self.e
        results = all(self.result_path(arm, k, arch).exists() for k in range(int(e.config["seeds"]))
                      for arm in e.arms for arch in e.architectures)
        return results and (not e.config["quality"] or all(quality.quality_path(self, s).exists()
                                                           for s in self.sources))
