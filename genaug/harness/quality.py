"""Stage 5 of a replicate: the quality of each accepted synthetic set, overall and per class, beside
a real-vs-real floor at the same counts (what FID reads for real images of the class)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..data.imagesets import slug
from ..io import read_json, write_json
from .classifier import predict_proba, train_classifier
from .stats import classification_metrics
from .timing import timed

if TYPE_CHECKING:
    from .replicate import Replicate


def quality_path(rep: Replicate, source: str):
    return rep.folder / "quality" / f"{slug(source)}.json"


def assess(rep: Replicate, source: str) -> dict:
    """FID, KID, precision/recall of the accepted images against the real training part, the
    Classification Accuracy Score (a classifier trained on them alone, tested on the real test split)
    and per-class FID; cached in `rep-<r>/quality/<source>.json`."""
    path = quality_path(rep, source)
    if path.exists():
        return read_json(path)
    e = rep.e
    x, y = rep.accepted_at(source, max(e.config["synthetic_per_class"]))
    out: dict[str, Any] = {"source": source, "n_real": len(rep.train_x), "n_synthetic": len(x)}
    if len(x) >= 4:
        with timed(rep.folder, "quality (FID, KID, P/R, CAS, per-class FID)", source):
            out.update(_measure(rep, source, x, y))
    else:
        out["note"] = "fewer than 4 accepted images: no FID, KID, precision/recall or CAS"
    write_json(path, out)
    return out


def _measure(rep: Replicate, source: str, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    from ..metrics.fidelity import ImageSet, compute_metrics

    e = rep.e
    out = compute_metrics(ImageSet(rep.train_x, "real training part", True), ImageSet(x, source), kid=True, prc=True,
                          device=e.device)
    trained = train_classifier(x, y, rep.val_x, rep.val_y, len(e.classes), e.settings, rep.seeds.of("cas"),
                               rep.steps_per_epoch, e.device)
    probs = predict_proba(trained.model, rep.test_x, e.device, precision=e.settings.mixed_precision)
    return {**out, "cas": classification_metrics(rep.test_y.numpy(), probs, e.classes),
            "classes_without_images": [e.classes[label] for label in e.labels if not (y == label).any()],
            "per_class": class_fids(rep, x, y)}


def class_fids(rep: Replicate, x: torch.Tensor, y: torch.Tensor) -> dict[str, dict]:
    """Per class: FID of the accepted images against the class's real training images, beside the
    real-vs-real floor at the same real count and (up to) the same synthetic count."""
    from ..metrics.fidelity import ImageSet, compute_metrics

    floors = floor_fids(rep)
    out = {}
    for label in rep.e.labels:
        name = rep.e.classes[label]
        real, fake = rep.train_x[rep.train_y == label], x[y == label]
        row = {"n_real": len(real), "n_synthetic": len(fake), "fid": None, **floors.get(name, {})}
        if len(fake) >= 2 and len(real) >= 2:
            row["fid"] = compute_metrics(ImageSet(real, f"real training {name}", True),
                                         ImageSet(fake, f"synthetic {name}"), device=rep.e.device)["fid"]
        out[name] = row
    return out


def floor_fids(rep: Replicate) -> dict[str, dict]:
    """Per class: FID between the class's real training images and as many other real train-split
    images of the class as synthetic images are drawn (never validation or test images)."""
    path = rep.folder / "quality" / "floor.json"
    if path.exists():
        return read_json(path)
    from ..metrics.fidelity import ImageSet, compute_metrics

    e = rep.e
    split = e.source.split("train")
    used = {it["id"] for it in rep.train_items} | {it["id"] for it in rep.val_items}
    g = torch.Generator().manual_seed(rep.seeds.of("floor"))
    out = {}
    for label, source_label in zip(e.labels, e.source_labels):
        pool = [i for i, lab in zip(split.ids, split.labels) if int(lab) == source_label and i not in used]
        n = min(max(e.config["synthetic_per_class"]), len(pool))
        real = rep.train_x[rep.train_y == label]
        if n < 2 or len(real) < 2:
            out[e.classes[label]] = {"floor_fid": None, "n_floor": n}
            continue
        pick = [pool[int(i)] for i in torch.randperm(len(pool), generator=g)[:n]]
        other = e.source.load("train", pick, e.image_size, rep.manifest["fit"], rep.manifest["intensity"]).images
        fid = compute_metrics(ImageSet(real, f"real training {e.classes[label]}", True),
                              ImageSet(other, f"other real {e.classes[label]}"), device=e.device)["fid"]
        out[e.classes[label]] = {"floor_fid": fid, "n_floor": n}
    write_json(path, out)
    return out
