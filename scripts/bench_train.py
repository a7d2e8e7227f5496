"""Benchmark: training throughput of each generator family, and what speeds it up.

For each family (vae, dcgan, ddpm) at 28 and 64 px (the packaged `<family>-<size>` configs) and
each variant, trains `--warm` + `--steps` steps on real PneumoniaMNIST images of one class from
the same seed and times the last `--steps` from the training log: fp32; bf16 autocast
(`mixed_precision: bf16`); `channels_last`; `torch.compile` (inductor). Beside each throughput:
the mean loss of the timed steps and how far the variant's loss curve lies from fp32's (mean
|difference| / mean fp32 loss): a speed-up that changes the curve is not kept. For the DDPM, the
achieved FLOP/s of a training step (counted by torch's FlopCounterMode) as a fraction of this
machine's matmul peak, measured in the same run (fp32 and bf16). Prints one JSON line.

Each variant trains in its own Python process: accelerate fixes the mixed precision once per
process, and a fresh process keeps one variant's compiled code and caches out of the next.

    python scripts/bench_train.py --steps 20
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import torch
import torch.nn.functional as F

from genaug.cli import _quiet_libraries
from genaug.config import load_config
from genaug.data import load_split, open_source
from genaug.data.images import to_model_range
from genaug.generators import Trainer

VARIANTS = {"fp32": {"mixed_precision": "no"}, "bf16": {"mixed_precision": "bf16"},
            "channels_last": {"mixed_precision": "no", "channels_last": True},
            "compile": {"mixed_precision": "no", "compile": True}}
LOSS_KEYS = {"vae": ["loss"], "dcgan": ["loss_d", "loss_g"], "ddpm": ["loss"]}


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    """Achieved GFLOP/s of an n x n matmul on this machine (best of three timings)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 * repeats / best / 1e9


def ddpm_step_flops(trainer: Trainer, real: torch.Tensor) -> int:
    """FLOPs of one DDPM training step (forward and backward of the UNet on one batch)."""
    from torch.utils.flop_counter import FlopCounterMode

    unet = trainer.model._bare_unet()
    x = to_model_range(real[: trainer.config["batch_size"]])
    t = torch.randint(0, 1000, (len(x),))
    with FlopCounterMode(display=False) as counter:
        F.mse_loss(unet(x, t).sample, x).backward()
    unet.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def run_variant(family: str, size: int, variant: str, real: torch.Tensor, warm: int, steps: int, folder: Path):
    """Train one variant here (in this process); returns the trainer, its figures and its loss curves."""
    config = {**load_config(f"{family}-{size}"), **VARIANTS[variant], "steps": warm + steps, "log_every": 1,
              "checkpoint_every": 10 ** 9, "sample_every": 10 ** 9, "grid_size": 1, "seed": 0}
    trainer = Trainer(family, real, folder, config, device="cpu", progress=False)
    trainer.fit()
    log = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    seconds = log[-1]["time"] - log[warm - 1]["time"]
    curves = {k: [row[k] for row in log] for k in LOSS_KEYS[family]}
    return trainer, {"images_per_s": round(steps * config["batch_size"] / seconds, 1),
                     "step_s": round(seconds / steps, 4), "batch_size": config["batch_size"],
                     "loss_timed_steps": {k: round(sum(v[warm:]) / steps, 5) for k, v in curves.items()}}, curves


def one_variant(data: str, class_name: str, family: str, size: int, variant: str, warm: int, steps: int,
                with_flops: bool) -> dict:
    """The figures and loss curves of one variant, measured in a fresh Python process."""
    cmd = [sys.executable, __file__, "--data", data, "--class", class_name, "--one", f"{family}:{size}:{variant}",
           "--warm", str(warm), "--steps", str(steps)] + (["--with-flops"] if with_flops else [])
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
        return {"error": lines[-1][:300] if lines else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _measure_here(data, class_name, spec, warm, steps, with_flops) -> dict:
    family, size, variant = spec.split(":")
    source = open_source(data)
    real = load_split(source, "train", [source.class_index(class_name)], int(size)).images[:512]
    with tempfile.TemporaryDirectory() as tmp:
        trainer, row, curves = run_variant(family, int(size), variant, real, warm, steps, Path(tmp) / "r")
        if with_flops:
            flops = ddpm_step_flops(trainer, real)
            row.update({"step_gflop": round(flops / 1e9, 2), "achieved_gflops": round(flops / row["step_s"] / 1e9, 1)})
    return {**row, "curves": curves}


@click.command()
@click.option("--data", default="../shared/data/pneumoniamnist.npz")
@click.option("--class", "class_name", default="normal")
@click.option("--families", default="vae,dcgan,ddpm")
@click.option("--sizes", default="28,64")
@click.option("--variants", default=",".join(VARIANTS))
@click.option("--warm", default=3, show_default=True, help="Untimed first steps (compilation happens there).")
@click.option("--steps", default=20, show_default=True, help="Timed steps per variant.")
@click.option("--one", default=None, hidden=True, help="FAMILY:SIZE:VARIANT, measured in this process (internal).")
@click.option("--with-flops", is_flag=True, hidden=True)
def main(data, class_name, families, sizes, variants, warm, steps, one, with_flops):
    _quiet_libraries()
    if one:
        click.echo(json.dumps(_measure_here(data, class_name, one, warm, steps, with_flops)))
        return
    source = open_source(data)
    label = source.class_index(class_name)
    peaks = {"fp32_gflops": round(matmul_peak(torch.float32), 1), "bf16_gflops": round(matmul_peak(torch.bfloat16), 1)}
    result = {"data": data, "class": source.classes[label], "warm": warm, "steps": steps, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "matmul_peak": peaks, "runs": {}}
    for size in [int(s) for s in sizes.split(",")]:
        for family in families.split(","):
            rows, reference = {}, None
            for variant in variants.split(","):
                row = one_variant(data, class_name, family, size, variant, warm, steps,
                                  with_flops=family == "ddpm" and variant == "fp32")
                curves = row.pop("curves", None)
                if "achieved_gflops" in row:
                    row["fraction_of_fp32_peak"] = round(row["achieved_gflops"] / peaks["fp32_gflops"], 3)
                if variant == "fp32" and curves:
                    reference = curves
                if reference is not None and curves:
                    row["curve_difference_vs_fp32"] = {
                        k: round(sum(abs(a - b) for a, b in zip(curves[k], reference[k]))
                                 / max(sum(abs(a) for a in reference[k]), 1e-12), 5) for k in curves}
                rows[variant] = row
                click.echo(json.dumps({"partial": f"{family}-{size}", "variant": variant, **row}), err=True)
            if "fp32" in rows and "images_per_s" in rows["fp32"]:
                for row in rows.values():
                    if "images_per_s" in row:
                        row["speedup_vs_fp32"] = round(row["images_per_s"] / rows["fp32"]["images_per_s"], 2)
            result["runs"][f"{family}-{size}"] = rows
    click.echo(json.dumps(result))


if __name__ == "__main__":
    main()
