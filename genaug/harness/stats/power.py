"""Power of the paired design: the smallest effect it can detect and the replicates an effect needs.

The verdict's test is a two-sided paired t-test over units (replicates) at level `alpha / m`,
where `m` is the size of the Holm family: Holm's first step tests the smallest p-value at exactly
that level, and every later step at a looser one, so a power figure at `alpha / m` is the
conservative figure for Holm (exact for Bonferroni). Under an effect `delta` and an SD `sd` of
the paired differences, the t statistic follows a noncentral t with n - 1 degrees of freedom and
noncentrality `delta * sqrt(n) / sd` (scipy.stats.nct).

A claim also needs a distribution-free test able to reach `alpha` (the exact Wilcoxon floor
2 / 2^n), so no number of replicates below `floor_units(alpha)` can support one, whatever the power.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, stats

from ...errors import GenaugError

MAX_UNITS = 10_000


def check_power_inputs(power: float | None = None, effect: float | None = None, sd: float | None = None,
                       alpha: float | None = None, family: int | None = None, units: int | None = None) -> None:
    """One-line refusals of values no power computation can take."""
    if power is not None and not 0 < power < 1:
        raise GenaugError(f"power must be between 0 and 1 (got {power})")
    if effect is not None and not effect > 0:
        raise GenaugError(f"the effect must be above 0 (got {effect})")
    if sd is not None and not sd > 0:
        raise GenaugError(f"the SD of the paired differences must be above 0 (got {sd})")
    if alpha is not None and not 0 < alpha < 1:
        raise GenaugError(f"alpha must be between 0 and 1 (got {alpha})")
    if family is not None and family < 1:
        raise GenaugError(f"the family of tests must hold at least 1 test (got {family})")
    if units is not None and units < 2:
        raise GenaugError(f"replicates must be at least 2 for a paired test (got {units})")


def power_of(effect: float, sd: float, n: int, alpha: float = 0.05, family: int = 1) -> float:
    """Probability that the two-sided paired t-test at level alpha / family rejects, with n units."""
    if n < 2:
        return 0.0
    df, level = n - 1, alpha / family
    critical = stats.t.ppf(1 - level / 2, df)
    nc = effect * math.sqrt(n) / sd
    upper = stats.nct.sf(critical, df, nc)
    lower = stats.nct.sf(critical, df, -nc)  # P(T < -c | nc), by symmetry; nct.cdf underflows to NaN far out
    return float(np.nan_to_num(upper) + np.nan_to_num(lower))


def min_detectable_effect(sd: float, n: int, alpha: float = 0.05, family: int = 1, power: float = 0.8) -> float:
    """The smallest effect the design detects with the given power (nan below 2 units)."""
    check_power_inputs(power=power, sd=sd, alpha=alpha, family=family)
    if n < 2:
        return math.nan
    high = sd
    while power_of(high, sd, n, alpha, family) < power:
        high *= 2
    return float(optimize.brentq(lambda d: power_of(d, sd, n, alpha, family) - power, 0.0, high, xtol=1e-10))


def floor_units(alpha: float) -> int:
    """Fewest units whose exact Wilcoxon test can reach a two-sided p at or below alpha (2 / 2^n <= alpha)."""
    return max(2, math.ceil(1 + math.log2(1 / alpha) - 1e-12))


def units_needed(effect: float, sd: float, alpha: float = 0.05, family: int = 1, power: float = 0.8) -> dict:
    """Units the t-test needs for `effect` at `power`, and the distribution-free floor; `needed` is the larger."""
    check_power_inputs(power=power, effect=effect, sd=sd, alpha=alpha, family=family)
    n = 2
    while power_of(effect, sd, n, alpha, family) < power:
        n += 1
        if n > MAX_UNITS:
            return {"t_test": None, "floor": floor_units(alpha), "needed": None}
    floor = floor_units(alpha)
    return {"t_test": n, "floor": floor, "needed": max(n, floor)}


def design_power(sd: float | None, n: int, alpha: float, family: int, min_effect: float, power: float = 0.8) -> dict:
    """What a report states for one comparison: its SD, MDE at `power` after Holm, power at
    `min_effect`, and the units `min_effect` needs."""
    if sd is None or not math.isfinite(sd) or sd <= 1e-12 or n < 2:
        return {"sd": sd, "n": n, "family": family, "alpha": alpha, "power_target": power,
                "min_detectable_effect": None, "power_at_min_effect": None, "min_effect": min_effect,
                "units_needed": None, "note": "no SD of the paired differences (fewer than 2 units or zero variance)"}
    return {"sd": float(sd), "n": n, "family": family, "alpha": alpha, "power_target": power,
            "min_detectable_effect": min_detectable_effect(sd, n, alpha, family, power),
            "power_at_min_effect": power_of(min_effect, sd, n, alpha, family), "min_effect": min_effect,
            "units_needed": units_needed(min_effect, sd, alpha, family, power)}
