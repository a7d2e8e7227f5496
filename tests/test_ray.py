"""The stages as Ray tasks on a local cluster (num_cpus=2, started once for this module): the same
results as in this process, a worker killed mid-task retried to the same results, a failing stage
named while the other unit finishes, a finished experiment that starts no task, and the in-process
path without Ray installed."""

from __future__ import annotations

import shutil
import sys

import pytest
import torch

from genaug.harness.run.store import Store

from conftest import PNEUMONIA, assert_clean_error, run_cli

ray = pytest.importorskip("ray")  # the README's setup and CI install the extra: these always run there

SMALL = ["--data", PNEUMONIA, "--per-class", "10", "--generator", "vae", "--generator-steps", "5",
         "--synthetic-per-class", "4", "--replicates", "2", "--seeds", "1", "--steps", "2", "--image-size", "16",
         "--no-progress", "--device", "cpu", "--config", "no-quality.yaml"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    """The small experiment in this process (one thread, as each Ray task has) and under --ray with
    the worker of one classifier task killed in the middle of it."""
    root = tmp_path_factory.mktemp("ray")
    (root / "no-quality.yaml").write_text("quality: false\ncontrols: [baseline-strong, dup]\n")
    args = [str(a).replace("no-quality.yaml", str(root / "no-quality.yaml")) for a in SMALL]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # CPU float sums depend on the thread count; each task below has one CPU
    try:
        r = run_cli("augment-and-train", "--headroom", "none", *args, "--out", root / "here")
    finally:
        torch.set_num_threads(threads)
    assert r.exit_code == 0, r.output
    marker = root / "killed"
    mp = pytest.MonkeyPatch()
    mp.setenv("GENAUG_FAULT", f"kill:classifier rep-1 +vae:{marker}")
    try:
        r = run_cli("augment-and-train", "--headroom", "none", *args, "--out", root / "ray", "--ray")
    finally:
        mp.undo()
    assert r.exit_code == 0, r.output
    return root, args, marker


def test_ray_results_equal_the_in_process_run_row_for_row_after_a_killed_worker(runs):
    root, _, marker = runs
    assert marker.read_text() == "classifier rep-1 +vae resnet18 seed 0"  # that worker died mid-task, once
    assert (root / "ray" / "results.csv").read_text() == (root / "here" / "results.csv").read_text()
    records = [r for r in Store(root / "ray").records() if r["stage"] == "classifier"]
    assert len(records) == 8 and {r["executor"] for r in records} == {"ray"}
    assert all(r["resources"] == {"num_cpus": 1, "num_gpus": 0.0} for r in records)
    md = (root / "ray" / "report.md").read_text()
    assert "## Where the time went" in md and "on the critical path" in md and "| classifier | 8 |" in md


def test_a_finished_experiment_starts_no_task_under_either_executor(runs):
    root, args, _ = runs
    log = Store(root / "ray").log()
    for extra in (["--ray"], []):
        r = run_cli("augment-and-train", "--headroom", "none", *args, "--out", root / "ray", *extra)
        assert r.exit_code == 0, r.output
    assert Store(root / "ray").log() == log  # nothing computed again


def test_a_stage_that_raises_is_named_and_the_other_unit_finishes(runs, tmp_path, monkeypatch):
    root, args, _ = runs
    out = tmp_path / "failing"
    shutil.copytree(root / "ray", out)
    store = Store(out)
    for record in store.records():  # forget every classifier run: they run again, one of them raising
        if record["stage"] == "classifier":
            store.record_path(record["key"]).unlink()
    (out / "report.json").unlink()
    monkeypatch.setenv("GENAUG_FAULT", "raise:classifier rep-0 baseline-strong")
    r = run_cli("augment-and-train", "--headroom", "none", *args, "--out", out, "--ray")
    assert_clean_error(r, "1 stage(s) failed: classifier rep-0 baseline-strong resnet18 seed 0 (InjectedFault",
                       "every other stage finished")
    again = [x for x in store.records() if x["stage"] == "classifier"]
    assert len(again) == 7 and not (out / "report.json").exists()  # rep-1's four and rep-0's other three


def test_without_ray_the_in_process_path_runs_and_ray_says_how_to_install(runs, monkeypatch):
    root, args, _ = runs
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    r = run_cli("augment-and-train", "--headroom", "none", *args, "--out", root / "here")
    assert r.exit_code == 0, r.output
    assert_clean_error(run_cli("augment-and-train", "--headroom", "none", *args, "--out", root / "here", "--ray"),
                       "pip install 'genaug[ray]'", code=1)


def test_sigterm_to_a_ray_driver_cancels_its_tasks_and_keeps_what_finished(runs, tmp_path):
    """`ray.init` installs a SIGTERM handler of its own that ends the driver at once; genaug's, installed
    after it, stops the run with its one-line message and keeps every finished stage. The driver started
    its cluster, so it stops the workers with it rather than cancelling tasks one by one (Ray's cancel can
    race with a task that is just finishing and abort the driver: this test, signalled as the first subset
    finishes, once failed that way)."""
    import os
    import signal
    import subprocess
    import time

    root, args, _ = runs
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("GENAUG_FAULT", None)
    cmd = [sys.executable, "-m", "genaug.cli", "augment-and-train", "--headroom", "none", *args, "--out", str(out), "--ray"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300  # Ray starts slowly on a loaded 2-core machine
    while time.time() < deadline and not any((out / "stages").glob("subset-*.json")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, text  # interrupted, as Ctrl-C
    assert "interrupted; every finished stage is kept" in text and "SIGTERM received" not in text
    assert any((out / "stages").glob("subset-*.json"))


def test_on_a_joined_cluster_an_interrupt_cancels_only_the_tasks_that_have_not_finished(cluster):
    import time

    from genaug.harness.run.ray_executor import RayBackend

    @ray.remote(num_cpus=0)
    def sleep(seconds):
        time.sleep(seconds)
        return seconds

    finished, slow = sleep.remote(0), sleep.remote(120)
    assert ray.get(finished) == 0
    backend = RayBackend.__new__(RayBackend)  # the state cancel reads: a cluster this driver did not start
    backend.ray, backend.started, backend.refs = ray, False, {finished: None, slow: None}
    backend.cancel()
    assert backend.refs == {} and ray.get(finished) == 0
    with pytest.raises((ray.exceptions.TaskCancelledError, ray.exceptions.WorkerCrashedError)):
        ray.get(slow, timeout=60)


def test_a_worker_whose_genaug_is_not_the_drivers_refuses_the_task_in_one_line(cluster):
    """A stage task carries the driver's code digest and checks it before it computes anything; the
    worker of this test runs the same files, so only a digest that differs is refused."""
    from genaug.errors import GenaugError
    from genaug.harness.run.ray_executor import _run_task, check_code
    from genaug.io import package_digest

    assert ray.get(ray.remote(num_cpus=0)(check_code).remote(package_digest())) is None
    with pytest.raises(ray.exceptions.RayTaskError) as info:
        ray.get(ray.remote(num_cpus=0)(_run_task).remote(None, None, None, {}, "me", {}, None, "0" * 64))
    assert isinstance(info.value.cause, GenaugError)
    assert "is not the code the driver runs" in str(info.value.cause) and "\n" not in str(info.value.cause)
