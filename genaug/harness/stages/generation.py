"""Stages 2 and 3 of a unit: its generators (trained on the real training part, or reused from
`--runs`) and their samples, each class from its own seed range."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from ... import runs
from ...config import load_config, packaged_config
from ...data.imagesets import load_image_folder, slug
from ...data.subsets import class_manifest, load_manifest
from ...errors import GenaugError
from ...generators.registry import FAMILIES, get_family
from ...generators.ddpm import DDPM, DEFAULT_LOSS, DIFFUSION_LOSSES
from ...data.intensity import IntensityRule
from ..design.seeds import CONDITIONAL_UNIT, Seeds
from ..design.spec import SHARED, ExperimentSpec, Unit, external_set
from .unit_data import UnitData

PRETRAINED = "pretrained"  # the pool-pretrained model of a unit (pretrain: per-replicate), before its fine-tunes
SHARED_POOL_UNIT = 600  # the seed unit of the experiment's shared pool pretraining (its draw and its generator)


def generator_config(c: dict, family: str, image_size: int) -> dict:
    """The training settings of `family` in an experiment: its config file (or the packaged
    `<family>-<size>`) with `generator_steps` over its steps, `pretrain_steps` over the pool
    pretraining's of a family that starts from one and, for a diffusion family, the experiment's
    `diffusion_loss`."""
    config = load_config(c["generator_configs"].get(family) or _packaged(family, image_size))
    steps = c["generator_steps"]
    steps = steps.get(family) if isinstance(steps, dict) else steps
    if steps:
        config["steps"] = int(steps)
    if c.get("pretrain_steps") and get_family(family).starts_from_pretrained:
        config["model"] = {**(config.get("model") or {}), "pretrain_steps": int(c["pretrain_steps"])}
    if issubclass(get_family(family), DDPM):
        config["model"] = _with_loss(config.get("model") or {}, c.get("diffusion_loss", DEFAULT_LOSS), family)
    return config


def _with_loss(model: dict, loss: str, family: str) -> dict:
    """The model settings with the experiment's diffusion loss (only what differs from the family's
    defaults, so an epsilon experiment's generators and pretraining id are those from before the setting);
    a generator config that says another loss is refused."""
    wanted = DIFFUSION_LOSSES[loss]
    clash = sorted(k for k in wanted if k in model and model[k] != wanted[k])
    if clash:
        raise GenaugError(f"the {family} generator config sets {clash[0]} = {model[clash[0]]!r}, and the "
                          f"experiment's diffusion_loss is {loss}: set diffusion_loss instead "
                          f"({', '.join(DIFFUSION_LOSSES)})")
    defaults = get_family(family).default_config
    return {**{k: v for k, v in model.items() if k not in wanted}, **{k: v for k, v in wanted.items() if v != defaults[k]}}


STARTS_FROM_PRETRAINED = tuple(name for name, cls in FAMILIES.items() if cls.starts_from_pretrained)


def pretrain_config(spec: ExperimentSpec, family: str) -> dict:
    """The pool pretraining a family starts from: a plain DDPM with the family's network settings for
    its `pretrain_steps` (families whose settings agree share one model)."""
    config = {**generator_config(spec.config, family, spec.image_size), "data": spec.data,
              "image_size": spec.image_size}
    model = runs.effective_config(family, config)["model"]
    return {**config, "class": "all", "steps": int(model["pretrain_steps"]),
            "model": {k: v for k, v in (config.get("model") or {}).items() if k in get_family("ddpm").default_config}}


def pretrain_id(spec: ExperimentSpec, family: str) -> str:
    return hashlib.sha256(json.dumps(pretrain_config(spec, family), sort_keys=True, default=str).encode()).hexdigest()[:10]


def shared_pretrained_folder(spec: ExperimentSpec, pretrain: str) -> Path:
    return spec.unit_folder(SHARED) / "generators" / f"pretrained-{pretrain}"


def shared_pretrain(spec: ExperimentSpec, pretrain: str, family: str) -> Path:
    """The experiment's one pool-pretrained DDPM (`pretrain: shared`): trained on the train-split images
    no replicate validates or tests on (nor their patients), `unlabeled` of them (a seeded draw, or
    all), or on `--unlabeled-data`; the replicates fine-tune from it, each on its own labelled images."""
    from ...data.unlabeled import folder_pool, shared_candidates
    from .unit_data import real_subset

    c = spec.config
    units = [real_subset(spec, u) for u in spec.units()]
    first = units[0].manifest
    if c["unlabeled_data"]:
        pool, block = folder_pool(c["unlabeled_data"], first)
        images, items = pool.images, block["items"]
    else:
        ids = shared_candidates(spec.source, list(spec.source_labels), [d.manifest for d in units],
                                [[] if d.manifest.get("validation") else d.val_items for d in units])
        want = len(ids) if c["unlabeled"] in (None, "all") else int(c["unlabeled"])
        if want > len(ids) or not ids:
            raise GenaugError(f"unlabeled {c['unlabeled']}: only {len(ids)} train images of {spec.data} are outside "
                              "every replicate's validation and test items (and their patients)")
        order = np.random.default_rng(Seeds(int(c["seed"]), 0).of("unlabeled", SHARED_POOL_UNIT)).permutation(len(ids))
        chosen = [ids[i] for i in sorted(order[:want])]
        loaded = spec.source.load("train", chosen, spec.image_size, first["fit"], first["intensity"])
        images, items = loaded.images, [{"id": i, "sha256": h} for i, h in zip(loaded.ids, loaded.hashes)]
    manifest = {**{k: v for k, v in first.items() if k not in ("validation", "unlabeled")},
                "selected_classes": list(spec.classes),
                "train": {"split": "train", "count": len(items), "items": items},
                "note": f"the pool pretraining shared by every replicate of {spec.folder}: train images no replicate "
                        "validates or tests on; each replicate fine-tunes it on its own labelled images"}
    config = {**pretrain_config(spec, family), "seed": Seeds(int(c["seed"]), 0).of("generator", SHARED_POOL_UNIT)}
    return runs.train_on("ddpm", images, manifest, shared_pretrained_folder(spec, pretrain), config, resume=True,
                         device=spec.device, progress=spec.progress)


def pretrained_model(spec: ExperimentSpec, unit: Unit, family: str) -> Path:
    """The pretrained run a family's fine-tunes start from: the experiment's shared one, or the unit's own."""
    if spec.config.get("pretrain") == "shared":
        return shared_pretrained_folder(spec, pretrain_id(spec, family))
    return spec.unit_folder(unit) / "generators" / family / PRETRAINED


