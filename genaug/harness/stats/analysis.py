"""From the experiment's classifier runs to the figures a reviewer reads.

Input: a long table of rows (replicate, fold, arm, seed, metric, value). The unit of inference
is the replicate (its folds and seeds averaged); with a single replicate it falls back to the
cross-validation fold when there are folds (their training parts overlap, so the intervals are
optimistic), else to the seed, and the report says that the intervals are then conditional on
one subset and one generator draw.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
from scipy import stats

from . import coverage
from .paired import summarize, t_half_width
from ...classifiers.metrics import SCALAR_METRICS


def rows_of(results: list[dict]) -> list[dict]:
    """One row per (replicate, fold, arm, seed, metric); fold is None without cross-validation."""
    return [{"replicate": r["replicate"], "fold": r.get("fold"), "arm": r["arm"], "seed": r["seed_index"],
             "metric": m, "value": r["test"][m]} for r in results for m in SCALAR_METRICS]


def unit_of(replicates: int, cv: bool) -> str:
    return "replicate" if replicates > 1 else "fold" if cv else "seed"


UNIT_KEYS = {"replicate": lambda row: row["replicate"], "fold": lambda row: row["fold"],
             "seed": lambda row: row["seed"], "cell": lambda row: (row["replicate"], row["fold"])}


def unit_values(rows: list[dict], replicates: int, cv: bool = False, unit: str | None = None
                ) -> tuple[str, dict[str, dict[str, dict]]]:
    """{arm: {metric: {unit: value}}}: means per replicate (over its folds and seeds); with one
    replicate per fold (over seeds), or per seed. `unit="cell"` gives one value per
    (replicate, fold), the level at which generators are trained."""
    unit = unit or unit_of(replicates, cv)
    key_of = UNIT_KEYS[unit]
    cells: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for row in rows:
        cells[row["arm"]][row["metric"]][key_of(row)].append(row["value"])
    return unit, {arm: {m: {k: float(np.mean(v)) for k, v in by.items()} for m, by in metrics.items()}
                  for arm, metrics in cells.items()}


def paired_values(a: dict, b: dict) -> tuple[list[float], list[float]]:
    """The values of the units present in both, in one order."""
    keys = sorted(set(a) & set(b))
    return [a[k] for k in keys], [b[k] for k in keys]


def summaries(units: dict) -> dict:
    """Per arm and metric: mean, std, t interval and, where its simulated coverage allows it
    (`coverage.py`), a BCa bootstrap interval over units."""
    out = {}
    for arm, metrics in units.items():
        out[arm] = {}
        for m, by in metrics.items():
            s = summarize(list(by.values()))
            s.update(ci_low=math.nan, ci_high=math.nan, boot_low=math.nan, boot_high=math.nan)
            if s["n"] > 1 and s["std"] > 1e-12:
                half = t_half_width(s["std"], s["n"])
                s.update(ci_low=s["mean"] - half, ci_high=s["mean"] + half)
            if coverage.bootstrap_allowed(s["n"]) and s["std"] > 1e-12:
                boot = stats.bootstrap((np.asarray(s["values"]),), np.mean, n_resamples=9999, method="BCa",
                                       random_state=np.random.default_rng(0))
                s.update(boot_low=float(boot.confidence_interval.low), boot_high=float(boot.confidence_interval.high))
            out[arm][m] = s
    return out


def quality_vs_gain(quality: dict[str, list[dict]], units: dict, arm_of: dict[str, str], primary: str) -> dict:
    """Per quality metric: points (source, replicate, fold, quality, gain over the baseline) and
    Spearman's rho; `units` holds one value per (replicate, fold) cell, where generators are trained."""
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
                cell = (q["replicate"], q.get("fold"))
                gain_unit = units[arm][primary].get(cell), units["baseline"][primary].get(cell)
                if get(q) is not None and None not in gain_unit:
                    points.append({"source": source, "replicate": cell[0], "fold": cell[1], "quality": get(q),
                                   "gain": gain_unit[0] - gain_unit[1]})
        rho = p = None
        xs, ys = [pt["quality"] for pt in points], [pt["gain"] for pt in points]
        if len(points) >= 3 and np.std(xs) > 0 and np.std(ys) > 0:
            rho, p = spearman(xs, ys)
        out[name] = {"points": points, "spearman_rho": rho, "p": p, "n": len(points),
                     "p_method": "exact permutation" if len(points) <= EXACT_SPEARMAN_MAX else "t approximation"}
    return out


