"""What the report of every label kind shares: the long table's units (replicates, folds or seeds),
the arms' summaries, the smallest effect of interest, the declared decision rule's verdict, the
versions that wrote it, and writing `report.json`, `results.csv` and `report.md`. Each label kind's
report (`writer.py` per class, `multilabel_report.py` per label) adds its own sections around it."""

from __future__ import annotations

import csv
import io
import platform
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from ...io import write_json, write_text
from ..design.spec import ExperimentSpec
from ..stats import analysis, verdict
from ..stats.ceiling import resolve_min_effect

PACKAGES = ("genaug", "torch", "torchvision", "diffusers", "accelerate", "torch-fidelity", "scipy", "scikit-learn")


@dataclass(frozen=True)
class Judgement:
    """The primary metric's answer and what it rests on, over the units of inference."""

    unit: str  # replicate, fold or seed
    units: dict  # {arm: {metric: {unit: value}}}, every metric of the long table
    summary: dict  # {arm: {metric: mean, SD, intervals}} on the judged metrics
    min_effect: float
    min_effect_note: str | None  # how a share of the headroom became a number
    verdict: dict  # comparisons, power, answer, intervals (stats/verdict.py)


def judge(e: ExperimentSpec, rows: list[dict], arm_names: list[str], metrics: tuple[str, ...]) -> Judgement:
    """The long table's rows judged by the experiment's declared rule, reference, alpha and min_effect."""
    c = e.config
    primary = c["primary_metric"]
    unit, units = analysis.unit_values(rows, int(c["replicates"]), bool(c["cv"]))
    summary = analysis.summaries({a: {m: v for m, v in ms.items() if m in metrics} for a, ms in units.items()})
    min_effect, note = resolve_min_effect(c["min_effect"], summary, primary, c.get("reference"))
    judged = verdict.verdict_block(units, arm_names, primary, unit, float(c["alpha"]), min_effect, e.history,
                                   metrics=metrics, rule=c.get("decision_rule", "holm-all"),
                                   reference=c.get("reference"))
    return Judgement(unit, units, summary, min_effect, note, judged)


def versions() -> dict:
    """Package versions, and the digest of genaug's source files (`package_digest`), which names the code
    that wrote the report where a version number cannot (a working tree between releases)."""
    from ...io import package_digest

    out = {"python": platform.python_version(), "genaug_code_sha256": package_digest()[:16]}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["replicate", "fold", "arm", "seed", "metric", "value"])
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_outputs(e: ExperimentSpec, report: dict, rows: list[dict], render: Callable[[dict], str]) -> dict:
    """`report.json`, `results.csv` (the long table) and `report.md`, each written atomically."""
    write_json(e.folder / "report.json", report)
    write_text(e.folder / "results.csv", csv_text(rows))
    write_text(e.folder / "report.md", render(report))
    return report
