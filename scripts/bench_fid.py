"""Benchmark: `genaug fid` against torch-fidelity's own `fidelity` command, and CPU settings.

On the same two folders of real Fashion-MNIST test images (T-shirt/top vs Shirt, PNG), side by
side in one run:
- torch-fidelity's `fidelity --fid` with the same converted Inception weights (its CLI loads the
  weights strictly, so it gets a copy with a zero `fc` layer, which FID never uses);
- `genaug fid` cold (real side not yet cached) and again with the real side cached.
Then the Inception pass itself under CPU settings (threads, batch size, channels_last,
inference mode), each checked to change FID by less than 0.1%, and FID's maths on the same features:
torch-fidelity's eigenvalues of the 2048 x 2048 product against genaug's SVD of the n x n one.
Prints one JSON line.

    python scripts/bench_fid.py --n 200
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import torch

from genaug.data import load_split, open_source, save_png
from genaug.inception import InceptionPool3, ensure_weights

BIN = Path(sys.executable).parent


def _timed(cmd: list[str], env_cache: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env={"GENAUG_CACHE_DIR": env_cache, "PATH": str(BIN),
                                                                    "PYTHONWARNINGS": "ignore"})
    if out.returncode:
        raise SystemExit(f"{cmd[0]} failed: {out.stderr[-2000:]}")
    return time.perf_counter() - t0, out.stdout + out.stderr


def _fid_from(text: str) -> float:
    m = re.search(r"frechet_inception_distance: ([0-9.]+)", text) or re.search(r"FID ([0-9.]+)", text)
    return float(m.group(1))


def _features(model, images, batch_size):
    out = []
    for i in range(0, len(images), batch_size):
        batch = images[i: i + batch_size]
        out.append(model(batch.expand(-1, 3, -1, -1).contiguous())[0])
    return torch.cat(out).double()


def _fid(f1, f2) -> float:
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    return fid_statistics_to_metric(fid_features_to_statistics(f1), fid_features_to_statistics(f2), False)[
        "frechet_inception_distance"]


def fid_maths(fa: torch.Tensor, fb: torch.Tensor) -> dict:
    """Seconds of FID's maths on the same features, torch-fidelity's and genaug's, and both numbers."""
    from genaug.metrics.fidelity import frechet_distance

    t0 = time.perf_counter()
    theirs = _fid(fa, fb)
    t1 = time.perf_counter()
    ours = frechet_distance(fa, fb)
    t2 = time.perf_counter()
    return {"n_per_side": len(fa), "torch_fidelity_s": round(t1 - t0, 4), "genaug_s": round(t2 - t1, 4),
            "speedup": round((t1 - t0) / (t2 - t1), 1), "fid_torch_fidelity": theirs, "fid_genaug": ours,
            "fid_rel_difference": abs(ours - theirs) / theirs}


def settings_sweep(a: torch.Tensor, b: torch.Tensor, weights: Path) -> tuple[list[dict], dict]:
    """images/s of the Inception pass and FID under each CPU setting, against the default; FID's maths."""
    variants = [
        {"name": "torch-fidelity default (no_grad, batch 64, all threads)", "batch": 64},
        {"name": "batch 32", "batch": 32},
        {"name": "batch 128", "batch": 128},
        {"name": "1 thread", "batch": 64, "threads": 1},
        {"name": "inference_mode", "batch": 64, "inference": True},
        {"name": "channels_last", "batch": 64, "channels_last": True},
        {"name": "channels_last + inference_mode (genaug's choice)", "batch": 64, "channels_last": True,
         "inference": True},
    ]
    rows, ref, maths = [], None, None
    default_threads = torch.get_num_threads()
    for v in variants:
        torch.set_num_threads(v.get("threads", default_threads))
        InceptionPool3.fast = False
        model = InceptionPool3("bench", ["2048"], feature_extractor_weights_path=str(weights))
        InceptionPool3.fast = True
        if v.get("channels_last"):
            model = model.to(memory_format=torch.channels_last)
        ctx = torch.inference_mode() if v.get("inference") else torch.no_grad()
        with ctx:
            t0 = time.perf_counter()
            fa, fb = _features(model, a, v["batch"]), _features(model, b, v["batch"])
            dt = time.perf_counter() - t0
        fid = _fid(fa, fb)
        maths = maths or fid_maths(fa, fb)
        ref = ref if ref is not None else fid
        rows.append({"setting": v["name"], "images_per_s": round((len(a) + len(b)) / dt, 2), "fid": round(fid, 4),
                     "fid_rel_change": abs(fid - ref) / ref})
    torch.set_num_threads(default_threads)
    base = rows[0]["images_per_s"]
    for r in rows:
        r["speedup"] = round(r["images_per_s"] / base, 3)
        r["fid_within_0.1pct"] = r["fid_rel_change"] < 1e-3
    return rows, maths


