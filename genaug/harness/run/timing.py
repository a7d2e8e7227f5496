"""Where an experiment's time went, from the store's records (store.py): per stage type, the wall
time summed over every task that computed (not one read from the store), and the share of each stage
type on the critical path, the longest chain of tasks each reading the previous one: the least wall
time the experiment could take with unlimited workers. Folders from before the store recorded their
times in each unit's `timings.jsonl`; their table has no critical path."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

TIMINGS = "timings.jsonl"


def computed(records: list[dict]) -> list[dict]:
    """The records of tasks that computed here, once each: not adopted ones, nor a record re-keyed from
    another (store.py: the same computation under the key a later genaug gives it)."""
    return [r for r in records if r.get("wall_s") is not None and not r.get("rekeyed_from")]


def critical_path(records: list[dict]) -> list[dict]:
    """The chain of computed tasks, each reading the one before, with the largest summed wall time."""
    by_key = {r["key"]: r for r in computed(records)}
    best: dict[str, tuple[float, list[dict]]] = {}

    def longest(key: str) -> tuple[float, list[dict]]:
        if key not in best:
            r = by_key[key]
            ups = [longest(u) for u in r.get("upstream", []) if u in by_key]
            before = max(ups, key=lambda x: x[0]) if ups else (0.0, [])
            best[key] = (before[0] + float(r["wall_s"]), [*before[1], r])
        return best[key]

    chains = [longest(k) for k in by_key]
    return max(chains, key=lambda x: x[0])[1] if chains else []


def summary(records: list[dict], folders: list[Path] = ()) -> dict[str, dict]:
    """{stage: {"count", "total_s", "mean_s", "critical_s", "resources"}}, in order of total time."""
    done = computed(records)
    if not done:
        return _legacy(folders)
    totals: dict[str, list[float]] = defaultdict(list)
    resources: dict[str, dict] = {}
    for r in done:
        totals[r["stage"]].append(float(r["wall_s"]))
        resources.setdefault(r["stage"], r.get("resources") or {})
    on_path: dict[str, float] = defaultdict(float)
    for r in critical_path(records):
        on_path[r["stage"]] += float(r["wall_s"])
    rows = {stage: {"count": len(v), "total_s": round(sum(v), 1), "mean_s": round(sum(v) / len(v), 2),
                    "critical_s": round(on_path.get(stage, 0.0), 1), "resources": resources[stage]}
            for stage, v in totals.items()}
    return dict(sorted(rows.items(), key=lambda kv: -kv[1]["total_s"]))


def _legacy(folders) -> dict[str, dict]:
    totals: dict[str, list[float]] = defaultdict(list)
    for folder in folders:
        path = Path(folder) / TIMINGS
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    totals[row["stage"]].append(float(row["wall_s"]))
    rows = {stage: {"count": len(v), "total_s": round(sum(v), 1), "mean_s": round(sum(v) / len(v), 2)}
            for stage, v in totals.items()}
    return dict(sorted(rows.items(), key=lambda kv: -kv[1]["total_s"]))


def _resources(r: dict) -> str:
    if not r:
        return ""
    return f"{r.get('num_cpus', 0):g} CPU" + (f", {r['num_gpus']:g} GPU" if r.get("num_gpus") else "")


def render(rows: dict[str, dict]) -> list[str]:
    if not rows:
        return []
    total = sum(r["total_s"] for r in rows.values())
    if not any("critical_s" in r for r in rows.values()):
        lines = ["## Where the time went", "",
                 "Wall time of every stage this folder computed, summed over units (recorded before the store: "
                 "no critical path).", "",
                 "| stage | runs | total (min) | mean (s) | share |", "|---|---|---|---|---|"]
        lines += [f"| {stage} | {r['count']} | {r['total_s'] / 60:.1f} | {r['mean_s']:.1f} | "
                  f"{r['total_s'] / total:.0%} |" for stage, r in rows.items()]
        return [*lines, ""]
    path = sum(r["critical_s"] for r in rows.values())
    lines = ["## Where the time went", "",
             f"Wall time of every stage task this folder computed (read from the store on a re-run: not counted), "
             f"summed per stage type: {total / 60:.1f} min in all. The critical path, the longest chain of tasks "
             f"each reading the one before and so the least wall time with unlimited workers, is "
             f"{path / 60:.1f} min.", "",
             "| stage | tasks | total (min) | mean (s) | share | on the critical path (min) | resources per task |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {stage} | {r['count']} | {r['total_s'] / 60:.1f} | {r['mean_s']:.1f} | {r['total_s'] / total:.0%} | "
              f"{r['critical_s'] / 60:.1f} | {_resources(r['resources'])} |" for stage, r in rows.items()]
    return [*lines, ""]
