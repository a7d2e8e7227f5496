"""Which interval methods cover what they claim at a given number of units.

A 95% interval over three replicates is only a 95% interval if its method covers the true mean
95% of the time at n = 3. `simulate` measures that for the t interval and scipy's percentile
and BCa bootstraps on paired differences drawn from a normal and a right-skewed (gamma with shape 4,
skewness 1) distribution; `scripts/coverage_sim.py` runs it at 3, 5, 10, 20 and 50 units
and writes `coverage.json` beside this module. The report prints a bootstrap interval only
where its simulated coverage is at least `MIN_COVERAGE` on both distributions, and names each
method with its simulated coverage at the report's unit count.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import stats

METHODS = ("t", "percentile", "bca")
DISTRIBUTIONS = ("normal", "skewed")
UNIT_COUNTS = (3, 5, 10, 20, 50)
MIN_COVERAGE = 0.93  # at a nominal 95%: below it, a bootstrap interval is not printed
TABLE = Path(__file__).with_name("coverage.json")
SKEW_SHAPE = 4.0  # gamma shape of the skewed differences (skewness 2 / sqrt(shape) = 1)


def draw(dist: str, size: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Paired differences of a distribution and its true mean."""
    if dist == "normal":
        return rng.normal(0.0, 1.0, size), 0.0
    if dist == "skewed":
        return rng.gamma(SKEW_SHAPE, 1.0, size), SKEW_SHAPE
    raise ValueError(f"unknown distribution {dist!r}")


def intervals(method: str, d: np.ndarray, confidence: float = 0.95, resamples: int = 1999,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise intervals of the mean of `d` (simulations x units)."""
    n = d.shape[1]
    if method == "t":
        half = stats.t.ppf(0.5 + confidence / 2, n - 1) * d.std(axis=1, ddof=1) / math.sqrt(n)
        return d.mean(1) - half, d.mean(1) + half
    res = stats.bootstrap((d,), np.mean, confidence_level=confidence, n_resamples=resamples, axis=1,
                          vectorized=True, method="BCa" if method == "bca" else "percentile",
                          random_state=np.random.default_rng(seed))
    return np.asarray(res.confidence_interval.low), np.asarray(res.confidence_interval.high)


def simulate(method: str, n: int, dist: str, sims: int = 2000, confidence: float = 0.95, resamples: int = 1999,
             seed: int = 0, chunk: int = 250) -> float:
    """Share of `sims` simulated data sets of `n` paired differences whose interval covers the mean
    (a NaN interval, as BCa gives on degenerate resamples, counts as a miss)."""
    rng = np.random.default_rng([seed, n, DISTRIBUTIONS.index(dist), METHODS.index(method)])
    hits = 0
    for start in range(0, sims, chunk):
        d, mean = draw(dist, (min(chunk, sims - start), n), rng)
        with np.errstate(all="ignore"):
            low, high = intervals(method, d, confidence, resamples, seed + start)
        hits += int(np.sum((low <= mean) & (mean <= high)))
    return hits / sims


def table(sims: int = 2000, resamples: int = 1999, seed: int = 0) -> dict:
    """{method: {distribution: {n: coverage}}} at every unit count (what coverage.json holds)."""
    return {"confidence": 0.95, "sims": sims, "resamples": resamples, "seed": seed, "skew_gamma_shape": SKEW_SHAPE,
            "coverage": {m: {dist: {str(n): simulate(m, n, dist, sims, 0.95, resamples, seed) for n in UNIT_COUNTS}
                             for dist in DISTRIBUTIONS} for m in METHODS}}


@lru_cache(maxsize=1)
def committed() -> dict:
    return json.loads(TABLE.read_text())


def coverage_at(method: str, n: int) -> dict[str, float] | None:
    """Simulated coverage per distribution at the largest simulated unit count not above n (None below 3)."""
    counts = [c for c in UNIT_COUNTS if c <= n]
    if not counts:
        return None
    cov = committed()["coverage"][method]
    return {dist: cov[dist][str(counts[-1])] for dist in DISTRIBUTIONS}


def bootstrap_allowed(n: int) -> bool:
    """True where the BCa bootstrap covered at least MIN_COVERAGE on both distributions."""
    cov = coverage_at("bca", n)
    return cov is not None and min(cov.values()) >= MIN_COVERAGE


def describe(method: str, n: int) -> str:
    """'t interval (simulated coverage at 3 units: 95.0% normal, 88.1% skewed)'."""
    cov = coverage_at(method, n)
    name = {"t": "t interval", "percentile": "percentile bootstrap", "bca": "BCa bootstrap"}[method]
    if cov is None:
        return f"{name} (no simulated coverage below {UNIT_COUNTS[0]} units)"
    at = max(c for c in UNIT_COUNTS if c <= n)
    return (f"{name} (simulated coverage of a nominal 95% interval at {at} units: "
            f"{cov['normal']:.1%} normal, {cov['skewed']:.1%} skewed differences)")