@click.command()
@click.option("--n", default=200, help="Images per side.")
@click.option("--sweep-n", default=64, help="Images per side for the CPU settings sweep.")
def main(n, sweep_n):
    source = open_source("fashion-mnist")
    tee = load_split(source, "test", [source.class_index("T-shirt/top")], 28).images[:n]
    shirt = load_split(source, "test", [source.class_index("Shirt")], 28).images[:n]
    work = Path(tempfile.mkdtemp(prefix="bench-fid-"))
    for folder, images in (("tee", tee), ("shirt", shirt)):
        for i, img in enumerate(images):
            save_png(img, work / folder / f"{i:05d}.png")
    cache = str(work / "cache")
    weights, _ = ensure_weights(Path(cache))
    state = torch.load(weights)
    state.update({"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)})
    tf_weights = work / "weights-with-zero-fc.pth"
    torch.save(state, tf_weights)

    tf_s, tf_out = _timed([str(BIN / "fidelity"), "--cpu", "--fid", "--no-cache", "--input1", str(work / "tee"),
                           "--input2", str(work / "shirt"), "--feature-extractor-weights-path", str(tf_weights)], cache)
    real_spec = "fashion-mnist:T-shirt/top@test"
    # Side by side: the same two PNG folders. Cached: the whole real class as a data spec.
    g_cold_s, g_cold = _timed([str(BIN / "genaug"), "fid", "--no-progress", str(work / "tee"), str(work / "shirt")], cache)
    n_real = len(load_split(source, "test", [source.class_index("T-shirt/top")], 28).images)
    spec_cold_s, spec_cold = _timed([str(BIN / "genaug"), "fid", "--no-progress", real_spec, str(work / "shirt")], cache)
    spec_warm_s, spec_warm = _timed([str(BIN / "genaug"), "fid", "--no-progress", real_spec, str(work / "shirt")], cache)
    sweep, maths = settings_sweep(tee[:sweep_n], shirt[:sweep_n], weights)
    result = {
        "n_per_side": n,
        "torch_fidelity_cli": {"wall_s": round(tf_s, 1), "images_per_s": round(2 * n / tf_s, 2), "fid": _fid_from(tf_out)},
        "genaug_fid_folders": {"wall_s": round(g_cold_s, 1), "images_per_s": round(2 * n / g_cold_s, 2),
                               "fid": _fid_from(g_cold)},
        "ratio_genaug_over_torch_fidelity_images_per_s": round(tf_s / g_cold_s, 3),
        "genaug_fid_real_spec": {"n_real": n_real, "cold_wall_s": round(spec_cold_s, 1),
                                 "cached_wall_s": round(spec_warm_s, 1),
                                 "cold_images_per_s": round((n_real + n) / spec_cold_s, 2),
                                 "cached_images_per_s": round((n_real + n) / spec_warm_s, 2),
                                 "fid_cold": _fid_from(spec_cold), "fid_cached": _fid_from(spec_warm),
                                 "speedup_cached_over_cold": round(spec_cold_s / spec_warm_s, 3)},
        "cpu_settings": sweep,
        "fid_maths": maths,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
