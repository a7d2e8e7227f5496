"""Paired statistics across seeds and replicates (scipy.stats); the metrics of one run are
`classifiers/metrics.py`."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from .coverage import bootstrap_allowed


def summarize(values: list[float]) -> dict:
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else float("nan"),
            "n": int(len(arr)), "values": arr.tolist()}


def t_half_width(sd: float, n: int, confidence: float = 0.95) -> float:
    """Half-width of the t confidence interval of a mean of n values with sample std `sd`."""
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n))


def wilcoxon_min_p(n: int) -> float:
    """Smallest two-sided p-value the exact Wilcoxon signed-rank test can reach with n nonzero
    paired differences: 2 / 2^n."""
    return float(2.0 ** (1 - n)) if n >= 1 else math.nan


def paired_difference(treated: list[float], baseline: list[float], confidence: float = 0.95,
                      bootstrap_resamples: int = 9999) -> dict:
    """Paired difference (treated - baseline) over units (replicates): mean, the t interval and,
    where its simulated coverage holds (`coverage.bootstrap_allowed`), a BCa bootstrap interval; paired t-test and exact Wilcoxon signed-rank p-values, the number of pairs
    and the smallest p-value Wilcoxon can reach with that many. A difference with zero variance
    gets no p-value: a note says why."""
    a, b = np.asarray(treated, float), np.asarray(baseline, float)
    if a.shape != b.shape:
        raise ValueError("paired samples must have the same length")
    d = a - b
    n = len(d)
    nonzero = int(np.count_nonzero(np.abs(d) > 1e-12))  # Wilcoxon drops zero differences
    out = {"n": n, "nonzero": nonzero, "mean_diff": float(d.mean()), "diffs": d.tolist(), "confidence": confidence,
           "wilcoxon_min_p": wilcoxon_min_p(nonzero)}
    nan = {"ci_low": math.nan, "ci_high": math.nan, "boot_low": math.nan, "boot_high": math.nan,
           "p_ttest": None, "p_wilcoxon": None}
    if n < 2:
        return {**out, **nan, "note": "one unit: no interval or test (use at least 3)"}
    sd = d.std(ddof=1)
    if np.allclose(d, d[0], rtol=0, atol=1e-12):  # equal up to float noise (metrics are ratios of counts)
        return {**out, **nan,
                "note": f"every paired difference equals {d[0]:.4g}: zero variance, so no interval or test "
                        "is meaningful (identical runs, or too coarse a metric)"}
    half = t_half_width(sd, n, confidence)
    out.update(ci_low=float(d.mean() - half), ci_high=float(d.mean() + half),
               p_ttest=float(stats.ttest_rel(a, b).pvalue),
               p_wilcoxon=float(stats.wilcoxon(a, b, method="exact" if n <= 50 else "auto").pvalue)
               if np.any(d != 0) else 1.0)
    out.update(boot_low=math.nan, boot_high=math.nan)
    if bootstrap_allowed(n):  # only where the BCa bootstrap's simulated coverage holds (coverage.py)
        boot = stats.bootstrap((d,), np.mean, confidence_level=confidence, n_resamples=bootstrap_resamples,
                               method="BCa", random_state=np.random.default_rng(0))
        out.update(boot_low=float(boot.confidence_interval.low), boot_high=float(boot.confidence_interval.high))
    return out


def holm(pvalues: dict[str, float | None]) -> dict[str, float | None]:
    """Holm's step-down adjustment of a family of p-values (None stays None and is not counted)."""
    named = sorted(((p, k) for k, p in pvalues.items() if p is not None and not math.isnan(p)))
    m = len(named)
    adjusted: dict[str, float | None] = {k: None for k in pvalues}
    running = 0.0
    for i, (p, k) in enumerate(named):
        running = max(running, min(1.0, (m - i) * p))
        adjusted[k] = running
    return adjusted
