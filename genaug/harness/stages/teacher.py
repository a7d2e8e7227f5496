"""Stage of a unit with a pool generator or a quality stage: the teacher, a classifier trained on the
real labelled training part alone with the shared recipe and the baseline's first seed (so it is
the `+pseudo` arm's teacher of seed 0, run for run). It labels the unlabelled pool for `ddpm-pseudo`
(its probabilities, and how right they are against the pool's withheld labels, as a diagnostic)
and scores each synthetic set's label fidelity in the quality stage. When the experiment runs
`--semi mpl`, Meta Pseudo Labels' teacher (trained as the `+mpl` arm's seed 0) is trained too: it
labels the pool for `ddpm-pseudo` instead, and scores label fidelity beside the first. Written to
`<unit>/teacher/`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...classifiers.inference import predict_proba
from ...classifiers.networks import load_classifier, save_classifier
from ...io import read_json, write_json
from ...classifiers.training import train_classifier
from ..design.spec import ExperimentSpec, Unit
from .unit_data import UnitData, pseudo_label_check


RECORD, MODEL, MPL_MODEL = "teacher.json", "model.safetensors", "mpl-teacher.safetensors"


def teacher_folder(spec: ExperimentSpec, unit: Unit) -> Path:
    return spec.unit_folder(unit) / "teacher"


def teacher_trained(spec: ExperimentSpec, unit: Unit) -> bool:
    """Its record and its weights (MPL's teacher's too, under `--semi mpl`) are on disk."""
    files = (RECORD, MODEL, *((MPL_MODEL,) if "mpl" in spec.config["semi"] else ()))
    return all((teacher_folder(spec, unit) / name).exists() for name in files)


def train_teacher(spec: ExperimentSpec, unit: Unit, data: UnitData) -> dict:
    folder = teacher_folder(spec, unit)
    seed = spec.seeds(unit).of("classifier", 0)
    trained = train_classifier(data.train_x, data.train_y, data.val_x, data.val_y, len(spec.classes), spec.helper_settings,
                               seed, data.steps_per_epoch, spec.device)
    save_classifier(trained.model, folder / MODEL, spec.helper_settings.classifier, list(spec.classes),
                    spec.image_size, int(data.train_x.shape[1]),
                    extra={"role": "teacher", "seed": seed, "stem": spec.helper_settings.stem,
                           "pretrained": spec.helper_settings.pretrained})
    out = {"seed": seed, "best_epoch": trained.best_epoch, "recipe": spec.helper_settings.classifier, "labels_pool": "supervised"}
    if data.pool is not None:
        probs = predict_proba(trained.model, data.pool, spec.device, precision=spec.helper_settings.mixed_precision)
        if "mpl" in spec.config["semi"]:
            probs = _mpl_teacher(spec, data, seed, folder)
            out["labels_pool"] = "mpl"
        out["pool_probs"] = np.round(probs, 6).tolist()
        top = {"indices": list(range(len(probs))), "labels": probs.argmax(1).tolist()}
        out["pool_check"] = pseudo_label_check(spec, data, top)  # the withheld labels: a diagnostic only
    write_json(folder / RECORD, out)
    return out


def _mpl_teacher(spec: ExperimentSpec, data: UnitData, seed: int, folder: Path) -> np.ndarray:
    """Meta Pseudo Labels' teacher, trained as the +mpl arm's seed 0; saved beside the supervised one."""
    from ...classifiers.semi import train_mpl

    c = spec.config
    result = train_mpl(data.train_x, data.train_y, data.val_x, data.val_y, len(spec.classes), spec.helper_settings, seed,
                       data.steps_per_epoch, spec.device, data.pool, c["semi_settings"],
                       strong_policy=c["strong_augment"])
    save_classifier(result.teacher, folder / MPL_MODEL, spec.helper_settings.classifier, list(spec.classes),
                    spec.image_size, int(data.train_x.shape[1]),
                    extra={"role": "mpl teacher", "seed": seed, "stem": spec.helper_settings.stem,
                           "pretrained": spec.helper_settings.pretrained})
    return result.teacher_probs


def pool_probs(spec: ExperimentSpec, unit: Unit) -> np.ndarray:
    return np.asarray(read_json(teacher_folder(spec, unit) / RECORD)["pool_probs"])


def label_fidelity(probs: np.ndarray, labels: torch.Tensor, classes: list[str]) -> dict:
    """Per intended class: the share of images the classifier assigns to it (None without images)."""
    predicted = np.asarray(probs).argmax(1)
    labels = np.asarray(labels)
    out = {name: (float((predicted[labels == k] == k).mean()) if (labels == k).any() else None)
           for k, name in enumerate(classes)}
    given = [v for v in out.values() if v is not None]
    return {"per_class": out, "mean": float(np.mean(given)) if given else None}


def teacher_fidelity(spec: ExperimentSpec, unit: Unit, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """Label fidelity by the supervised teacher, and by MPL's teacher where one was trained."""
    out = {}
    for name, file in (("supervised", MODEL), ("mpl", MPL_MODEL)):
        path = teacher_folder(spec, unit) / file
        if path.exists():
            model, _ = load_classifier(path)
            probs = predict_proba(model, images, spec.device, precision=spec.helper_settings.mixed_precision)
            out[name] = label_fidelity(probs, labels, list(spec.classes))
    return {**out["supervised"], **({"mpl_teacher": out["mpl"]} if "mpl" in out else {})}