def generator_run(spec: ExperimentSpec, unit: Unit, data: UnitData, family: str, label) -> Path:
    """The trained run of `family` for class `label`, for every class (`label` None) when the family
    is class-conditional, or ddpm-finetune's pretrained model (`label` PRETRAINED); trained here
    unless it is finished, or found in `--runs`."""
    names = list(spec.classes) if label in (None, PRETRAINED) else spec.classes[label]
    manifest = class_manifest(data.manifest, names, data.train_items,
                              note="real training part of an augment-and-train replicate (validation removed)")
    if spec.runs_dir is not None:
        return reused_run(spec, unit, data, family, label, manifest)
    c, seeds, folder = spec.config, spec.seeds(unit), spec.unit_folder(unit) / "generators" / family
    config = {**generator_config(c, family, spec.image_size), "data": spec.data, "image_size": spec.image_size}
    model = runs.effective_config(family, config)["model"]  # the family's defaults under the config's
    train = {}
    if get_family(family).uses_pool:
        manifest["unlabeled"] = data.manifest["unlabeled"]  # the pool it trains on, by id and hash
        train["pool"] = data.pool
    if label == PRETRAINED:  # pretrain: per-replicate, one unconditional DDPM on the pool and every labelled image
        config = {**pretrain_config(spec, family), "seed": seeds.of("generator", CONDITIONAL_UNIT)}
        return runs.train_on("ddpm", data.train_x, manifest, folder / PRETRAINED, config, resume=True,
                             device=spec.device, progress=spec.progress, **train)
    if label is None:  # one class-conditional model on the whole real training part (and the pool)
        config = {**config, "class": "all", "classes": names, "seed": seeds.of("generator", CONDITIONAL_UNIT)}
        run_dir, images, train["labels"] = folder, data.train_x, data.train_y
        if family in STARTS_FROM_PRETRAINED:  # fine-tuned on the labelled images from the pool-pretrained model
            pretrained = pretrained_model(spec, unit, family)
            train = {"init_from": pretrained / "model", "labels": data.train_y}
            manifest["pretrained"] = str(pretrained)
        if family == "ddpm-pseudo":
            from ...generators.ddpm_pool import pool_labels
            from .teacher import MODEL, pool_probs, teacher_folder

            threshold = model["teacher_threshold"]
            train["pool_labels"] = pool_labels(pool_probs(spec, unit), threshold)
            manifest["teacher"] = {"model": str(teacher_folder(spec, unit) / MODEL),
                                   "threshold": threshold,
                                   "labelled": int((train["pool_labels"] >= 0).sum()), "pool": len(data.pool)}
    else:
        config = {**config, "class": names, "seed": seeds.of("generator", label)}
        run_dir, images = folder / slug(names), data.train_x[data.train_y == label]
        if family in STARTS_FROM_PRETRAINED:  # each class fine-tunes the pretrained model on its own images
            pretrained = pretrained_model(spec, unit, family)
            train = {"init_from": pretrained / "model"}
            manifest["pretrained"] = str(pretrained)
    return runs.train_on(family, images, manifest, run_dir, config, resume=True, device=spec.device,
                         progress=spec.progress, **train)


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


