"""Does bf16 autocast change what a classifier scores? The same runs in two experiment folders, one in
fp32 and one in bf16 (`convergence_study.py --mixed-precision bf16 --out <other folder>`: same data,
subsets, seeds and batches), paired by replicate, arm and seed. Prints one JSON line: per folder pair
and arm the mean primary metric of each precision, the paired difference (bf16 - fp32) with its 95% t
interval, the classifier stage's mean seconds per run, and over all pairs the verdict of the rule
declared before the run: bf16 is accepted where the one-sided 97.5% lower bound of the mean paired
difference lies above `-margin` (non-inferiority; 0.01 of balanced accuracy, a third of the smallest
effect the experiments are built to detect) and the runs it pairs all used the precision asked of them.

    python scripts/precision_check.py --pair runs/convergence-bn/steps-1000 runs/precision-28/steps-1000 \\
        --pair runs/convergence-64/steps-1000 runs/precision-64/steps-1000
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from genaug.harness.stats.paired import paired_difference


def runs(folder: Path) -> dict[tuple, dict]:
    return {(r["replicate"], r["arm"], r["seed_index"]): r
            for r in (json.loads(p.read_text()) for p in folder.glob("rep-*/classifiers/*/seed-*.json"))}


def stage_seconds(folder: Path) -> list[float]:
    return [json.loads(p.read_text())["wall_s"] for p in (folder / "stages").glob("classifier-*.json")]


@click.command()
@click.option("--pair", "pairs", nargs=2, multiple=True, required=True, type=click.Path(exists=True, path_type=Path),
              help="an fp32 folder and its bf16 twin")
@click.option("--metric", default="balanced_accuracy", show_default=True)
@click.option("--margin", default=0.01, show_default=True)
def main(pairs, metric, margin):
    rows, seconds, diffs, precisions_as_asked = [], [], [], True
    for fp32_folder, bf16_folder in pairs:
        fp32, bf16 = runs(fp32_folder), runs(bf16_folder)
        common = sorted(set(fp32) & set(bf16))
        if not common:
            raise click.ClickException(f"{fp32_folder} and {bf16_folder} share no run")
        precisions_as_asked &= all(not fp32[k]["bf16"] and bf16[k]["bf16"] for k in common)
        for arm in sorted({k[1] for k in common}):
            keys = [k for k in common if k[1] == arm]
            a = [bf16[k]["test"][metric] for k in keys]
            b = [fp32[k]["test"][metric] for k in keys]
            d = paired_difference(a, b)
            diffs += d["diffs"]
            rows.append({"fp32": str(fp32_folder), "bf16": str(bf16_folder), "arm": arm, "n": len(keys),
                         "mean_fp32": float(np.mean(b)), "mean_bf16": float(np.mean(a)), "diff": d["mean_diff"],
                         "ci": [d["ci_low"], d["ci_high"]], "p": d["p_ttest"]})
        seconds.append({"fp32": str(fp32_folder), "bf16": str(bf16_folder),
                        "seconds_per_run": {"fp32": float(np.mean(stage_seconds(fp32_folder))),
                                            "bf16": float(np.mean(stage_seconds(bf16_folder)))}})
    overall = paired_difference(diffs, [0.0] * len(diffs), confidence=0.95)
    lower = overall["ci_low"]  # the two-sided 95% interval's lower end is the one-sided 97.5% bound
    print(json.dumps({"check": "precision", "metric": metric, "margin": margin, "rows": rows, "time": seconds,
                      "overall": {"n": overall["n"], "diff": overall["mean_diff"], "ci": [lower, overall["ci_high"]],
                                  "p": overall["p_ttest"]},
                      "precisions_as_asked": precisions_as_asked,
                      "bf16_accepted": bool(precisions_as_asked and lower > -margin)}))


if __name__ == "__main__":
    main()
