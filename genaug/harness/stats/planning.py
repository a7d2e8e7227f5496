"""`genaug plan`, and the verdict of a finished experiment recomputed from its long results table.

Both read only what an experiment folder (or a committed copy of its report) keeps as data:
`results.csv` (rows of replicate, fold, arm, seed, metric, value), `config.yaml` and, where
present, `history.json`; so they also serve folders written by earlier genaug versions.
"""

from __future__ import annotations

import csv
from pathlib import Path

import yaml

from ...errors import GenaugError
from ...io import read_json
from . import analysis, verdict
from .ceiling import resolve_min_effect
from .power import check_power_inputs, design_power
from .text import adjusted_interval, interval_methods, number, p_value


def read_results(folder: str | Path) -> dict:
    """The long table and the settings of an experiment folder: {"rows", "arms", "config", "history"}."""
    folder = Path(folder)
    table, config = folder / "results.csv", folder / "config.yaml"
    if not folder.is_dir() or not table.is_file() or not config.is_file():
        raise GenaugError(f"{folder} is not a finished augment-and-train experiment (no results.csv and config.yaml)")
    rows, arms = [], []
    with table.open(newline="") as f:
        for row in csv.DictReader(f):
            rows.append({"replicate": int(row["replicate"]), "fold": int(row["fold"]) if row["fold"] else None,
                         "arm": row["arm"], "seed": int(row["seed"]), "metric": row["metric"],
                         "value": float(row["value"])})
            if row["arm"] not in arms:
                arms.append(row["arm"])
    history_path = folder / "history.json"
    return {"rows": rows, "arms": arms, "config": yaml.safe_load(config.read_text()) or {},
            "history": read_json(history_path) if history_path.exists() else []}


def rejudge(folder: str | Path, alpha: float | None = None, min_effect: float | None = None) -> dict:
    """The decision rule, power table and answer over a finished experiment's results.csv."""
    found = read_results(folder)
    c = found["config"]
    primary = c.get("primary_metric", "balanced_accuracy")
    alpha = float(alpha if alpha is not None else c.get("alpha", verdict.DEFAULT_ALPHA))
    replicates = len({r["replicate"] for r in found["rows"]})
    unit, units = analysis.unit_values(found["rows"], replicates, bool(c.get("cv")))
    min_effect = resolve_min_effect(min_effect if min_effect is not None else
                                    c.get("min_effect", verdict.DEFAULT_MIN_EFFECT),
                                    analysis.summaries(units), primary, c.get("reference"))[0]
    from ...classifiers.multilabel_metrics import MULTILABEL_METRICS
    from ...classifiers.metrics import SCALAR_METRICS

    metrics = MULTILABEL_METRICS if primary in MULTILABEL_METRICS else SCALAR_METRICS  # several labels per image
    out = verdict.verdict_block(units, found["arms"], primary, unit, alpha, min_effect, found["history"], metrics,
                                rule=c.get("decision_rule", "holm-all"), reference=c.get("reference"))
    return {**out, "primary_metric": primary, "unit": unit, "alpha": alpha, "min_effect": min_effect,
            "arms": found["arms"]}


def plan_from_experiment(folder: str | Path, effect: float | None = None, power: float = verdict.POWER_TARGET,
                         replicates: int | None = None, alpha: float | None = None) -> dict:
    """Per family pair of a pilot experiment: its SD, the smallest effect detectable with its units
    (or `replicates`) and the units `effect` (default: its min_effect) needs, at its alpha (or `alpha`)."""
    check_power_inputs(power=power, effect=effect, alpha=alpha, units=replicates)
    judged = rejudge(folder, alpha=alpha, min_effect=effect)
    table = verdict.power_table(judged["comparisons"], judged["primary_metric"], judged["alpha"],
                                judged["min_effect"], power, units=replicates)
    rows = [{"arm": arm, "reference": ref, "mean_diff": judged["comparisons"][ref][arm][judged["primary_metric"]]
             ["mean_diff"], **p} for ref, block in table.items() for arm, p in block.items()]
    return {"source": str(folder), "primary_metric": judged["primary_metric"], "unit": judged["unit"],
            "effect": judged["min_effect"], "power": power, "alpha": judged["alpha"], "rows": rows}


def plan_from_sd(sd: float, effect: float | None = None, power: float = verdict.POWER_TARGET,
                 alpha: float | None = None, family: int = 1, replicates: int | None = None) -> dict:
    """The same for one comparison from an SD alone (defaults: min_effect 0.03, alpha 0.05, 6 units)."""
    effect = verdict.DEFAULT_MIN_EFFECT if effect is None else effect
    alpha = verdict.DEFAULT_ALPHA if alpha is None else alpha
    replicates = replicates or 6
    check_power_inputs(power=power, effect=effect, sd=sd, alpha=alpha, family=family, units=replicates)
    return {"source": None, "primary_metric": None, "unit": "replicate", "effect": effect, "power": power,
            "alpha": alpha, "rows": [{"arm": None, "reference": None, "mean_diff": None,
                                      **design_power(sd, replicates, alpha, family, effect, power)}]}


def render_plan(plan: dict) -> str:
    p0 = plan["rows"][0] if plan["rows"] else None
    head = (f"Plan for {plan['source']} ({plan['primary_metric']}, paired over {plan['unit']}s)"
            if plan["source"] else "Plan from a given SD of the paired differences")
    lines = [head + f": effect {plan['effect']:g} at {plan['power']:.0%} power, two-sided paired t-test at "
             f"alpha {plan['alpha']:g} / family size (Holm's first step); a claim also needs the exact-test floor "
             f"(2 / 2^n <= {plan['alpha']:g}).", ""]
    if p0 is None:
        return "\n".join(lines + ["No augmented arm against a reference: nothing to plan."])
    lines += ["| arm | reference | SD | family | units | smallest detectable effect | power at effect | units needed "
              "(t-test) | units needed (with floor) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in plan["rows"]:
        need = r.get("units_needed") or {}
        lines.append(f"| {r['arm'] or '–'} | {r['reference'] or '–'} | {number(r['sd'])} | {r['family']} | {r['n']} | "
                     f"{number(r['min_detectable_effect'])} | {number(r['power_at_min_effect'], 2)} | "
                     f"{need.get('t_test') or '–'} | {need.get('needed') or '–'} |")
    return "\n".join(lines)


def render_verdict(judged: dict, title: str) -> str:
    """A finished experiment's verdict under the current decision rule, as Markdown."""
    primary = judged["primary_metric"]
    lines = [f"# Verdict: {title}", "", *judged["answer"], "",
             f"## Paired differences on {primary} (Holm family of augmented arm x reference)", "",
             "| arm | reference | mean diff | Holm-adjusted CI (level) | 95% CI (t) | p t | p Holm | decision |",
             "|---|---|---|---|---|---|---|---|"]
    for ref, block in judged["comparisons"].items():
        for arm, comp in block.items():
            c = comp[primary]
            lines.append(f"| {arm} | {ref} | {number(c['mean_diff'])} | {adjusted_interval(c)} | "
                         f"[{number(c['ci_low'])}, {number(c['ci_high'])}] | {p_value(c.get('p_ttest'))} | "
                         f"{p_value(c.get('p_holm'))} | {c['decision']} |")
    lines += ["", f"Interval methods: {interval_methods(judged['intervals'])}."]
    return "\n".join(lines) + "\n"