EXACT_SPEARMAN_MAX = 7  # 7! = 5040 pairings: exact and quick; above, scipy's t approximation is fair


def spearman(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Spearman's rho and its two-sided p. With a handful of points scipy's t approximation is
    badly wrong (3 points in perfect order get p = 0; every pairing enumerated gives 2/6), so up to
    EXACT_SPEARMAN_MAX points the p-value comes from all pairings (scipy's permutation test)."""
    res = stats.spearmanr(xs, ys)
    rho = float(res.statistic)
    if len(xs) > EXACT_SPEARMAN_MAX:
        return rho, float(res.pvalue)
    ys = np.asarray(ys)
    res = stats.permutation_test((np.asarray(xs),), lambda x: stats.spearmanr(x, ys).statistic,
                                 permutation_type="pairings", n_resamples=math.factorial(len(xs)))
    return rho, float(res.pvalue)


def scarcity_gap(summ: dict, primary: str) -> dict:
    """Fraction of the gap between the baseline and full-real that each arm recovers (primary metric)."""
    if "full-real" not in summ:
        return {}
    base, ceiling = summ["baseline"][primary]["mean"], summ["full-real"][primary]["mean"]
    gap = ceiling - base
    return {arm: (s[primary]["mean"] - base) / gap if gap else math.nan for arm, s in summ.items()
            if arm not in ("baseline", "full-real")}


def ensembles(results: list[dict], test_labels: dict[int, np.ndarray], classes: list[str]) -> list[dict]:
    """Per replicate, fold and arm, the ensemble of its classifiers: mean test probabilities,
    scored like a single run. Runs saved without probabilities (older results) are left out."""
    from ...classifiers.metrics import classification_metrics

    groups: dict = defaultdict(list)
    for r in results:
        if "test_probs" in r:
            groups[(r["replicate"], r.get("fold"), r["arm"])].append(np.asarray(r["test_probs"], float))
    return [{"replicate": rep, "fold": fold, "arm": arm, "members": len(probs),
             "test": classification_metrics(test_labels[rep], np.mean(probs, axis=0), classes)}
            for (rep, fold, arm), probs in groups.items() if len(probs) > 1]


def ensemble_units(ens: list[dict], replicates: int, cv: bool) -> dict:
    """{arm: {metric: {unit: value}}}: an ensemble pools the seeds, so its unit is the replicate
    (its folds averaged), or with one replicate the fold."""
    rows = [{"replicate": e["replicate"], "fold": e["fold"], "arm": e["arm"], "seed": None, "metric": m,
             "value": e["test"][m]} for e in ens for m in SCALAR_METRICS]
    return unit_values(rows, replicates, cv, unit="replicate" if replicates > 1 or not cv else "fold")[1]


def pair_confusion(results: list[dict], classes: list[str], arm_names: list[str]) -> dict:
    """{arm: {"A / B": share of the test images of classes A and B predicted as the other one}},
    mean over runs: where look-alike classes are mixed up (what the CR loss is meant to reduce)."""
    out = {}
    for arm in arm_names:
        cms = [np.asarray(r["test"]["confusion_matrix"], float) for r in results if r["arm"] == arm]
        if not cms:
            continue
        rates = defaultdict(list)
        for cm in cms:
            for i in range(len(classes)):
                for j in range(i + 1, len(classes)):
                    n = cm[i].sum() + cm[j].sum()
                    rates[f"{classes[i]} / {classes[j]}"].append((cm[i, j] + cm[j, i]) / n if n else math.nan)
        out[arm] = {pair: float(np.nanmean(v)) for pair, v in rates.items()}
    return out
