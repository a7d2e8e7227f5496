"""An experiment as a graph of stage tasks over one store, and the one function that runs a task.

Per unit: `subset` (the real data), `generator` (per class, or one for a class-conditional family),
`samples` (per source and class), `gate` (the memorisation gate's check), `acceptance` (per source),
`classifier` (arm x seed x architecture) and `quality` (per source). Each task names the tasks it
reads; `plan` lists them in the order one process runs them. `execute` is the same on every
executor: done (its record is in the store) means nothing to do; else it takes the stage's lease,
computes, writes its outputs and then its record.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

from ...data.imagesets import slug
from ...data.subsets import MANIFEST_NAME
from ...io import has_weights, read_json
from ..stages import accepted, generation, multilabel_stages as ml
from ..design.arms import Duplicates
from ..stages.classifier_run import classifier_run, result_path
from ..stages.faults import inject
from ..stages.quality import assess, quality_path
from ..design.spec import SHARED, ExperimentSpec, Unit
from .store import Store, stage_key
from ..stages.teacher import teacher_trained, train_teacher
from ..stages.unit_data import UnitData, real_subset

STAGES = {  # stage type: what it does
    "subset": "real subset", "teacher": "teacher (labels the pool; label fidelity)",
    "pretrain": "pool pretraining (once per experiment)", "generator": "generator training", "samples": "sampling",
    "gate": "memorisation gate check", "acceptance": "acceptance", "classifier": "classifier runs",
    "quality": "quality (FID, KID, P/R, CAS, per-class FID)"}
CACHED, COMPUTED, BUSY = "cached", "computed", "busy"


@dataclass(frozen=True)
class Task:
    stage: str
    unit: Unit
    params: tuple
    upstream: tuple[str, ...]  # labels of the tasks it reads
    label: str  # e.g. "classifier rep-1 +dup resnet18 seed 0": unique in the experiment
    key: str


def plan(spec: ExperimentSpec, headroom_only: bool = False) -> list[Task]:
    """The experiment's tasks in the order one process runs them: per unit its subset, the headroom
    stage (the reference, `headroom@N` and `+real@N` runs), then generators and the rest; with
    `headroom_only`, the subsets and the headroom stage alone."""
    tasks: dict[str, Task] = {}

    def add(stage: str, unit: Unit, params: tuple, upstream: list[str], label: str) -> str:
        if label not in tasks:
            key = stage_key(stage, unit.name, list(params), spec.stage_hash(stage), [tasks[u].key for u in upstream])
            tasks[label] = Task(stage, unit, params, tuple(upstream), label, key)
        return label

    if spec.multilabel:
        return _multilabel_plan(spec, add, tasks)

    def classifiers(unit: Unit, subset: str, arms: list, decided: dict) -> None:
        for k in range(int(spec.config["seeds"])):
            for arm in arms:
                needs = ([decided[arm.source]] if arm.source else
                         list(decided.values()) if isinstance(arm, Duplicates) else [])
                for arch in spec.architectures:
                    add("classifier", unit, (arm.name, k, arch), [subset, *needs],
                        f"classifier {u} {arm.name} {arch} seed {k}")

    first = [a for a in spec.arms if a.kind in ("headroom", "positive") or a.name == spec.config.get("reference")]
    subsets = [add("subset", unit, (), [], f"subset {unit.name}") for unit in spec.units()]
    shared = {}  # family -> the experiment's one pool pretraining it starts from (generation.shared_pretrain)
    if spec.config.get("pretrain") == "shared" and spec.runs_dir is None and not headroom_only:
        for family in spec.config["generators"]:
            if family in generation.STARTS_FROM_PRETRAINED:
                pid = generation.pretrain_id(spec, family)
                shared[family] = add("pretrain", SHARED, (pid, family), subsets, f"pretrain {pid}")
    for unit in spec.units():
        u = unit.name
        subset = add("subset", unit, (), [], f"subset {u}")
        classifiers(unit, subset, first, {})  # the headroom stage: before any generator
        if headroom_only:
            continue
        if teacher_wanted(spec):
            teacher = add("teacher", unit, (), [subset], f"teacher {u}")
        if accepted.gate_wanted(spec):
            add("gate", unit, (), [subset], f"gate {u}")
        decided = {}
        for source, sspec in spec.source_specs.items():
            drawn = []
            if "family" in sspec:
                family, conditional = sspec["family"], sspec["guidance"] is not None
                before = [subset, teacher] if family == "ddpm-pseudo" else [subset]
                if family in shared:  # the experiment's pool pretraining
                    before.append(shared[family])
                elif family in generation.STARTS_FROM_PRETRAINED:  # the unit's own (pretrain: per-replicate)
                    before.append(add("generator", unit, (family, generation.PRETRAINED), [subset],
                                      f"generator {u} {family} {generation.PRETRAINED}"))
                for label, name in enumerate(spec.classes):
                    target = None if conditional else label
                    trained = add("generator", unit, (family, target), before,
                                  f"generator {u} {family}" + ("" if conditional else f" {name}"))
                    drawn.append(add("samples", unit, (source, label), [subset, trained], f"samples {u} {source} {name}"))
            decided[source] = add("acceptance", unit, (source,), [subset, *drawn], f"acceptance {u} {source}")
        classifiers(unit, subset, [a for a in spec.arms if a not in first], decided)
        if spec.config["quality"]:
            for source in spec.sources:
                add("quality", unit, (source,), [subset, teacher, decided[source]], f"quality {u} {source}")
    return list(tasks.values())


def _multilabel_plan(spec: ExperimentSpec, add, tasks: dict) -> list[Task]:
    """Several labels per image (multilabel_stages.py): one label-set generator per family and unit,
    its sources (training distribution, targeted), their acceptance, and the classifier runs."""
    sources = ml.sources(spec)
    for unit in spec.units():
        u = unit.name
        subset = add("subset", unit, (), [], f"subset {u}")
        decided = {}
        for source, s in sources.items():
            trained = add("generator", unit, (s["family"], None), [subset], f"generator {u} {s['family']}")
            drawn = add("samples", unit, (source,), [subset, trained], f"samples {u} {source}")
            decided[source] = add("acceptance", unit, (source,), [subset, drawn], f"acceptance {u} {source}")
        for k in range(int(spec.config["seeds"])):
            for arm in ml.arm_names(spec):
                needs = ([decided[arm[1:]]] if arm[1:] in decided else
                         list(decided.values()) if arm == "+dup" else [])
                add("classifier", unit, (arm, k), [subset, *needs], f"classifier {u} {arm} seed {k}")
    return list(tasks.values())


def teacher_wanted(spec: ExperimentSpec) -> bool:
    """The teacher labels the pool for ddpm-pseudo and scores label fidelity in the quality stage."""
    return "ddpm-pseudo" in spec.config["generators"] or bool(spec.config["quality"] and spec.sources)


def output_exists(spec: ExperimentSpec, task: Task) -> bool:
    """Whether the task's outputs are on disk (a folder from before the store is adopted by this)."""
    unit, p = task.unit, task.params
    if task.stage == "subset":
        return (spec.unit_folder(unit) / MANIFEST_NAME).exists()
    if spec.multilabel:
        return _multilabel_output_exists(spec, task)
    if task.stage == "generator":
        family, label = p
        folder = spec.unit_folder(unit) / "generators" / family
        folder = (folder if label is None else folder / label if label == generation.PRETRAINED
                  else folder / slug(spec.classes[label]))
        return spec.runs_dir is not None or has_weights(folder / "model")
    if task.stage == "pretrain":
        return has_weights(generation.shared_pretrained_folder(spec, p[0]) / "model")
    if task.stage == "samples":
        return _samples_drawn(spec, generation.samples_folder(spec, unit, p[0], p[1]))
    if task.stage == "gate":
        return accepted.gate_path(spec, unit).exists()
    if task.stage == "teacher":
        return teacher_trained(spec, unit)
    if task.stage == "acceptance":
        return accepted.decisions_path(spec, unit, p[0]).exists()
    if task.stage == "classifier":
        return result_path(spec, unit, _arm(spec, p[0]), p[1], p[2]).exists()
    return quality_path(spec, unit, p[0]).exists()


