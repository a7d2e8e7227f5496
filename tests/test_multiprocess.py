"""Training under `accelerate launch --num_processes 2` on the CPU (gloo): replicas stay identical,
each process draws its own randomness and its share of the global batch, and a resumed
2-process run equals an uninterrupted one. Each launch starts two Python processes (~10 s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from genaug.generators.training import batch_indices

from conftest import PNEUMONIA, REPO

HELPER = REPO / "tests" / "helpers" / "multiprocess_train.py"
FAMILIES = ("vae", "dcgan", "ddpm")


def launch(out: Path, steps: int, *extra: str) -> None:
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(29_500 + os.getpid() % 500),
           str(HELPER), str(out), str(steps), str(PNEUMONIA), *extra]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def ranks(run: Path) -> list[dict]:
    return [json.loads((run / f"rank-{r}.json").read_text()) for r in (0, 1)]


def weights(run: Path) -> dict:
    return {f.relative_to(run).as_posix(): load_file(f) for f in (run / "model").rglob("*.safetensors")}


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("multiprocess")
    launch(root / "straight", 4)
    launch(root / "resumed", 2)
    launch(root / "resumed", 4, "--resume")
    return root


@pytest.mark.parametrize("family", FAMILIES)
def test_replicas_identical_with_own_randomness_and_batch_share(two_process_runs, family):
    zero, one = ranks(two_process_runs / "straight" / family)
    assert zero["world"] == one["world"] == 2 and zero["step"] == one["step"] == 4
    assert zero["params"] == one["params"] and len(zero["params"]) > 10
    assert zero["rng_seed"] != one["rng_seed"]
    assert zero["rng_seed"] == 4  # rank 0 keeps the run's seed: one process draws what rank 0 draws
    assert zero["first_batch"] + one["first_batch"] == batch_indices(0, 32, 8, 4)
    assert len(zero["first_batch"]) == 4


@pytest.mark.parametrize("family", FAMILIES)
def test_resumed_two_process_run_equals_straight(two_process_runs, family):
    straight, resumed = two_process_runs / "straight" / family, two_process_runs / "resumed" / family
    for a, b in zip(ranks(straight), ranks(resumed)):
        assert a["params"] == b["params"]
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys() and a
    for name in a:
        for key in a[name]:
            assert (a[name][key] == b[name][key]).all(), (name, key)
    log = [json.loads(x)["step"] for x in (resumed / "train_log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3, 4]
    assert len(list((resumed / "checkpoints" / "step-0000004").glob("random_states_*.pkl"))) == 2
