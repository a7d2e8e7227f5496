"""Stage 2 of a replicate: its generators (trained on the real training part, or reused from
`--runs`) and their samples, each class from its own seed range."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .. import runs
from ..config import load_config, packaged_config
from ..data.imagesets import load_image_folder, slug
from ..data.subsets import class_manifest, load_manifest
from ..errors import GenaugError
from ..io import read_json
from .seeds import CONDITIONAL_UNIT
from .timing import timed

if TYPE_CHECKING:
    from .replicate import Replicate

DIFFUSION_FAMILIES = ("ddpm", "ddpm-cond")


def generator_run(rep: Replicate, family: str, label: int | None) -> Path:
    """The trained run of `family` for class `label`, or for every class (`label` None) when the
    family is class-conditional."""
    e = rep.e
    names = e.classes if label is None else e.classes[label]
    manifest = class_manifest(rep.manifest, names, rep.train_items,
                              note="real training part of an augment-and-train replicate (validation removed)")
    if e.runs_dir is not None:
        return reused_run(rep, family, label, manifest)
    config = load_config(e.config["generator_configs"].get(family) or _packaged(family, e.image_size))
    steps = e.config["generator_steps"]
    steps = steps.get(family) if isinstance(steps, dict) else steps
    if steps:
        config["steps"] = int(steps)
    if label is None:  # one class-conditional model on the whole real training part
        config = {**config, "data": e.data, "class": "all", "classes": list(e.classes),
                  "image_size": e.image_size, "seed": rep.generator_seed(CONDITIONAL_UNIT)}
        run_dir, images, labels = rep.folder / "generators" / family, rep.train_x, {"labels": rep.train_y}
    else:
        config = {**config, "data": e.data, "class": names, "image_size": e.image_size,
                  "seed": rep.generator_seed(label)}
        run_dir, images, labels = rep.folder / "generators" / family / slug(names), rep.train_x[rep.train_y == label], {}
    # a finished model is only reloaded: its training time was recorded when it trained
    clock = nullcontext() if (run_dir / "model").exists() else timed(rep.folder, "generator training",
                                                                     f"{family}/{run_dir.name}")
    with clock:
        return runs.train_on(family, images, manifest, run_dir, config, resume=True, device=e.device,
                             progress=e.progress, **labels)


def runs_root(runs_dir: Path, replicate: int, replicates: int) -> Path:
    """Where replicate r's reused generators live: `R/rep-<r>/`, or R itself for a single replicate."""
    if (runs_dir / f"rep-{replicate}").is_dir():
        return runs_dir / f"rep-{replicate}"
    if replicates == 1:
        return runs_dir
    raise GenaugError(f"--runs {runs_dir}: no rep-{replicate}/ folder; with --replicates {replicates} give trained "
                      f"generators for every replicate as {runs_dir}/rep-0 ... rep-{replicates - 1} (each trained on "
                      "that replicate's real training part), or run with --replicates 1")


def check_runs(runs_dir: Path, replicates: int, cv) -> None:
    """Refuse, before anything is written, `--runs` that cannot serve every unit."""
    if cv:
        raise GenaugError("--runs cannot be combined with cv: each fold trains its generators on its own folds")
    if not runs_dir.is_dir():
        raise GenaugError(f"--runs {runs_dir}: folder not found")
    for r in range(replicates):
        runs_root(runs_dir, r, replicates)


def reused_run(rep: Replicate, family: str, label: int | None, manifest: dict) -> Path:
    """A generator from `--runs R` (per replicate R/rep-<r>/, or R for one replicate; inside it
    <family>/<class> or `genaug train --class all --out R`'s <class>; for a class-conditional family
    <family>, <family>/all or the folder itself), checked to have seen only this replicate's real
    training part."""
    e = rep.e
    root = runs_root(e.runs_dir, rep.index, int(e.config["replicates"]))
    if label is None:
        what, candidates = "class-conditional", [root / family, root / family / "all", root]
    else:
        what = f"class {e.classes[label]!r}"
        candidates = [root / family / slug(e.classes[label]), root / slug(e.classes[label])]
    run_dir = next((p for p in candidates if (p / "model").exists()
                    and runs.load_run_config(p).get("family") == family), None)
    if run_dir is None:
        raise GenaugError(f"--runs: no trained {family} model ({what}) in "
                          f"{' or '.join(str(p) for p in candidates)}")
    if label is None and runs.load_run_config(run_dir).get("classes") != list(e.classes):
        raise GenaugError(f"--runs: {run_dir} was trained on the classes "
                          f"{runs.load_run_config(run_dir).get('classes')}, this experiment has {list(e.classes)}")
    seen = {it["sha256"] for it in load_manifest(run_dir)["train"]["items"]}
    train = {it["sha256"] for it in manifest["train"]["items"]}
    held_out = {it["sha256"] for it in rep.val_items if "sha256" in it}
    if seen & held_out or not seen <= train:
        n = e.config["per_class"] - e.n_val if e.n_val else e.config["per_class"]
        how = (f"`genaug train {family} --data {e.data} --class all --per-class {n} --seed {rep.seeds.of('subset')} --out R`"
               if e.n_val else "this experiment (drop --runs): it trains generators on the real training part")
        raise GenaugError(f"--runs: {run_dir} was trained on real images this experiment does not train on "
                          f"({len(seen - train)} of its {len(seen)} images are outside replicate {rep.index}'s real "
                          f"training part, {len(seen & held_out)} are its validation images); train compatible "
                          f"generators with {how}")
    return run_dir


def synthetic(rep: Replicate, source: str, label: int) -> torch.Tensor:
    """The `max(synthetic_per_class)` images of one class, in drawing order."""
    e = rep.e
    n = max(e.config["synthetic_per_class"])
    spec = rep.source_specs[source]
    if "folder" in spec:
        return e.external(source)[label][:n]
    family = spec["family"]
    conditional = spec["guidance"] is not None
    run_dir = generator_run(rep, family, None if conditional else label)
    folder = rep.folder / "synthetic" / source / slug(e.classes[label])
    diffusion = family in DIFFUSION_FAMILIES
    sampler = e.config["sampler"] if diffusion else None
    steps = e.config["sample_steps"] if diffusion else None
    condition = {"class_name": e.classes[label], "guidance": spec["guidance"]} if conditional else {}
    # every guidance weight starts class `label` from the same latents: the sweep is paired
    drawn = (folder / "samples.json").exists() and len(read_json(folder / "samples.json").get("images", [])) >= n
    with nullcontext() if drawn else timed(rep.folder, "sampling", f"{source}/{e.classes[label]}"):
        runs.sample(run_dir, n, folder, sampler, steps, seed=rep.sample_seed(label), device=e.device,
                    progress=e.progress, **condition)
    return load_image_folder(folder)[:n]


def _packaged(family: str, image_size: int) -> str | None:
    """The packaged config `<family>-<size>` when there is one (else the family's defaults)."""
    name = f"{family}-{image_size}"
    return name if packaged_config(name) is not None else None
