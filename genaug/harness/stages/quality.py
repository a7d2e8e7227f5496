"""Stage 7 of a unit: the quality of each accepted synthetic set, overall and per class, beside
a real-vs-real floor at the same counts (what FID reads for real images of the class)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ...classifiers.inference import predict_proba
from ...data.imagesets import slug
from ...io import read_json, write_json
from .accepted import accepted_at, accepted_strengths
from ...classifiers.training import train_classifier
from ..design.spec import ExperimentSpec, Unit
from ...classifiers.metrics import classification_metrics
from .teacher import teacher_fidelity
from .unit_data import UnitData


def quality_path(spec: ExperimentSpec, unit: Unit, source: str):
    return spec.unit_folder(unit) / "quality" / f"{slug(source)}.json"


def assess(spec: ExperimentSpec, unit: Unit, data: UnitData, source: str) -> dict:
    """FID, KID, precision/recall of the accepted images against the real training part, the
    Classification Accuracy Score (a classifier trained on them alone, tested on the real test split),
    per-class FID and label fidelity (the share the teacher, trained on the real labelled images,
    assigns to the intended class); written to `<unit>/quality/<source>.json`."""
    n = max(spec.config["synthetic_per_class"])
    x, y = accepted_at(spec, unit, data, source, n)
    out: dict[str, Any] = {"source": source, "n_real": len(data.train_x), "n_synthetic": len(x)}
    if len(x) >= 4:
        out.update(_measure(spec, unit, data, source, x, y, accepted_strengths(spec, unit, data, source, n)))
    else:
        out["note"] = "fewer than 4 accepted images: no FID, KID, precision/recall or CAS"
    write_json(quality_path(spec, unit, source), out)
    return out


def _measure(spec: ExperimentSpec, unit: Unit, data: UnitData, source: str, x: torch.Tensor,
             y: torch.Tensor, strengths=None) -> dict[str, Any]:
    from ...metrics.fidelity import ImageSet, compute_metrics, with_features

    # one Inception pass over each side: the per-class FIDs take their rows of the same features
    real = with_features(ImageSet(data.train_x, "real training part", True), device=spec.device)
    fake = with_features(ImageSet(x, source), device=spec.device)
    out = compute_metrics(real, fake, kid=True, prc=True, device=spec.device)
    trained = train_classifier(x, y, data.val_x, data.val_y, len(spec.classes), spec.helper_settings,
                               spec.seeds(unit).of("cas"), data.steps_per_epoch, spec.device)
    probs = predict_proba(trained.model, data.test_x, spec.device, precision=spec.helper_settings.mixed_precision)
    return {**out, "cas": classification_metrics(data.test_y.numpy(), probs, list(spec.classes)),
            "classes_without_images": [spec.classes[label] for label in spec.labels if not (y == label).any()],
            "per_class": class_fids(spec, unit, data, real, fake, y),
            # a sample the real-image classifier puts in another class is label noise, not augmentation
            "label_fidelity": teacher_fidelity(spec, unit, x, y),
            **({} if strengths is None else {"by_strength": by_strength(spec, unit, real, fake, x, y, strengths)})}


def by_strength(spec: ExperimentSpec, unit: Unit, real_set, fake_set, x: torch.Tensor, y: torch.Tensor,
                strengths) -> dict[str, dict]:
    """An edit source's accepted images per strength: their count, FID against the real training part
    (the whole sets' features, as `class_fids`) and label fidelity: a mixed source cycles its
    strengths, so this is its dose-response at no extra training."""
    from ...metrics.fidelity import compute_metrics

    out = {}
    for strength in sorted({float(s) for s in strengths}):
        pick = torch.from_numpy(np.asarray(strengths) == strength)
        row = {"n": int(pick.sum()), "fid": None, "label_fidelity": teacher_fidelity(spec, unit, x[pick], y[pick])}
        if row["n"] >= 2:
            row["fid"] = compute_metrics(real_set, fake_set.subset(pick, f"edits at strength {strength:g}"),
                                         device=spec.device)["fid"]
        out[f"{strength:g}"] = row
    return out


def class_fids(spec: ExperimentSpec, unit: Unit, data: UnitData, real_set, fake_set, y: torch.Tensor) -> dict[str, dict]:
    """Per class: FID of the accepted images against the class's real training images, beside the
    real-vs-real floor at the same real count and (up to) the same synthetic count. `real_set` and
    `fake_set` are the whole sets' `ImageSet`s with their features."""
    from ...metrics.fidelity import compute_metrics

    floors = floor_fids(spec, unit, data, real_set)
    out = {}
    for label in spec.labels:
        name = spec.classes[label]
        real = real_set.subset(data.train_y == label, f"real training {name}")
        fake = fake_set.subset(y == label, f"synthetic {name}")
        row = {"n_real": len(real.images), "n_synthetic": len(fake.images), "fid": None, **floors.get(name, {})}
        if len(fake.images) >= 2 and len(real.images) >= 2:
            row["fid"] = compute_metrics(real, fake, device=spec.device)["fid"]
        out[name] = row
    return out


def floor_fids(spec: ExperimentSpec, unit: Unit, data: UnitData, real_set) -> dict[str, dict]:
    """Per class: FID between the class's real training images and as many other real train-split
    images of the class as synthetic images are drawn (never validation or test images)."""
    path = spec.unit_folder(unit) / "quality" / "floor.json"
    if path.exists():
        return read_json(path)
    from ...metrics.fidelity import ImageSet, compute_metrics

    e = spec
    split = e.source.split("train")
    used = {it["id"] for it in data.train_items} | {it["id"] for it in data.val_items}
    g = torch.Generator().manual_seed(spec.seeds(unit).of("floor"))
    out = {}
    for label, source_label in zip(e.labels, e.source_labels):
        pool = [i for i, lab in zip(split.ids, split.labels) if int(lab) == source_label and i not in used]
        n = min(max(e.config["synthetic_per_class"]), len(pool))
        real = real_set.subset(data.train_y == label, f"real training {e.classes[label]}")
        if n < 2 or len(real.images) < 2:
            out[e.classes[label]] = {"floor_fid": None, "n_floor": n}
            continue
        pick = [pool[int(i)] for i in torch.randperm(len(pool), generator=g)[:n]]
        other = e.source.load("train", pick, e.image_size, data.manifest["fit"], data.manifest["intensity"]).images
        fid = compute_metrics(real, ImageSet(other, f"other real {e.classes[label]}"), device=e.device)["fid"]
        out[e.classes[label]] = {"floor_fid": fid, "n_floor": n}
    write_json(path, out)
    return out
