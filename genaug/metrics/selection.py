"""Checkpoint choice by quality: the kept checkpoint (and, for a DCGAN, raw or EMA generator
weights) whose samples have the lowest FID against the run's real training images.

Every candidate draws as many images as there are real training images (image i from seed i,
per class in the real counts for a class-conditional model), so the FIDs are at the same counts
and comparable with one another; with tens of images they are biased upward and only rank the
candidates. The training images are the reference, so this chooses the model that best
reproduces them, the same criterion as training itself: it never looks at validation or test
images. The scores and the choice are recorded in `model/genaug.json` under `selection`.
"""

from __future__ import annotations

from typing import Any

import torch
from tqdm.auto import tqdm

from ..data.images import to_uint8
from ..errors import GenaugError
from ..generators.training import Trainer, checkpoints
from .fidelity import ImageSet, compute_metrics


def _draw(trainer: Trainer, n: int) -> torch.Tensor:
    gens = [torch.Generator().manual_seed(i) for i in range(n)]
    condition = {"labels": trainer.labels.clone(), "guidance": None} if trainer.labels is not None else {}
    images = []
    with trainer.model.sampling_mode():
        for start in range(0, n, 64):
            part = {k: (v[start: start + 64] if isinstance(v, torch.Tensor) else v) for k, v in condition.items()}
            images.append(to_uint8(trainer.model.sample(gens[start: start + 64], **part)))
    return torch.cat(images)


def select_checkpoint(trainer: Trainer, device: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Score every kept checkpoint of a finished run, load the best and write it as the run's model."""
    found = checkpoints(trainer.run_dir)
    if not found:
        raise GenaugError(f"select_by_fid: {trainer.run_dir} has no checkpoints to choose from")
    real = trainer.real
    n = len(real)
    weights = ["raw", "ema"] if "sample_weights" in trainer.model.config else [None]
    scores = []
    bar = tqdm(total=len(found) * len(weights), desc="select by FID", unit="candidate", disable=not progress)
    for folder in found:
        trainer.load_checkpoint(folder)
        for w in weights:
            if w is not None:
                trainer.model.config["sample_weights"] = w
            fake = _draw(trainer, n)
            fid = compute_metrics(ImageSet(real, "real training part", True), ImageSet(fake, folder.name),
                                  device=device)["fid"]
            scores.append({"checkpoint": folder.name, "step": trainer.state.step, "weights": w, "fid": round(fid, 4)})
            bar.update(1)
    bar.close()
    best = min(scores, key=lambda row: row["fid"])
    trainer.load_checkpoint(trainer.run_dir / "checkpoints" / best["checkpoint"])
    if best["weights"] is not None:
        trainer.model.config["sample_weights"] = best["weights"]
    selection = {"by": "fid against the real training images", "images": n, "candidates": scores, "chosen": best}
    trainer.save_model({"selection": selection})
    return selection
