"""A memorisation gate calibrated on the data itself, and the way to measure it.

How close does an independent real image of a class get to the real training part? The held-out
real images (the validation part) answer it: their nearest-neighbour similarities to the training
images give, per class and per space (Inception features, shift-tolerant pixels), a threshold. A
synthetic image at or above the threshold in any space is closer to a training image than
independent real images of its class get, and is rejected as a near-copy.

The threshold is a rank (split-conformal) bound, free of any distribution assumption: with n
held-out similarities exchangeable with a new independent image's, the new one reaches the k-th
smallest with probability at most (n - k + 1) / (n + 1). The rank is k = ceil((n + 1) * quantile),
capped at n - `robust` so that the `robust` highest held-out similarities never set the threshold
(one outlier moves it by at most one order statistic; the old normal fit in Fisher z moved from
0.922 to 0.991 for one image at 0.99 among ten near 0.90, and to exact copies only for a held-out
duplicate). The guarantee actually reached, (n - k + 1) / (n + 1) per space, is reported; where it
would exceed `max_false_rejection` (too few held-out images) the gate rejects exact copies only and
says so. Held-out images at or above `duplicate` in every space are near-copies of a training image
inside the data set (the same scan twice, the same patient): they are reported as suspected
duplicates and left out of the calibration. Held-out images of a patient of the training part are
left out by the caller where patients are known.

`near_copies` makes the near-copies the gate must catch: those the pixel similarity searches over
(mirror images where the data allows flips, shifts of 1-3 px) and those it does not (rotation by
3-5 degrees, 90-110% rescale with a crop back to size, brightness and contrast by 10%, Gaussian
blur, JPEG at quality 50), with light noise and JPEG at 75; `gate_rates` measures the rejection
rate on them and the false-rejection rate on held-out real images that did not calibrate the gate
(leave-one-out inside the calibration set, or a separate held-out set).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torchvision.io import decode_jpeg, encode_jpeg

from ..errors import GenaugError

SPACES = ("inception", "pixels")
EXACT = 1 - 1e-6  # the highest threshold: exact copies (similarity 1 up to rounding) are always rejected
NEAR_COPY_KINDS = ("flip", "shift", "noise", "jpeg", "rotate", "rescale", "brightness", "contrast", "blur",
                   "jpeg50")
DEFAULTS = {"quantile": 0.99, "spaces": list(SPACES), "max_shift": 3, "robust": 1, "duplicate": 0.995,
            "max_false_rejection": 0.25, "check_kinds": list(NEAR_COPY_KINDS)}  # check_kinds: measured per replicate


@dataclass(frozen=True)
class GateSettings:
    """How the gate turns held-out similarities into thresholds (see the module docstring)."""

    quantile: float = DEFAULTS["quantile"]
    robust: int = DEFAULTS["robust"]
    duplicate: float = DEFAULTS["duplicate"]
    max_false_rejection: float = DEFAULTS["max_false_rejection"]

    def __post_init__(self):
        if not 0.5 <= self.quantile < 1:
            raise GenaugError(f"memorization_quantile must be in [0.5, 1) (got {self.quantile})")
        if not (isinstance(self.robust, int) and self.robust >= 0):
            raise GenaugError(f"memorization_robust must be a whole number >= 0 (got {self.robust!r})")
        if not 0 < self.duplicate <= 1:
            raise GenaugError(f"memorization_duplicate must be in (0, 1] (got {self.duplicate})")
        if not 0 < self.max_false_rejection < 1:
            raise GenaugError(f"memorization_max_false_rejection must be in (0, 1) (got {self.max_false_rejection})")

    @classmethod
    def from_settings(cls, settings: dict) -> "GateSettings":
        """From acceptance settings (`memorization_quantile`, `memorization_robust`, ...); a value that
        is not a number is refused in one line."""
        values = {}
        for name in cls.__dataclass_fields__:
            key = f"memorization_{name}"
            if key in settings:
                try:
                    number = float(settings[key])
                except (TypeError, ValueError):
                    raise GenaugError(f"{key} must be a number (got {settings[key]!r})") from None
                if name != "robust":
                    values[name] = number
                else:  # counts images: 1.0 (as YAML may write it) is 1; 1.5 is refused by __post_init__
                    values[name] = int(number) if number.is_integer() else settings[key]
        return cls(**values)


def check_kinds(kinds) -> list[str]:
    """Near-copy kinds to measure, each one of NEAR_COPY_KINDS, or a one-line refusal."""
    unknown = sorted(set(kinds) - set(NEAR_COPY_KINDS))
    if unknown:
        raise GenaugError(f"unknown near-copy kind {unknown[0]!r}; choose from {', '.join(NEAR_COPY_KINDS)}")
    return list(kinds)


@dataclass
class GateThresholds:
    """Per class and space: the similarity at or above which a synthetic image is rejected."""

    thresholds: dict[str, dict[str, float]]  # class -> space -> threshold
    calibration_counts: dict[str, int]
    quantile: float
    guarantees: dict[str, float | None] = field(default_factory=dict)  # class -> bound on false rejection per space
    duplicates: dict[str, list[int]] = field(default_factory=dict)  # class -> held-out positions left out

    def to_json(self) -> dict:
        return {"quantile": self.quantile, "thresholds": self.thresholds, "n_calibration": self.calibration_counts,
                "false_rejection_bound": self.guarantees, "suspected_duplicates": self.duplicates}


def rank_of(n: int, settings: GateSettings) -> int | None:
    """The order statistic (1-based) that bounds n held-out similarities, or None when the bound it
    guarantees would exceed `max_false_rejection`."""
    k = min(math.ceil((n + 1) * settings.quantile), n - settings.robust)
    if k < 1 or (n - k + 1) / (n + 1) > settings.max_false_rejection:
        return None
    return k


def threshold_from(similarities: np.ndarray, settings: GateSettings = GateSettings()) -> tuple[float, float | None]:
    """(threshold, guaranteed bound on the false-rejection rate in this space) from held-out similarities."""
    sims = np.sort(np.asarray(similarities, float))
    if len(sims) == 0:
        raise GenaugError("no held-out real images of this class to calibrate the memorisation gate")
    k = rank_of(len(sims), settings)
    if k is None:
        return EXACT, None
    return float(min(sims[k - 1], EXACT)), (len(sims) - k + 1) / (len(sims) + 1)


def nearest_similarity(similarity: Callable[[torch.Tensor, torch.Tensor, str], torch.Tensor],
                       queries: torch.Tensor, gallery: torch.Tensor, spaces: list[str],
                       exclude: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per space, each query's highest similarity to any gallery image; with `exclude` (per query a
    gallery index, -1 for none), to any but that one: an edit of a real image is judged against the
    other real images, not its own source."""
    out = {}
    for space in spaces:
        sims = similarity(queries, gallery, space)
        if exclude is not None and (np.asarray(exclude) >= 0).any():
            sims = sims.clone()
            rows = np.flatnonzero(np.asarray(exclude) >= 0)
            sims[rows, np.asarray(exclude)[rows]] = -float("inf")
        out[space] = sims.max(dim=1).values.numpy()
    return out


