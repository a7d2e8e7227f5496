"""`augment-and-train`: does adding accepted synthetic images improve the classifier?

An experiment folder holds its settings (`config.yaml`, `history.json`), one folder per unit
(`rep-<r>/`, or `rep-<r>/fold-<f>/` with cross-validation) whose stages are cached (replicate.py),
and the report (report.py; its protocol paragraph: protocol.py). Replicates repeat everything
random; inside each, classifier seeds are shared by every arm; the unit of inference is the
replicate. Every stage writes its result into the folder and is skipped on a re-run, so an
interrupted experiment picks up where it stopped; replicates and seeds may be added later
(recorded in `history.json`, and marked post hoc in the report when a report already existed).
The same command may run in several processes at once (one per GPU, or per machine sharing the
folder): each claims the units nobody else has (claims.py), and the one that finishes the last
unit writes the report.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from ..config import save_config
from ..data import load_split, open_source
from ..data.images import check_image_size, match_channels
from ..data.imagesets import image_files, load_image_folder, slug
from ..data.sources import CIFAR10_CLASSES
from ..data.unlabeled import folder_files
from ..errors import GenaugError
from ..generators.training import TrainingInterrupted, main_thread, raise_interrupt
from ..io import read_json, write_json
from .arms import plan_arms
from .generation import check_runs
from .claims import Claim, describe
from .classifier import TrainSettings
from .config import DEFAULTS, DESIGN_KEYS, LEGACY, OUTPUT_KEYS, architectures
from .config import experiment_config  # noqa: F401 - part of this module's API
from .replicate import Replicate

FLIP_SAFE_KINDS = {"cifar10", "fashion-mnist"}  # natural images; medical and folder sources: flips off


def _with_default(key: str, config: dict, missing: dict | None = None):
    """The value of `key` in `config`, a missing one read as `missing[key]` (the behaviour an older
    folder had) or the default, and a section merged over its defaults."""
    default = DEFAULTS.get(key)
    value = config.get(key, (missing or {}).get(key, default))
    return {**default, **value} if isinstance(default, dict) and isinstance(value, dict) else value


class Experiment:
    """One experiment folder: its settings, its replicates, its arms."""

    def __init__(self, data: str, out: str | Path, config: dict[str, Any], runs_dir: str | None = None,
                 data_root: str | None = None, device: str = "auto", progress: bool = True):
        self.data, self.out, self.config = data, Path(out), config
        self.runs_dir = Path(runs_dir) if runs_dir else None
        self.data_root, self.device, self.progress = data_root, device, progress
        self.source = open_source(data, data_root, group_by=config["group_by"], test_fraction=config["test_fraction"])
        self.source_labels = self.source.resolve_classes(str(config["classes"]))
        if len(self.source_labels) < 2:
            raise GenaugError("augment-and-train needs at least two classes")
        self.classes = [self.source.classes[i] for i in self.source_labels]
        self.labels = list(range(len(self.classes)))  # classifier labels: positions in self.classes
        self.image_size = check_image_size(config["image_size"] or self.source.default_size())
        if config["hflip"] is None:
            config["hflip"] = self.source.kind in FLIP_SAFE_KINDS or self.source.classes == CIFAR10_CLASSES
        self._adopt_legacy()
        self.architectures = architectures(config)
        self.settings = TrainSettings.from_config({**config, "classifier": self.architectures[0],
                                                   "select_metric": config["select_metric"] or config["primary_metric"]})
        self.arms = plan_arms(config)
        self._external: dict[str, dict[int, torch.Tensor]] = {}
        self._tests: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.n_val = self._validation_per_class()
        self.elsewhere: list[str] = []  # after run(): units other processes were still running

    # -- settings and history -----------------------------------------------------------------
    def saved_config(self) -> dict[str, Any]:
        return {**self.config, "data": self.data, "image_size": self.image_size}

    def _adopt_legacy(self) -> None:
        """A folder started before a setting existed keeps the behaviour it ran with (config.LEGACY)."""
        path = self.out / "config.yaml"
        if path.exists():
            old = yaml.safe_load(path.read_text()) or {}
            for key, value in LEGACY.items():
                if key not in old:
                    self.config[key] = value

    def check_settings(self) -> None:
        """A re-run resumes only the same experiment; replicates and seeds may change (recorded)."""
        path = self.out / "config.yaml"
        new = self.saved_config()
        if path.exists():
            old = yaml.safe_load(path.read_text())
            # a setting added by a later genaug version is absent from older folders: read it as its default
            # (inside a section too, e.g. an acceptance setting added later)
            changed = sorted(k for k in set(old) | set(new)
                             if k not in DESIGN_KEYS + OUTPUT_KEYS and _with_default(k, old, LEGACY) != _with_default(k, new))
            if changed:
                raise GenaugError(f"{self.out} holds an experiment with other settings ({', '.join(changed)}); "
                                  "choose another --out (only replicates and seeds may change on a re-run)")
        history = read_json(self.out / "history.json") if (self.out / "history.json").exists() else []
        design = {k: int(new[k]) for k in DESIGN_KEYS}
        if not history or {k: history[-1][k] for k in DESIGN_KEYS} != design:
            # units added once a report was written were chosen after seeing results: post hoc
            history.append({**design, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                            "after_report": bool(history) and (self.out / "report.json").exists()})
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(new, path)
        write_json(self.out / "history.json", history)
        self.history = history

    def _validation_per_class(self) -> int:
        """Validation images per class drawn from the source's own val split (0: carve from the subset).

        `validation: auto` uses the source's val split when it has one (MedMNIST `val_*`,
        `ROOT/val/<class>`, a label file's `val` rows), drawing `round(per_class * val_fraction)` of
        each class there and `per_class` minus that from train, so the labelled budget per class
        stays `per_class`. `carve` always carves a stratified, group-disjoint part off the subset.
        """
        mode = self.config["validation"]
        if mode not in ("auto", "carve", "source"):
            raise GenaugError(f"validation must be auto, carve or source (got {mode!r})")
        if self.config["cv"]:
            if mode == "source":
                raise GenaugError("cv replaces the validation part: drop validation: source")
            return 0  # cross-validation folds of the labelled subset replace the validation carve
        has_val = "val" in self.source.splits
        if mode == "source" and not has_val:
            raise GenaugError(f"validation: source, but {self.data} has no val split")
        if mode == "carve" or not has_val:
            return 0
        n_val = max(1, round(self.config["per_class"] * self.config["val_fraction"]))
        if n_val >= self.config["per_class"]:
            raise GenaugError(f"too few images for the train/validation split: per_class {self.config['per_class']} "
                              f"with val_fraction {self.config['val_fraction']} leaves no training images")
        return n_val

    def positions(self, source_labels: torch.Tensor) -> torch.Tensor:
        lookup = {s: i for i, s in enumerate(self.source_labels)}
        return torch.tensor([lookup[int(v)] for v in source_labels], dtype=torch.int64)

    def test_set(self, manifest: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The test split, converted with the replicate's recorded intensity rule (loaded once per rule)."""
        key = repr((manifest["fit"], manifest["intensity"]))
        if key not in self._tests:
            test = load_split(self.source, "test", self.source_labels, self.image_size, fit=manifest["fit"],
                              intensity=manifest["intensity"])
            self._tests[key] = (test.images, self.positions(test.labels))
        return self._tests[key]

    def external(self, name: str) -> dict[int, torch.Tensor]:
        """An external synthetic set `DIR/<class>/*.png`, per class, at the experiment's size and channels."""
        if name not in self._external:
            root = Path(self.config["synthetic"][name])
            if not root.is_dir():
                raise GenaugError(f"--synthetic {name}={root}: folder not found")
            folders = {p.name.lower(): p for p in root.iterdir() if p.is_dir() and image_files(p)}
            wanted = {c.lower(): c for c in self.classes} | {slug(c).lower(): c for c in self.classes}
            unknown = sorted(f for f in folders if f not in wanted)
            if unknown:
                raise GenaugError(f"--synthetic {name}: folder {folders[unknown[0]].name!r} in {root} is not a class "
                                  f"of this experiment ({', '.join(self.classes)})")
            sets = {}
            for label, cls in enumerate(self.classes):
                folder = folders.get(cls.lower()) or folders.get(slug(cls).lower())
                if folder is None:
                    raise GenaugError(f"--synthetic {name}: no folder for class {cls!r} in {root} "
                                      f"(expected {root}/{slug(cls)}/*.png)")
                images = load_image_folder(folder, self.image_size)
                sets[label] = torch.stack([match_channels(img, self.source.channels) for img in images])
            self._external[name] = sets
        return self._external[name]

    # -- the run ------------------------------------------------------------------------------
    def preflight(self) -> None:
        """Refuse, before anything is written, unlabelled images that cannot be had and --runs that
        cannot serve every replicate."""
        c = self.config
        if self.runs_dir is not None:
            check_runs(self.runs_dir, int(c["replicates"]), c["cv"])
        if c["unlabeled_data"]:
            folder_files(c["unlabeled_data"])
        if isinstance(c["unlabeled"], int):
            train = self.source.split("train")
            in_scope = sum(1 for y in train.labels if int(y) in self.source_labels)
            left = in_scope - int(c["per_class"]) * len(self.source_labels)
            if c["unlabeled"] > left:
                raise GenaugError(f"--unlabeled {c['unlabeled']}: the train split of {self.data} has {in_scope} images "
                                  f"of these classes; after {c['per_class']} labelled per class at most {max(left, 0)} "
                                  "are left (fewer when patients are kept apart)")

    def replicate(self, index: int, fold: int | None = None) -> Replicate:
        return Replicate(self, index, fold)

    def units(self) -> list[Replicate]:
        """Every replicate, or with `cv` K every (replicate, fold): each trains its own generators and classifiers."""
        folds = range(int(self.config["cv"])) if self.config["cv"] else [None]
        return [self.replicate(r, f) for r in range(int(self.config["replicates"])) for f in folds]

    def run(self) -> dict | None:
        """Every unit this process can claim (see claims.py), then the report. Returns None, with
        `self.elsewhere` naming the units other processes still run, when the report is theirs to write."""
        from .report import write_report

        self.preflight()
        self.check_settings()
        replicates = self.units()
        seeds = int(self.config["seeds"])
        per_unit = len(self.arms) * seeds * len(self.architectures)
        previous = signal.signal(signal.SIGTERM, raise_interrupt) if main_thread() else None
        taken: dict[Path, dict] = {}  # units claimed by other processes: their holders
        try:
            with tqdm(total=len(replicates) * per_unit, desc="classifier runs", unit="run",
                      disable=not self.progress) as bar:
                for rep in replicates:
                    claim = Claim(rep.folder)
                    holder = claim.acquire()
                    if holder is not None:
                        taken[rep.folder] = holder
                        bar.update(per_unit)
                        continue
                    try:
                        self._run_unit(rep, seeds, bar)
                    finally:
                        claim.release()
        except (KeyboardInterrupt, TrainingInterrupted):
            raise TrainingInterrupted(f"interrupted; every finished stage is kept in {self.out}: run the same "
                                      "command again to continue where it stopped") from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        self.elsewhere = [describe(rep.folder, taken[rep.folder]) for rep in replicates
                          if rep.folder in taken and not rep.finished()]
        return None if self.elsewhere else write_report(self, replicates)

    def _run_unit(self, rep: Replicate, seeds: int, bar) -> None:
        rep.prepare()
        for k in range(seeds):
            for arm in self.arms:
                for arch in self.architectures:
                    rep.arm_result(arm, k, arch)
                    bar.update(1)
        if self.config["quality"]:
            for source in rep.sources:
                rep.quality(source)
