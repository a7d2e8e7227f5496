"""Stage 6 of a unit: one classifier run (arm x seed x architecture), scored on the test split and
written to `OUT/<unit>/classifiers/<arm>/seed-<k>.json` (`<arch>-seed-<k>.json` for the other
architectures). Written once for both label kinds: the kind's inputs (`UnitInputs` for one class per
image, `multilabel_stages.LabelSetInputs` for several labels) supply what differs: the accepted and
duplicate images, the loss and head, and the test metrics."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ...classifiers.inference import predict_proba, uses_bf16
from ...classifiers.networks import save_classifier
from ...device import resolve_device
from ...io import write_json
from . import accepted, headroom
from ..design.arms import Arm
from .faults import inject
from ..design.spec import ExperimentSpec, Unit
from ...classifiers.metrics import classification_metrics
from ...classifiers.training import TrainedClassifier, train_classifier
from .unit_data import UnitData, pseudo_label_check


@dataclass
class UnitInputs:
    """What an arm may read to build its training data (`arms.RunInputs`): the unit's data and its
    accepted sets."""

    spec: ExperimentSpec
    unit: Unit
    data: UnitData

    @property
    def config(self) -> dict:
        return self.spec.config

    def accepted(self, source: str, count: int):
        return accepted.accepted_at(self.spec, self.unit, self.data, source, count)

    def duplicates(self):
        return accepted.duplicates(self.spec, self.unit, self.data)

    def full_real(self):
        return accepted.full_real(self.spec, self.data)

    def matched_duplicates(self, source: str, count: int):
        return accepted.matched_duplicates(self.spec, self.unit, self.data, source, count)

    def extra_real(self, per_class: int):
        return headroom.extra_real(self.spec, self.unit, self.data, per_class)

    def headroom_data(self, per_class: int | None):
        """N labelled training images per class: a share of the subset's, the subset's plus extra real
        ones, or (None) every real training image of the split."""
        d = self.data
        if per_class is None:
            return self.full_real()
        n_train = min(int((d.train_y == k).sum()) for k in self.spec.labels)
        if per_class <= n_train:
            return headroom.labelled_share(self.spec, self.unit, d, per_class)
        x, y = self.extra_real(per_class - n_train)
        return torch.cat([d.train_x, x]), torch.cat([d.train_y, y])

    def pseudo_label_check(self, pseudo: dict):
        return pseudo_label_check(self.spec, self.data, pseudo)

    def train(self, args: tuple, extra) -> TrainedClassifier:
        """The shared classifier loop: softmax cross-entropy (or the CR loss), one class per image."""
        return train_classifier(*args, extra=extra)

    def score(self, model, settings) -> tuple[dict, dict]:
        """(the result's test fields, what the saved model records beside them) on the test split."""
        probs = predict_proba(model, self.data.test_x, self.spec.device, precision=settings.mixed_precision)
        return {"test": classification_metrics(self.data.test_y.numpy(), probs, list(self.spec.classes)),
                "test_probs": np.round(probs, 6).tolist()}, {}  # probabilities for ensembles


def result_path(spec: ExperimentSpec, unit: Unit, arm: Arm, k: int, arch: str) -> Path:
    stem = f"seed-{k}" if arch == spec.architectures[0] else f"{arch}-seed-{k}"
    return spec.unit_folder(unit) / "classifiers" / arm.slug / f"{stem}.json"


def classifier_run(spec: ExperimentSpec, unit: Unit, data: UnitData, arm: Arm, k: int, arch: str,
                   label: str = "", inputs_type: type[UnitInputs] = UnitInputs) -> dict:
    c, seed = spec.config, spec.seeds(unit).of("classifier", k)
    inputs = inputs_type(spec, unit, data)
    (x, y), extra = arm.data(inputs)
    settings = arm.budget(replace(arm.settings(spec.settings, c), classifier=arch), len(x), len(data.train_x), c)
    args = (x, y, data.val_x, data.val_y, len(spec.classes), settings, seed,
            arm.steps_per_epoch(inputs, len(x), settings.batch_size), spec.device)
    trained, diagnostic = arm.fit(inputs, args, extra)
    inject("kill", label)  # fault injection for the tests: a worker dying in the middle of the task
    scored, recorded = inputs.score(trained.model, settings)
    path = result_path(spec, unit, arm, k, arch)
    if c["save_models"] == "all" or (c["save_models"] == "first" and k == 0):
        save_classifier(trained.model, path.with_suffix(".safetensors"), arch, list(spec.classes),
                        spec.image_size, int(x.shape[1]),
                        extra={"arm": arm.name, "replicate": unit.replicate, "fold": unit.fold, "seed_index": k,
                               "data": spec.data, "fit": data.manifest["fit"], "intensity": data.manifest["intensity"],
                               "pretrained": settings.pretrained, "finetune": settings.finetune,
                               "stem": settings.stem, **recorded})
    result = {"arm": arm.name, "classifier": arch, "replicate": unit.replicate, "fold": unit.fold, "seed_index": k,
              "seed": seed, "bf16": uses_bf16(resolve_device(spec.device), settings.mixed_precision),
              "n_real_train": len(x), "n_extra": len(extra[0]) if extra is not None else 0,
              "synthetic_share": settings.synthetic_share if extra is not None else None,
              "optimizer_steps": trained.optimizer_steps, "images_seen": trained.images_seen,
              "best_epoch": trained.best_epoch, "scored_model": trained.scored, "train_fit": trained.train_fit,
              "converged": trained.converged, "history": trained.history, **scored}
    if arm.kind == "semi":
        result["pseudo_labels"] = diagnostic
    write_json(path, result)
    return result
