"""What differs between an experiment with one class per image and one with several labels per
image, in one place: the task graph (run/plan.py), the stores and executors, and `Experiment` are
written once and ask the experiment's label kind (`label_kind(spec)`) for what differs.

- `SingleLabel`: a real subset per class (unit_data.py), the headroom stage, one generator per class
  or one class-conditional model (and a pool pretraining they start from), samples per class, the
  memorisation gate, a teacher, acceptance per source, the arms of design/arms.py (per architecture),
  and the quality stage.
- `MultiLabel`: a subset with at least `per_class` positives of every label (multilabel_stages.py),
  one label-set generator per family and its sources, samples per source, acceptance per source,
  design/arms.py's arms over those sources (baseline, baseline-strong, +dup matched per source,
  +<source>) and the one classifier stage with its label-set inputs: no headroom, teacher, gate or
  quality stage.
A task's key is a function of its stage, unit, params and upstream tasks (run/store.py): each kind
keeps the params and labels its folders were keyed with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ...data.imagesets import slug
from ...data.subsets import MANIFEST_NAME
from ...data.unlabeled import folder_files
from ...errors import GenaugError
from ...generators.registry import get_family
from ...generators.training import TRAIN_DEFAULTS
from ...io import has_weights, read_json
from ...runs import check_pool
from ..design.arms import Duplicates
from ..design.spec import ExperimentSpec, Unit
from . import accepted, generation, multilabel_stages as ml
from .classifier_run import classifier_run, result_path
from .headroom import available_per_class, check_extra_real, default_headroom
from .quality import assess, quality_path
from .teacher import teacher_trained, train_teacher
from .unit_data import UnitData, real_subset


@dataclass(frozen=True)
class ClassifierRun:
    """One classifier task of an arm: its params and the tail of its label."""

    params: tuple
    label: str


class SingleLabel:
    name = "single-label"

    # -- the settings, before anything is written -------------------------------------------------
    def settle(self, config: dict, source, runs_dir) -> list[int]:
        """Refuse what needs several labels per image; the classes' labels in the source."""
        ml.check_single_label(config)
        return source.resolve_classes(str(config["classes"]))

    def validation_per_class(self, config: dict, source, data: str) -> int:
        """Validation images per class drawn from the source's own val split (0: carve from the subset).

        `validation: auto` uses the source's val split when it has one (MedMNIST `val_*`,
        `ROOT/val/<class>`, a label file's `val` rows), drawing `round(per_class * val_fraction)` of
        each class there and `per_class` minus that from train, so the labelled budget per class
        stays `per_class`. `carve` always carves a stratified, group-disjoint part off the subset.
        """
        mode = config["validation"]
        if config["cv"]:
            if mode == "source":
                raise GenaugError("cv replaces the validation part: drop validation: source")
            return 0  # cross-validation folds of the labelled subset replace the validation carve
        has_val = "val" in source.splits
        if mode == "source" and not has_val:
            raise GenaugError(f"validation: source, but {data} has no val split")
        if mode == "carve" or not has_val:
            return 0
        n_val = max(1, round(config["per_class"] * config["val_fraction"]))
        if n_val >= config["per_class"]:
            raise GenaugError(f"too few images for the train/validation split: per_class {config['per_class']} "
                              f"with val_fraction {config['val_fraction']} leaves no training images")
        return n_val

    def default_headroom(self, source, source_labels: list[int], config: dict) -> list:
        return default_headroom(source, source_labels, config)

    def preflight(self, config: dict, source, source_labels: list[int], runs_dir, image_size: int, data: str) -> None:
        """Refuse, before anything is written, extra real images, unlabelled images and --runs that the
        source or the folder cannot give."""
        c = config
        check_extra_real(source, source_labels, c)
        counts = [n for n in c["headroom"] if n != "all"]
        left = available_per_class(source, source_labels, int(c["per_class"]))
        if counts and max(counts) - int(c["per_class"]) > left:
            raise GenaugError(f"headroom {max(counts)} per class: the source's train split holds {max(left, 0)} "
                              f"labelled images of its smallest class beyond the {c['per_class']} of the subset; "
                              "choose smaller sizes, or all")
        if runs_dir is not None:
            generation.check_runs(runs_dir, int(c["replicates"]), c["cv"])
        if c["unlabeled_data"]:
            folder_files(c["unlabeled_data"])
        for family in c["generators"]:
            if get_family(family).uses_pool:
                settings = generation.generator_config(c, family, image_size)
                model = {**get_family(family).default_config, **(settings.get("model") or {})}
                size = c["unlabeled"] if isinstance(c["unlabeled"], int) else (
                    len(folder_files(c["unlabeled_data"])) if c["unlabeled_data"] else None)
                batch = int(settings.get("batch_size") or TRAIN_DEFAULTS["batch_size"])
                check_pool(family, torch.empty(size or batch, 0), batch, model)
        if isinstance(c["unlabeled"], int):
            train = source.split("train")
            in_scope = sum(1 for y in train.labels if int(y) in source_labels)
            left = in_scope - int(c["per_class"]) * len(source_labels)
            if c["unlabeled"] > left:
                raise GenaugError(f"--unlabeled {c['unlabeled']}: the train split of {data} has {in_scope} images "
                                  f"of these classes; after {c['per_class']} labelled per class at most {max(left, 0)} "
                                  "are left (fewer when patients are kept apart)")

    # -- the graph ------------------------------------------------------------------------------
    def headroom_arms(self, spec: ExperimentSpec) -> list:
        """The arms trained before any generator: the reference, `headroom@N` and `+real@N`."""
        return [a for a in spec.arms if a.kind in ("headroom", "positive") or a.name == spec.config.get("reference")]

    def later_arms(self, spec: ExperimentSpec) -> list:
        first = self.headroom_arms(spec)
        return [a for a in spec.arms if a not in first]

    def arm_reads(self, arm, decided: dict[str, str]) -> list[str]:
        """The acceptance tasks an arm's classifier reads: its source's, or every source's for +dup."""
        return [decided[arm.source]] if arm.source else list(decided.values()) if isinstance(arm, Duplicates) else []

    def classifier_runs(self, spec: ExperimentSpec, arm, k: int) -> list[ClassifierRun]:
        return [ClassifierRun((arm.name, k, arch), f"{arm.name} {arch} seed {k}") for arch in spec.architectures]

    def generator_sources(self, spec: ExperimentSpec) -> dict[str, dict]:
        """{source: {"family", "conditional"}} for every source a generator draws (external sets: none)."""
        return {s: {"family": v["family"], "conditional": v["guidance"] is not None}
                for s, v in spec.source_specs.items() if "family" in v}

    def all_sources(self, spec: ExperimentSpec) -> list[str]:
        return list(spec.source_specs)

    def sample_groups(self, spec: ExperimentSpec) -> list[tuple[int | None, str]]:
        """Per source, the samples tasks: one per class (its label and name)."""
        return list(enumerate(spec.classes))

    def wants_teacher(self, spec: ExperimentSpec) -> bool:
        """The teacher labels the pool for ddpm-pseudo and scores label fidelity in the quality stage."""
        return "ddpm-pseudo" in spec.config["generators"] or bool(spec.config["quality"] and spec.sources)

    def wants_gate(self, spec: ExperimentSpec) -> bool:
        return accepted.gate_wanted(spec)

    def wants_quality(self, spec: ExperimentSpec) -> bool:
        return bool(spec.config["quality"])

    # -- the stages -----------------------------------------------------------------------------
    def real_subset(self, spec: ExperimentSpec, unit: Unit) -> UnitData:
        return real_subset(spec, unit)

    def compute(self, spec: ExperimentSpec, stage: str, unit: Unit, p: tuple, data: UnitData | None, label: str):
        if stage == "pretrain":
            return str(generation.shared_pretrain(spec, *p))
        if stage == "generator":
            return str(generation.generator_run(spec, unit, data, *p))
        if stage == "samples":
            return generation.draw_samples(spec, unit, data, *p)
        if stage == "gate":
            return accepted.gate_check(spec, unit, data)
        if stage == "teacher":
            return train_teacher(spec, unit, data)
        if stage == "acceptance":
            return accepted.decide(spec, unit, data, p[0])
        if stage == "classifier":
            return classifier_run(spec, unit, data, _arm(spec, p[0]), p[1], p[2], label=label)
        return assess(spec, unit, data, p[0])

    def weights_folder(self, spec: ExperimentSpec, stage: str, unit: Unit, p: tuple):
        """Where a stage that others read keeps its weights (None for a stage without any)."""
        if stage == "generator":
            family, label = p
            folder = spec.unit_folder(unit) / "generators" / family
            return (folder if label is None else folder / label if label == generation.PRETRAINED
                    else folder / slug(spec.classes[label]))
        if stage == "pretrain":
            return generation.shared_pretrained_folder(spec, p[0])
        return None

    def output_exists(self, spec: ExperimentSpec, stage: str, unit: Unit, p: tuple) -> bool:
        if stage == "generator":
            return spec.runs_dir is not None or has_weights(self.weights_folder(spec, stage, unit, p) / "model")
        if stage == "pretrain":
            return has_weights(self.weights_folder(spec, stage, unit, p) / "model")
        if stage == "samples":
            return samples_drawn(spec, generation.samples_folder(spec, unit, p[0], p[1]))
        if stage == "gate":
            return accepted.gate_path(spec, unit).exists()
        if stage == "teacher":
            return teacher_trained(spec, unit)
        if stage == "acceptance":
            return accepted.decisions_path(spec, unit, p[0]).exists()
        if stage == "classifier":
            return result_path(spec, unit, _arm(spec, p[0]), p[1], p[2]).exists()
        return quality_path(spec, unit, p[0]).exists()


