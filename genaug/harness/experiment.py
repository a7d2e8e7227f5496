"""`augment-and-train`: does adding accepted synthetic images improve the classifier?

The driver: it resolves the settings into a frozen spec (spec.py), checks them against the folder,
plans the stage tasks (run/plan.py), runs them in this process or on Ray (run/executor.py,
run/ray_executor.py) and writes the report from what the stages stored (report/writer.py). An experiment
folder holds its settings (`config.yaml`, `history.json`), one folder per unit (`rep-<r>/`, or
`rep-<r>/fold-<f>/` with cross-validation) with every stage's outputs, the store's records
(`stages/`), and the report. Replicates repeat everything random; inside each, classifier seeds are
shared by every arm; the unit of inference is the replicate. A finished stage is never computed
again, so an interrupted experiment picks up where it stopped, and several drivers (or hosts
sharing the folder) may run it at once; replicates and seeds may be added later (recorded in
`history.json`, and marked post hoc in the report when a report already existed).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import yaml

from ..config import save_config
from ..data import open_source
from ..data.images import check_image_size
from ..data.sources import CIFAR10_CLASSES
from ..errors import GenaugError
from ..generators.training import main_thread, raise_interrupt
from ..io import read_json, write_json, write_text
from .design.config import (ARM_ADDING_KEYS, DEFAULTS, DESIGN_KEYS, LEGACY, OUTPUT_KEYS, RECIPE_KEYS, RUN_KEYS, helper_recipe,
                     legacy_helper_recipe, resolve_reference, step_budget)
from .design.config import experiment_config  # noqa: F401 - part of this module's API
from .run.executor import InProcess, Outcome, check_resources, check_retries, new_owner, run_tasks
from .stages.label_kinds import MULTI_LABEL, SINGLE_LABEL, kind_for
from .stages import generation
from .design.spec import ExperimentSpec, Unit, copies_at, remember_source
from .run.plan import adopt, plan, unit_subset

FLIP_SAFE_KINDS = {"cifar10", "fashion-mnist"}  # natural images; medical and folder sources: flips off


def archive_classifier_runs(out: Path, units: list[str], stamp: str) -> None:
    """Before a changed recipe re-runs the arms: each unit's classifier results move to
    `classifiers-before-<stamp>/`, so no measured result is overwritten."""
    for unit in units:
        folder = out / unit / "classifiers"
        if folder.is_dir():
            folder.rename(folder.with_name(f"classifiers-before-{stamp}"))


def _with_default(key: str, config: dict, missing: dict | None = None):
    """The value of `key` in `config`, a missing one read as `missing[key]` (the behaviour an older
    folder had) or the default, and a section merged over its defaults."""
    default = DEFAULTS.get(key)
    value = config.get(key, (missing or {}).get(key, default))
    return {**default, **value} if isinstance(default, dict) and isinstance(value, dict) else value


class Experiment:
    """The driver of one experiment folder: its settings, checked against the folder, and the run."""

    def __init__(self, data: str, out: str | Path, config: dict[str, Any], runs_dir: str | None = None,
                 data_root: str | None = None, device: str = "auto", progress: bool = True):
        self.data, self.out, self.config = data, Path(out), config
        self.runs_dir = Path(runs_dir) if runs_dir else None
        self.data_root, self.device, self.progress = data_root, device, progress
        self.source = open_source(data, data_root, group_by=config["group_by"], test_fraction=config["test_fraction"],
                                  given_split=config["given_split"], label_columns=config["label_columns"],
                                  split_folders=config["split_folders"], copies_at=copies_at(config))
        remember_source(self.source, data, data_root, config)
        self.multilabel = bool(self.source.multilabel)
        self.kind = kind_for(self.multilabel)  # what differs with several labels per image (label_kinds.py)
        self.source_labels = self.kind.settle(config, self.source, runs_dir)
        if len(self.source_labels) < 2:
            raise GenaugError("augment-and-train needs at least two classes")
        self.classes = [self.source.classes[i] for i in self.source_labels]
        self.labels = list(range(len(self.classes)))  # classifier labels: positions in self.classes
        self.image_size = check_image_size(config["image_size"] or self.source.default_size())
        if config["hflip"] is None:
            config["hflip"] = self.source.kind in FLIP_SAFE_KINDS or self.source.classes == CIFAR10_CLASSES
        self._adopt_legacy()
        check_resources(config["resources"])
        check_retries(config["retries"])
        self.n_val = self._validation_per_class()
        self.spec = ExperimentSpec(data=data, out=str(self.out), config_json=json.dumps(config, sort_keys=True,
                                                                                        default=str),
                                   classes=tuple(self.classes), source_labels=tuple(int(i) for i in self.source_labels),
                                   image_size=int(self.image_size), n_val=int(self.n_val), data_root=data_root,
                                   runs_dir=str(self.runs_dir) if self.runs_dir else None, device=device,
                                   multilabel=self.multilabel)
        self.outcome: Outcome | None = None  # after run(): what each task did
        self.recipe_changed: list[str] = []  # the arms' recipe settings this run changed in an existing folder

    # -- settings and history -----------------------------------------------------------------
    def saved_config(self) -> dict[str, Any]:
        return {**self.config, "data": self.data, "image_size": self.image_size}

    def _adopt_legacy(self) -> None:
        """A folder started before a setting existed keeps the behaviour it ran with (config.LEGACY),
        unless this run asks for another value of it; then `auto` settings resolve (the step budget by
        image size, the helpers' recipe, the headroom sizes) and are recorded as numbers."""
        path = self.out / "config.yaml"
        c = self.config
        if path.exists():
            old = yaml.safe_load(path.read_text()) or {}
            current = c["recipe_defaults"] == "current"
            for key, value in LEGACY.items():
                # absent, or recorded at its legacy value (by a run that resolved it, as this one will): a
                # second driver or a resumed run with the same command must find the same settings
                legacy = key not in old or old[key] == value
                if legacy and c[key] == DEFAULTS[key] and not (current and key in RECIPE_KEYS):
                    c[key] = value
            if c["helper_recipe"] == "auto":  # as recorded: the helpers keep their recipe when the arms' changes
                c["helper_recipe"] = old.get("helper_recipe") or legacy_helper_recipe(old)
            if c["steps"] == "auto" and isinstance(old.get("steps"), int) and not current:
                c["steps"] = old["steps"]  # as recorded: a later genaug's default budget does not re-run its classifiers
        resolve_reference(c)
        if c["steps"] == "auto":
            c["steps"] = step_budget(self.image_size)
        if c["helper_recipe"] == "auto":
            c["helper_recipe"] = helper_recipe(c["steps"], c["stem"])
        if c["headroom"] == "auto":
            c["headroom"] = self.kind.default_headroom(self.source, self.source_labels, c)

    def check_settings(self) -> None:
        """A re-run resumes only the same experiment; replicates, seeds, the arms' recipe and arms that change no
        other task (`share_dose`) may change (recorded)."""
        path = self.out / "config.yaml"
        new, old = self.saved_config(), {}
        if path.exists():
            old = yaml.safe_load(path.read_text())
            # a setting added by a later genaug version is absent from older folders: read it as its default
            # (inside a section too, e.g. an acceptance setting added later)
            if "helper_recipe" not in old:  # a folder from before 0.2: its helpers' recipe was its arms'
                old["helper_recipe"] = legacy_helper_recipe(old)
            differ = sorted(k for k in set(old) | set(new)
                            if k not in DESIGN_KEYS + OUTPUT_KEYS + RUN_KEYS + ARM_ADDING_KEYS and _with_default(k, old, LEGACY) != _with_default(k, new))
            changed = [k for k in differ if k not in RECIPE_KEYS]
            if changed:
                raise GenaugError(f"{self.out} holds an experiment with other settings ({', '.join(changed)}); "
                                  "choose another --out (only replicates, seeds and the arms' classifier recipe may "
                                  "change on a re-run)")
            self.recipe_changed = differ
        history = read_json(self.out / "history.json") if (self.out / "history.json").exists() else []
        design = {k: int(new[k]) for k in DESIGN_KEYS}
        stamp = {**design, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if not history or {k: history[-1][k] for k in DESIGN_KEYS} != design:
            # units added once a report was written were chosen after seeing results: post hoc
            history.append({**stamp, "after_report": bool(history) and (self.out / "report.json").exists()})
        added = {k: new.get(k) for k in ARM_ADDING_KEYS if old.get(k) != new.get(k)}
        if path.exists() and added:  # arms added to a folder that ran: after a report, chosen on its results
            history.append({**stamp, "after_report": (self.out / "report.json").exists(), "arms_added": added})
        if self.recipe_changed:
            history.append({**stamp, "after_report": False,
                            "recipe_changed": {k: [old.get(k), new.get(k)] for k in self.recipe_changed}})
            archive_classifier_runs(self.out, [u.name for u in self.spec.units()], time.strftime("%Y%m%dT%H%M%S"))
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(new, path)
        write_json(self.out / "history.json", history)
        self.history = history

    def _validation_per_class(self) -> int:
        """Validation images per class from the source's own val split (0: carved from the subset)."""
        mode = self.config["validation"]
        if mode not in ("auto", "carve", "source"):
            raise GenaugError(f"validation must be auto, carve or source (got {mode!r})")
        return self.kind.validation_per_class(self.config, self.source, self.data)

    # -- the run ------------------------------------------------------------------------------
    def preflight(self) -> None:
        """Refuse, before anything is written, what the source or the folder cannot give (extra real
        or unlabelled images, --runs that cannot serve every replicate, a generator config whose
        diffusion loss is not the experiment's)."""
        for family in self.config["generators"]:
            generation.generator_config(self.config, family, self.image_size)
        self.kind.preflight(self.config, self.source, self.source_labels, self.runs_dir, self.image_size, self.data)

    def unit_data(self, replicate: int, fold: int | None = None):
        """The real subset of one unit (drawn and recorded on first use, reloaded afterwards)."""
        return unit_subset(self.spec, Unit(replicate, fold))

    def run(self, ray: str | None = None, headroom_only: bool = False) -> dict:
        """Every stage not done yet, in this process or (`ray`: "local", "auto" or an address) as Ray
        tasks, then the report. A stage that fails is named, the others finish, and the run then
        stops with a one-line error naming what failed; every finished stage is kept."""
        from .report.multilabel_report import write_multilabel_report
        from .report.writer import write_headroom, write_report

        reports = {SINGLE_LABEL.name: write_report, MULTI_LABEL.name: write_multilabel_report}

        self.preflight()
        self.check_settings()
        write_text(self.out / "spec.json", self.spec.to_json() + "\n")
        tasks = plan(self.spec, headroom_only=headroom_only)
        adopt(self.spec, tasks, keep_classifiers=not self.recipe_changed)
        previous, backend = None, None
        try:
            owner = new_owner()
            if ray is None:
                backend = InProcess(self.spec, owner)
            else:
                from .run.ray_executor import RayBackend

                backend = RayBackend(self.spec, owner, ray)
            # after ray.init, whose own SIGTERM handler would end the driver without cancelling its tasks
            previous = signal.signal(signal.SIGTERM, raise_interrupt) if main_thread() else None
            self.outcome = run_tasks(self.spec, tasks, backend, progress=self.progress)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            if backend is not None and hasattr(backend, "close"):
                backend.close()
        if self.outcome.failed:
            n, skipped = len(self.outcome.failed), len(self.outcome.skipped)
            raise GenaugError(f"{n} stage(s) failed: " + "; ".join(f"{k} ({v})" for k, v in self.outcome.failed.items())
                              + (f"; {skipped} stage(s) that read them did not run" if skipped else "")
                              + f"; every other stage finished and is kept in {self.out}: fix it and run again")
        if headroom_only:
            return write_headroom(self.spec, self.spec.units())
        return reports[self.kind.name](self.spec, self.spec.units())
