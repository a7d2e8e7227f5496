"""Running an experiment's stage tasks: in this process (the default), or as Ray tasks (ray_executor.py).

Both share one scheduler: a task starts once every task it reads is done, in plan order; a task
whose stage raises is named in one line and its dependants are skipped while every other unit goes
on; a task another driver holds is left to it and picked up from the store once done. Ctrl-C
cancels what runs and keeps every finished stage. One progress bar counts the tasks (done, running,
failed, with tqdm's ETA).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from tqdm.auto import tqdm

from ...errors import GenaugError
from ...generators.training import TrainingInterrupted
from ..design.spec import ExperimentSpec, Unit
from .plan import BUSY, COMPUTED, STAGES, Task, execute, needed

RESOURCE_KEYS = ("num_cpus", "num_gpus")
HELD_RETRY_S = 5.0  # a task another driver holds is looked at again after this; the tasks after it go first
# per stage type, as Ray tasks; num_gpus only counts where the cluster has GPUs (else 0): four classifier
# runs share one GPU, a generator trains on one
DEFAULT_RESOURCES = {stage: {"num_cpus": 1, "num_gpus": 0.25} for stage in STAGES}
DEFAULT_RESOURCES["generator"] = {"num_cpus": 1, "num_gpus": 1.0}
DEFAULT_RESOURCES["subset"] = {"num_cpus": 1, "num_gpus": 0.0}


def check_resources(value) -> dict[str, dict[str, float]]:
    """`resources: {classifier: {num_cpus: 1, num_gpus: 0.25}, ...}` merged over the defaults; typos refused."""
    value = value or {}
    if not isinstance(value, dict):
        raise GenaugError(f"resources must map stage types to num_cpus/num_gpus (got {value!r})")
    out = {stage: dict(r) for stage, r in DEFAULT_RESOURCES.items()}
    for stage, given in value.items():
        if stage not in STAGES:
            raise GenaugError(f"resources: unknown stage type {stage!r}; choose from {', '.join(STAGES)}")
        if not isinstance(given, dict) or set(given) - set(RESOURCE_KEYS):
            raise GenaugError(f"resources: {stage} takes {' and '.join(RESOURCE_KEYS)} (got {given!r})")
        for key, number in given.items():
            try:
                number = float(number)
            except (TypeError, ValueError):
                number = float("nan")
            if not number >= (1 if key == "num_cpus" else 0):
                raise GenaugError(f"resources: {stage} {key} must be a number >= {1 if key == 'num_cpus' else 0} "
                                  f"(got {given[key]!r})")
            out[stage][key] = number
    return out


def check_retries(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise GenaugError(f"retries must be a whole number >= 0 (got {value!r})")
    return value


@dataclass
class Outcome:
    computed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # task label: "ExceptionType: message"
    skipped: list[str] = field(default_factory=list)  # tasks whose input failed


class Backend(Protocol):
    name: str

    def submit(self, task: Task, data: Any, keys: dict[str, str]) -> None: ...

    def poll(self) -> list[tuple[Task, str | None, Any, BaseException | None]]: ...

    def running(self) -> int: ...

    def free(self) -> bool: ...

    def cancel(self) -> None: ...


class InProcess:
    """Runs each submitted task at the next poll, here, in submission order."""

    name = "in-process"

    def __init__(self, spec: ExperimentSpec, owner: str):
        self.spec, self.owner, self.queue = spec, owner, []

    def submit(self, task, data, keys):
        self.queue.append((task, data, keys))

    def running(self) -> int:
        return len(self.queue)

    def free(self) -> bool:
        return not self.queue  # one task at a time: the plan's order

    def poll(self):
        import torch

        from ...device import resolve_device

        task, data, keys = self.queue.pop(0)
        resources = {"num_cpus": torch.get_num_threads(),
                     "num_gpus": 1 if resolve_device(self.spec.device).type == "cuda" else 0}
        try:
            status, value = execute(self.spec, task, data, keys, self.owner, resources, wait=False, executor=self.name)
            return [(task, status, value, None)]
        except (KeyboardInterrupt, TrainingInterrupted):
            raise
        except Exception as error:  # noqa: BLE001 - a failing stage is reported, the other units go on
            return [(task, None, None, error)]

    def cancel(self):
        self.queue.clear()


def describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}".rstrip(": ")


def run_tasks(spec: ExperimentSpec, tasks: list[Task], backend, progress: bool = True) -> Outcome:
    """Every task that is not done yet, each once its inputs are; see the module's docstring."""
    outcome = Outcome()
    wanted = needed(spec, tasks)
    state = {t.label: "done" for t in tasks if t.label not in wanted}  # done, or read by nothing ahead
    keys = {t.label: t.key for t in tasks}
    todo = [t for t in tasks if t.label not in state]
    units_to_run = {t.unit for t in todo}
    for t in tasks:  # a unit with work left reads its real subset first (reloaded from its manifest)
        if t.stage == "subset" and t.unit in units_to_run and t.label in state:
            del state[t.label]
            todo.insert(0, t)
    todo.sort(key=tasks.index)
    data: dict[Unit, Any] = {}
    submitted: set[str] = set()
    held_until: dict[str, float] = {}  # tasks another driver holds: looked at again after a pause, others go first
    with tqdm(total=len(todo), desc="stages", unit="task", disable=not progress) as bar:
        try:
            while todo or backend.running():
                started = False
                for t in list(todo):
                    inputs = [state.get(u) for u in t.upstream]
                    if any(s in ("failed", "skipped") for s in inputs):
                        todo.remove(t)
                        state[t.label] = "skipped"
                        outcome.skipped.append(t.label)
                        bar.update(1)
                    elif (all(s == "done" for s in inputs) and t.label not in submitted and backend.free()
                          and held_until.get(t.label, 0.0) <= time.monotonic()):
                        backend.submit(t, data.get(t.unit), keys)
                        started = True
                        submitted.add(t.label)
                        todo.remove(t)
                finished = backend.poll() if backend.running() else []
                for task, status, value, error in finished:
                    if error is not None:
                        state[task.label] = "failed"
                        outcome.failed[task.label] = describe(error)
                        bar.write(f"failed: {task.label}: {outcome.failed[task.label]}")
                    elif status == BUSY:  # another driver holds it: look again later, meanwhile the next ones
                        held_until[task.label] = time.monotonic() + HELD_RETRY_S
                        submitted.discard(task.label)
                        todo.append(task)
                        todo.sort(key=tasks.index)
                        continue
                    else:
                        state[task.label] = "done"
                        (outcome.computed if status == COMPUTED else outcome.cached).append(task.label)
                        if task.stage == "subset":
                            data[task.unit] = value
                    bar.update(1)
                if not (started or finished or backend.running()):
                    time.sleep(1.0)  # nothing could start: what is left is held by another driver, or waits on it
                bar.set_postfix_str(f"running {backend.running()}, failed {len(outcome.failed)}", refresh=False)
        except (KeyboardInterrupt, TrainingInterrupted):
            backend.cancel()
            raise TrainingInterrupted(f"interrupted; every finished stage is kept in {spec.folder}: run the same "
                                      "command again to continue where it stopped") from None
    return outcome


def new_owner() -> str:
    """An id for this driver run: its leases, and the retries of its tasks, carry it."""
    return uuid.uuid4().hex
