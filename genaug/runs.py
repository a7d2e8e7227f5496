"""Run folders: train a generator per class, and sample from a trained run.

A run folder (default `runs/<data>/<family>/<class>/`) holds `config.yaml` (the effective
settings), `manifest.json` (the exact real images), `train_log.jsonl`, `checkpoints/`,
`samples/` (grids) and, when training finished, `model/` (diffusers format).
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from .config import merge, save_config
from .data import check_image_size, draw_subset, load_manifest, open_source, reload_subset, save_png, to_uint8
from .data.imagesets import slug
from .data.intensity import IntensityRule
from .data.subsets import MANIFEST_NAME, class_manifest
from .errors import GenaugError
from .generators.registry import get_family
from .generators.training import MODEL_DIR, RUN_INFO, TRAIN_DEFAULTS, Trainer, check_tracker, load_trained
from .io import has_weights, read_json, write_json

SAMPLE_MANIFEST = "samples.json"


def default_run_dir(data: str, family: str, class_name: str) -> Path:
    return Path("runs") / slug(Path(data).stem if Path(data).suffix else Path(data).name) / family / slug(class_name)


DATA_DEFAULTS: dict[str, Any] = {"per_class": None, "group_by": None, "test_fraction": 0.2, "given_split": "use", "split_folders": None,
                                 "fit": "crop",
                                 "intensity": "dataset", "preprocess": "none"}
EXTENDABLE = ("steps",)  # settings a resumed run may raise; every other one must match


def effective_config(family: str, config: dict[str, Any]) -> dict[str, Any]:
    """Every setting a run uses, defaults included: what `config.yaml` records once, at creation."""
    model = {**get_family(family).default_config, **(config.get("model") or {})}
    return {**TRAIN_DEFAULTS, **DATA_DEFAULTS, **config, "family": family, "model": model}


def train(family: str, data: str, classes: str, config: dict[str, Any] | None = None, out: str | None = None,
          data_root: str | None = None, resume: bool = False, device: str = "auto", skip_bad: bool = False,
          progress: bool = True) -> list[Path]:
    """Train one `family` model per selected class; returns the run folders.

    `config` holds the training settings (`steps`, `batch_size`, `seed`, ..., `model: {...}`)
    and the data settings (`per_class`, `image_size`, `group_by`, `test_fraction`, `fit`,
    `intensity`, `preprocess`). With `resume`, a run folder that exists continues with its own recorded
    settings (see `resume_runs`); one that does not is started.
    """
    config = dict(config or {})
    if get_family(family).multilabel:
        return train_multilabel(family, data, config, out, data_root, resume, device, progress)
    source = open_source(data, data_root, group_by=config.get("group_by"), test_fraction=config.get("test_fraction"),
                         given_split=config.get("given_split") or "use", split_folders=config.get("split_folders"),
                         copies_at=(config.get("image_size"), config.get("fit") or "crop"))
    selected = source.resolve_classes(classes)
    image_size = check_image_size(config.get("image_size") or source.default_size())
    seed = int(config.get("seed", 0))
    # one draw for all classes: data errors surface before anything is written, and a `dataset`
    # intensity window is fitted on every selected class together
    real, manifest = draw_subset(source, selected, config.get("per_class"), seed, image_size, skip_bad,
                                 fit=config.get("fit"),
                                 intensity=IntensityRule.parse(config.get("intensity")).with_preprocess(
                                     config.get("preprocess")))
    if (config.get("unlabeled") is not None or config.get("unlabeled_data")) and not get_family(family).uses_pool:
        raise GenaugError(f"{family} trains on labelled images only; unlabelled images train ddpm-semi, ddpm-pseudo, "
                          "ddpm-finetune[-cond] and ddpm-edit")
    if get_family(family).uses_pool:
        return train_with_pool(family, data, source, selected, real, manifest, config, out, resume, device, progress,
                               image_size)
    jobs = []  # (run folder, images, manifest, settings, labels)
    if get_family(family).conditional:
        names = [source.classes[label] for label in selected]
        run_dir = Path(out or default_run_dir(data, family, "all" if str(classes).lower() == "all" else "-".join(names)))
        jobs.append((run_dir, real.images, manifest, {"class": classes, "classes": names}, positions(real, names)))
    else:
        for label in selected:
            name = source.classes[label]
            run_dir = (Path(out) / slug(name) if out and len(selected) > 1
                       else Path(out or default_run_dir(data, family, name)))
            jobs.append((run_dir, real.of_class(label), class_manifest(manifest, name), {"class": name}, None))
    runs = []
    for run_dir, images, run_manifest, settings, labels in jobs:
        if resume and progress and not (run_dir / "config.yaml").exists():
            print(f"nothing to resume in {run_dir}; starting a new run", file=sys.stderr)
        effective = {**config, "data": data, **settings, "image_size": image_size}
        runs.append(train_on(family, images, run_manifest, run_dir, effective, resume, device, progress,
                             labels=labels))
    return runs


def train_multilabel(family, data, config, out, data_root, resume, device, progress) -> list[Path]:
    """`genaug train ddpm-multilabel` on a multi-label label file: a draw of at least `per_class`
    positives per label (and as many images without a finding), one model over every label set."""
    from .data import multilabel

    source = open_source(data, data_root, group_by=config.get("group_by"), test_fraction=config.get("test_fraction"),
                         given_split=config.get("given_split") or "use", label_columns=config.get("label_columns"),
                         copies_at=(config.get("image_size"), config.get("fit") or "crop"),
                         split_folders=config.get("split_folders"))
    if not source.multilabel:
        raise GenaugError(f"{family} models several labels per image; {data} has one class per image: train "
                          "ddpm --conditional")
    image_size = check_image_size(config.get("image_size") or source.default_size())
    seed = int(config.get("seed", 0))
    images, labels, manifest = multilabel.draw_subset(
        source, config.get("per_class"), seed, image_size, config.get("fit") or "crop",
        IntensityRule.parse(config.get("intensity")).with_preprocess(config.get("preprocess")))
    run_dir = Path(out or default_run_dir(data, family, "all"))
    settings = {**config, "data": data, "class": "all", "classes": list(source.classes), "image_size": image_size}
    return [train_on(family, images, manifest, run_dir, settings, resume, device, progress, labels=labels)]


def train_with_pool(family, data, source, selected, real, manifest, config, out, resume, device, progress,
                    image_size) -> list[Path]:
    """`genaug train ddpm-semi|ddpm-pseudo|ddpm-finetune[-cond]|ddpm-edit`: the labelled subset and an unlabelled pool
    (`unlabeled: N|all`, or `unlabeled_data: DIR`) drawn outside its items and their patients; a
    ddpm-pseudo's teacher (a ResNet18 on the labelled images, 20% of them held out for its epoch
    selection) labels the pool first. Runs: `OUT` (conditional), or `OUT/pretrained` and
    `OUT/<class>` (ddpm-finetune), or `OUT/pretrained` and `OUT/all` (ddpm-finetune-cond, ddpm-edit: one
    conditional fine-tune)."""
    from .data import unlabeled

    count = unlabeled.parse_count(config.get("unlabeled"))
    if count is None and not config.get("unlabeled_data"):
        raise GenaugError(f"{family} trains on unlabelled images too: add --unlabeled N|all or --unlabeled-data DIR")
    if count is not None and config.get("unlabeled_data"):
        raise GenaugError("give --unlabeled or --unlabeled-data, not both")
    if config.get("unlabeled_data"):
        pool, block = unlabeled.folder_pool(config["unlabeled_data"], manifest)
    else:
        pool, block = unlabeled.draw_unlabeled(source, selected, count, int(config.get("seed", 0)), manifest, [])
    settings = effective_config(family, config)
    model = settings["model"]
    check_pool(family, pool.images, int(settings["batch_size"]), model)
    names = [source.classes[label] for label in selected]
    manifest = {**manifest, "unlabeled": block}
    base = {k: v for k, v in config.items() if k not in ("unlabeled", "unlabeled_data")}
    root = Path(out or default_run_dir(data, family, "all"))
    labels = positions(real, names)
    if get_family(family).starts_from_pretrained:
        pretrain = {**base, "data": data, "class": "all", "image_size": image_size,
                    "steps": int(model["pretrain_steps"]),
                    "model": {k: v for k, v in (config.get("model") or {}).items()
                              if k in get_family("ddpm").default_config}}
        pretrained = train_on("ddpm", real.images, manifest, root / "pretrained", pretrain, resume, device, progress,
                              pool=pool.images)
        if get_family(family).conditional:  # one class-conditional fine-tune on every labelled image
            settings = {**base, "data": data, "class": "all", "classes": names, "image_size": image_size}
            return [pretrained, train_on(family, real.images, {**manifest, "pretrained": str(pretrained)},
                                         root / "all", settings, resume, device, progress, labels=labels,
                                         init_from=pretrained / MODEL_DIR)]
        return [pretrained] + [
            train_on(family, real.of_class(label), {**class_manifest(manifest, source.classes[label]),
                                                    "pretrained": str(pretrained)},
                     root / slug(source.classes[label]), {**base, "data": data, "class": source.classes[label],
                                                          "image_size": image_size},
                     resume, device, progress, init_from=pretrained / MODEL_DIR)
            for label in selected]
    pool_labels = None
    if family == "ddpm-pseudo":
        pool_labels, manifest["teacher"] = _teacher_labels(real, labels, names, pool.images, model, config, device)
    settings = {**base, "data": data, "class": "all", "classes": names, "image_size": image_size}
    return [train_on(family, real.images, manifest, root, settings, resume, device, progress, labels=labels,
                     pool=pool.images, pool_labels=pool_labels)]


def _teacher_labels(real, labels, names, pool, model, config, device):
    """ddpm-pseudo's pool labels from a classifier trained on the labelled images (genaug train's teacher)."""
    import math

    from .classifiers.inference import predict_proba
    from .data.splits import carve_validation
    from .generators.ddpm_pool import pool_labels
    from .classifiers.training import TrainSettings, train_classifier

    seed = int(config.get("seed", 0))
    train_idx, val_idx = carve_validation(labels.numpy(), real.groups, 0.2, seed)
    settings = TrainSettings()
    trained = train_classifier(real.images[train_idx], labels[train_idx], real.images[val_idx], labels[val_idx],
                               len(names), settings, seed, math.ceil(len(train_idx) / settings.batch_size), device)
    probs = predict_proba(trained.model, pool, device)
    given = pool_labels(probs, model["teacher_threshold"])
    return given, {"classifier": settings.classifier, "epochs": settings.epochs, "seed": seed,
                   "threshold": float(model["teacher_threshold"]), "labelled": int((given >= 0).sum()),
                   "pool": len(pool)}


def positions(real, names: list[str]) -> torch.Tensor:
    """Each image's class as its position in `names` (a conditional model's label order)."""
    index = {name: i for i, name in enumerate(names)}
    return torch.tensor([index[real.classes[int(label)]] for label in real.labels], dtype=torch.long)


def run_folders(out: str | Path) -> list[Path]:
    """`out` itself when it is a run folder, else its run subfolders (one per class)."""
    out = Path(out)
    if (out / "config.yaml").is_file():
        return [out]
    return sorted(p.parent for p in out.glob("*/config.yaml")) if out.is_dir() else []


def resume_runs(family: str, out: str | Path, overrides: dict[str, Any] | None = None, data_root: str | None = None,
                device: str = "auto", progress: bool = True) -> list[Path]:
    """Continue the run(s) in `out` with their recorded settings and real images.

    `overrides` may raise `steps`; any other setting must equal the recorded one.
    """
    folders = run_folders(out)
    if not folders:
        raise GenaugError(f"nothing to resume in {out}: no run folder (config.yaml) there; train it first")
    done = []
    for run_dir in folders:
        saved = load_run_config(run_dir)
        wanted = dict(overrides or {})
        if wanted.get("class") is not None and (str(wanted["class"]).lower() == "all" or len(folders) > 1):
            wanted.pop("class")  # `--class all` (or a list) names every run folder in `out`
        if saved.get("classes"):
            wanted.pop("class", None)  # a conditional run holds every class it was trained on
        config = reconcile(saved, merge(saved, {**wanted, "family": family}), run_dir)
        manifest = load_manifest(run_dir)
        _, real = reload_subset(manifest, data_root)
        labels = positions(real, saved["classes"]) if saved.get("classes") else None
        done.append(train_on(family, real.images, manifest, run_dir, config, True, device, progress, labels=labels))
    return done


def reconcile(saved: dict[str, Any], wanted: dict[str, Any], run_dir: Path, prefix: str = "",
              defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """`wanted` if it only repeats or extends `saved`; else a refusal naming the first differing key.

    A setting a later genaug version added (absent from an older run's record) counts as
    recorded at its default."""
    if defaults is None:
        family = wanted.get("family") or saved.get("family")
        model = get_family(family).default_config if family else {}
        defaults = {**TRAIN_DEFAULTS, **DATA_DEFAULTS, "model": model}
    for key in sorted(set(saved) | set(wanted)):
        old, new = saved.get(key, defaults.get(key)), wanted.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            reconcile(old, new, run_dir, f"{prefix}{key}.", defaults.get(key) if isinstance(defaults.get(key), dict)
                      else {})
        elif key == "history" or old == new:
            continue
        elif key in EXTENDABLE and not prefix and isinstance(new, int) and isinstance(old, int) and new > old:
            continue
        else:
            raise GenaugError(f"{run_dir} was trained with {prefix}{key} = {old!r}, not {new!r}; a resumed run keeps "
                              f"its settings (only {', '.join(EXTENDABLE)} may grow): drop the option, or use a "
                              "new --out")
    return wanted


def train_on(family: str, images: torch.Tensor, manifest: dict, run_dir: Path, config: dict[str, Any],
             resume: bool = False, device: str = "auto", progress: bool = True,
             labels: torch.Tensor | None = None, pool: torch.Tensor | None = None,
             pool_labels: torch.Tensor | None = None, init_from: Path | None = None) -> Path:
    """Train `family` on exactly `images` (described by `manifest`) in `run_dir`; a pool family
    (ddpm_pool.py) also on the unlabelled `pool` (recorded in the manifest's `unlabeled` block).

    `config.yaml` (every setting, defaults included) and `manifest.json` are written when the run
    is created and never rewritten, except that raising `steps` on resume is recorded in
    `config.yaml`'s `history`.
    """
    config = effective_config(family, config)
    check_tracker(config.get("log_with"))  # refused before the run folder is written
    if init_from is None:  # a fine-tune starts from a pool-trained model instead
        check_pool(family, pool, int(config["batch_size"]), config["model"])
    _check_run_folder(run_dir, manifest, resume)
    config_path = run_dir / "config.yaml"
    if config_path.exists():
        saved = load_run_config(run_dir)
        config = reconcile(saved, {**config, "history": saved.get("history", [])}, run_dir)
        if config["steps"] != saved["steps"]:
            config["history"] = [*saved.get("history", []), {"steps": [saved["steps"], config["steps"]],
                                                            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}]
            save_config(config, config_path)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / MANIFEST_NAME, manifest)
        save_config(config, config_path)
    if resume and _finished(run_dir, config):
        return run_dir  # nothing to train: its model is the final one
    trainer = Trainer(family, images, run_dir, config, device=device, progress=progress, labels=labels,
                      classes=config.get("classes"), pool=pool, pool_labels=pool_labels, init_from=init_from)
    if resume:
        trainer.resume()
    if trainer.state.step < int(trainer.config["steps"]) or not (run_dir / MODEL_DIR).exists():
        trainer.fit()
    if config.get("select_by_fid") and not _finished(run_dir, config):
        from .metrics.selection import select_checkpoint

        select_checkpoint(trainer, device=device, progress=progress)
    return run_dir


def check_pool(family: str, pool: torch.Tensor | None, batch_size: int, model: dict | None = None) -> None:
    """A pool family needs a pool of at least one batch; its settings in range. Refused before anything is written."""
    from .generators.ddpm_pool import check_pool_size, check_share, check_threshold

    cls = get_family(family)
    model = {**cls.default_config, **(model or {})}
    if pool is not None:  # any family trained on a pool (ddpm-finetune's pretraining is a plain ddpm)
        check_pool_size(len(pool), batch_size)
    if not cls.uses_pool:
        return
    if pool is None:
        raise GenaugError(f"{family} trains on unlabelled images too: add --unlabeled N|all or --unlabeled-data DIR")
    if "pool_share" in model:
        check_share(model["pool_share"])
    if "teacher_threshold" in model:
        check_threshold(model["teacher_threshold"])


def _finished(run_dir: Path, config: dict[str, Any]) -> bool:
    """Whether the run's final model exists for `config`'s steps (and its checkpoint selection, if asked)."""
    info = run_dir / MODEL_DIR / RUN_INFO
    if not info.exists() or not has_weights(run_dir / MODEL_DIR):  # weights left out by `genaug pack`
        return False
    recorded = read_json(info)
    trained = int(recorded.get("trained_steps", recorded["step"]))
    return trained == int(config["steps"]) and (not config.get("select_by_fid") or "selection" in recorded)


def _check_run_folder(run_dir: Path, manifest: dict, resume: bool) -> None:
    if (run_dir / "config.yaml").exists() and not resume:
        raise GenaugError(f"{run_dir} already holds a run; continue it with --resume (resume=True from Python) "
                          "or choose another folder with --out (out=)")
    if resume and (run_dir / MANIFEST_NAME).exists():
        old = load_manifest(run_dir)
        if [i["sha256"] for i in old["train"]["items"]] != [i["sha256"] for i in manifest["train"]["items"]]:
            raise GenaugError(f"{run_dir} was trained on other real images (different --per-class, --seed or data); "
                              "cannot resume it with these settings")


def load_run_config(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise GenaugError(f"{run_dir} is not a genaug run folder (no config.yaml)")
    return yaml.safe_load(path.read_text())


def model_hash(run_dir: str | Path) -> str:
    """sha256 over the final model's weight files (what a sample set was drawn from)."""
    h = hashlib.sha256()
    for f in sorted((Path(run_dir) / MODEL_DIR).rglob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()


def sample(run_dir: str | Path, n: int, out: str | Path, sampler: str | None = None, steps: int | None = None,
           batch_size: int = 64, seed: int = 0, device: str = "auto", progress: bool = True,
           class_name: str | None = None, guidance: float | None = None,
           label_sets: list[list[str]] | None = None) -> Path:
    """Write `n` PNG samples of a trained run into `out`, with `samples.json`.

    Image i is drawn from its own generator seeded with `seed + i`, so it does not depend on the
    batch size, and a re-run with the same arguments only writes the images still missing.
    A class-conditional run needs `class_name`; `guidance` (default: the run's) weighs it. A label-set
    run (ddpm-multilabel) needs `label_sets`: one list of labels per image, or one list for every
    image (`--target-labels`); each image's labels are recorded beside it.
    """
    if n < 1:
        raise GenaugError(f"--n must be at least 1 (got {n})")
    run_dir, out = Path(run_dir), Path(out)
    if not run_dir.is_dir():
        raise GenaugError(f"run folder not found: {run_dir}")
    model = load_trained(run_dir, device)
    sampler, steps = _resolve_sampler(model, sampler, steps)
    vectors = None
    if model.multilabel:
        if label_sets is None and (run_dir / MANIFEST_NAME).exists():  # the training part's own findings
            from .data.multilabel import training_label_sets

            label_sets = training_label_sets(load_manifest(run_dir), n, seed)
        vectors, w = _label_vectors(model, label_sets, n, class_name), float(
            model.config["guidance"] if guidance is None else guidance)
        condition = None
    else:
        condition = _condition(model, class_name, guidance)
    settings = {"run": str(run_dir.resolve()), "model_sha256": model_hash(run_dir), "family": model.family,
                "sampler": sampler, "steps": steps, "seed": seed}
    if condition:
        settings.update({"class": class_name, "guidance": condition[1]})
    if vectors is not None:
        settings.update({"label_sets": [sorted(s) for s in label_sets], "guidance": w})
    def draw(chunk):
        gens = [torch.Generator().manual_seed(seed + i) for i in chunk]
        extra = {"labels": torch.full((len(chunk),), condition[0]), "guidance": condition[1]} if condition else {}
        if vectors is not None:
            extra = {"labels": vectors[chunk], "guidance": w}
        return to_uint8(model.sample(gens, sampler, steps, **extra))

    def fields(i):
        return {"seed": seed + i, **({"labels": [model.classes[j] for j in torch.nonzero(vectors[i]).flatten().tolist()]}
                                     if vectors is not None else {})}

    return _write_images(out, settings, n, [list(range(n))], draw, fields, batch_size,
                         tqdm(total=n, desc=f"sample {model.family}", unit="img", disable=not progress))


def _write_images(out: Path, settings: dict, n: int, groups: list[list[int]], draw, fields, batch_size: int, bar) -> Path:
    """Images 0..n-1 into `out` as PNG with `samples.json` (`settings` and one entry per image:
    `fields(i)`), a batch at a time within each group of indices (`draw(chunk)` -> uint8 batch); a
    re-run with the same settings writes only the images still missing, other settings are refused."""
    manifest_path = out / SAMPLE_MANIFEST
    images: list[dict] = []
    if manifest_path.exists():
        old = read_json(manifest_path)
        changed = [k for k in settings if k != "run" and old.get(k) != settings[k]]  # folders may move
        if changed == ["model_sha256"]:
            raise GenaugError(f"{out} holds samples of an earlier model of this run (it was trained further since); "
                              "choose another --out, or delete that folder to draw them again")
        if changed:
            detail = "; ".join(f"{k} was {old.get(k)!r}, now {settings[k]!r}" for k in changed if k != "model_sha256")
            raise GenaugError(f"{out} holds samples made with other settings ({detail}); choose another --out")
        images = old["images"]
    done = {im["index"] for im in images if (out / im["file"]).exists()}
    images = [im for im in images if im["index"] in done]
    out.mkdir(parents=True, exist_ok=True)
    bar.update(len(done))

    def save():
        write_json(manifest_path, {**settings, "count": len(images), "images": sorted(images, key=lambda x: x["index"])})

    for group in groups:
        todo = [i for i in group if i not in done]
        for start in range(0, len(todo), batch_size):
            chunk = todo[start: start + batch_size]
            for i, img in zip(chunk, draw(chunk)):
                save_png(img, out / f"{i:06d}.png")
                images.append({"index": i, "file": f"{i:06d}.png", **fields(i)})
            save()
            bar.update(len(chunk))
    bar.close()
    save()
    return out


def edit_plan(n_sources: int, n: int, strengths: list[float]) -> list[tuple[int, int, float]]:
    """(source, variant, strength) of edit i for i < n: variant-major, so any first k edits spread
    over the sources evenly; source s's variant v at strengths[(s + v) % len(strengths)], so every
    variant already spans the strengths (with fewer variants than strengths, as when 100 edits come
    from 40 images, each strength is still drawn) and each source cycles through them."""
    return [(i % n_sources, i // n_sources, strengths[(i % n_sources + i // n_sources) % len(strengths)])
            for i in range(n)]


def edit_sources(run_dir: str | Path, edit_from: str, class_name: str | None = None
                 ) -> tuple[torch.Tensor, list[str], list[str] | None]:
    """The real images `genaug sample --edit-from` edits, at the run's size, their ids and classes:
    `train` (the run's own training images, reloaded from its manifest, each keeping its class; of
    `class_name` alone when given) or a folder of images (of `class_name`, when the run is conditional)."""
    from .data.imagesets import image_files, load_image_folder

    run_dir = Path(run_dir)
    if not (run_dir / MANIFEST_NAME).exists():
        raise GenaugError(f"run folder not found (no {MANIFEST_NAME}): {run_dir}")
    manifest = load_manifest(run_dir)
    if edit_from == "train":
        real = reload_subset(manifest)[1]
        names = [real.classes[int(y)] for y in real.labels]
        keep = [i for i, c in enumerate(names) if class_name in (None, c)]
        if not keep:
            raise GenaugError(f"the run's training images hold no class {class_name!r}; they hold "
                              f"{', '.join(sorted(set(names)))}")
        return real.images[keep], [str(real.ids[i]) for i in keep], [names[i] for i in keep]
    folder = Path(edit_from)
    if not folder.is_dir():
        raise GenaugError(f"--edit-from: {edit_from} is neither 'train' nor a folder of images")
    images = load_image_folder(folder, manifest["image_size"], manifest["fit"], manifest["intensity"])
    return images, [p.name for p in image_files(folder)], None if class_name is None else [class_name] * len(images)


def edit(run_dir: str | Path, images: torch.Tensor, source_ids: list[str], out: str | Path, variants: int,
         strengths: list[float], n: int | None = None, classes: list[str] | None = None, sampler: str | None = None,
         steps: int | None = None, guidance: float | None = None, batch_size: int = 64, seed: int = 0,
         device: str = "auto", progress: bool = True) -> Path:
    """SDEdit variants of real `images` (uint8, N x C x S x S at the run's size) by a trained DDPM run:
    `variants` per image (the first `n` of them in `edit_plan`'s order when given), each recording
    its source, class and strength in `samples.json`; a class-conditional run denoises each image
    towards its class in `classes` (its own: a variant keeps its source's label). Resumable as
    `sample` is."""
    from .data.images import to_model_range
    from .generators.ddpm import DDPM
    from .generators.ddpm_pool import check_strengths, check_variants

    strengths, variants = check_strengths(strengths), check_variants(variants)
    run_dir, out = Path(run_dir), Path(out)
    if not run_dir.is_dir():
        raise GenaugError(f"run folder not found: {run_dir}")
    if len(images) == 0:
        raise GenaugError("no real images to edit")
    model = load_trained(run_dir, device)
    if not isinstance(model, DDPM) or model.multilabel:
        raise GenaugError(f"edits need a single-label DDPM run (ddpm, ddpm-cond, ddpm-finetune, ddpm-edit); this run is "
                          f"a {model.family}")
    if tuple(images.shape[1:]) != (model.channels, model.image_size, model.image_size):
        raise GenaugError(f"the images to edit are {tuple(images.shape[1:])}; this run models "
                          f"{model.channels} x {model.image_size} x {model.image_size}")
    sampler, steps = _resolve_sampler(model, sampler, steps)
    if classes is not None and len(classes) != len(images):
        raise GenaugError(f"one class per image to edit: {len(images)} images, {len(classes)} classes")
    condition = _condition(model, None, guidance) if not model.conditional else None  # refuses a guidance
    for name in dict.fromkeys(classes or [None]) if model.conditional else []:
        condition = _condition(model, name, guidance)  # each class checked against the run's
    label_of = torch.tensor([model.classes.index(c) for c in classes]) if condition else None
    total = variants * len(images) if n is None else int(n)
    if total < 1:
        raise GenaugError(f"--n must be at least 1 (got {total})")
    plan = edit_plan(len(images), total, strengths)
    settings = {"run": str(run_dir.resolve()), "model_sha256": model_hash(run_dir), "family": model.family,
                "sampler": sampler, "steps": steps, "seed": seed, "edit": {
                    "strengths": strengths, "variants": variants,
                    "sources_sha256": hashlib.sha256(images.numpy().tobytes()).hexdigest()}}
    if condition:
        settings.update({"classes_sha256": hashlib.sha256(",".join(classes).encode()).hexdigest(),
                         "guidance": condition[1]})
    x0 = to_model_range(images)

    def draw(chunk):
        gens = [torch.Generator().manual_seed(seed + i) for i in chunk]
        sources = [plan[i][0] for i in chunk]
        extra = {"labels": label_of[sources], "guidance": condition[1]} if condition else {}
        strength = plan[chunk[0]][2]  # a chunk lies inside one strength's group
        return to_uint8(model.edit(x0[sources], strength, gens, sampler, steps, **extra))

    def fields(i):
        return {"seed": seed + i, "source": source_ids[plan[i][0]], "variant": plan[i][1], "strength": plan[i][2],
                **({"class": classes[plan[i][0]]} if classes else {})}

    groups = [[i for i in range(total) if plan[i][2] == s] for s in dict.fromkeys(strengths)]  # one strength a batch
    return _write_images(out, settings, total, groups, draw, fields, batch_size,
                         tqdm(total=total, desc=f"edit {model.family}", unit="img", disable=not progress))


def _label_vectors(model, label_sets, n: int, class_name) -> torch.Tensor:
    """0/1 label vectors (n x L) of a label-set model: one list for every image, or one per image."""
    names = model.classes or []
    if class_name is not None:
        raise GenaugError("a label-set run takes --target-labels (the labels of every image), not --class")
    if not label_sets:
        raise GenaugError(f"this run is conditioned on label sets: choose --target-labels from {', '.join(names)}")
    if len(label_sets) not in (1, n):
        raise GenaugError(f"one label set for every image, or one per image ({n}); got {len(label_sets)}")
    vectors = torch.zeros(n, len(names))
    for i in range(n):
        for label in label_sets[0 if len(label_sets) == 1 else i]:
            if label not in names:
                raise GenaugError(f"unknown label {label!r} for this run; choose from {', '.join(names)}")
            vectors[i, names.index(label)] = 1
    return vectors


def _condition(model, class_name: str | None, guidance: float | None) -> tuple[int, float] | None:
    """(label, guidance weight) for a class-conditional model; None (and no class asked) otherwise."""
    if not model.conditional:
        if class_name is not None or guidance is not None:
            raise GenaugError(f"--class/--guidance apply to class-conditional runs; this {model.family} run models "
                              "one class")
        return None
    names = model.classes or []
    if class_name is None:
        raise GenaugError(f"this run is class-conditional: choose --class from {', '.join(names)}")
    if class_name not in names:
        raise GenaugError(f"unknown class {class_name!r} for this run; choose from {', '.join(names)}")
    w = float(model.config["guidance"] if guidance is None else guidance)
    if w < 0:
        raise GenaugError(f"--guidance must be >= 0 (got {w})")
    return names.index(class_name), w


def _resolve_sampler(model, sampler: str | None, steps: int | None) -> tuple[str | None, int | None]:
    from .generators.ddpm import DDPM, resolve_sampler

    if not isinstance(model, DDPM):
        if sampler or steps:
            raise GenaugError(f"--sampler/--steps apply to ddpm runs only; this run is a {model.family}")
        return None, None
    return resolve_sampler(sampler or model.config["sampler"], steps or model.config["sample_steps"])
