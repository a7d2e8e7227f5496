"""The convergence study that chooses the default step budget (`config.STEP_BUDGETS`): the
reference recipe (baseline-strong) and the positive control (+real@N) on real data at several
budgets, over replicates and seeds, through `augment-and-train --headroom-only`, one experiment
folder per budget (resumable: re-run the same command). The default is the smallest budget at which
every run of both arms converged (at least 95% of its own training images right: the positive
control, with more images, converges last) and the next budget changes neither arm's mean primary
metric by more than `--tolerance`. Prints one JSON line, with each budget's converged runs per arm.

    python scripts/convergence_study.py --data ../shared/data/pneumoniamnist.npz --out runs/convergence \\
        --budgets 250,1000,3000 --replicates 3 --seeds 2
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from genaug.harness.experiment import Experiment, experiment_config


@click.command()
@click.option("--data", required=True)
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--budgets", default="250,1000,3000", show_default=True)
@click.option("--per-class", default=50, show_default=True)
@click.option("--replicates", default=3, show_default=True)
@click.option("--seeds", default=2, show_default=True)
@click.option("--image-size", default=28, show_default=True)
@click.option("--tolerance", default=0.005, show_default=True)
@click.option("--mixed-precision", default=None, help="the classifiers' precision (default: the experiment's); "
              "with --out elsewhere, the same runs in bf16 pair with fp32 ones (scripts/precision_check.py)")
def main(data, out, budgets, per_class, replicates, seeds, image_size, tolerance, mixed_precision):
    means, converged = {}, {}
    for steps in sorted(int(b) for b in budgets.split(",")):
        config = experiment_config(None, {"data": data, "per_class": per_class, "replicates": replicates,
                                          "seeds": seeds, "steps": steps, "image_size": image_size,
                                          "headroom": "none", "generators": "none", "quality": False,
                                          "synthetic_per_class": per_class, "save_models": "none",
                                          **({"mixed_precision": mixed_precision} if mixed_precision else {})})
        room = Experiment(data, out / f"steps-{steps}", config, progress=True).run(headroom_only=True)
        curve = {row["arm"]: row["mean"] for row in room["curve"]}
        positive = room["positive"]
        means[steps] = {"reference": curve[room["reference"]],
                        "positive": curve[room["reference"]] + positive["mean_diff"] if positive else None}
        runs = [json.loads(p.read_text()) for p in (out / f"steps-{steps}").glob("rep-*/classifiers/*/seed-*.json")]
        converged[steps] = {arm: {"converged": sum(r["converged"] is True for r in runs if r["arm"] == arm),
                                  "runs": sum(r["arm"] == arm for r in runs)} for arm in sorted({r["arm"] for r in runs})}
    chosen = None
    steps = sorted(means)
    for small, large in zip(steps, steps[1:]):
        all_converged = all(c["converged"] == c["runs"] for c in converged[small].values())
        if all_converged and all(means[large][k] is None or abs(means[large][k] - means[small][k]) <= tolerance
                                 for k in means[small]):
            chosen = small
            break
    print(json.dumps({"study": "convergence", "data": data, "per_class": per_class, "image_size": image_size,
                      "replicates": replicates, "seeds": seeds, "mixed_precision": mixed_precision, "means": means, "converged": converged,
                      "tolerance": tolerance, "chosen": chosen}))


if __name__ == "__main__":
    main()
