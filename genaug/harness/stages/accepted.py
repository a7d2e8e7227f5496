"""Stages 4 and 5 of a unit: the memorisation gate's check and each synthetic set's acceptance
decisions (`OUT/<unit>/acceptance/`), and the extra images the arms train on, read back from them."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from ...data.imagesets import slug
from ...generators.registry import get_family
from ...io import read_json, write_json
from ...metrics import acceptance
from ...classifiers.training import train_classifier
from .filter_model import filter_model
from .generation import synthetic_set
from ..design.spec import ExperimentSpec, Unit
from .unit_data import UnitData


def decisions_path(spec: ExperimentSpec, unit: Unit, source: str):
    return spec.unit_folder(unit) / "acceptance" / f"{slug(source)}.json"


def gate_path(spec: ExperimentSpec, unit: Unit):
    return spec.unit_folder(unit) / "acceptance" / "gate.json"


def gate_wanted(spec: ExperimentSpec) -> bool:
    return bool(spec.sources) and "memorization" in acceptance.parse_policies(spec.config["accept"])


def gallery_similarity(spec: ExperimentSpec):
    """similarity(queries, gallery, space) -> N x M, for the memorisation gate: shift-tolerant pixels,
    or cosine similarity of Inception features; a real gallery's features (the training part, the
    pool) are computed once per task and kept on disk per image (`metrics/feature_rows.py`), so a
    unit's gate check and every source's acceptance compute them once, and another replicate's pool
    only for the images it does not share."""
    from ...metrics.fidelity import inception_features
    from ...metrics.similarity import cosine_similarity, pixel_similarity

    cache: dict = {}
    settings = {**acceptance.DEFAULTS, **spec.config["acceptance"]}

    def features(images, real: bool = False):
        key = hashlib.sha256(images.numpy().tobytes()).hexdigest()
        if key not in cache:
            cache[key] = inception_features(images, real, device=spec.device)
        return cache[key]

    def similarity(queries, gallery, space):
        if space == "pixels":
            return pixel_similarity(queries, gallery, int(settings["memorization_max_shift"]),
                                    flips=bool(spec.config["hflip"]))
        return cosine_similarity(features(queries), features(gallery, real=True))  # galleries are real images

    similarity.features = features
    return similarity


def acceptance_context(spec: ExperimentSpec, unit: Unit, data: UnitData,
                       source: str | None = None) -> acceptance.AcceptanceContext:
    """What the policies need, each piece computed on first use; the memorisation gate is
    calibrated on the validation images (held-out real images of the same source)."""
    from ...classifiers.inference import predict_proba
    from ...metrics.fidelity import ImageSet, compute_metrics

    cache: dict = {}
    device, settings_ = spec.device, spec.helper_settings
    similarity = gallery_similarity(spec)

    def fid(real, fake):
        return compute_metrics(ImageSet(real, "real", True), ImageSet(fake, "synthetic"), device=device)["fid"]

    def train_filter():
        return train_classifier(data.train_x, data.train_y, data.val_x, data.val_y, len(spec.classes), settings_,
                                spec.seeds(unit).of("filter"), data.steps_per_epoch, device).model, {}

    def class_probs(images):
        if "filter" not in cache:  # a classifier on the real training part only, one per unit (filter_model.py)
            cache["filter"] = filter_model(spec, unit, int(data.train_x.shape[1]), train_filter)[0]
        return predict_proba(cache["filter"], images, device, precision=settings_.mixed_precision)

    settings = {**acceptance.DEFAULTS, **spec.config["acceptance"]}
    keep = data.heldout_without_training_patients()
    family = spec.source_specs.get(source, {}).get("family")
    sources, strengths = edit_records(spec, unit, data, source) if family and get_family(family).edits else (None, None)
    return acceptance.AcceptanceContext(data.train_x, data.train_y, list(spec.classes), settings,
                                        class_probs=class_probs, fid=fid, features=similarity.features,
                                        heldout_images=data.val_x[keep], heldout_labels=data.val_y[keep],
                                        similarity=similarity,
                                        pool_images=data.pool if family and get_family(family).uses_pool else None,
                                        edit_sources=sources, edit_strengths=strengths)


def edit_records(spec: ExperimentSpec, unit: Unit, data: UnitData, source: str) -> tuple[dict, dict]:
    """Per class, each edit's source (its position among the unit's real training images) and strength,
    in the order `synthetic_set` reads the edits."""
    from ...runs import SAMPLE_MANIFEST
    from .generation import samples_folder

    position = {str(it["id"]): i for i, it in enumerate(data.train_items)}
    n = max(spec.config["synthetic_per_class"])
    sources, strengths = {}, {}
    for label in spec.labels:
        rows = read_json(samples_folder(spec, unit, source, label) / SAMPLE_MANIFEST)["images"][:n]
        sources[label] = np.array([position[r["source"]] for r in rows])
        strengths[label] = np.array([float(r["strength"]) for r in rows])
    return sources, strengths


def decide(spec: ExperimentSpec, unit: Unit, data: UnitData, source: str) -> dict:
    """Which drawn images of `source` each policy keeps, per class."""
    synthetic = synthetic_set(spec, unit, data, source)
    ctx = acceptance_context(spec, unit, data, source)
    policies = acceptance.parse_policies(spec.config["accept"])
    out = {"policies": policies, "settings": ctx.settings, "rows": [], "kept": {}}
    for label in spec.labels:
        keep, rows = acceptance.accept(synthetic[label], label, policies, ctx)
        out["rows"] += rows
        out["kept"][spec.classes[label]] = np.flatnonzero(keep).tolist()
    write_json(decisions_path(spec, unit, source), out)
    return out


def gate_check(spec: ExperimentSpec, unit: Unit, data: UnitData) -> dict:
    """How the memorisation gate of this unit does: per class, the share of near-copies of the
    training images it rejects and its leave-one-out false-rejection rate on the validation images."""
    from ...metrics.memorization import gate_rates

    ctx = acceptance_context(spec, unit, data)
    out = gate_rates(data.train_x, data.train_y, ctx.heldout_images, ctx.heldout_labels, list(spec.classes),
                     ctx.similarity, ctx.spaces, ctx.gate_settings, flips=bool(spec.config["hflip"]),
                     seed=spec.seeds(unit).of("gate"), kinds=list(ctx.settings["memorization_check_kinds"]))
    write_json(gate_path(spec, unit), out)
    return out


def kept_indices(spec: ExperimentSpec, unit: Unit, source: str, count: int) -> dict[int, list[int]]:
    """Per class label, the drawing positions of `source`'s accepted images among its first `count`."""
    kept = read_json(decisions_path(spec, unit, source))["kept"]
    return {label: [i for i in kept[spec.classes[label]] if i < count] for label in spec.labels}