def own_similarity(similarity: Callable[[torch.Tensor, torch.Tensor, str], torch.Tensor],
                   queries: torch.Tensor, gallery: torch.Tensor, spaces: list[str], own: np.ndarray
                   ) -> dict[str, np.ndarray]:
    """Per space, each query's similarity to its own gallery image `own[i]` (nan where -1)."""
    own = np.asarray(own)
    rows = np.flatnonzero(own >= 0)
    out = {}
    for space in spaces:
        values = np.full(len(queries), np.nan)
        if len(rows):
            values[rows] = similarity(queries[rows], gallery[own[rows]], space).diagonal().numpy()
        out[space] = values
    return out


def suspected_duplicates(heldout_nearest: dict[str, np.ndarray], cutoff: float) -> np.ndarray:
    """True for held-out images at or above `cutoff` in every space: near-copies of a training image."""
    return np.all([sims >= cutoff for sims in heldout_nearest.values()], axis=0)


def calibrate(heldout_nearest: dict[str, np.ndarray], heldout_labels: np.ndarray, classes: list[str],
              settings: GateSettings = GateSettings()) -> GateThresholds:
    """Thresholds per class from the held-out images' nearest similarities (see `nearest_similarity`),
    suspected duplicates left out."""
    dup = suspected_duplicates(heldout_nearest, settings.duplicate)
    out, counts, bounds, dups = {}, {}, {}, {}
    for label, name in enumerate(classes):
        mask = (heldout_labels == label) & ~dup
        dups[name] = np.flatnonzero((heldout_labels == label) & dup).tolist()
        counts[name] = int(mask.sum())
        if not mask.any():
            raise GenaugError(f"no held-out real images of class {name!r} left to calibrate the memorisation gate "
                              f"({len(dups[name])} suspected duplicates of training images)")
        per_space = {space: threshold_from(sims[mask], settings) for space, sims in heldout_nearest.items()}
        out[name] = {space: t for space, (t, _) in per_space.items()}
        bound = [g for _, g in per_space.values()]
        bounds[name] = None if any(g is None for g in bound) else float(max(bound))
    return GateThresholds(out, counts, settings.quantile, bounds, dups)


