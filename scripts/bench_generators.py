"""Benchmark: each generator family on one real class: train time, sampling time, FID.

Trains VAE, DCGAN and DDPM with their `configs/<family>-<size>.yaml` on one class, draws
`--n` samples, and prints one JSON line: per family the steps, wall times on this machine and
the FID of the samples against all real train images of the class; beside them the floor, the
FID between two disjoint random halves of the real class. Re-running resumes finished stages.

    python scripts/bench_generators.py --data ../shared/data/pneumoniamnist.npz --class normal
"""

from __future__ import annotations

import json
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


@click.command()
@click.option("--data", default="../shared/data/pneumoniamnist.npz")
@click.option("--class", "class_name", default="normal")
@click.option("--families", default="vae,dcgan,ddpm")
@click.option("--n", default=1000, help="Samples per family.")
@click.option("--steps", type=int, default=None, help="Override the configs' steps.")
@click.option("--ddpm-steps", type=int, default=None, help="Override the DDPM config's steps only.")
@click.option("--image-size", default=28)
@click.option("--out", default="bench-out/generators")
def main(data, class_name, families, n, steps, ddpm_steps, image_size, out):
    _quiet_libraries()
    out = Path(out)
    source = open_source(data)
    label = source.class_index(class_name)
    real = load_split(source, "train", [label], image_size).images
    perm = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))
    half = len(real) // 2
    floor = compute_metrics(ImageSet(real[perm[:half]], "real half A", True),
                            ImageSet(real[perm[half:2 * half]], "real half B", True))
    result = {"data": data, "class": source.classes[label], "image_size": image_size, "n_real": len(real),
              "floor_fid_real_halves": round(floor["fid"], 3), "n_half": half, "families": {}}
    for family in families.split(","):
        config = load_config(f"{family}-{image_size}")
        if steps or (family == "ddpm" and ddpm_steps):
            config["steps"] = ddpm_steps if family == "ddpm" and ddpm_steps else steps
        run_dir = out / family
        t0 = time.perf_counter()
        runs.train(family, data, class_name, config, out=str(run_dir), resume=True, progress=False)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        samples = runs.sample(run_dir, n, out / f"{family}-samples", progress=False)
        sample_s = time.perf_counter() - t0
        fake = load_image_folder(samples)
        m = compute_metrics(ImageSet(real, "real class", True), ImageSet(fake, family))
        trained = json.loads((run_dir / "model" / "genaug.json").read_text())["step"]
        result["families"][family] = {"steps": trained, "batch_size": config["batch_size"],
                                      "train_s": round(train_s, 1), "sample_s": round(sample_s, 1),
                                      "fid": round(m["fid"], 3), "n_fake": len(fake)}
        click.echo(json.dumps({"partial": family, **result["families"][family]}), err=True)
    click.echo(json.dumps(result))


if __name__ == "__main__":
    main()
