"""Where an experiment's time went: each stage that computes (not one read from the cache) appends
its wall time to its unit's `timings.jsonl`; the report sums them per stage type."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

TIMINGS = "timings.jsonl"


@contextmanager
def timed(folder: Path, stage: str, key: str):
    """Record the block's wall time under `stage` once it finishes (an interrupted stage records nothing)."""
    start = time.perf_counter()
    yield
    folder.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"stage": stage, "key": key, "wall_s": round(time.perf_counter() - start, 3)})
    with open(folder / TIMINGS, "a") as f:
        f.write(line + "\n")


def summary(folders: list[Path]) -> dict[str, dict]:
    """{stage: {"count", "total_s", "mean_s"}} over the units' recorded timings, in order of total time."""
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


def render(rows: dict[str, dict]) -> list[str]:
    if not rows:
        return []
    total = sum(r["total_s"] for r in rows.values())
    lines = ["## Where the time went", "",
             "Wall time of every stage this folder computed (stages read from the cache on a re-run count once), "
             "summed over units; with one process running the units one after another, the total is the critical path.", "",
             "| stage | runs | total (min) | mean (s) | share |", "|---|---|---|---|---|"]
    lines += [f"| {stage} | {r['count']} | {r['total_s'] / 60:.1f} | {r['mean_s']:.1f} | "
              f"{r['total_s'] / total:.0%} |" for stage, r in rows.items()]
    return [*lines, ""]