class MultiLabel:
    name = "multi-label"

    def settle(self, config: dict, source, runs_dir) -> list[int]:
        """Refuse, in one line, what a multi-label experiment does not do; every label of the file
        (`label_columns` choose them)."""
        ml.check_multilabel(config, source, runs_dir)
        return list(range(len(source.classes)))

    def validation_per_class(self, config: dict, source, data: str) -> int:
        if config["validation"] == "source":
            raise GenaugError("with several labels per image the validation part is carved from the labelled "
                              "subset (stratified, patient-disjoint): drop validation: source")
        return 0

    def default_headroom(self, source, source_labels: list[int], config: dict) -> list:
        return []

    def preflight(self, config: dict, source, source_labels: list[int], runs_dir, image_size: int, data: str) -> None:
        """Nothing beyond `settle`: it refused what a multi-label run cannot use."""

    def headroom_arms(self, spec: ExperimentSpec) -> list:
        return []  # no headroom stage: its learning curve needs one class per image

    def later_arms(self, spec: ExperimentSpec) -> list:
        return ml.arms(spec)

    def arm_reads(self, arm, decided: dict[str, str]) -> list[str]:
        return SINGLE_LABEL.arm_reads(arm, decided)

    def classifier_runs(self, spec: ExperimentSpec, arm, k: int) -> list[ClassifierRun]:
        return [ClassifierRun((arm.name, k), f"{arm.name} seed {k}")]  # one architecture, keyed without it

    def generator_sources(self, spec: ExperimentSpec) -> dict[str, dict]:
        return {s: {"family": v["family"], "conditional": True} for s, v in ml.sources(spec).items()}

    def all_sources(self, spec: ExperimentSpec) -> list[str]:
        return list(ml.sources(spec))

    def sample_groups(self, spec: ExperimentSpec) -> list[tuple[int | None, str]]:
        return [(None, "")]  # one samples task per source: each image carries its own label set

    def wants_teacher(self, spec: ExperimentSpec) -> bool:
        return False

    def wants_gate(self, spec: ExperimentSpec) -> bool:
        return False  # the memorisation gate's check runs inside acceptance (one gallery of every image)

    def wants_quality(self, spec: ExperimentSpec) -> bool:
        return False

    def real_subset(self, spec: ExperimentSpec, unit: Unit) -> UnitData:
        return ml.real_subset(spec, unit)

    def compute(self, spec: ExperimentSpec, stage: str, unit: Unit, p: tuple, data: UnitData | None, label: str):
        if stage == "generator":
            return str(ml.generator_run(spec, unit, data, p[0]))
        if stage == "samples":
            return ml.draw_samples(spec, unit, data, p[0])
        if stage == "acceptance":
            return ml.decide(spec, unit, data, p[0])
        return classifier_run(spec, unit, data, _arm_of(ml.arms(spec), p[0]), p[1], spec.architectures[0], label=label,
                              inputs_type=ml.LabelSetInputs)

    def weights_folder(self, spec: ExperimentSpec, stage: str, unit: Unit, p: tuple):
        return spec.unit_folder(unit) / "generators" / p[0] if stage == "generator" else None

    def output_exists(self, spec: ExperimentSpec, stage: str, unit: Unit, p: tuple) -> bool:
        if stage == "generator":
            return has_weights(self.weights_folder(spec, stage, unit, p) / "model")
        if stage == "samples":
            return samples_drawn(spec, ml.samples_folder(spec, unit, p[0]))
        if stage == "acceptance":
            return ml.decisions_path(spec, unit, p[0]).exists()
        return result_path(spec, unit, _arm_of(ml.arms(spec), p[0]), p[1], spec.architectures[0]).exists()


SINGLE_LABEL, MULTI_LABEL = SingleLabel(), MultiLabel()


def kind_for(multilabel: bool) -> SingleLabel | MultiLabel:
    """The label kind of a source: several labels per image (a label file's 0/1 columns) or one class."""
    return MULTI_LABEL if multilabel else SINGLE_LABEL


def label_kind(spec: ExperimentSpec) -> SingleLabel | MultiLabel:
    return kind_for(spec.multilabel)


def subset_recorded(spec: ExperimentSpec, unit: Unit) -> bool:
    return (spec.unit_folder(unit) / MANIFEST_NAME).exists()


def samples_drawn(spec: ExperimentSpec, folder: Any) -> bool:
    """Whether a samples folder holds every image the experiment draws per source (and class)."""
    path = folder / "samples.json"
    return path.exists() and len(read_json(path).get("images", [])) >= max(spec.config["synthetic_per_class"])


def _arm(spec: ExperimentSpec, name: str):
    return _arm_of(spec.arms, name)


def _arm_of(arms: list, name: str):
    return next(a for a in arms if a.name == name)
