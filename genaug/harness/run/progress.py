"""How far an experiment folder is, read beside a running driver: per stage type, the tasks its spec
plans, those recorded in the store, those running now (a fresh lease), and the stage time still ahead
at the mean wall time of that type's recorded tasks. Reads `spec.json` and the store; writes nothing."""

from __future__ import annotations

from pathlib import Path

from ..design.spec import ExperimentSpec
from .plan import needed, plan
from .store import Store


def progress(folder: str | Path) -> dict:
    """{"folder", "planned", "done", "report", "stages": {stage: {...}}, "running": [...], "left_s",
    "unknown": [stage types with tasks ahead and none recorded yet]}, stages in plan order."""
    folder = Path(folder)
    spec = ExperimentSpec.read_folder(folder)
    store = Store(folder)
    records = {r["key"]: r for r in store.records()}
    stages: dict[str, dict] = {}
    running = []
    tasks = plan(spec)
    wanted = needed(spec, tasks)
    first = {t.label for t in plan(spec, headroom_only=True)}  # what `genaug headroom` runs
    for task in tasks:
        row = stages.setdefault(task.stage, {"planned": 0, "done": 0, "running": 0, "done_s": 0.0, "timed": 0})
        row["planned"] += 1
        record = records.get(task.key)
        if record is not None and record.get("wall_s") is not None:
            row["done_s"] += float(record["wall_s"])
            row["timed"] += 1
        if task.label not in wanted:  # recorded, or only read by what is recorded (weights left out)
            row["done"] += 1
            continue
        holder = store.holder(task.key)
        if holder is not None:
            row["running"] += 1
            running.append({"label": task.label, **holder})
    for row in stages.values():
        ahead = row["planned"] - row["done"]
        row["mean_s"] = row["done_s"] / row["timed"] if row["timed"] else None
        row["left_s"] = 0.0 if not ahead else (row["mean_s"] * ahead if row["mean_s"] is not None else None)
    headroom = {"planned": len(first), "done": sum(1 for t in tasks if t.label in first and t.label not in wanted)}
    return {"folder": str(folder), "planned": sum(r["planned"] for r in stages.values()), "headroom": headroom,
            "done": sum(r["done"] for r in stages.values()), "report": (folder / "report.json").exists(),
            "stages": stages, "running": running,
            "left_s": sum(r["left_s"] for r in stages.values() if r["left_s"] is not None),
            "unknown": [s for s, r in stages.items() if r["left_s"] is None]}


def _hm(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def render(p: dict) -> str:
    state = "report written" if p["report"] else "no report yet"
    lines = [f"{p['folder']}: {p['done']} of {p['planned']} stage tasks recorded, {len(p['running'])} running; {state}",
             f"the headroom stage (subsets, reference, learning curve, positive control; what `genaug headroom` runs): "
             f"{p['headroom']['done']} of {p['headroom']['planned']} recorded", "",
             "| stage | recorded / planned | running | stage time so far | ahead, at the mean so far |",
             "|---|---|---|---|---|"]
    for stage, r in p["stages"].items():
        ahead = "-" if r["left_s"] is None else ("none" if not r["left_s"] else _hm(r["left_s"]))
        lines.append(f"| {stage} | {r['done']} / {r['planned']} | {r['running']} | {_hm(r['done_s'])} | {ahead} |")
    lines.append("")
    left = f"about {_hm(p['left_s'])} of stage time ahead (summed over tasks: divide by the workers that run at once)"
    if p["unknown"]:
        left += f"; not counted: {', '.join(p['unknown'])} (none recorded yet)"
    lines.append(left if p["done"] < p["planned"] else "every planned stage task is recorded")
    for r in p["running"]:
        lines.append(f"running: {r['label']} ({r['host']}, since {r['since']})")
    return "\n".join(lines)
