"""Benchmark: DDPM samplers, speed against quality, on trained per-class and conditional DDPMs.

For one trained per-class DDPM run and (optionally) one class-conditional run, draws the same
`--n` images (same seeds) of one class with each sampler: DDPM-1000 (ancestral), DDIM 50/20/10
(trailing spacing), DPM-Solver++ 20/10 and UniPC 10; measures the wall time and the FID against
the real train-split images of the class (same counts for every sampler). Prints one JSON line:
per model and sampler the seconds, the speed-up over DDPM-1000 and the FID change against
DDPM-1000's, beside the real-vs-real floor: n held-out real images of the class against the same
reference (the class's other train-split images).

Without --run/--cond-run, trains them first (resumable in --out) with the packaged
`ddpm-28` / `ddpm-cond-28` configs and --train-steps steps.

    python scripts/bench_sample.py --data ../shared/data/pneumoniamnist.npz --class normal --n 100
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import click
import torch

from genaug import runs
from genaug.cli import _quiet_libraries
from genaug.config import load_config
from genaug.data import load_split, open_source
from genaug.data.imagesets import load_image_folder
from genaug.metrics.fidelity import ImageSet, compute_metrics

SAMPLERS = [("ddpm", 1000), ("ddim", 50), ("ddim", 20), ("ddim", 10), ("dpm-solver", 20), ("dpm-solver", 10),
            ("unipc", 10)]


def _train(family: str, data: str, class_spec: str, steps: int, per_class: int, out: Path) -> Path:
    config = {**load_config(f"{family}-28"), "steps": steps, "per_class": per_class}
    return runs.train(family, data, class_spec, config, out=str(out), resume=True, progress=False)[0]


@click.command()
@click.option("--data", default="../shared/data/pneumoniamnist.npz")
@click.option("--class", "class_name", default="normal")
@click.option("--run", "run_dir", default=None, help="A trained per-class DDPM run of --class.")
@click.option("--cond-run", default=None, help="A trained ddpm-cond run with --class among its classes.")
@click.option("--no-cond", is_flag=True, help="Skip the conditional model.")
@click.option("--guidance", default=1.0, show_default=True, help="Guidance weight for the conditional model.")
@click.option("--n", default=100, show_default=True, help="Images per sampler.")
@click.option("--train-steps", default=1000, show_default=True, help="Steps when training the models here.")
@click.option("--per-class", default=40, show_default=True, help="Real images per class when training here.")
@click.option("--samplers", default=None, help="Comma list NAME:STEPS  [default: all seven]")
@click.option("--out", default="bench-out/sample")
def main(data, class_name, run_dir, cond_run, no_cond, guidance, n, train_steps, per_class, samplers, out):
    _quiet_libraries()
    out = Path(out)
    plan = SAMPLERS if not samplers else [(s.split(":")[0], int(s.split(":")[1])) for s in samplers.split(",")]
    source = open_source(data)
    label = source.class_index(class_name)
    real = load_split(source, "train", [label], 28).images
    perm = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))
    held_out, real = real[perm[:n]], real[perm[n:]]  # the reference: every other real image of the class
    floor = compute_metrics(ImageSet(real, "real class", True), ImageSet(held_out, "held-out real", True))["fid"]
    models = {"per-class": Path(run_dir) if run_dir else _train("ddpm", data, class_name, train_steps, per_class,
                                                                 out / "ddpm")}
    if not no_cond:
        models["conditional"] = Path(cond_run) if cond_run else _train("ddpm-cond", data, "all", train_steps * 2,
                                                                        per_class, out / "ddpm-cond")
    result = {"data": data, "class": source.classes[label], "n": n, "n_real": len(real),
              "floor_fid_real_vs_real": round(floor, 3), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "models": {}}
    for kind, run in models.items():
        condition = {"class_name": source.classes[label], "guidance": guidance} if kind == "conditional" else {}
        info = json.loads((run / "model" / "genaug.json").read_text())
        rows = {}
        for sampler, steps in plan:
            folder = out / "samples" / kind / f"{sampler}-{steps}"
            shutil.rmtree(folder, ignore_errors=True)  # time a fresh draw, never a cached one
            t0 = time.perf_counter()
            runs.sample(run, n, folder, sampler, steps, batch_size=n, seed=0, device="cpu", progress=False,
                        **condition)
            seconds = time.perf_counter() - t0
            fid = compute_metrics(ImageSet(real, "real class", True), ImageSet(load_image_folder(folder), sampler))
            rows[f"{sampler}-{steps}"] = {"seconds": round(seconds, 1), "fid": round(fid["fid"], 3)}
            click.echo(json.dumps({"partial": kind, "sampler": f"{sampler}-{steps}", **rows[f"{sampler}-{steps}"]}),
                       err=True)
        ref = rows.get("ddpm-1000")
        if ref:
            for row in rows.values():
                row["speedup_vs_ddpm1000"] = round(ref["seconds"] / row["seconds"], 1)
                row["fid_change_vs_ddpm1000"] = round(row["fid"] / ref["fid"] - 1, 3)
        result["models"][kind] = {"run": str(run), "train_steps": info["step"], "family": info["family"],
                                  **({"guidance": guidance} if condition else {}), "samplers": rows}
    click.echo(json.dumps(result))


if __name__ == "__main__":
    main()
