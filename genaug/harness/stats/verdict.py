"""The decision rule every report follows, and the sentence that states its outcome.

Two rules, declared before the run (`decision_rule`):

**iut** (the default since 0.2). An augmented arm (synthetic, semi-supervised) **helped** when it
beats every one of its references: the declared reference of the primary contrast (`reference`,
baseline-strong by default) and its matched duplicate arm (`+dup`, or `+dup:<arm>`). "Better than
every reference" is an intersection-union claim: each reference is tested at level alpha with no
correction across references, so the arm's p is the largest of its references' paired t-test p
values; Holm's step-down then runs over the augmented arms alone. Against the classical
`baseline` the arms are secondary contrasts, listed as such; the positive control `+real@N` and
the headroom arms are compared with the reference outside the family (`headroom.py`'s report).

**holm-all** (folders from before 0.2). The family is every augmented arm against every reference
present (baseline, baseline-strong, +dup); Holm adjusts the family's p-values; an arm helped when
it helped against every reference.

Under either rule a pair is **better** only when
- its Holm-adjusted p is below `alpha`, and
- its adjusted interval lies above zero. The interval of the pair at Holm step i (p-values in
  ascending order) is the t interval at confidence 1 - alpha / (m - i + 1); from the first step
  Holm does not reject on, every later pair takes that step's level. So an interval excludes
  zero exactly when Holm rejects (the step-down intervals that agree with the test), and
- a distribution-free test could have reached `alpha` with this many units (the exact Wilcoxon
  floor 2 / 2^n at most `alpha`: 6 units at alpha 0.05); with fewer, the t-test's p rests on the
  normality of a handful of differences alone, and no claim is made.

Zero variance or one unit: no test, no claim, with the reason. A pair is **worse** when Holm
rejects with the interval below zero.
"""

from __future__ import annotations

import math

import numpy as np

from . import coverage
from .analysis import paired_values
from .power import design_power, floor_units
from .paired import holm, paired_difference, t_half_width
from ...classifiers.metrics import SCALAR_METRICS

REFERENCES = ("baseline", "baseline-strong", "+dup")
DEFAULT_ALPHA = 0.05
DEFAULT_MIN_EFFECT = 0.03
POWER_TARGET = 0.8


def is_dup(arm: str) -> bool:
    return arm == "+dup" or arm.startswith("+dup:")


def is_control(arm: str) -> bool:
    """Arms beside the family: duplicates, the positive control, the headroom arms, the ceiling."""
    return is_dup(arm) or arm.startswith("+real@") or arm.startswith("headroom@") or arm == "full-real"


def augmented(arm: str) -> bool:
    """An arm that adds images (synthetic, unlabelled): a member of the declared family."""
    return arm.startswith("+") and not is_control(arm)


def matched_dup(arm: str, arms: list[str]) -> str | None:
    """The duplicate arm matched to `arm` (its own `+dup:<arm>`, else the one `+dup`), if run."""
    own = f"+dup:{arm[1:]}"
    return own if own in arms else "+dup" if "+dup" in arms else None


def family_arms(config: dict) -> list[str]:
    """The augmented arms an experiment's config plans (synthetic and semi-supervised)."""
    from ..design.arms import plan_arms

    return [a.name for a in plan_arms(config) if augmented(a.name)]


def references(arm: str, arms: list[str], reference: str | None) -> list[str]:
    """What an augmented arm must beat under the iut rule: the reference, then its matched +dup."""
    dup = matched_dup(arm, arms)
    return [r for r in (reference, dup) if r is not None and r in arms]


def compared(arm: str, ref: str) -> bool:
    """Which pairs a holm-all report computes: every arm against the baseline, augmented arms against
    every reference (the controls against the baseline are shown, but outside the family)."""
    if arm == ref or arm == "full-real":
        return False
    return ref == "baseline" or augmented(arm)


def comparisons(units: dict, arms: list[str], primary: str, alpha: float = DEFAULT_ALPHA,
                metrics: tuple[str, ...] = SCALAR_METRICS, rule: str = "holm-all",
                reference: str | None = None) -> dict:
    """{reference: {arm: {metric: paired difference}}}; on the primary metric, the family's Holm p,
    the adjusted interval and the decision (see the module docstring)."""
    if rule == "iut":
        return _iut_comparisons(units, arms, primary, alpha, metrics, reference)
    out: dict = {}
    for ref in REFERENCES:
        if ref not in units:
            continue
        out[ref] = {arm: {m: paired_difference(*paired_values(units[arm][m], units[ref][m])) for m in metrics}
                    for arm in arms if arm in units and compared(arm, ref)}
    family = {(ref, arm): block[primary] for ref, blocks in out.items() for arm, block in blocks.items()
              if augmented(arm)}
    decide(family, alpha)
    for ref, blocks in out.items():
        for arm, block in blocks.items():
            if (ref, arm) not in family:
                block[primary].update(in_family=False, p_holm=None, decision="control",
                                      reason="a control against the baseline: not in the declared family")
    return out