def reused_run(spec: ExperimentSpec, unit: Unit, data: UnitData, family: str, label: int | None,
               manifest: dict) -> Path:
    """A generator from `--runs R` (per replicate R/rep-<r>/, or R for one replicate; inside it
    <family>/<class> or `genaug train --class all --out R`'s <class>; for a class-conditional family
    <family>, <family>/all or the folder itself), checked to have seen only this replicate's real
    training part."""
    root = runs_root(Path(spec.runs_dir), unit.replicate, int(spec.config["replicates"]))
    if label is None:
        what, candidates = "class-conditional", [root / family, root / family / "all", root]
    else:
        what = f"class {spec.classes[label]!r}"
        candidates = [root / family / slug(spec.classes[label]), root / slug(spec.classes[label])]
    run_dir = next((p for p in candidates if (p / "model").exists()
                    and runs.load_run_config(p).get("family") == family), None)
    if run_dir is None:
        raise GenaugError(f"--runs: no trained {family} model ({what}) in "
                          f"{' or '.join(str(p) for p in candidates)}")
    if label is None and runs.load_run_config(run_dir).get("classes") != list(spec.classes):
        raise GenaugError(f"--runs: {run_dir} was trained on the classes "
                          f"{runs.load_run_config(run_dir).get('classes')}, this experiment has {list(spec.classes)}")
    seen = {it["sha256"] for it in load_manifest(run_dir)["train"]["items"]}
    train = {it["sha256"] for it in manifest["train"]["items"]}
    held_out = {it["sha256"] for it in data.val_items if "sha256" in it}
    if seen & held_out or not seen <= train:
        n = spec.config["per_class"] - spec.n_val if spec.n_val else spec.config["per_class"]
        how = (f"`genaug train {family} --data {spec.data} --class all --per-class {n} --seed {spec.seeds(unit).of('subset')} --out R`"
               if spec.n_val else "this experiment (drop --runs): it trains generators on the real training part")
        raise GenaugError(f"--runs: {run_dir} was trained on real images this experiment does not train on "
                          f"({len(seen - train)} of its {len(seen)} images are outside replicate {unit.replicate}'s real "
                          f"training part, {len(seen & held_out)} are its validation images); train compatible "
                          f"generators with {how}")
    return run_dir


def samples_folder(spec: ExperimentSpec, unit: Unit, source: str, label: int) -> Path:
    return spec.unit_folder(unit) / "synthetic" / source / slug(spec.classes[label])


def draw_samples(spec: ExperimentSpec, unit: Unit, data: UnitData, source: str, label: int) -> None:
    """The `max(synthetic_per_class)` images of one class, in drawing order, into its samples folder."""
    n = max(spec.config["synthetic_per_class"])
    family, guidance = spec.source_specs[source]["family"], spec.source_specs[source]["guidance"]
    conditional = guidance is not None
    run_dir = generator_run(spec, unit, data, family, None if conditional else label)
    diffusion = issubclass(get_family(family), DDPM)  # the samplers and their step counts apply
    sampler = spec.config["sampler"] if diffusion else None
    steps = spec.config["sample_steps"] if diffusion else None
    if get_family(family).edits:  # variants of the class's own training images (runs.edit_plan's order)
        own = data.train_y == label
        strength = spec.source_specs[source].get("strength")
        model = runs.load_run_config(run_dir)["model"]
        ids = [str(it["id"]) for it, keep in zip(data.train_items, own.tolist()) if keep]
        runs.edit(run_dir, data.train_x[own], ids, samples_folder(spec, unit, source, label),
                  variants=-(-n // len(ids)), strengths=[strength] if strength is not None else model["strengths"],
                  n=n, classes=[spec.classes[label]] * len(ids), sampler=sampler, steps=steps, guidance=guidance,
                  seed=spec.seeds(unit).of("sample", label), device=spec.device, progress=spec.progress)
        return
    condition = {"class_name": spec.classes[label], "guidance": guidance} if conditional else {}
    # every guidance weight starts class `label` from the same latents: the sweep is paired
    runs.sample(run_dir, n, samples_folder(spec, unit, source, label), sampler, steps,
                seed=spec.seeds(unit).of("sample", label), device=spec.device, progress=spec.progress, **condition)


def synthetic_set(spec: ExperimentSpec, unit: Unit, data: UnitData, source: str) -> dict[int, torch.Tensor]:
    """Every class's drawn images of one source (read from its samples folders, or the external set),
    through the run's preprocessing step like the real images."""
    n = max(spec.config["synthetic_per_class"])
    rule = IntensityRule.parse(data.manifest["intensity"])
    if "folder" in spec.source_specs[source]:
        return {label: rule.finish(images[:n]) for label, images in external_set(spec, source).items()}
    return {label: rule.finish(load_image_folder(samples_folder(spec, unit, source, label))[:n])
            for label in spec.labels}


def _packaged(family: str, image_size: int) -> str | None:
    """The packaged config `<family>-<size>` when there is one (else the family's defaults)."""
    name = f"{family}-{image_size}"
    return name if packaged_config(name) is not None else None
