"""Run under `accelerate launch --num_processes N`: train every family a few steps, then record
each process's weights, so a test can compare the replicas and resumed runs with straight ones.

    accelerate launch --cpu --num_processes 2 tests/helpers/multiprocess_train.py OUT STEPS [--resume]

Each family trains on the real PneumoniaMNIST class `normal` into OUT/<family>; with --resume it
continues OUT/<family> from its last checkpoint up to STEPS. Every process writes the sha256 of
each parameter of its own model copy to OUT/<family>/rank-<r>.json.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from genaug.data import draw_subset, open_source
from genaug.generators import Trainer
from genaug.generators.training import batch_indices

FAMILIES = {"vae": {}, "dcgan": {"base_width": 16},
            "ddpm": {"block_out_channels": [16, 32, 32], "lr_warmup_steps": 0, "sample_steps": 2}}


def parameter_hashes(model) -> dict[str, str]:
    out = {}
    for name, module in vars(model).items():
        if isinstance(module, torch.nn.Module):
            for key, value in module.state_dict().items():
                if value.is_floating_point() and "running_" not in key:  # BatchNorm statistics are per process
                    out[f"{name}.{key}"] = hashlib.sha256(value.detach().cpu().numpy().tobytes()).hexdigest()
    ema = getattr(model, "ema", None)
    if ema is not None:
        for i, p in enumerate(ema.shadow_params):
            out[f"ema.{i}"] = hashlib.sha256(p.detach().cpu().numpy().tobytes()).hexdigest()
    return out


def main(out: str, steps: int, resume: bool, pneumonia: str) -> None:
    real, _ = draw_subset(open_source(pneumonia), [0], 32, seed=0, image_size=28)
    for family, model in FAMILIES.items():
        config = {"steps": steps, "batch_size": 8, "seed": 4, "log_every": 1, "checkpoint_every": 2,
                  "sample_every": 1000, "grid_size": 2, "model": model}
        trainer = Trainer(family, real.images, Path(out) / family, config, device="cpu", progress=False)
        if resume:
            assert trainer.resume() > 0
        trainer.fit()
        rank = trainer.accelerator.process_index
        hashes = {"world": trainer.accelerator.num_processes, "step": trainer.state.step,
                  "rng_seed": trainer.state.rng.initial_seed(),
                  "first_batch": batch_indices(0, len(real.images), config["batch_size"], config["seed"], rank,
                                               trainer.accelerator.num_processes),
                  "params": parameter_hashes(trainer.model)}
        (Path(out) / family / f"rank-{rank}.json").write_text(json.dumps(hashes))


if __name__ == "__main__":
    args = sys.argv[1:]
    data = [a for a in args[2:] if a != "--resume"]
    main(args[0], int(args[1]), "--resume" in args,
         data[0] if data else str(Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pneumoniamnist.npz"))
