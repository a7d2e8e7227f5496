"""Benchmark: decoding real JPEGs and the memory of training on many images, before and after.

Prints one JSON line with, side by side in one run:
- decode throughput (images/s, content hashes included: read once now, a second read before)
  of a folder of real OCT2017 JPEGs (the 32 shared scans copied `--copies` times under new
  names) loaded at 128 px with 1, 2 and all cores, for this checkout and for `--before` (a git
  revision, run from an extracted copy);
- peak resident memory of one generator training run (`--family`, `--steps` steps at 128 px,
  batch 64) on `--n` Fashion-MNIST images, for this checkout and for `--before`.
Each measurement runs in its own process, so peak memory is that process's alone.

    python scripts/bench_data.py --before c7d3b4c
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent
OCT = REPO.parent / "shared" / "data" / "oct2017-sample"

DECODE = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
from genaug.data.sources import open_source
s = open_source(sys.argv[2])
t0 = time.perf_counter()
n = 0
for split in s.splits:
    out = s.load(split, s.split(split).ids, 128)
    if len(out) < 3:  # before: hashes were a second read of every file (draw_subset's item_hash)
        [s.item_hash(split, i) for i in out[1]]
    n += len(out[0])
dt = time.perf_counter() - t0
print(json.dumps({"images": n, "seconds": round(dt, 3), "images_per_s": round(n / dt, 1)}))
"""

TRAIN = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import torch
from genaug.data.sources import open_source
from genaug.generators.training import Trainer
n, family, steps, out = int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
s = open_source("fashion-mnist")
images = s.load("train", list(range(n)), 128)[0]
after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
trainer = Trainer(family, images, out, {"steps": steps, "batch_size": 64, "checkpoint_every": 10**9,
                                        "sample_every": 10**9, "log_every": 10**9}, device="cpu", progress=False)
trainer.fit()
print(json.dumps({"images": n, "shape": list(images.shape), "steps": steps, "train_seconds": round(time.perf_counter() - t0, 1),
                  "peak_rss_mb_after_load": round(after_load), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def _run(code: str, src: Path, *args, env=None) -> dict:
    r = subprocess.run([sys.executable, "-c", code, str(src), *map(str, args)], capture_output=True, text=True,
                       env={**os.environ, **(env or {})})
    if r.returncode != 0:
        raise SystemExit(f"benchmark step failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


@click.command()
@click.option("--before", default="c7d3b4c", help="Git revision to compare against.")
@click.option("--copies", default=10, help="Copies of the 32 OCT scans in the decode folder.")
@click.option("--n", default=20000, help="Images for the training-memory measurement.")
@click.option("--family", default="vae")
@click.option("--steps", default=313, help="Training steps (313 x 64 = one epoch of 20k images).")
def main(before, copies, n, family, steps):
    work = Path(tempfile.mkdtemp(prefix="genaug-bench-data-"))
    try:
        old = work / "before"
        old.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", before], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        folder = work / "oct"
        for k in range(copies):
            for p in sorted(OCT.rglob("*.jpeg")):
                dest = folder / p.parent.name / f"{p.stem}-copy{k}{p.suffix}"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(p, dest)
        cores = os.cpu_count() or 1
        result = {"benchmark": "data", "before": before, "cores": cores, "decode_folder_images": 32 * copies}
        for label, src in (("after", REPO), ("before", old)):
            result[f"decode_{label}"] = {str(w): _run(DECODE, src, folder, env={"GENAUG_WORKERS": str(w)})
                                         for w in sorted({1, 2, cores})}
            result[f"train_memory_{label}"] = _run(TRAIN, src, n, family, steps, work / f"run-{label}")
        result["decode_speedup_all_cores"] = round(result["decode_after"][str(cores)]["images_per_s"]
                                                   / result["decode_before"][str(cores)]["images_per_s"], 2)
        result["train_peak_memory_ratio"] = round(result["train_memory_after"]["peak_rss_mb"]
                                                  / result["train_memory_before"]["peak_rss_mb"], 3)
        print(json.dumps(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
