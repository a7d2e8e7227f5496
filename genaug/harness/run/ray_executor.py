"""The stages as Ray tasks: the only module of genaug that imports `ray` (the extra `genaug[ray]`).

`--ray` starts a local Ray cluster for the run (every core, every GPU of this machine); `--ray auto`
or `--ray HOST:PORT` joins a running one (`ray start --head` on one machine, `ray start
--address=HOST:PORT` on the others); a driver that already called `ray.init` (a notebook, the tests)
is used as it is. Each stage type asks for its `resources` (num_cpus, fractional num_gpus where the
cluster has GPUs; Ray sets CUDA_VISIBLE_DEVICES); a task's real subset travels once through the
object store to the tasks of its unit; a task whose worker dies is retried `retries` times (and
finds its own outputs, or its own lease, in the store).

Each task first checks that its worker runs the driver's genaug (a digest of the package's source
files): Ray puts the driver's working directory first on a worker's import path, so a driver
started from a source checkout with PYTHONPATH pointing at another copy would otherwise have its
stages computed by the checkout's code, and a file edited during a run would reach the workers'
later imports. Such a task fails with one line instead of computing anything.
"""

from __future__ import annotations

import os
from typing import Any

from ...errors import GenaugError
from ...io import package_digest
from .executor import check_resources, check_retries
from ..stages.faults import ENV as FAULT_ENV
from ..design.spec import ExperimentSpec
from .plan import Task, execute

INSTALL = "--ray needs Ray: pip install 'genaug[ray]' (or pip install 'ray>=2.40')"


def _import_ray():
    try:
        import ray
    except ImportError:
        raise GenaugError(INSTALL) from None
    return ray


def check_code(expected: str) -> None:
    import genaug

    if package_digest() != expected:
        raise GenaugError(f"this Ray worker's genaug ({os.path.dirname(genaug.__file__)}) is not the code the "
                          "driver runs (changed on disk, or another copy: Ray puts the driver's working directory "
                          "first on a worker's path); start the driver from the folder of the copy it should run")


def _run_task(spec: ExperimentSpec, task: Task, data, keys: dict, owner: str, resources: dict, fault: str | None,
              code: str):
    """A stage task inside a Ray worker: the driver's code (`check_code`), then threads and device from the
    resources it was given."""
    import torch

    check_code(code)

    if fault:
        os.environ[FAULT_ENV] = fault
    else:
        os.environ.pop(FAULT_ENV, None)
    torch.set_num_threads(max(1, int(resources["num_cpus"])))
    if spec.device == "auto" and not resources["num_gpus"]:
        from dataclasses import replace

        spec = replace(spec, device="cpu")  # a task that asked for no GPU does not take one
    status, value = execute(spec, task, data, keys, owner, resources, wait=True, executor="ray")
    return status, value


class RayBackend:
    name = "ray"

    def __init__(self, spec: ExperimentSpec, owner: str, address: str | None):
        self.ray = ray = _import_ray()
        self.spec, self.owner = spec, owner
        self.started = False
        if not ray.is_initialized():
            ray.init(address=None if address in (None, "", "local") else address, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
            self.started = True
        self.gpus = ray.cluster_resources().get("GPU", 0) > 0
        self.capacity = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.resources = check_resources(spec.config.get("resources"))
        self.retries = check_retries(spec.config.get("retries", 3))
        self.remote = ray.remote(_run_task)
        self.refs: dict[Any, tuple[Task, Any]] = {}  # status ref: (task, data ref of a subset task)
        self.fault = os.environ.get(FAULT_ENV)
        self.code = package_digest()

    def stage_resources(self, stage: str) -> dict:
        r = self.resources[stage]
        return {"num_cpus": r["num_cpus"], "num_gpus": r["num_gpus"] if self.gpus else 0.0}

    def submit(self, task: Task, data, keys: dict[str, str]) -> None:
        resources = self.stage_resources(task.stage)
        status, value = self.remote.options(num_returns=2, max_retries=self.retries, name=task.label,
                                            **resources).remote(self.spec, task, data, keys, self.owner, resources,
                                                                self.fault, self.code)
        self.refs[status] = (task, value)

    def running(self) -> int:
        return len(self.refs)

    def free(self) -> bool:
        """No more tasks in flight than the cluster has CPUs: what runs next follows the plan's order (a unit's
        samples before the next unit's generator), not Ray's queue of everything that was ready at once."""
        return len(self.refs) < self.capacity

    def poll(self):
        ready, _ = self.ray.wait(list(self.refs), num_returns=1, timeout=1.0)
        out = []
        for ref in ready:
            task, value = self.refs.pop(ref)
            try:
                status = self.ray.get(ref)
            except Exception as error:  # noqa: BLE001 - reported with its unit; the other tasks go on
                out.append((task, None, None, getattr(error, "cause", None) or error))
                continue
            out.append((task, status, value if task.stage == "subset" else None, None))  # a subset: its data ref
        return out

    def cancel(self) -> None:
        """Stop what runs. A cluster this driver started ends with it (`close` stops every worker), so its
        tasks are not cancelled one by one: Ray's cancel races with the reply of a task that is just finishing
        and can abort the driver ("Tried to complete task that was not pending", ray-project/ray#54798). On a
        cluster it joined, only the tasks that have not finished are cancelled."""
        refs, self.refs = list(self.refs), {}
        if self.started or not refs:
            return
        _, pending = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in pending:
            self.ray.cancel(ref, force=True)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
