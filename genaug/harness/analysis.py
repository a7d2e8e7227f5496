"""From the experiment's classifier runs to the figures a reviewer reads.

Input: a long table of rows (replicate, arm, seed, metric, value). The unit of inference is the
replicate (its seeds averaged); with a single replicate it falls back to the seed, and the
report says that the intervals are then conditional on one subset and one generator draw.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
from scipy import stats

from .stats import SCALAR_METRICS, holm, paired_difference, summarize, t_half_width

REFERENCES = ("baseline", "baseline-strong", "+dup")


def rows_of(results: list[dict]) -> list[dict]:
    """One row per (replicate, arm, seed, metric)."""
    return [{"replicate": r["replicate"], "arm": r["arm"], "seed": r["seed_index"], "metric": m, "value": r["test"][m]}
            for r in results for m in SCALAR_METRICS]


def unit_values(rows: list[dict], replicates: int) -> tuple[str, dict[str, dict[str, dict]]]:
    """{arm: {metric: {unit: value}}}: seed means per replicate, or per seed with one replicate."""
    unit = "replicate" if replicates > 1 else "seed"
    cells: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for row in rows:
        key = row["replicate"] if unit == "replicate" else row["seed"]
        cells[row["arm"]][row["metric"]][key].append(row["value"])
    return unit, {arm: {m: {k: float(np.mean(v)) for k, v in by.items()} for m, by in metrics.items()}
                  for arm, metrics in cells.items()}


def _paired(a: dict, b: dict) -> tuple[list[float], list[float]]:
    keys = sorted(set(a) & set(b))
    return [a[k] for k in keys], [b[k] for k in keys]


def summaries(units: dict) -> dict:
    """Per arm and metric: mean, std, t interval and (n >= 3) bootstrap interval over units."""
    out = {}
    for arm, metrics in units.items():
        out[arm] = {}
        for m, by in metrics.items():
            s = summarize(list(by.values()))
            s.update(ci_low=math.nan, ci_high=math.nan, boot_low=math.nan, boot_high=math.nan)
            if s["n"] > 1 and s["std"] > 1e-12:
                half = t_half_width(s["std"], s["n"])
                s.update(ci_low=s["mean"] - half, ci_high=s["mean"] + half)
            if s["n"] >= 3 and s["std"] > 1e-12:
                boot = stats.bootstrap((np.asarray(s["values"]),), np.mean, n_resamples=9999, method="percentile",
                                       random_state=np.random.default_rng(0))
                s.update(boot_low=float(boot.confidence_interval.low), boot_high=float(boot.confidence_interval.high))
            out[arm][m] = s
    return out


def comparisons(units: dict, arms: list[str], primary: str) -> dict:
    """Every arm against each reference arm present, on every metric; Holm over the arms compared
    with the same reference, on the primary metric."""
    out: dict = {}
    for ref in REFERENCES:
        if ref not in units:
            continue
        block = {}
        for arm in arms:
            if arm == ref or arm not in units or arm == "full-real" or (ref != "baseline" and not arm.startswith("+")):
                continue
            block[arm] = {m: paired_difference(*_paired(units[arm][m], units[ref][m])) for m in SCALAR_METRICS}
        adjusted = holm({arm: c[primary]["p_ttest"] for arm, c in block.items()})
        for arm, p in adjusted.items():
            block[arm][primary]["p_holm"] = p
        out[ref] = block
    return out


def answer(comps: dict, arms: list[str], primary: str, unit: str, n_units: int) -> list[str]:
    """The question answered in words, first lines of the report."""
    synthetic = [a for a in arms if a.startswith("+") and a != "+dup"]
    lines = [f"Primary metric: **{primary}**, paired over {n_units} {unit}s (the unit of inference)."]
    if unit == "seed":
        lines.append("With one replicate the intervals are over classifier seeds only: they are conditional on "
                     "one real subset and one generator draw; use `--replicates 3` or more for conclusions.")
    if not synthetic:
        return lines + ["No synthetic arm was run."]
    helped = []
    for arm in synthetic:
        parts = []
        beats_all = True
        for ref in REFERENCES:
            c = comps.get(ref, {}).get(arm, {}).get(primary)
            if c is None:
                continue
            ci = f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]" if not math.isnan(c["ci_low"]) else "no interval"
            p = c.get("p_holm")
            parts.append(f"vs {ref} {c['mean_diff']:+.4f} (95% CI {ci}" + (f", Holm p = {p:.3g})" if p is not None
                                                                          else ")"))
            beats_all &= not math.isnan(c["ci_low"]) and c["ci_low"] > 0
        lines.append(f"- **{arm}**: " + "; ".join(parts) + ".")
        if beats_all:
            helped.append(arm)
    present = [r for r in REFERENCES if r in comps]
    refs = present[0] if len(present) == 1 else f"{', '.join(present[:-1])} and {present[-1]}"
    if helped:
        lines.append(f"{', '.join(helped)} beat {refs} with 95% intervals above zero.")
    else:
        lines.append(f"**No synthetic arm beat {refs} with a 95% interval above zero: on this data and budget, "
                     "the synthetic images did not help beyond what the reference arms give.**")
    return lines


def quality_vs_gain(quality: dict[str, list[dict]], units: dict, arm_of: dict[str, str], primary: str) -> dict:
    """Per quality metric: points (source, replicate, quality, gain over the baseline) and Spearman's rho."""
    metrics = {"fid": lambda q: q.get("fid"), "kid": lambda q: q.get("kid_mean"),
               "precision": lambda q: q.get("precision"), "recall": lambda q: q.get("recall"),
               "cas": lambda q: (q.get("cas") or {}).get(primary)}
    out = {}
    for name, get in metrics.items():
        points = []
        for source, per_rep in quality.items():
            arm = arm_of.get(source)
            if arm not in units or "baseline" not in units:
                continue
            for q in per_rep:
                r = q["replicate"]
                gain_unit = units[arm][primary].get(r), units["baseline"][primary].get(r)
                if get(q) is not None and None not in gain_unit:
                    points.append({"source": source, "replicate": r, "quality": get(q),
                                   "gain": gain_unit[0] - gain_unit[1]})
        rho = p = None
        xs, ys = [pt["quality"] for pt in points], [pt["gain"] for pt in points]
        if len(points) >= 3 and np.std(xs) > 0 and np.std(ys) > 0:
            res = stats.spearmanr(xs, ys)
            rho, p = float(res.statistic), float(res.pvalue)
        out[name] = {"points": points, "spearman_rho": rho, "p": p, "n": len(points)}
    return out


def scarcity_gap(summ: dict, primary: str) -> dict:
    """Fraction of the gap between the baseline and full-real that each arm recovers (primary metric)."""
    if "full-real" not in summ:
        return {}
    base, ceiling = summ["baseline"][primary]["mean"], summ["full-real"][primary]["mean"]
    gap = ceiling - base
    return {arm: (s[primary]["mean"] - base) / gap if gap else math.nan for arm, s in summ.items()
            if arm not in ("baseline", "full-real")}
