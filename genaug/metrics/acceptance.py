"""Accepting or rejecting synthetic images before they join the training set.

Policies run in the order given, each on what the previous ones kept, and each reports per
class how many images it saw, kept and rejected:
- `all`: keep everything.
- `confidence`: a classifier trained on the real training images must give the intended class
  a probability >= `confidence_tau`.
- `fid-gate`: drop a class's whole synthetic set when its FID against that class's real
  training images exceeds `fid_max`.
- `memorization`: reject an image that comes closer to a real training image than independent
  real images of its class do: per class and space (`memorization_spaces`: Inception features,
  shift-tolerant pixels), the threshold is a rank bound at `memorization_quantile` on the held-out
  real images' nearest-neighbour similarities to the training part, robust to
  `memorization_robust` outliers, with suspected duplicates left out (see `metrics/memorization.py`).
  Near-copies of patient images add no information and are not safe to share. For a generator
  that trained on the unlabelled pool too, the pool is a second gallery with its own thresholds
  (calibrated the same way on the held-out images' similarities to the pool); each row counts the
  images rejected for resembling a labelled and a pool image. An edit of a real image (ddpm-edit)
  resembles its own source by design: it is judged against every real image except its source,
  with the same thresholds, and its similarity to its source is reported per strength.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..errors import GenaugError
from . import memorization as gate

POLICIES = ("all", "confidence", "fid-gate", "memorization")
DEFAULTS = {"confidence_tau": 0.7, "fid_max": 150.0,
            **{f"memorization_{k}": v for k, v in gate.DEFAULTS.items()}}  # quantile, spaces, robust, duplicate, ...


@dataclass
class AcceptanceContext:
    """What the policies need, computed lazily by the caller (classifier, FID, features)."""

    real_images: torch.Tensor  # uint8, the real training images (all classes)
    real_labels: torch.Tensor
    classes: list[str]
    settings: dict = field(default_factory=lambda: dict(DEFAULTS))
    class_probs: Callable[[torch.Tensor], np.ndarray] | None = None  # uint8 -> probabilities
    fid: Callable[[torch.Tensor, torch.Tensor], float] | None = None  # (real, fake) uint8 -> FID
    features: Callable[[torch.Tensor], torch.Tensor] | None = None  # uint8 -> N x D features
    # the memorisation gate: held-out real images calibrate it; similarity(queries, gallery, space) -> N x M
    heldout_images: torch.Tensor | None = None
    heldout_labels: torch.Tensor | None = None
    similarity: Callable[[torch.Tensor, torch.Tensor, str], torch.Tensor] | None = None
    # the unlabelled pool a generator trained on (patient images too): compared with its own gate
    pool_images: torch.Tensor | None = None
    # edits (ddpm-edit): per class, each synthetic image's source (an index into real_images, -1 none)
    # and strength, in the order of the images `accept` is given
    edit_sources: dict[int, np.ndarray] | None = None
    edit_strengths: dict[int, np.ndarray] | None = None
    _gate: gate.GateThresholds | None = None
    _pool_gate: gate.GateThresholds | None = None

    def memorization_gate(self) -> gate.GateThresholds:
        if self._gate is None:
            if self.heldout_images is None or self.similarity is None:
                raise GenaugError("the memorization policy needs held-out real images to calibrate on")
            nearest = gate.nearest_similarity(self.similarity, self.heldout_images, self.real_images, self.spaces)
            self._gate = gate.calibrate(nearest, self.heldout_labels.numpy(), self.classes, self.gate_settings)
        return self._gate

    def pool_gate(self) -> gate.GateThresholds:
        """The gate against the pool, calibrated on the held-out images' nearest similarities to the pool
        (a gallery of thousands sits closer to any image than the labelled few: its own thresholds)."""
        if self._pool_gate is None:
            self.memorization_gate()  # the same held-out images; refuses where there are none
            nearest = gate.nearest_similarity(self.similarity, self.heldout_images, self.pool_images, self.spaces)
            self._pool_gate = gate.calibrate(nearest, self.heldout_labels.numpy(), self.classes, self.gate_settings)
        return self._pool_gate

    @property
    def gate_settings(self) -> gate.GateSettings:
        return gate.GateSettings.from_settings(self.settings)

    @property
    def spaces(self) -> list[str]:
        return check_spaces(self.settings["memorization_spaces"])


def check_spaces(spaces) -> list[str]:
    spaces = list(spaces)
    unknown = [s for s in spaces if s not in gate.SPACES]
    if unknown or not spaces:
        raise GenaugError(f"memorization_spaces: unknown space {', '.join(unknown) or '(none)'}; "
                          f"choose from {', '.join(gate.SPACES)}")
    return spaces


def check_settings(settings: dict) -> None:
    """Refuse, before anything is written, memorisation-gate settings the gate would refuse later."""
    merged = {**DEFAULTS, **settings}
    gate.GateSettings.from_settings(merged)
    check_spaces(merged["memorization_spaces"])
    gate.check_kinds(merged["memorization_check_kinds"])


def parse_policies(text: str | list[str]) -> list[str]:
    names = [p.strip() for p in (text.split(",") if isinstance(text, str) else text) if p.strip()]
    unknown = [p for p in names if p not in POLICIES]
    if unknown or not names:
        raise GenaugError(f"unknown acceptance policy {', '.join(unknown) or '(none)'}; choose from {', '.join(POLICIES)}")
    return names


def _confidence(images, label, ctx, which):
    probs = ctx.class_probs(images)
    return probs[:, label] >= ctx.settings["confidence_tau"], {"probability": probs[:, label].tolist()}


def _fid_gate(images, label, ctx, which):
    if len(images) < 2:
        return np.zeros(len(images), bool), {"fid": None, "note": "fewer than 2 images left"}
    fid = ctx.fid(ctx.real_images[ctx.real_labels == label], images)
    return np.full(len(images), fid <= ctx.settings["fid_max"]), {"fid": fid}


def _memorization(images, label, ctx, which):
    thresholds = ctx.memorization_gate()
    own = ctx.edit_sources[label][which] if ctx.edit_sources else None
    nearest = gate.nearest_similarity(ctx.similarity, images, ctx.real_images, ctx.spaces, exclude=own)
    reject = gate.rejected(nearest, label, thresholds, ctx.classes)
    detail = {f"{space}_similarity": sims.tolist() for space, sims in nearest.items()}
    if own is not None:
        detail["source_similarity"] = _by_strength(
            gate.own_similarity(ctx.similarity, images, ctx.real_images, ctx.spaces, own),
            ctx.edit_strengths[label][which])
    name = ctx.classes[label]
    detail.update(thresholds=thresholds.thresholds[name], n_calibration=thresholds.calibration_counts[name],
                  false_rejection_bound=thresholds.guarantees[name],
                  suspected_duplicates=len(thresholds.duplicates[name]))
    if ctx.pool_images is not None:
        pool = ctx.pool_gate()
        near_pool = gate.nearest_similarity(ctx.similarity, images, ctx.pool_images, ctx.spaces)
        reject_pool = gate.rejected(near_pool, label, pool, ctx.classes)
        detail.update(rejected_labelled=int(reject.sum()), rejected_pool=int(reject_pool.sum()),
                      pool_thresholds=pool.thresholds[name])
        reject = reject | reject_pool
    return ~reject, detail


def _by_strength(similarity: dict[str, np.ndarray], strengths: np.ndarray) -> dict:
    """{space: {strength: mean similarity of the edits at it to their own sources}}."""
    return {space: {f"{s:g}": float(np.nanmean(sims[strengths == s])) for s in np.unique(strengths)}
            for space, sims in similarity.items()}


RULES = {"all": lambda images, label, ctx, which: (np.ones(len(images), bool), {}),
         "confidence": _confidence, "fid-gate": _fid_gate, "memorization": _memorization}


def accept(images: torch.Tensor, label: int, policies: list[str], ctx: AcceptanceContext) -> tuple[np.ndarray, list[dict]]:
    """Boolean mask of accepted images of one class, and one report row per policy."""
    keep = np.ones(len(images), bool)
    rows = []
    for policy in policies:
        idx = np.flatnonzero(keep)
        if len(idx) == 0:
            rows.append({"policy": policy, "class": ctx.classes[label], "seen": 0, "kept": 0, "rejected": 0})
            continue
        ok, detail = RULES[policy](images[idx], label, ctx, idx)
        ok = np.asarray(ok, bool)
        keep[idx[~ok]] = False
        rows.append({"policy": policy, "class": ctx.classes[label], "seen": int(len(idx)),
                     "kept": int(ok.sum()), "rejected": int((~ok).sum()), **_summary(detail)})
    return keep, rows


def _summary(detail: dict) -> dict:
    """Keep scalar details; summarise per-image lists to min/mean/max."""
    out = {}
    for key, value in detail.items():
        if isinstance(value, list) and value and isinstance(value[0], float):
            arr = np.asarray(value)
            out[key] = {"min": float(arr.min()), "mean": float(arr.mean()), "max": float(arr.max())}
        elif not isinstance(value, list):
            out[key] = value
    return out
