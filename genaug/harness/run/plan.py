"""An experiment as a graph of stage tasks over one store, and the one function that runs a task.

Per unit: `subset` (the real data), `generator` (per class, or one for a class-conditional family),
`samples` (per source and class), `gate` (the memorisation gate's check), `acceptance` (per source),
`classifier` (arm x seed x architecture) and `quality` (per source); with several labels per image
the label kind (stages/label_kinds.py) leaves out what it does not have and draws samples per
source. The graph is written once for both kinds. Each task names the tasks it
reads; `plan` lists them in the order one process runs them. `execute` is the same on every
executor: done (its record is in the store) means nothing to do; else it takes the stage's lease,
computes, writes its outputs and then its record.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

from ..design.spec import SHARED, ExperimentSpec, Unit
from ..stages import generation
from ..stages.faults import inject
from ..stages.label_kinds import label_kind, subset_recorded
from ..stages.unit_data import UnitData
from .store import Store, stage_key

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
    `headroom_only`, the subsets and the headroom stage alone. The label kind (stages/label_kinds.py)
    says which stages and arms an experiment has."""
    kind = label_kind(spec)
    tasks: dict[str, Task] = {}

    def add(stage: str, unit: Unit, params: tuple, upstream: list[str], label: str) -> str:
        if label not in tasks:
            key = stage_key(stage, unit.name, list(params), spec.stage_hash(stage), [tasks[u].key for u in upstream])
            tasks[label] = Task(stage, unit, params, tuple(upstream), label, key)
        return label

    def classifiers(unit: Unit, subset: str, arms: list, decided: dict) -> None:
        for k in range(int(spec.config["seeds"])):
            for arm in arms:
                for run in kind.classifier_runs(spec, arm, k):
                    add("classifier", unit, run.params, [subset, *kind.arm_reads(arm, decided)],
                        f"classifier {unit.name} {run.label}")

    subsets = [add("subset", unit, (), [], f"subset {unit.name}") for unit in spec.units()]
    shared = {}  # family -> the experiment's one pool pretraining it starts from (generation.shared_pretrain)
    if spec.config.get("pretrain") == "shared" and spec.runs_dir is None and not headroom_only:
        for family in spec.config["generators"]:
            if family in generation.STARTS_FROM_PRETRAINED:
                pid = generation.pretrain_id(spec, family)
                shared[family] = add("pretrain", SHARED, (pid, family), subsets, f"pretrain {pid}")
    drawn_by = kind.generator_sources(spec)
    for unit in spec.units():
        u = unit.name
        subset = add("subset", unit, (), [], f"subset {u}")
        classifiers(unit, subset, kind.headroom_arms(spec), {})  # the headroom stage: before any generator
        if headroom_only:
            continue
        teacher = add("teacher", unit, (), [subset], f"teacher {u}") if kind.wants_teacher(spec) else None
        if kind.wants_gate(spec):
            add("gate", unit, (), [subset], f"gate {u}")
        decided = {}
        for source in kind.all_sources(spec):
            drawn = []
            if source in drawn_by:
                family, conditional = drawn_by[source]["family"], drawn_by[source]["conditional"]
                before = [subset, teacher] if family == "ddpm-pseudo" else [subset]
                if family in shared:  # the experiment's pool pretraining
                    before.append(shared[family])
                elif family in generation.STARTS_FROM_PRETRAINED:  # the unit's own (pretrain: per-replicate)
                    before.append(add("generator", unit, (family, generation.PRETRAINED), [subset],
                                      f"generator {u} {family} {generation.PRETRAINED}"))
                for label, name in kind.sample_groups(spec):
                    target = None if conditional else label
                    trained = add("generator", unit, (family, target), before,
                                  f"generator {u} {family}" + ("" if conditional else f" {name}"))
                    params, tail = ((source,), "") if label is None else ((source, label), f" {name}")
                    drawn.append(add("samples", unit, params, [subset, trained], f"samples {u} {source}{tail}"))
            decided[source] = add("acceptance", unit, (source,), [subset, *drawn], f"acceptance {u} {source}")
        classifiers(unit, subset, kind.later_arms(spec), decided)
        if kind.wants_quality(spec):
            for source in spec.sources:
                add("quality", unit, (source,), [subset, teacher, decided[source]], f"quality {u} {source}")
    return list(tasks.values())


def output_exists(spec: ExperimentSpec, task: Task) -> bool:
    """Whether the task's outputs are on disk (a folder from before the store is adopted by this)."""
    if task.stage == "subset":
        return subset_recorded(spec, task.unit)
    return label_kind(spec).output_exists(spec, task.stage, task.unit, task.params)


def unit_subset(spec: ExperimentSpec, unit: Unit) -> UnitData:
    """A unit's real subset: drawn and recorded on first use, reloaded from its manifest afterwards."""
    return label_kind(spec).real_subset(spec, unit)


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


CARRIED_MODELS = ("pretrain", "generator")  # an hour of training in a few MB; a teacher is minutes in 45 MB


def weights_still_read(spec: ExperimentSpec, tasks: list[Task]) -> list:
    """The weight folders of done generator trainings (the pool pretraining among them) that a task
    still to run reads: what a folder carried without its other weights (`genaug pack
    --without-weights`) keeps, so the next host does not retrain them (a pool pretraining read by
    every replicate's fine-tunes above all). A teacher is left out: a ResNet-18 is 45 MB and minutes
    to train again."""
    wanted, kind = needed(spec, tasks), label_kind(spec)
    read_by_wanted = {u for t in tasks if t.label in wanted for u in t.upstream}
    folders = []
    for t in tasks:  # read by a task to run but not to run itself: done (`needed` wants what it reads otherwise)
        folder = kind.weights_folder(spec, t.stage, t.unit, t.params) if t.stage in CARRIED_MODELS else None
        if folder is not None and t.label in read_by_wanted and t.label not in wanted:
            folders.append(folder)
    return folders


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
    if task.stage == "subset":
        return unit_subset(spec, task.unit)
    return label_kind(spec).compute(spec, task.stage, task.unit, task.params, data, task.label)


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
