"""A memorisation gate calibrated on the data itself, and the way to measure it.

How close does an independent real image of a class get to the real training part? The held-out
real images (the validation part) answer it: their nearest-neighbour similarities to the training
images give, per class and per space (Inception features, shift-tolerant pixels), a threshold. A
synthetic image at or above the threshold in any space is closer to a training image than
independent real images of its class get, and is rejected as a near-copy.

The threshold is a one-sided prediction bound at level `quantile` (default 0.99) for the nearest
similarity of one more independent real image: similarities are mapped to Fisher's z (atanh),
where they are close to normal, and the bound is mean + t(quantile, n - 1) * sd * sqrt(1 + 1/n).
The empirical maximum of ten held-out images would reject about one independent image in eleven
per space; the bound reaches past the sample into the tail, so the false-rejection rate stays
near 1 - quantile per space however few images calibrate it. With few held-out images the bound
is wide and the gate rejects only (near-)exact copies; with one it rejects exact copies only.

`near_copies` makes the near-copies the gate must catch (mirror images where the data allows
flips, shifts of 1-3 px, light Gaussian noise, JPEG re-encoding); `gate_rates` measures the
rejection rate on them and the false-rejection rate on held-out real images that did not
calibrate the gate (leave-one-out inside the calibration set, or a separate held-out set).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torchvision.io import decode_jpeg, encode_jpeg

from ..errors import GenaugError

SPACES = ("inception", "pixels")
EXACT = 1 - 1e-6  # the highest threshold: exact copies (similarity 1 up to rounding) are always rejected
NEAR_COPY_KINDS = ("flip", "shift", "noise", "jpeg")
DEFAULTS = {"quantile": 0.99, "spaces": list(SPACES), "max_shift": 3}


@dataclass
class GateThresholds:
    """Per class and space: the similarity at or above which a synthetic image is rejected."""

    thresholds: dict[str, dict[str, float]]  # class -> space -> threshold
    calibration_counts: dict[str, int]
    quantile: float

    def to_json(self) -> dict:
        return {"quantile": self.quantile, "thresholds": self.thresholds, "n_calibration": self.calibration_counts}


def threshold_from(similarities: np.ndarray, quantile: float) -> float:
    """The one-sided prediction bound at level `quantile` for one more held-out image's similarity."""
    from scipy import stats

    sims = np.asarray(similarities, float)
    if len(sims) == 0:
        raise GenaugError("no held-out real images of this class to calibrate the memorisation gate")
    if len(sims) == 1:
        return EXACT
    z = np.arctanh(np.clip(sims, -EXACT, EXACT))
    n = len(z)
    bound = z.mean() + stats.t.ppf(quantile, n - 1) * z.std(ddof=1) * np.sqrt(1 + 1 / n)
    return float(min(np.tanh(bound), EXACT))


def nearest_similarity(similarity: Callable[[torch.Tensor, torch.Tensor, str], torch.Tensor],
                       queries: torch.Tensor, gallery: torch.Tensor, spaces: list[str]) -> dict[str, np.ndarray]:
    """Per space, each query's highest similarity to any gallery image."""
    return {space: similarity(queries, gallery, space).max(dim=1).values.numpy() for space in spaces}


def calibrate(heldout_nearest: dict[str, np.ndarray], heldout_labels: np.ndarray, classes: list[str],
              quantile: float) -> GateThresholds:
    """Thresholds per class from the held-out images' nearest similarities (see `nearest_similarity`)."""
    if not 0.5 <= quantile < 1:
        raise GenaugError(f"memorization_quantile must be in [0.5, 1) (got {quantile})")
    out, counts = {}, {}
    for label, name in enumerate(classes):
        mask = heldout_labels == label
        counts[name] = int(mask.sum())
        out[name] = {space: threshold_from(sims[mask], quantile) for space, sims in heldout_nearest.items()}
    return GateThresholds(out, counts, quantile)


def rejected(nearest: dict[str, np.ndarray], label: int, gate: GateThresholds, classes: list[str]) -> np.ndarray:
    """True where an image of class `label` reaches its class's threshold in any space."""
    limits = gate.thresholds[classes[label]]
    return np.any([nearest[space] >= limits[space] for space in nearest], axis=0)