def _iut_comparisons(units: dict, arms: list[str], primary: str, alpha: float, metrics: tuple[str, ...],
                     reference: str | None) -> dict:
    """The iut rule: every augmented arm against its references (the family), every arm against the
    baseline (secondary), the positive control and headroom arms against the reference (controls)."""
    present = [a for a in arms if a in units]
    out: dict = {}

    def pair(arm: str, ref: str) -> None:
        if arm != ref and arm in units and ref in units:
            out.setdefault(ref, {})[arm] = {m: paired_difference(*paired_values(units[arm][m], units[ref][m]))
                                            for m in metrics}

    refs = {arm: references(arm, present, reference) for arm in present}
    for arm in present:
        if augmented(arm):
            for ref in refs[arm]:
                pair(arm, ref)
        elif reference and (arm.startswith("+real@") or arm.startswith("headroom@") or arm == "full-real"):
            pair(arm, reference)
        if "baseline" not in refs[arm]:
            pair(arm, "baseline")
    family = {arm: [out[r][arm][primary] for r in refs[arm]] for arm in present if augmented(arm) and refs[arm]}
    intersection = {arm: {"p_ttest": (None if any(c["p_ttest"] is None for c in cs) else max(c["p_ttest"] for c in cs))}
                    for arm, cs in family.items()}
    decide(intersection, alpha)
    for arm, cs in family.items():
        joint = intersection[arm]
        for c in cs:
            c.update(in_family=True, family_size=joint["family_size"], alpha=alpha, p_iut=joint["p_ttest"],
                     p_holm=joint["p_holm"], adj_low=math.nan, adj_high=math.nan, adj_confidence=None)
            if joint["p_holm"] is not None and c["p_ttest"] is not None:
                d = np.asarray(c["diffs"], float)
                level = 1 - alpha / joint["holm_divisor"]
                half = t_half_width(float(d.std(ddof=1)), len(d), level)
                c.update(holm_divisor=joint["holm_divisor"], adj_low=float(d.mean() - half),
                         adj_high=float(d.mean() + half), adj_confidence=level)
            c["decision"], c["reason"] = _decision(c, alpha)
    for ref, blocks in out.items():
        for arm, block in blocks.items():
            if not block[primary].get("in_family"):
                role = "a secondary contrast" if augmented(arm) else "a control"
                block[primary].update(in_family=False, p_holm=None, decision="secondary" if augmented(arm) else "control",
                                      reason=f"{role}: not in the declared family")
    return out


def decide(family: dict, alpha: float) -> None:
    """Holm over the family, step-down intervals and the decision, written into each comparison."""
    adjusted = holm({key: c["p_ttest"] for key, c in family.items()})
    ranked = sorted((key for key in family if adjusted[key] is not None), key=lambda k: family[k]["p_ttest"])
    tested = len(ranked)
    divisor_from_failure = None
    for i, key in enumerate(ranked):
        if divisor_from_failure is None and adjusted[key] >= alpha:
            divisor_from_failure = tested - i
        family[key]["holm_divisor"] = divisor_from_failure or tested - i
    for key, c in family.items():
        c.update(in_family=True, family_size=tested, alpha=alpha, p_holm=adjusted[key], adj_low=math.nan,
                 adj_high=math.nan, adj_confidence=None)
        if adjusted[key] is not None and "diffs" in c:
            d = np.asarray(c["diffs"], float)
            level = 1 - alpha / c["holm_divisor"]
            half = t_half_width(float(d.std(ddof=1)), len(d), level)
            c.update(adj_low=float(d.mean() - half), adj_high=float(d.mean() + half), adj_confidence=level)
        if "diffs" in c:
            c["decision"], c["reason"] = _decision(c, alpha)


