#!/usr/bin/env bash
# The prepared GPU check (issue 25): on one GPU, within 8 minutes, it
#   1. trains each generator family (vae, dcgan, ddpm, ddpm-cond) STEPS steps in bf16 on PneumoniaMNIST,
#   2. samples N images from each,
#   3. computes the DDPM samples' FID against the real class on the GPU and on the CPU (equal within 0.1%),
#   4. trains and scores classifiers through a tiny augment-and-train in this process, and
#   5. runs the same tiny experiment under --ray, whose classifier tasks ask for 0.25 GPU each
#      (four share the GPU), and counts how many ran at once,
# then prints one JSON line. Put its figures and date in the README's "verified where" table.
#
#   bash scripts/gpu_check.sh                              # on a GPU machine, from the repository root
#   DEVICE=cpu STEPS=20 N=16 bash scripts/gpu_check.sh     # the same path on a CPU, as a smoke test
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-300}
N=${N:-256}
DATA=${DATA:-../shared/data/pneumoniamnist.npz}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export GENAUG_CACHE_DIR=${GENAUG_CACHE_DIR:-$WORK/cache} PYTHONWARNINGS=ignore
printf 'mixed_precision: bf16\n' > "$WORK/bf16.yaml"
[ "$DEVICE" = cpu ] && printf 'mixed_precision: "no"\n' > "$WORK/bf16.yaml"  # bf16 autocast is the GPU's
now() { date +%s.%N; }
logged() {  # logged LOG COMMAND...: the command's output to LOG, its tail on stderr when it fails
  local log=$1; shift
  "$@" >"$log" 2>&1 || { echo "gpu_check: failed: $*" >&2; tail -20 "$log" >&2; exit 1; }
}
declare -A WALL

for family in vae dcgan ddpm ddpm-cond; do
  name=$family; args=($family); [ "$family" = ddpm-cond ] && args=(ddpm --conditional)
  cls=normal; [ "$family" = ddpm-cond ] && cls=all
  t0=$(now)
  logged "$WORK/$name-train.log" "$PY" -m genaug.cli train "${args[@]}" --data "$DATA" --class "$cls" \
    --per-class 200 --steps "$STEPS" --config "$WORK/bf16.yaml" --device "$DEVICE" --out "$WORK/runs/$name"
  t1=$(now)
  extra=(); [ "$family" = ddpm-cond ] && extra=(--class normal)
  logged "$WORK/$name-sample.log" "$PY" -m genaug.cli sample --run "$WORK/runs/$name" --n "$N" \
    --out "$WORK/samples/$name" --device "$DEVICE" --no-progress "${extra[@]}"
  t2=$(now)
  WALL[$name]="$(echo "$t1 - $t0" | bc) $(echo "$t2 - $t1" | bc)"
done

t0=$(now)
logged "$WORK/fid-device.log" "$PY" -m genaug.cli fid "$DATA:normal" "$WORK/samples/ddpm" --device "$DEVICE" \
  --json "$WORK/fid-device.json"
t1=$(now)
logged "$WORK/fid-cpu.log" "$PY" -m genaug.cli fid "$DATA:normal" "$WORK/samples/ddpm" --device cpu \
  --json "$WORK/fid-cpu.json"
t2=$(now)
FID_WALL="$(echo "$t1 - $t0" | bc) $(echo "$t2 - $t1" | bc)"

TINY=(--data "$DATA" --per-class 20 --generator none --controls baseline-strong,dup --synthetic-per-class 20
      --replicates 2 --seeds 2 --epochs 3 --no-progress --device auto --save-models none)
t0=$(now)
logged "$WORK/here.log" "$PY" -m genaug.cli augment-and-train "${TINY[@]}" --out "$WORK/here"
t1=$(now)
logged "$WORK/ray.log" "$PY" -m genaug.cli augment-and-train "${TINY[@]}" --out "$WORK/ray" --ray
t2=$(now)
EXP_WALL="$(echo "$t1 - $t0" | bc) $(echo "$t2 - $t1" | bc)"

"$PY" - "$WORK" "$DEVICE" "$STEPS" "$N" "${WALL[vae]}" "${WALL[dcgan]}" "${WALL[ddpm]}" "${WALL[ddpm-cond]}" \
  "$FID_WALL" "$EXP_WALL" <<'EOF'
import json, sys, time
from pathlib import Path

import torch

work, device, steps, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
walls = [tuple(float(x) for x in a.split()) for a in sys.argv[5:]]
families = dict(zip(("vae", "dcgan", "ddpm", "ddpm-cond"), walls[:4]))
fid_device = json.loads((work / "fid-device.json").read_text())["fid"]
fid_cpu = json.loads((work / "fid-cpu.json").read_text())["fid"]
records = [json.loads(p.read_text()) for p in (work / "ray" / "stages").glob("*.json")]
runs = sorted((r["started_unix"], r["wall_s"]) for r in records if r["stage"] == "classifier")
most = max(sum(1 for s, w in runs if s <= t < s + w) for t, _ in runs) if runs else 0  # classifier tasks at once
here = json.loads((work / "here" / "report.json").read_text())
ray = json.loads((work / "ray" / "report.json").read_text())
print(json.dumps({
    "check": "gpu", "date": time.strftime("%Y-%m-%d"), "device": device,
    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    "torch": torch.__version__, "steps": steps, "samples": n,
    "train_s": {k: round(v[0], 1) for k, v in families.items()},
    "train_steps_per_s": {k: round(steps / v[0], 1) for k, v in families.items()},
    "sample_s": {k: round(v[1], 1) for k, v in families.items()},
    "fid_device": round(fid_device, 4), "fid_cpu": round(fid_cpu, 4),
    "fid_rel_diff": abs(fid_device - fid_cpu) / fid_cpu, "fid_equal": abs(fid_device - fid_cpu) <= 1e-3 * fid_cpu,
    "fid_s": {"device": round(walls[4][0], 1), "cpu": round(walls[4][1], 1)},
    "classifier_bf16": any(run.get("bf16") for a in here["arms"].values() for run in a["runs"]) or
                       here["classifiers"]["bf16"],
    "baseline_balanced_accuracy": here["arms"]["baseline"]["summary"].get("balanced_accuracy", {}).get("mean"),
    "experiment_s": {"in_process": round(walls[5][0], 1), "ray": round(walls[5][1], 1)},
    "ray_classifier_tasks": len(runs), "ray_classifier_tasks_at_once": most,
    "ray_cuda_visible_devices": sorted({str(r.get("cuda_visible_devices")) for r in records
                                        if r["stage"] == "classifier"}),
    "ray_gpu_per_classifier": sorted({r["resources"]["num_gpus"] for r in records if r["stage"] == "classifier"}),
    "ray_answer_equal": here["answer"] == ray["answer"],
}))
EOF