def _samples_drawn(spec: ExperimentSpec, folder) -> bool:
    """Whether a samples folder holds every image the experiment draws per source (and class)."""
    path = folder / "samples.json"
    return path.exists() and len(read_json(path).get("images", [])) >= max(spec.config["synthetic_per_class"])


def unit_subset(spec: ExperimentSpec, unit: Unit) -> UnitData:
    """A unit's real subset: drawn and recorded on first use, reloaded from its manifest afterwards."""
    return (ml.real_subset if spec.multilabel else real_subset)(spec, unit)


def _multilabel_output_exists(spec: ExperimentSpec, task: Task) -> bool:
    unit, p = task.unit, task.params
    if task.stage == "generator":
        return has_weights(spec.unit_folder(unit) / "generators" / p[0] / "model")
    if task.stage == "samples":
        return _samples_drawn(spec, ml.samples_folder(spec, unit, p[0]))
    if task.stage == "acceptance":
        return ml.decisions_path(spec, unit, p[0]).exists()
    return ml.result_path(spec, unit, p[0], p[1]).exists()


def _arm(spec: ExperimentSpec, name: str):
    return next(a for a in spec.arms if a.name == name)


def done(spec: ExperimentSpec, task: Task, store: Store | None = None) -> bool:
    return (store or Store(spec.folder)).has(task.key) and output_exists(spec, task)