def rejected(nearest: dict[str, np.ndarray], label: int, gate: GateThresholds, classes: list[str]) -> np.ndarray:
    """True where an image of class `label` reaches its class's threshold in any space."""
    limits = gate.thresholds[classes[label]]
    return np.any([nearest[space] >= limits[space] for space in nearest], axis=0)


def near_copies(images: torch.Tensor, kind: str, seed: int = 0) -> torch.Tensor:
    """uint8 near-copies of `images` (N x C x H x W), one per image; `kind` is one of NEAR_COPY_KINDS."""
    from torchvision.transforms.v2 import functional as TF

    g = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float) -> float:
        return float(low + (high - low) * torch.rand((), generator=g))

    def sign() -> float:
        return 1.0 if torch.rand((), generator=g) < 0.5 else -1.0

    if kind == "flip":
        return images.flip(-1)
    if kind == "shift":
        return _shifted(images, g)
    if kind == "noise":
        noisy = images.float() + 5.0 * torch.randn(images.shape, generator=g)
        return noisy.round().clamp(0, 255).to(torch.uint8)
    if kind in ("jpeg", "jpeg50"):
        quality = 75 if kind == "jpeg" else 50
        return torch.stack([decode_jpeg(encode_jpeg(img, quality=quality)) for img in images])
    h, w = images.shape[-2:]
    out = []
    for img in images:
        if kind == "rotate":
            out.append(TF.rotate(img, sign() * uniform(3, 5), interpolation=TF.InterpolationMode.BILINEAR))
        elif kind == "rescale":
            scale = uniform(0.9, 1.1)
            size = [max(1, round(h * scale)), max(1, round(w * scale))]
            big = TF.resize(img, size, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
            out.append(TF.center_crop(big, [h, w]))  # zero border where the rescale shrank the image
        elif kind == "brightness":
            out.append(TF.adjust_brightness(img, 1 + sign() * 0.1))
        elif kind == "contrast":
            out.append(TF.adjust_contrast(img, 1 + sign() * 0.1))
        elif kind == "blur":
            out.append(TF.gaussian_blur(img, [3, 3], [uniform(0.5, 1.0)] * 2))
        else:
            raise GenaugError(f"unknown near-copy kind {kind!r}; choose from {', '.join(NEAR_COPY_KINDS)}")
    return torch.stack(out)


def _shifted(images: torch.Tensor, g: torch.Generator, pad: int = 3) -> torch.Tensor:
    """Each image moved by 1-3 px (reflected border)."""
    out = []
    padded = torch.nn.functional.pad(images.float(), (pad,) * 4, mode="reflect").to(torch.uint8)
    h, w = images.shape[-2:]
    for img in padded:
        while True:
            dy, dx = torch.randint(-pad, pad + 1, (2,), generator=g).tolist()
            if (dy, dx) != (0, 0):
                break
        out.append(img[..., pad + dy:pad + dy + h, pad + dx:pad + dx + w])
    return torch.stack(out)


def leave_one_out_false_rejections(heldout_nearest: dict[str, np.ndarray], heldout_labels: np.ndarray,
                                   n_classes: int, settings: GateSettings = GateSettings()) -> list[float | None]:
    """Per class: the share of held-out images (suspected duplicates left out) the gate rejects when
    calibrated on the others."""
    dup = suspected_duplicates(heldout_nearest, settings.duplicate)
    out: list[float | None] = []
    for label in range(n_classes):
        idx = np.flatnonzero((heldout_labels == label) & ~dup)
        if len(idx) < 2:
            out.append(None)
            continue
        hits = 0
        for i in idx:
            others = idx[idx != i]
            hits += any(sims[i] >= threshold_from(sims[others], settings)[0] for sims in heldout_nearest.values())
        out.append(hits / len(idx))
    return out


def gate_rates(train_x: torch.Tensor, train_y: torch.Tensor, calib_x: torch.Tensor, calib_y: torch.Tensor,
               classes: list[str], similarity: Callable[[torch.Tensor, torch.Tensor, str], torch.Tensor],
               spaces: list[str], settings: GateSettings, flips: bool, test_x: torch.Tensor | None = None,
               test_y: torch.Tensor | None = None, seed: int = 0, kinds: list[str] | None = None) -> dict:
    """Calibrate on (calib_x, calib_y) against the training part; per class, the rejection rate on
    each kind of near-copy of the training images, and the false-rejection rate on held-out real
    images (leave-one-out on the calibration set; on (test_x, test_y) when given)."""
    heldout = nearest_similarity(similarity, calib_x, train_x, spaces)
    gate = calibrate(heldout, calib_y.numpy(), classes, settings)
    kinds = [k for k in check_kinds(kinds or NEAR_COPY_KINDS) if flips or k != "flip"]
    per_class: dict[str, dict] = {name: {"thresholds": gate.thresholds[name],
                                         "n_calibration": gate.calibration_counts[name],
                                         "false_rejection_bound": gate.guarantees[name],
                                         "suspected_duplicates": len(gate.duplicates[name])} for name in classes}
    for kind in kinds:
        copies = near_copies(train_x, kind, seed)
        nearest = nearest_similarity(similarity, copies, train_x, spaces)
        for label, name in enumerate(classes):
            mask = (train_y == label).numpy()
            hit = rejected({s: v[mask] for s, v in nearest.items()}, label, gate, classes)
            per_class[name][f"rejects_{kind}"] = float(hit.mean())
    loo = leave_one_out_false_rejections(heldout, calib_y.numpy(), len(classes), settings)
    for label, name in enumerate(classes):
        per_class[name]["false_rejection_loo"] = loo[label]
    if test_x is not None:
        nearest = nearest_similarity(similarity, test_x, train_x, spaces)
        for label, name in enumerate(classes):
            mask = (test_y == label).numpy()
            hit = rejected({s: v[mask] for s, v in nearest.items()}, label, gate, classes)
            per_class[name]["false_rejection_heldout"] = float(hit.mean())
            per_class[name]["n_heldout"] = int(mask.sum())
    return {"quantile": settings.quantile, "robust": settings.robust, "duplicate": settings.duplicate,
            "method": "rank bound", "spaces": list(spaces), "near_copy_kinds": kinds, "per_class": per_class}