def accepted_at(spec: ExperimentSpec, unit: Unit, data: UnitData, source: str, count: int,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Accepted images among the first `count` drawn per class."""
    kept = kept_indices(spec, unit, source, count)
    images = synthetic_set(spec, unit, data, source)
    xs, ys = [], []
    for label in spec.labels:
        idx = kept[label]
        xs.append(images[label][idx])
        ys.append(torch.full((len(idx),), label, dtype=torch.int64))
    return torch.cat(xs), torch.cat(ys)


def accepted_strengths(spec: ExperimentSpec, unit: Unit, data: UnitData, source: str, count: int) -> np.ndarray | None:
    """The edit strength of each image `accepted_at` returns (same order), or None for a source that
    draws new images instead of editing real ones."""
    family = spec.source_specs.get(source, {}).get("family")
    if not family or not get_family(family).edits:
        return None
    kept = kept_indices(spec, unit, source, count)
    _, strengths = edit_records(spec, unit, data, source)
    return np.concatenate([strengths[label][kept[label]] for label in spec.labels])


def duplicates(spec: ExperimentSpec, unit: Unit, data: UnitData) -> tuple[torch.Tensor, torch.Tensor]:
    """Real training images drawn with replacement, per class as many as the largest accepted set."""
    most = max(spec.config["synthetic_per_class"])
    counts = {label: 0 if spec.sources else most for label in spec.labels}
    for source in spec.sources:
        kept = kept_indices(spec, unit, source, most)
        for label in spec.labels:
            counts[label] = max(counts[label], len(kept[label]))
    g = torch.Generator().manual_seed(spec.seeds(unit).of("duplicates"))
    xs, ys = [], []
    for label in spec.labels:
        pool = torch.nonzero(data.train_y == label).flatten()
        pick = pool[torch.randint(len(pool), (counts[label],), generator=g)]
        xs.append(data.train_x[pick])
        ys.append(torch.full((counts[label],), label, dtype=torch.int64))
    return torch.cat(xs), torch.cat(ys)


def matched_duplicates(spec: ExperimentSpec, unit: Unit, data: UnitData, source: str, count: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Real training images drawn with replacement, per class as many as `source`'s accepted images
    among the first `count`: the +dup matched to one synthetic arm in count and class balance."""
    kept = kept_indices(spec, unit, source, count)
    g = torch.Generator().manual_seed(spec.seeds(unit).of("duplicates"))
    xs, ys = [], []
    for label in spec.labels:
        n = len(kept[label])
        pool = torch.nonzero(data.train_y == label).flatten()
        xs.append(data.train_x[pool[torch.randint(len(pool), (n,), generator=g)]])
        ys.append(torch.full((n,), label, dtype=torch.int64))
    return torch.cat(xs), torch.cat(ys)


def full_real(spec: ExperimentSpec, data: UnitData) -> tuple[torch.Tensor, torch.Tensor]:
    """Every train-split image of the classes except this unit's validation images (the ceiling)."""
    split = spec.source.split("train")
    held = {it["id"] for it in data.val_items} if not data.manifest.get("validation") else set()
    ids = [i for i, y in zip(split.ids, split.labels) if int(y) in spec.source_labels and i not in held]
    loaded = spec.source.load("train", ids, spec.image_size, data.manifest["fit"], data.manifest["intensity"])
    label_of = dict(zip(split.ids, split.labels))
    return loaded.images, spec.positions(torch.tensor([int(label_of[i]) for i in loaded.ids]))
