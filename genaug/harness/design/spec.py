"""The experiment as data: a frozen, serialisable spec and its work units.

`ExperimentSpec` holds every setting and what was resolved from the source once (its classes, image
size, validation plan), so a stage function on another process or machine needs nothing else: it
reopens the source there (`source()`, once per process). A `Unit` is a replicate, or a replicate's
fold with cross-validation; each trains its own generators and classifiers in `OUT/<unit.name>/`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields, replace
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import torch

from ...data import load_split, open_source
from ...data.images import match_channels
from ...data.imagesets import image_files, load_image_folder, slug
from ...errors import GenaugError
from ...io import read_json
from .arms import Arm, plan_arms
from ...classifiers.training import TrainSettings
from .config import ADDED_SINCE_STORE, ARM_ADDING_KEYS, DESIGN_KEYS, OUTPUT_KEYS, RECIPE_KEYS, RUN_KEYS, architectures, synthetic_sources
from .seeds import Seeds


@dataclass(frozen=True)
class Unit:
    replicate: int
    fold: int | None = None

    @property
    def name(self) -> str:
        if self.replicate == SHARED_REPLICATE:
            return "shared"
        return f"rep-{self.replicate}" + ("" if self.fold is None else f"/fold-{self.fold}")


SHARED_REPLICATE = -1
SHARED = Unit(SHARED_REPLICATE)  # what an experiment computes once for every replicate (generation.shared_pretrain)


@dataclass(frozen=True)
class ExperimentSpec:
    data: str
    out: str
    config_json: str  # the resolved config, sorted JSON (hashable, and the same bytes on every process)
    classes: tuple[str, ...]
    source_labels: tuple[int, ...]  # the classes' labels in the source; classifier labels are positions
    image_size: int
    n_val: int  # validation images per class drawn from the source's val split (0: carved from the subset)
    data_root: str | None = None
    runs_dir: str | None = None
    device: str = "auto"
    progress: bool = False  # progress bars inside stages (the executor draws its own over the tasks)
    multilabel: bool = False  # several labels per image: `classes` are the labels (multilabel_stages.py)

    @cached_property
    def config(self) -> dict[str, Any]:
        return json.loads(self.config_json)

    @cached_property
    def settings_hash(self) -> str:
        """Every setting that decides what a stage computes (not how many units, nor what is kept or
        where): the classifier stage's part of its key (and every stage's in a folder from before 0.2)."""
        return self._hash(())

    @cached_property
    def upstream_hash(self) -> str:
        """The settings every stage but the arms' classifier runs reads: all but the arms' recipe
        (`config.RECIPE_KEYS`), so a recipe change re-runs the classifiers alone. Folders from before
        0.2 (their helpers trained with the arms' recipe) keep one hash for every stage."""
        return self.settings_hash if self.legacy_keys else self._hash(RECIPE_KEYS)

    @property
    def legacy_keys(self) -> bool:
        return self.config.get("steps") is None

    def stage_hash(self, stage: str) -> str:
        return self.settings_hash if stage == "classifier" else self.upstream_hash

    def _hash(self, without: tuple[str, ...]) -> str:
        c = {k: v for k, v in self.config.items() if k not in DESIGN_KEYS + OUTPUT_KEYS + RUN_KEYS + ARM_ADDING_KEYS + without
             and not (k in ADDED_SINCE_STORE and v == ADDED_SINCE_STORE[k])}
        blob = json.dumps({"config": c, "data": self.data, "runs": self.runs_dir is not None}, sort_keys=True,
                          default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def to_json(self) -> str:
        """The spec as JSON (`OUT/spec.json`): with it, any process can run any stage of the experiment."""
        return json.dumps({f.name: getattr(self, f.name) for f in fields(self)}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "ExperimentSpec":
        raw = json.loads(text)
        return cls(**{**raw, "classes": tuple(raw["classes"]), "source_labels": tuple(raw["source_labels"])})

    @classmethod
    def read_folder(cls, folder: str | Path) -> "ExperimentSpec":
        """The spec of an augment-and-train folder (its `spec.json`), `out` set to where the folder is now
        (it may have been unpacked elsewhere); a one-line error where there is none or it does not parse."""
        path = Path(folder) / "spec.json"
        if not path.exists():
            raise GenaugError(f"{folder}: no spec.json; not an augment-and-train folder")
        try:
            return replace(cls.from_json(path.read_text()), out=str(folder))
        except (ValueError, KeyError, TypeError) as e:
            raise GenaugError(f"{path}: not a spec genaug can read ({type(e).__name__}: {e})") from None

    @property
    def folder(self) -> Path:
        return Path(self.out)

    @property
    def labels(self) -> list[int]:
        return list(range(len(self.classes)))

    @cached_property
    def arms(self) -> list[Arm]:
        return plan_arms(self.config)

    @cached_property
    def architectures(self) -> list[str]:
        return architectures(self.config)

    @cached_property
    def source_specs(self) -> dict[str, dict]:
        return synthetic_sources(self.config)

    @property
    def sources(self) -> list[str]:
        return list(self.source_specs)

    @cached_property
    def settings(self) -> TrainSettings:
        """The arms' classifier recipe (each arm may change its augmentation or share: arms.py)."""
        c = self.config
        share = c.get("synthetic_share") if c.get("synthetic_share") is not None else c["synthetic_ratio"]
        return TrainSettings.from_config({**c, "classifier": self.architectures[0], "synthetic_share": share,
                                          "select_metric": c["select_metric"] or c["primary_metric"]})

    @cached_property
    def helper_settings(self) -> TrainSettings:
        """The recipe of the helper classifiers (teacher, confidence filter, CAS): the recorded
        `helper_recipe` over the experiment's network and classical augmentation."""
        c, recipe = self.config, self.config.get("helper_recipe")
        if not isinstance(recipe, dict):
            return self.settings
        # classical augmentation, so the unaugmented real images' batch-norm statistics match their training
        return replace(self.settings, **{k: v for k, v in recipe.items() if k != "select_metric"},
                       select_metric=recipe.get("select_metric") or c["primary_metric"], augment="classical",
                       mix=False, loss="ce", synthetic_share=None, bn_statistics="clean")

    @property
    def source(self):
        c = self.config
        return _open(self.data, self.data_root, c["group_by"], c["test_fraction"], c.get("given_split", "use"),
                     c.get("label_columns"), c.get("split_folders"), copies_at(c))

    @property
    def history(self) -> list[dict]:
        path = self.folder / "history.json"
        return read_json(path) if path.exists() else []

    def units(self) -> list[Unit]:
        folds = range(int(self.config["cv"])) if self.config["cv"] else [None]
        return [Unit(r, f) for r in range(int(self.config["replicates"])) for f in folds]

    def unit_folder(self, unit: Unit) -> Path:
        return self.folder / unit.name

    def seeds(self, unit: Unit) -> Seeds:
        return Seeds(int(self.config["seed"]), unit.replicate, self.config["seed_scheme"])

    def positions(self, source_labels: torch.Tensor) -> torch.Tensor:
        lookup = {s: i for i, s in enumerate(self.source_labels)}
        return torch.tensor([lookup[int(v)] for v in source_labels], dtype=torch.int64)


_SOURCES: dict = {}  # per process: a source is opened once


def copies_at(config: dict) -> tuple:
    """Copies across a given split are compared at the size and fit the experiment's models see."""
    return (config.get("image_size"), config.get("fit") or "crop")


def _open(data: str, data_root: str | None, group_by, test_fraction, given_split="use", label_columns=None,
          split_folders=None, copies=None):
    key = _source_key(data, data_root, group_by, test_fraction, given_split, label_columns, split_folders, copies)
    if key not in _SOURCES:
        _SOURCES[key] = open_source(data, data_root, group_by=group_by, test_fraction=test_fraction,
                                    given_split=given_split, label_columns=label_columns,
                                    split_folders=split_folders, copies_at=copies)
    return _SOURCES[key]


def _source_key(*args) -> str:
    return json.dumps(list(args), sort_keys=True, default=str)


def remember_source(source, data: str, data_root: str | None, config: dict) -> None:
    """The driver's opened source, so that stages run in its process do not open it again."""
    c = config
    _SOURCES[_source_key(data, data_root, c["group_by"], c["test_fraction"], c["given_split"], c["label_columns"],
                         c["split_folders"], copies_at(c))] = source


def test_set(spec: ExperimentSpec, fit, intensity) -> tuple[torch.Tensor, torch.Tensor]:
    """The test split, converted with a replicate's recorded intensity rule (loaded once per rule and process)."""
    return _test_set(spec, json.dumps([fit, intensity], sort_keys=True))


@lru_cache(maxsize=4)
def _test_set(spec: ExperimentSpec, rule: str):
    fit, intensity = json.loads(rule)
    test = load_split(spec.source, "test", list(spec.source_labels), spec.image_size, fit=fit, intensity=intensity)
    return test.images, spec.positions(test.labels)


@lru_cache(maxsize=8)
def external_set(spec: ExperimentSpec, name: str) -> dict[int, torch.Tensor]:
    """An external synthetic set `DIR/<class>/*.png`, per class, at the experiment's size and channels."""
    root = Path(spec.config["synthetic"][name])
    if not root.is_dir():
        raise GenaugError(f"--synthetic {name}={root}: folder not found")
    folders = {p.name.lower(): p for p in root.iterdir() if p.is_dir() and image_files(p)}
    wanted = {c.lower(): c for c in spec.classes} | {slug(c).lower(): c for c in spec.classes}
    unknown = sorted(f for f in folders if f not in wanted)
    if unknown:
        raise GenaugError(f"--synthetic {name}: folder {folders[unknown[0]].name!r} in {root} is not a class "
                          f"of this experiment ({', '.join(spec.classes)})")
    sets = {}
    for label, cls in enumerate(spec.classes):
        folder = folders.get(cls.lower()) or folders.get(slug(cls).lower())
        if folder is None:
            raise GenaugError(f"--synthetic {name}: no folder for class {cls!r} in {root} "
                              f"(expected {root}/{slug(cls)}/*.png)")
        images = load_image_folder(folder, spec.image_size)
        sets[label] = torch.stack([match_channels(img, spec.source.channels) for img in images])
    return sets
