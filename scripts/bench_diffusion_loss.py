"""Benchmark: the DDPM's training loss, today's (epsilon prediction, plain MSE) against Min-SNR-gamma
weighting (Hang et al., ICCV 2023; gamma 5) and v-prediction with Min-SNR, on one real class of each
data set. Each loss trains the packaged `ddpm-<size>` config through growing step budgets (one run,
resumed and raised, so the budgets share their first steps); after each budget `--n` samples are
drawn and their FID against the class's real training images is measured, beside the floor (FID
between two disjoint halves of the real class). Prints one JSON line: per data set and loss, the
FID and the training minutes at each budget (steps x the median seconds per step of the run's own
training log, so a pause, or a run resumed in a later session, does not change them), and the first budget at which each loss
reaches the FID today's loss has at its largest budget (fewer steps there is what "faster" means).
Re-running resumes every finished budget.

    python scripts/bench_diffusion_loss.py --data ../shared/data/pneumoniamnist.npz:normal \\
        --data ../shared/data/pbc28.npz:0 --budgets 1000,2000,4000 --n 500
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import click
import torch

from genaug import runs
from genaug.cli import _quiet_libraries
from genaug.config import load_config
from genaug.data import load_split, open_source
from genaug.data.imagesets import load_image_folder
from genaug.generators.ddpm import DIFFUSION_LOSSES
from genaug.io import read_json, write_json
from genaug.metrics.fidelity import ImageSet, compute_metrics

LOSSES = DIFFUSION_LOSSES  # by name, each loss's settings in full (the default, epsilon, is one of them)


def fid(real: torch.Tensor, fake: torch.Tensor, name: str) -> float:
    return round(compute_metrics(ImageSet(real, "real class", True), ImageSet(fake, name))["fid"], 3)


def training_minutes(run: Path, steps: int, batch_size: int) -> float:
    """`steps` x the median seconds per step over the run's logged intervals (each interval's images/s
    is its own wall-clock rate; the median ignores one slowed by a pause or by other work)."""
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines() if line.strip()]
    per_step = [batch_size / row["images_per_s"] for row in log if row.get("images_per_s")]
    return round(steps * statistics.median(per_step) / 60, 2) if per_step else float("nan")


def first_reaching(curve: list[dict], target: float) -> int | None:
    return next((row["steps"] for row in curve if row["fid"] <= target), None)


@click.command()
@click.option("--data", "specs", multiple=True, default=["../shared/data/pneumoniamnist.npz:normal"],
              show_default=True, help="DATA:CLASS, repeatable.")
@click.option("--budgets", default="1000,2000,4000", show_default=True, help="Training steps at which FID is taken.")
@click.option("--n", default=500, show_default=True, help="Samples per FID.")
@click.option("--image-size", default=28, show_default=True)
@click.option("--losses", default=",".join(LOSSES), show_default=True)
@click.option("--model", "model_json", default=None, help="JSON over the config's model settings (smoke runs).")
@click.option("--out", default="bench-out/diffusion-loss", show_default=True)
def main(specs, budgets, n, image_size, losses, model_json, out):
    _quiet_libraries()
    out, budgets = Path(out), sorted(int(b) for b in budgets.split(","))
    result = {"budgets": budgets, "n": n, "image_size": image_size, "threads": torch.get_num_threads(), "data": {}}
    for spec in specs:
        data, class_name = spec.rsplit(":", 1)
        source = open_source(data)
        label = source.class_index(class_name)
        real = load_split(source, "train", [label], image_size).images
        perm = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))
        half = len(real) // 2
        row = {"class": source.classes[label], "n_real": len(real),
               "floor_fid_real_halves": fid(real[perm[:half]], real[perm[half:2 * half]], "real half B"), "losses": {}}
        for loss in losses.split(","):
            folder = out / f"{Path(data).stem}-{class_name}" / loss
            curve_path = folder / "curve.json"
            curve = read_json(curve_path) if curve_path.exists() else []
            for steps in budgets:
                if any(c["steps"] == steps for c in curve):
                    continue
                config = load_config(f"ddpm-{image_size}")
                config["model"] = {**config.get("model", {}), **LOSSES[loss], **json.loads(model_json or "{}")}
                config["steps"] = steps
                runs.train("ddpm", data, class_name, config, out=str(folder / "run"), resume=True, progress=False)
                samples = runs.sample(folder / "run", n, folder / f"samples-{steps}", progress=False)
                curve.append({"steps": steps, "train_min": training_minutes(folder / "run", steps, int(config["batch_size"])),
                              "fid": fid(real, load_image_folder(samples), loss)})
                write_json(curve_path, curve)
                click.echo(json.dumps({"partial": spec, "loss": loss, **curve[-1]}), err=True)
            row["losses"][loss] = curve
        today = row["losses"].get("epsilon")
        if today:
            target = today[-1]["fid"]
            row["steps_to_todays_final_fid"] = {loss: first_reaching(curve, target)
                                                for loss, curve in row["losses"].items()}
        result["data"][spec] = row
    click.echo(json.dumps(result))


if __name__ == "__main__":
    main()
