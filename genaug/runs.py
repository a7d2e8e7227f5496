"""Run folders: train a generator per class, and sample from a trained run.

A run folder (default `runs/<data>/<family>/<class>/`) holds `config.yaml` (the effective
settings), `manifest.json` (the exact real images), `train_log.jsonl`, `checkpoints/`,
`samples/` (grids) and, when training finished, `model/` (diffusers format).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from .config import save_config
from .data import check_image_size, draw_subset, load_manifest, open_source, save_png, to_uint8
from .data.imagesets import slug
from .data.subsets import MANIFEST_NAME, class_manifest
from .errors import GenaugError
from .generators.base import get_family
from .generators.training import MODEL_DIR, Trainer, checkpoints, load_trained
from .io import read_json, write_json

SAMPLE_MANIFEST = "samples.json"


def default_run_dir(data: str, family: str, class_name: str) -> Path:
    return Path("runs") / slug(Path(data).stem if Path(data).suffix else Path(data).name) / family / slug(class_name)


def train(family: str, data: str, classes: str, config: dict[str, Any] | None = None, out: str | None = None,
          data_root: str | None = None, resume: bool = False, device: str = "auto", skip_bad: bool = False,
          progress: bool = True) -> list[Path]:
    """Train one `family` model per selected class; returns the run folders.

    `config` holds the training settings (`steps`, `batch_size`, `seed`, ..., `model: {...}`)
    and the data settings `per_class` and `image_size`.
    """
    get_family(family)
    config = dict(config or {})
    source = open_source(data, data_root, group_by=config.get("group_by"), test_fraction=config.get("test_fraction"))
    selected = source.resolve_classes(classes)
    image_size = check_image_size(config.get("image_size") or source.default_size())
    seed = int(config.get("seed", 0))
    # one draw for all classes: data errors surface before anything is written, and a `dataset`
    # intensity window is fitted on every selected class together
    real, manifest = draw_subset(source, selected, config.get("per_class"), seed, image_size, skip_bad,
                                 fit=config.get("fit"), intensity=config.get("intensity"))
    runs = []
    for label in selected:
        name = source.classes[label]
        run_dir = Path(out) / slug(name) if out and len(selected) > 1 else Path(out or default_run_dir(data, family, name))
        effective = {**config, "family": family, "data": data, "class": name, "image_size": image_size}
        runs.append(train_on(family, real.of_class(label), class_manifest(manifest, name), run_dir, effective,
                             resume, device, progress))
    return runs


def train_on(family: str, images: torch.Tensor, manifest: dict, run_dir: Path, config: dict[str, Any],
             resume: bool = False, device: str = "auto", progress: bool = True) -> Path:
    """Train `family` on exactly `images` (described by `manifest`) in `run_dir`."""
    _check_run_folder(run_dir, manifest, resume, config)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    write_json(run_dir / MANIFEST_NAME, manifest)
    trainer = Trainer(family, images, run_dir, config, device=device, progress=progress)
    if resume:
        trainer.resume()
    if trainer.state.step < int(trainer.config["steps"]) or not (run_dir / MODEL_DIR).exists():
        trainer.fit()
    return run_dir


def _check_run_folder(run_dir: Path, manifest: dict, resume: bool, config: dict[str, Any]) -> None:
    if checkpoints(run_dir) and not resume:
        raise GenaugError(f"{run_dir} already holds checkpoints; pass --resume to continue it or --out for a new run")
    if resume and (run_dir / MANIFEST_NAME).exists():
        old = load_manifest(run_dir)
        if [i["sha256"] for i in old["train"]["items"]] != [i["sha256"] for i in manifest["train"]["items"]]:
            raise GenaugError(f"{run_dir} was trained on other real images (different --per-class, --seed or data); "
                              "cannot resume it with these settings")
    if resume and (run_dir / "config.yaml").exists():
        old = load_run_config(run_dir)
        for key in ("family", "model", "batch_size", "image_size"):
            if old.get(key) != config.get(key):
                raise GenaugError(f"{run_dir} was trained with {key} = {old.get(key)!r}, not {config.get(key)!r}; "
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
           batch_size: int = 64, seed: int = 0, device: str = "auto", progress: bool = True) -> Path:
    """Write `n` PNG samples of a trained run into `out`, with `samples.json`.

    Image i is drawn from its own generator seeded with `seed + i`, so it does not depend on the
    batch size, and a re-run with the same arguments only writes the images still missing.
    """
    if n < 1:
        raise GenaugError(f"--n must be at least 1 (got {n})")
    run_dir, out = Path(run_dir), Path(out)
    if not run_dir.is_dir():
        raise GenaugError(f"run folder not found: {run_dir}")
    model = load_trained(run_dir, device)
    sampler, steps = _resolve_sampler(model, sampler, steps)
    settings = {"run": str(run_dir.resolve()), "model_sha256": model_hash(run_dir), "family": model.family,
                "sampler": sampler, "steps": steps, "seed": seed}
    manifest_path = out / SAMPLE_MANIFEST
    images: list[dict] = []
    if manifest_path.exists():
        old = read_json(manifest_path)
        if {k: old.get(k) for k in settings} != settings:
            raise GenaugError(f"{out} holds samples made with other settings; choose another --out")
        images = old["images"]
    done = {im["index"] for im in images if (out / im["file"]).exists()}
    images = [im for im in images if im["index"] in done]
    todo = [i for i in range(n) if i not in done]
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=n, initial=n - len(todo), desc=f"sample {model.family}", unit="img", disable=not progress)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start: start + batch_size]
        batch = to_uint8(model.sample([torch.Generator().manual_seed(seed + i) for i in chunk], sampler, steps))
        for i, img in zip(chunk, batch):
            save_png(img, out / f"{i:06d}.png")
            images.append({"index": i, "file": f"{i:06d}.png", "seed": seed + i})
        write_json(manifest_path, {**settings, "count": len(images), "images": sorted(images, key=lambda x: x["index"])})
        bar.update(len(chunk))
    bar.close()
    if not todo:
        write_json(manifest_path, {**settings, "count": len(images), "images": sorted(images, key=lambda x: x["index"])})
    return out


def _resolve_sampler(model, sampler: str | None, steps: int | None) -> tuple[str | None, int | None]:
    from .generators.ddpm import SAMPLERS

    if model.family != "ddpm":
        if sampler or steps:
            raise GenaugError(f"--sampler/--steps apply to ddpm runs only; this run is a {model.family}")
        return None, None
    sampler = sampler or model.config["sampler"]
    if sampler not in SAMPLERS:
        raise GenaugError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
    return sampler, steps or model.config["sample_steps"] or SAMPLERS[sampler][2]