def _decision(c: dict, alpha: float) -> tuple[str, str]:
    if c["p_holm"] is None:
        return "no claim", c.get("note", "no test")
    if c["wilcoxon_min_p"] > alpha:
        ties = (f", {c['n'] - c['nonzero']} of them tied (the exact Wilcoxon test drops a zero difference), so only "
                f"{c['nonzero']} count:") if c["nonzero"] < c["n"] else ""
        return "no claim", (f"with {c['n']} units{ties} no distribution-free test can reach p < {alpha:g} (exact "
                            f"Wilcoxon floor {c['wilcoxon_min_p']:.3g}); at least {floor_units(alpha)} nonzero "
                            f"paired differences are needed")
    if c["p_holm"] < alpha and c["adj_low"] > 0:
        return "better", f"Holm p {c['p_holm']:.3g} < {alpha:g}, adjusted interval above zero"
    if c["p_holm"] < alpha and c["adj_high"] < 0:
        return "worse", f"Holm p {c['p_holm']:.3g} < {alpha:g}, adjusted interval below zero"
    return "no difference shown", f"Holm p {c['p_holm']:.3g} >= {alpha:g}"


def power_table(comps: dict, primary: str, alpha: float, min_effect: float, power: float = POWER_TARGET,
                units: int | None = None) -> dict:
    """Per family pair: the observed SD of the paired differences, the smallest effect detectable at
    `power` after Holm (level alpha / m) with the design's units (or `units`, for planning) and the
    units `min_effect` needs."""
    out: dict = {}
    for ref, blocks in comps.items():
        for arm, block in blocks.items():
            c = block[primary]
            if not c.get("in_family"):
                continue
            d = np.asarray(c["diffs"], float)
            sd = float(d.std(ddof=1)) if len(d) > 1 else None
            out.setdefault(ref, {})[arm] = design_power(sd, units or len(d), alpha, c["family_size"], min_effect,
                                                        power)
    return out


def _refs_text(refs: list[str]) -> str:
    return refs[0] if len(refs) == 1 else f"{', '.join(refs[:-1])} and {refs[-1]}"


def _interval(c: dict) -> str:
    if c.get("adj_confidence") is None or math.isnan(c.get("adj_low", math.nan)):
        return "no interval"
    return f"{c['adj_confidence']:.2%} interval [{c['adj_low']:+.4f}, {c['adj_high']:+.4f}]"


def answer(comps: dict, arms: list[str], primary: str, unit: str, n_units: int, alpha: float = DEFAULT_ALPHA,
           power: dict | None = None, min_effect: float = DEFAULT_MIN_EFFECT, post_hoc: list[str] | None = None,
           rule: str = "holm-all", reference: str | None = None) -> list[str]:
    """The question answered in words: the first lines of the report, following the decision rule."""
    if rule == "iut":
        first = (f"Primary metric: **{primary}**, paired over {n_units} {unit}s (the unit of inference). Decision "
                 f"rule, declared before the run: an augmented arm helped when it beats {reference} and its matched "
                 f"+dup, each paired t-test at {alpha:g} (an intersection-union test: no correction across the two), "
                 f"with Holm over the augmented arms and adjusted intervals above zero; no claim with fewer units "
                 "than an exact test needs. Against the classical baseline the arms are secondary contrasts.")
    else:
        first = (f"Primary metric: **{primary}**, paired over {n_units} {unit}s (the unit of inference). Decision "
                 f"rule, declared before the run: an arm helped against a reference when its Holm-adjusted p over the "
                 f"family (every augmented arm x reference on {primary}) is below {alpha:g} and its adjusted interval "
                 "lies above zero; no claim with fewer units than an exact test needs.")
    lines = [first]
    if unit == "seed":
        lines.append("With one replicate the intervals are over classifier seeds only: they are conditional on "
                     "one real subset and one generator draw; use `--replicates 6` or more for conclusions.")
    if unit == "fold":
        lines.append("With one replicate the intervals are over cross-validation folds: the folds share most of "
                     "their training images and one labelled subset, so the intervals are optimistic (no unbiased "
                     "variance estimate of K-fold CV exists); use `--replicates 6` or more for conclusions.")
    if post_hoc:
        lines.append("**Post hoc**: " + "; ".join(post_hoc) + ". The tests do not account for adding units after "
                     "looking at results (optional stopping inflates false positives): read this verdict as "
                     "exploratory.")
    synthetic = [a for a in arms if augmented(a)]
    if not synthetic:
        return lines + ["No synthetic arm was run."]
    legacy_refs = [r for r in REFERENCES if r in comps]

    def refs_of(arm: str) -> list[str]:
        return references(arm, arms, reference) if rule == "iut" else legacy_refs

    order = {r: i for i, r in enumerate(REFERENCES)}  # the references in their declared order, then the others
    present = sorted({r for a in synthetic for r in refs_of(a)}, key=lambda r: (order.get(r, len(order)), r))
    helped, worse, partial = [], [], []
    for arm in synthetic:
        parts, outcomes = [], {}
        for ref in refs_of(arm):
            c = comps[ref].get(arm, {}).get(primary)
            if c is None:
                continue
            p = c.get("p_holm")
            parts.append(f"vs {ref} {c['mean_diff']:+.4f} ({_interval(c)}"
                         + (f", Holm p = {p:.3g}" if p is not None else "") + f"): {c['decision']}")
            outcomes[ref] = c["decision"]
        lines.append(f"- **{arm}**: " + "; ".join(parts) + ".")
        if outcomes and all(v == "better" for v in outcomes.values()):
            helped.append(arm)
        elif any(v == "better" for v in outcomes.values()):
            partial.append((arm, [r for r, v in outcomes.items() if v == "better"]))
        worse += [(arm, r) for r, v in outcomes.items() if v == "worse"]
    reasons = sorted({comps[r][a][primary]["reason"] for r in present for a in synthetic
                      if r in comps and a in comps[r] and comps[r][a][primary]["decision"] == "no claim"})
    if rule == "iut":
        present = [reference, "the matched +dup"] if any(is_dup(r) for r in present) else [reference]
    if helped:
        lines.append(f"**{', '.join(helped)} beat {_refs_text(present)} on {primary} by the decision rule.**")
    else:
        semi = any(a in ("+pseudo", "+mpl") or a.startswith("+mpl+") for a in synthetic)
        what = "synthetic or semi-supervised arm" if semi else "synthetic arm"
        added = "the added images (synthetic or unlabelled) did not help" if semi else "the synthetic images did not help"
        lines.append(f"**No {what} beat {_refs_text(present)} by the decision rule: on this data and budget, "
                     f"{added} beyond what the reference arms give.**")
    for arm, refs in partial:
        lines.append(f"{arm} beat {_refs_text(refs)} only, not every reference.")
    if worse:
        lines.append("Worse by the same rule: " + "; ".join(f"{arm} than {ref}" for arm, ref in worse) + ".")
    if reasons:
        lines.append("No claim possible for some pairs: " + "; ".join(reasons) + ".")
    if power:
        lines.append(power_sentence(power, min_effect, unit))
    return lines