def near_copies(images: torch.Tensor, kind: str, seed: int = 0) -> torch.Tensor:
    """uint8 near-copies of `images`: `flip` (mirror), `shift` (1-3 px, reflected border), `noise`
    (Gaussian, sigma 5 grey levels), `jpeg` (re-encoded at quality 75)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "flip":
        return images.flip(-1)
    if kind == "shift":
        out = []
        pad = 3
        padded = torch.nn.functional.pad(images.float(), (pad,) * 4, mode="reflect").to(torch.uint8)
        h, w = images.shape[-2:]
        for img in padded:
            while True:
                dy, dx = torch.randint(-pad, pad + 1, (2,), generator=g).tolist()
                if (dy, dx) != (0, 0):
                    break
            out.append(img[..., pad + dy:pad + dy + h, pad + dx:pad + dx + w])
        return torch.stack(out)
    if kind == "noise":
        noisy = images.float() + 5.0 * torch.randn(images.shape, generator=g)
        return noisy.round().clamp(0, 255).to(torch.uint8)
    if kind == "jpeg":
        return torch.stack([decode_jpeg(encode_jpeg(img, quality=75)) for img in images])
    raise GenaugError(f"unknown near-copy kind {kind!r}; choose from {', '.join(NEAR_COPY_KINDS)}")


def leave_one_out_false_rejections(heldout_nearest: dict[str, np.ndarray], heldout_labels: np.ndarray,
                                   n_classes: int, quantile: float) -> list[float | None]:
    """Per class: the share of held-out images the gate rejects when calibrated on the others."""
    out: list[float | None] = []
    for label in range(n_classes):
        idx = np.flatnonzero(heldout_labels == label)
        if len(idx) < 2:
            out.append(None)
            continue
        hits = 0
        for i in idx:
            others = idx[idx != i]
            hits += any(sims[i] >= threshold_from(sims[others], quantile) for sims in heldout_nearest.values())
        out.append(hits / len(idx))
    return out


def gate_rates(train_x: torch.Tensor, train_y: torch.Tensor, calib_x: torch.Tensor, calib_y: torch.Tensor,
               classes: list[str], similarity: Callable[[torch.Tensor, torch.Tensor, str], torch.Tensor],
               spaces: list[str], quantile: float, flips: bool, test_x: torch.Tensor | None = None,
               test_y: torch.Tensor | None = None, seed: int = 0) -> dict:
    """Calibrate on (calib_x, calib_y) against the training part; per class, the rejection rate on
    each kind of near-copy of the training images, and the false-rejection rate on held-out real
    images (leave-one-out on the calibration set; on (test_x, test_y) when given)."""
    heldout = nearest_similarity(similarity, calib_x, train_x, spaces)
    gate = calibrate(heldout, calib_y.numpy(), classes, quantile)
    kinds = [k for k in NEAR_COPY_KINDS if flips or k != "flip"]
    per_class: dict[str, dict] = {name: {"thresholds": gate.thresholds[name],
                                         "n_calibration": gate.calibration_counts[name]} for name in classes}
    for kind in kinds:
        copies = near_copies(train_x, kind, seed)
        nearest = nearest_similarity(similarity, copies, train_x, spaces)
        for label, name in enumerate(classes):
            mask = (train_y == label).numpy()
            hit = rejected({s: v[mask] for s, v in nearest.items()}, label, gate, classes)
            per_class[name][f"rejects_{kind}"] = float(hit.mean())
    loo = leave_one_out_false_rejections(heldout, calib_y.numpy(), len(classes), quantile)
    for label, name in enumerate(classes):
        per_class[name]["false_rejection_loo"] = loo[label]
    if test_x is not None:
        nearest = nearest_similarity(similarity, test_x, train_x, spaces)
        for label, name in enumerate(classes):
            mask = (test_y == label).numpy()
            hit = rejected({s: v[mask] for s, v in nearest.items()}, label, gate, classes)
            per_class[name]["false_rejection_heldout"] = float(hit.mean())
            per_class[name]["n_heldout"] = int(mask.sum())
    return {"quantile": quantile, "spaces": list(spaces), "near_copy_kinds": kinds, "per_class": per_class}
