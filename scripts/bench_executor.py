"""Benchmark: one experiment in this process and as Ray tasks, side by side on this machine.

Runs the same small experiment (tests/test_evidence.py's tiny one: PneumoniaMNIST at 16 px, 10 per
class, 2 replicates x 2 seeds, VAE, both controls, the memorisation gate, quality) twice, each in a
fresh folder and its own process: in-process (torch's default threads) and `--ray` on a local
cluster started for the run (one task per core: two one-thread workers on a 2-core machine). Then a
Ray no-op task round trip, measured 50 times in a fresh cluster. Prints one JSON line:
the wall times and their ratio, the sum of the tasks' own wall times (from the store's records),
Ray's slack per task ((workers x wall - busy time) / tasks: scheduling, start-up and idle waits on
inputs, an upper bound on its overhead) and the no-op round trip.

    python scripts/bench_executor.py
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "pneumoniamnist.npz"
TINY = ["--config", str(REPO / "tests" / "helpers" / "tiny-experiment.yaml"), "--data", str(DATA), "--per-class", "10",
        "--generator", "vae", "--synthetic-per-class", "8", "--replicates", "2", "--seeds", "2", "--epochs", "2",
        "--generator-steps", "15", "--accept", "all,memorization", "--image-size", "16", "--no-progress",
        "--device", "cpu"]


def _run(out: Path, *extra: str) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "genaug.cli", "augment-and-train", *TINY, "--out", str(out), *extra],
                          capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode:
        raise SystemExit(done.stdout[-2000:] + done.stderr[-2000:])
    return time.perf_counter() - start


def _busy(out: Path) -> tuple[float, int]:
    records = [json.loads(p.read_text()) for p in (out / "stages").glob("*.json")]
    timed = [r for r in records if r.get("wall_s") is not None]
    return sum(r["wall_s"] for r in timed), len(timed)


def _cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _noop_roundtrip_ms(n: int) -> float:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        noop = ray.remote(num_cpus=1)(lambda: None)
        ray.get(noop.remote())  # a worker started
        start = time.perf_counter()
        for _ in range(n):
            ray.get(noop.remote())
        return (time.perf_counter() - start) / n * 1000
    finally:
        ray.shutdown()


@click.command()
@click.option("--noop-tasks", default=50, show_default=True)
def main(noop_tasks: int):
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        here, on_ray = Path(tmp) / "in-process", Path(tmp) / "ray"
        wall_here = _run(here)
        wall_ray = _run(on_ray, "--ray")
        busy_here, n_here = _busy(here)
        busy_ray, n_ray = _busy(on_ray)
        identical = (here / "results.csv").read_text() == (on_ray / "results.csv").read_text()
    workers = os.cpu_count() or 1
    print(json.dumps({
        "bench": "executor", "cpu": _cpu_model(), "cores": workers,
        "torch": torch.__version__, "ray": __import__("ray").__version__,
        "experiment": "tiny (PneumoniaMNIST 16 px, 10/class, 2 replicates x 2 seeds, vae, gate, quality)",
        "tasks": n_ray, "in_process_wall_s": round(wall_here, 1), "ray_wall_s": round(wall_ray, 1),
        "ray_over_in_process": round(wall_ray / wall_here, 3),
        "in_process_task_s": round(busy_here, 1), "ray_task_s": round(busy_ray, 1),
        "ray_slack_per_task_s": round((workers * wall_ray - busy_ray) / n_ray, 2),
        "ray_noop_roundtrip_ms": round(_noop_roundtrip_ms(noop_tasks), 2),
        "results_identical": identical,  # False expected: in-process uses every thread, each task one (float sums)
        "in_process_tasks": n_here,
    }))


if __name__ == "__main__":
    main()