def needed(spec: ExperimentSpec, tasks: list[Task]) -> set[str]:
    """The labels of the tasks to run: each one not done that some task still to run reads, or that
    nothing reads (a result). A folder carried to another host without its weights (`genaug pack
    --without-weights`) so retrains a generator only where a sample, acceptance or quality stage of it
    is still ahead, not for the replicates that are complete."""
    store = Store(spec.folder)
    readers: dict[str, list[str]] = {}
    for t in tasks:
        for u in t.upstream:
            readers.setdefault(u, []).append(t.label)
    wanted: set[str] = set()
    for t in reversed(tasks):  # plan order lists a task after what it reads
        if (t.label not in readers or any(r in wanted for r in readers[t.label])) and not done(spec, t, store):
            wanted.add(t.label)
    return wanted


def adopt(spec: ExperimentSpec, tasks: list[Task], keep_classifiers: bool = True) -> int:
    """Record as done what is on disk under keys this plan does not know yet, so a folder resumes
    where it stopped instead of starting again. Returns how many.

    - A folder written before the store (results but no `stages/`): every task with its outputs.
    - A store whose records were keyed otherwise (every stage under one settings hash before 0.2, or
      before a change of the arms' recipe): a task with its outputs and a record of the same label
      is the same computation, since a folder's settings other than the recipe never change
      (`Experiment.check_settings`); classifier runs only while the recipe is unchanged
      (`keep_classifiers`)."""
    store = Store(spec.folder)
    if store.dir.exists():
        by_label = {r.get("label"): r for r in store.records() if r.get("label")}
        moved = 0
        for t in tasks:
            old = by_label.get(t.label)
            if (old is None or old["key"] == t.key or store.has(t.key) or (t.stage == "classifier" and not keep_classifiers)
                    or not output_exists(spec, t)):
                continue
            store.finish(t.key, {**{k: v for k, v in old.items() if k != "key"}, "rekeyed_from": old["key"]})
            moved += 1
        return moved
    found = [t for t in tasks if output_exists(spec, t)]
    for t in found:
        store.finish(t.key, {"stage": t.stage, "label": t.label, "unit": t.unit.name, "adopted": True,
                             "wall_s": None, "upstream": [], "genaug": "before the store"})
    store.dir.mkdir(parents=True, exist_ok=True)
    return len(found)


def compute(spec: ExperimentSpec, task: Task, data: UnitData | None):
    """The stage's work itself: outputs written, nothing recorded."""
    unit, p = task.unit, task.params
    if task.stage == "subset":
        return unit_subset(spec, unit)
    if spec.multilabel:
        return _multilabel_compute(spec, task, data)
    if task.stage == "pretrain":
        return str(generation.shared_pretrain(spec, *p))
    if task.stage == "generator":
        return str(generation.generator_run(spec, unit, data, *p))
    if task.stage == "samples":
        return generation.draw_samples(spec, unit, data, *p)
    if task.stage == "gate":
        return accepted.gate_check(spec, unit, data)
    if task.stage == "teacher":
        return train_teacher(spec, unit, data)
    if task.stage == "acceptance":
        return accepted.decide(spec, unit, data, p[0])
    if task.stage == "classifier":
        return classifier_run(spec, unit, data, _arm(spec, p[0]), p[1], p[2], label=task.label)
    return assess(spec, unit, data, p[0])


def _multilabel_compute(spec: ExperimentSpec, task: Task, data: UnitData | None):
    unit, p = task.unit, task.params
    if task.stage == "generator":
        return str(ml.generator_run(spec, unit, data, p[0]))
    if task.stage == "samples":
        return ml.draw_samples(spec, unit, data, p[0])
    if task.stage == "acceptance":
        return ml.decide(spec, unit, data, p[0])
    return ml.classifier_run(spec, unit, data, p[0], p[1])


def execute(spec: ExperimentSpec, task: Task, data: UnitData | None, keys: dict[str, str], owner: str,
            resources: dict, *, wait: bool = True, executor: str = "in-process"):
    """(CACHED | COMPUTED | BUSY, the subset's UnitData or None). `keys` maps upstream labels to keys
    (recorded, for the critical path); BUSY only with `wait` False, while another driver holds the lease."""
    store = Store(spec.folder)

    def cached():  # done already: a subset's data is reloaded from its manifest for the tasks that read it
        return CACHED, unit_subset(spec, task.unit) if task.stage == "subset" else None

    if done(spec, task, store):
        return cached()
    while (lease := store.acquire(task.key, owner)) is None:
        if not wait:
            return BUSY, None
        time.sleep(1.0)
        if done(spec, task, store):
            return cached()
    try:
        if done(spec, task, store):  # finished by another driver between the look and the lease
            return cached()
        inject("raise", task.label)
        started, unix, clock = time.strftime("%Y-%m-%dT%H:%M:%S"), time.time(), time.perf_counter()
        value = compute(spec, task, data)
        store.finish(task.key, {"stage": task.stage, "label": task.label, "unit": task.unit.name,
                                "wall_s": round(time.perf_counter() - clock, 3), "started": started,
                                "started_unix": round(unix, 3),
                                "upstream": [keys[u] for u in task.upstream], "resources": resources,
                                "executor": executor, "host": socket.gethostname(), "pid": os.getpid(),
                                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")})
        return COMPUTED, value if task.stage == "subset" else None
    finally:
        lease.release()