def power_sentence(power: dict, min_effect: float, unit: str) -> str:
    rows = [p for block in power.values() for p in block.values() if p.get("min_detectable_effect") is not None]
    if not rows:
        return "Power: no SD of the paired differences to compute it from (fewer than 2 units or zero variance)."
    mde = [p["min_detectable_effect"] for p in rows]
    need = [p["units_needed"]["needed"] for p in rows if p["units_needed"]["needed"] is not None]
    first = rows[0]
    need_text = (f"{min(need)}" if min(need) == max(need) else f"{min(need)} to {max(need)}") if need else "more than 10000"
    return (f"Power: with {first['n']} {unit}s and the observed SDs of the paired differences, the smallest "
            f"difference the design detects with {first['power_target']:.0%} power after Holm (a family of "
            f"{first['family']}, level {first['alpha']:g} / {first['family']}) is "
            + (f"{mde[0]:.4f}" if len(mde) == 1 else f"{min(mde):.4f} to {max(mde):.4f}") + "; "
            f"detecting the declared min_effect of {min_effect:g} needs {need_text} {unit}s.")


def post_hoc_notes(history: list[dict]) -> list[str]:
    """The design changes made after a report existed (optional stopping), in words."""
    return [f"the design became {h['replicates']} replicate(s) x {h['seeds']} seed(s) on {h['time']}, after a "
            "report had been written" for h in history if h.get("after_report")]


def verdict_block(units: dict, arm_names: list[str], primary: str, unit: str, alpha: float, min_effect: float,
                  history: list[dict], metrics: tuple[str, ...] = SCALAR_METRICS, rule: str = "holm-all",
                  reference: str | None = None) -> dict:
    """The comparisons, power table and answer of one long table's units (shared by the report and
    the re-rendering of a finished experiment's results.csv)."""
    comps = comparisons(units, arm_names, primary, alpha, metrics, rule, reference)
    power = power_table(comps, primary, alpha, min_effect)
    n_units = len(next(iter(units.values()))[primary])
    boot = coverage.bootstrap_allowed(n_units)
    return {"comparisons": comps, "power": power,
            "answer": answer(comps, arm_names, primary, unit, n_units, alpha, power, min_effect,
                             post_hoc_notes(history), rule, reference),
            "intervals": {"t": coverage.describe("t", n_units),
                          "bootstrap": coverage.describe("bca", n_units) if boot else None,
                          "bootstrap_left_out": None if boot else
                          coverage.describe("bca", n_units) + f": below {coverage.MIN_COVERAGE:.0%}, not printed"}}
