"""The confidence policy's classifier, trained once per unit: the baseline recipe on the real
training part alone (its own seed), kept in the unit's folder under the settings hash, so the
acceptance task of every source of the unit reads one model instead of training its own copy.

Two tasks of one unit that start together may both train it (the same weights: one seed, one
recipe); the file is written atomically, so either copy is whole."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch.nn as nn

from ..design.spec import ExperimentSpec, Unit


def filter_path(spec: ExperimentSpec, unit: Unit) -> Path:
    return spec.unit_folder(unit) / "acceptance" / f"filter-{spec.upstream_hash[:16]}.safetensors"


def filter_model(spec: ExperimentSpec, unit: Unit, in_channels: int,
                 train: Callable[[], tuple[nn.Module, dict]]) -> tuple[nn.Module, dict]:
    """The unit's filter classifier and what `train` returned beside it (e.g. thresholds): read from
    the unit's folder, or trained by `train` and saved there first."""
    from ...classifiers.networks import load_classifier, save_classifier

    path = filter_path(spec, unit)
    if path.exists():
        model, meta = load_classifier(path)
        return model, meta["filter"]
    model, extra = train()
    s = spec.helper_settings
    save_classifier(model, path, s.classifier, list(spec.classes), spec.image_size, in_channels,
                    extra={"role": "confidence filter", "filter": extra, "stem": s.stem, "pretrained": s.pretrained})
    return model, extra
