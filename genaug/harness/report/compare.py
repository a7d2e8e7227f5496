"""Two finished experiments that differ in one recipe setting (the loss, the classifier), compared
arm by arm and replicate by replicate.

Pairing is only honest when both drew the same real subsets and used the same synthetic images:
the replicates' manifests and the generators' weights must hash the same in both reports (same
seeds and settings on a deterministic machine give that), else the comparison is refused.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import GenaugError
from ...io import read_json
from ..stats import analysis
from ..stats import verdict
from ..stats.paired import paired_difference
from ...classifiers.metrics import SCALAR_METRICS
from ..stats.text import adjusted_interval, number, p_value


def _report(folder: Path) -> dict:
    path = Path(folder) / "report.json"
    if not path.is_file():
        raise GenaugError(f"{folder}: no report.json (run augment-and-train there to the end first)")
    return read_json(path)


def _settings_diff(a: dict, b: dict) -> list[str]:
    keys = set(a["config"]) | set(b["config"])
    return sorted(k for k in keys if a["config"].get(k) != b["config"].get(k)
                  and k not in ("save_models", "explain", "replicates", "seeds"))


def compare_experiments(first: str | Path, second: str | Path, metric: str | None = None) -> dict:
    """Per arm present in both: the paired difference (second − first) of `metric` (default: the
    first's primary metric) over the unit of inference, on every metric; on `metric`, the decision
    rule of the reports (verdict.py) with Holm over the arms."""
    a, b = _report(first), _report(second)
    if a["data"]["manifest_sha256"] != b["data"]["manifest_sha256"]:
        raise GenaugError("the two experiments drew different real subsets (manifests differ): pair only "
                          "experiments with the same data, seeds, per_class and validation settings")
    if a["generators"] != b["generators"]:
        raise GenaugError("the two experiments used different generators (model hashes differ): their synthetic "
                          "images are not the same, so arms cannot be paired")
    metric = metric or a["design"]["primary_metric"]
    if metric not in SCALAR_METRICS:
        raise GenaugError(f"unknown metric {metric!r}; choose from {', '.join(SCALAR_METRICS)}")
    units = []
    for report in (a, b):
        runs = [{"replicate": run["replicate"], "fold": run.get("fold"), "seed_index": run["seed"], "arm": arm,
                 "test": run} for arm, x in report["arms"].items() for run in x["runs"]]
        unit, by = analysis.unit_values(analysis.rows_of(runs), report["design"]["replicates"],
                                        bool(report["design"].get("cv_folds")))
        units.append(by)
    arms = [arm for arm in a["arms"] if arm in b["arms"]]
    diffs = {arm: {m: paired_difference(*analysis.paired_values(units[1][arm][m], units[0][arm][m])) for m in SCALAR_METRICS}
             for arm in arms}
    alpha = float(a["config"].get("alpha", verdict.DEFAULT_ALPHA))
    verdict.decide({arm: d[metric] for arm, d in diffs.items()}, alpha)  # Holm over the arms, intervals that agree
    return {"first": str(first), "second": str(second), "differs_in": _settings_diff(a, b), "metric": metric,
            "unit_of_inference": unit, "arms": diffs,
            "pair_confusion": {"first": a.get("pair_confusion", {}), "second": b.get("pair_confusion", {})}}


def render(result: dict) -> str:
    m = result["metric"]
    lines = [f"# {result['second']} − {result['first']}", "",
             f"Settings that differ: {', '.join(result['differs_in']) or 'none'}. Paired over "
             f"{result['unit_of_inference']}s (same subsets and synthetic images in both).", "",
             f"| arm | {m}: mean diff | Holm-adjusted CI (level) | 95% CI (t) | p paired t | p Holm | decision | "
             "p Wilcoxon (min attainable) | pairs |", "|---|---|---|---|---|---|---|---|---|"]

    for arm, d in result["arms"].items():
        c = d[m]
        lines.append(f"| {arm} | {c['mean_diff']:+.4f} | {adjusted_interval(c)} | [{number(c['ci_low'])}, {number(c['ci_high'])}] | "
                     f"{p_value(c['p_ttest'])} | {p_value(c.get('p_holm'))} | {c['decision']} | "
                     f"{p_value(c['p_wilcoxon'])} ({p_value(c['wilcoxon_min_p'])}) | {c['n']} |")
    pc = result["pair_confusion"]
    if pc["first"] and len(next(iter(pc["first"].values()))) > 1:
        pairs = list(next(iter(pc["first"].values())))
        lines += ["", "Confusion between class pairs (first → second):", "",
                  "| arm | " + " | ".join(pairs) + " |", "|---|" + "---|" * len(pairs)]
        for arm in result["arms"]:
            if arm in pc["first"] and arm in pc["second"]:
                lines.append(f"| {arm} | " + " | ".join(f"{pc['first'][arm][p]:.3f} → {pc['second'][arm][p]:.3f}"
                                                       for p in pairs) + " |")
    return "\n".join(lines) + "\n"
