"""Stage 1 of a unit, the real subset: its labelled training part, validation part, test split and
unlabelled pool, drawn once (recorded in `OUT/<unit>/manifest.json` by id and hash) and reloaded
from that record afterwards. The `UnitData` it returns is what every later stage of the unit reads;
under Ray it travels through the object store once."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...data import RealImages, draw_subset, reload_subset
from ...data import unlabeled
from ...data.intensity import IntensityRule
from ...data.splits import carve_validation, cv_folds
from ...data.subsets import MANIFEST_NAME, load_manifest
from ...errors import GenaugError
from ...io import write_json
from ..design.spec import ExperimentSpec, Unit, test_set


@dataclass
class UnitData:
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    train_items: list[dict]
    val_items: list[dict]
    manifest: dict
    steps_per_epoch: int  # the baseline's optimizer steps per epoch
    pool: torch.Tensor | None = None  # the unlabelled images (semi-supervised arms), when drawn

    @property
    def patients_known(self) -> bool:
        """True when the labelled items carry patient (group) ids."""
        return bool(self.train_items) and "group" in self.train_items[0]

    def heldout_without_training_patients(self) -> torch.Tensor:
        """Validation positions whose patient has no training image (all of them where patients are
        unknown): a held-out image of a training patient would raise the gate's threshold."""
        train_groups = {it.get("group") for it in self.train_items} - {None}
        return torch.tensor([it.get("group") not in train_groups for it in self.val_items], dtype=torch.bool)


def real_subset(spec: ExperimentSpec, unit: Unit) -> UnitData:
    c, folder, seeds = spec.config, spec.unit_folder(unit), spec.seeds(unit)
    path = folder / MANIFEST_NAME
    n_train = c["per_class"] - spec.n_val if spec.n_val else c["per_class"]
    if path.exists():
        manifest = load_manifest(folder)
        _, real = reload_subset(manifest, spec.data_root, spec.source)
        val = reload_subset(manifest, spec.data_root, spec.source, block="validation")[1] if spec.n_val else None
    else:
        rule = IntensityRule.parse(c["intensity"]).with_preprocess(c["preprocess"])
        real, manifest = draw_subset(spec.source, list(spec.source_labels), n_train, seeds.of("subset"),
                                     spec.image_size, fit=c["fit"], intensity=rule)
        val = None
        if spec.n_val:
            val, val_manifest = draw_subset(spec.source, list(spec.source_labels), spec.n_val, seeds.of("validation"),
                                            spec.image_size, fit=c["fit"], intensity=manifest["intensity"], split="val")
            manifest["validation"] = val_manifest["train"]
    real.labels = spec.positions(real.labels)
    if val is None:
        if unit.fold is None:
            train_idx, val_idx = carve_validation(real.labels.numpy(), real.groups, c["val_fraction"],
                                                  seeds.of("validation"))
        else:  # the replicate's whole labelled subset in K folds; this unit holds out fold `unit.fold`
            train_idx, val_idx = cv_folds(real.labels.numpy(), real.groups, int(c["cv"]),
                                          seeds.of("validation"))[unit.fold]
        val_items = [manifest["train"]["items"][i] for i in val_idx]
        train_items = [manifest["train"]["items"][i] for i in train_idx]
        val = RealImages(real.images[val_idx], real.labels[val_idx], real.classes, [])
        real = RealImages(real.images[train_idx], real.labels[train_idx], real.classes, [])
    else:
        val.labels = spec.positions(val.labels)
        val_items, train_items = manifest["validation"]["items"], manifest["train"]["items"]
    for label in spec.labels:
        if not (real.labels == label).any() or not (val.labels == label).any():
            raise GenaugError(f"too few images for the train/validation split: class {spec.classes[label]!r} "
                              f"needs at least 2 real images (per_class {c['per_class']}, "
                              f"val_fraction {c['val_fraction']})")
    pool, drawn = None, not path.exists()
    if c["unlabeled"] is not None or c["unlabeled_data"]:
        if "unlabeled" in manifest:
            pool = unlabeled.reload_unlabeled(spec.source, manifest)
        elif c["unlabeled_data"]:
            drawn = True
            pool, manifest["unlabeled"] = unlabeled.folder_pool(c["unlabeled_data"], manifest)
        else:
            drawn = True
            carved = [] if manifest.get("validation") else val_items  # validation carved from the train items
            pool, manifest["unlabeled"] = unlabeled.draw_unlabeled(spec.source, list(spec.source_labels),
                                                                   c["unlabeled"], seeds.of("unlabeled"), manifest,
                                                                   carved)
    if drawn:
        write_json(path, manifest)
    test_x, test_y = test_set(spec, manifest["fit"], manifest["intensity"])
    return UnitData(real.images, real.labels, val.images, val.labels, test_x, test_y, train_items, val_items,
                    manifest, math.ceil(len(real.images) / spec.settings.batch_size),
                    None if pool is None else pool.images)


def validation_plan(spec: ExperimentSpec, unit: Unit, data: UnitData) -> str:
    unit_kind = "patient-disjoint" if data.patients_known else "image-level"
    if unit.fold is not None:
        return (f"{spec.config['cv']}-fold cross-validation of the labelled subset (stratified, {unit_kind}, "
                "seeded per replicate): each fold's held-out part selects the epoch of classifiers trained, "
                "and generators fitted, on the other folds")
    if data.manifest.get("validation"):
        return (f"the source's own val split, {data.manifest['validation']['count']} images "
                f"({spec.n_val} per class, seeded draw)")
    n_val, n_all = len(data.val_items), len(data.val_items) + len(data.train_items)
    return (f"a stratified, {unit_kind} carve of the labelled subset (seeded): {n_val} of {n_all} images "
            f"({n_val / n_all:.0%}; val_fraction {spec.config['val_fraction']:g})")


def pseudo_label_check(spec: ExperimentSpec, data: UnitData, pseudo: dict) -> dict | None:
    """Pseudo-labels against the pool's withheld true labels (None for a folder without labels)."""
    from ...classifiers import semi

    if "folder" in data.manifest["unlabeled"]:
        return None
    ids = [it["id"] for it in data.manifest["unlabeled"]["items"]]
    true = spec.positions(torch.from_numpy(unlabeled.true_labels(spec.source, ids))).numpy()
    return semi.pseudo_label_accuracy(pseudo, true, list(spec.classes), len(true))
