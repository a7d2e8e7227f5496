"""Label fidelity per class of `ddpm-pseudo` with and without `pool_balance` (issue 40): does a
class-balanced draw of the pseudo-labelled pool stop the pool's majority class from deciding what
the conditional model learns?

Two experiment folders under `--out` (`balance-off/`, `balance-on/`) with the same subsets, pools,
teachers and seeds; each trains ddpm-pseudo per replicate (the packaged `ddpm-pseudo-<size>` config,
`pool_balance` false or true), draws `--n` images per class and runs the quality stage, whose label
fidelity is the share of a class's images the supervised teacher (trained on the real labelled
images, the same in both folders) assigns to the intended class. No classifier arm runs. Prints one
JSON line: per folder and class the mean label fidelity over replicates, and the paired difference
(on - off). Re-running resumes (each folder is an ordinary augment-and-train store).

    python scripts/pool_balance_fidelity.py --data medmnist:pneumoniamnist --data-root ../shared/data \\
        --out runs/pool-balance --replicates 2
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import yaml

from genaug.data import open_source
from genaug.harness.experiment import Experiment, experiment_config
from genaug.harness.run.executor import InProcess, new_owner, run_tasks
from genaug.harness.run.plan import plan
from genaug.harness.stages.generation import generator_config
from genaug.io import read_json, write_text


def fidelity_run(data, data_root, out: Path, balance: bool, replicates: int, per_class: int, steps: int, n: int,
                 unlabeled, classifier_steps) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    size = open_source(data, data_root).default_size()
    config_file = out / f"ddpm-pseudo-balance-{'on' if balance else 'off'}.yaml"
    settings = generator_config({"generator_configs": {}, "generator_steps": None}, "ddpm-pseudo", size)
    settings["model"] = {**(settings.get("model") or {}), "pool_balance": balance}
    write_text(config_file, yaml.safe_dump(settings, sort_keys=False))
    config = experiment_config(None, {
        "data": data, "per_class": per_class, "replicates": replicates, "seeds": 1, "generators": "ddpm-pseudo",
        "generator_configs": {"ddpm-pseudo": str(config_file)}, "generator_steps": steps, "synthetic_per_class": n,
        "accept": "all", "controls": "none", "headroom": "none", "quality": True, "unlabeled": unlabeled,
        "save_models": "none", "steps": classifier_steps})
    folder = out / f"balance-{'on' if balance else 'off'}"
    e = Experiment(data, folder, config, data_root=data_root, progress=True)
    e.preflight()
    e.check_settings()
    write_text(folder / "spec.json", e.spec.to_json() + "\n")
    tasks = [t for t in plan(e.spec) if t.stage != "classifier"]
    outcome = run_tasks(e.spec, tasks, InProcess(e.spec, new_owner()), progress=True)
    if outcome.failed:
        raise SystemExit(f"failed: {outcome.failed}")
    per_rep = {}
    for unit in e.spec.units():
        quality = read_json(folder / unit.name / "quality" / "ddpm-pseudo.json")
        per_rep[unit.name] = quality["label_fidelity"]
    return {"folder": str(folder), "pool_balance": balance, "per_replicate": per_rep}


@click.command()
@click.option("--data", required=True)
@click.option("--data-root", default=None)
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--replicates", default=2, show_default=True)
@click.option("--per-class", default=50, show_default=True)
@click.option("--steps", default=3000, show_default=True, help="ddpm-pseudo's training steps")
@click.option("--n", default=200, show_default=True, help="images drawn per class")
@click.option("--unlabeled", default="all", show_default=True)
@click.option("--classifier-steps", default="auto", show_default=True,
              help="the helper classifiers' budget (teacher, CAS): auto is the default at this image size")
def main(data, data_root, out, replicates, per_class, steps, n, unlabeled, classifier_steps):
    unlabeled = unlabeled if unlabeled == "all" else int(unlabeled)
    classifier_steps = classifier_steps if classifier_steps == "auto" else int(classifier_steps)
    runs = [fidelity_run(data, data_root, out, balance, replicates, per_class, steps, n, unlabeled, classifier_steps)
            for balance in (False, True)]
    off, on = (r["per_replicate"] for r in runs)
    classes = list(next(iter(off.values()))["per_class"])
    summary = {}
    for name in classes:
        a = [off[rep]["per_class"][name] for rep in off]
        b = [on[rep]["per_class"][name] for rep in on]
        summary[name] = {"off": round(sum(a) / len(a), 4), "on": round(sum(b) / len(b), 4),
                         "on_minus_off": [round(y - x, 4) for x, y in zip(a, b)]}
    print(json.dumps({"study": "pool_balance_fidelity", "data": data, "replicates": replicates, "steps": steps,
                      "n_per_class": n, "label_fidelity": summary, "runs": runs}))


if __name__ == "__main__":
    main()
