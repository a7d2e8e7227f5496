"""What the headroom stage's runs say (stages/headroom.py trains them): the learning curve, the ceiling
minus the reference, the positive control's difference and the design's detectable difference, a
go/no-go sentence, and `min_effect` given as a share of the measured headroom."""

from __future__ import annotations

import numpy as np


def resolve_min_effect(min_effect, summ: dict, primary: str, reference: str | None) -> tuple[float, str | None]:
    """(min_effect as a number, how it was set): a share such as "50%" of the measured headroom, the
    best headroom arm's mean minus the reference's (the default 0.03 where nothing was measured)."""
    if not (isinstance(min_effect, str) and min_effect.endswith("%")):
        return float(min_effect), None
    curve = [a for a in summ if a.startswith("headroom@")]
    if reference not in summ or not curve:
        return 0.03, f"{min_effect} of the headroom, and no headroom was measured: 0.03"
    room = max(summ[a][primary]["mean"] for a in curve) - summ[reference][primary]["mean"]
    value = max(float(min_effect[:-1]) / 100 * room, 1e-4)
    return value, f"{min_effect} of the measured headroom {room:+.4f}: {value:.4f}"


def unconverged_by_arm(results: list[dict]) -> dict[str, list[int]]:
    """{arm: [runs not converged, runs]} of classifier results."""
    out: dict[str, list[int]] = {}
    for r in results:
        row = out.setdefault(r["arm"], [0, 0])
        row[0] += r.get("converged") is False
        row[1] += 1
    return out


def budget_text(config: dict) -> str:
    """How the learning curve's points were trained, in words."""
    from ..design.config import HEADROOM_MAX_SCALE

    if config.get("headroom_steps") == "scaled" and config.get("steps"):
        return (f"each point with the step budget scaled by its images over the subset's (from {config['steps']} "
                f"steps, at most {HEADROOM_MAX_SCALE}x)")
    return "same step budget"


def headroom_report(comps: dict, summ: dict, primary: str, reference: str | None, alpha: float,
                    n_family: int, min_effect: float, unconverged: dict | None = None) -> dict | None:
    """What the report opens with: the learning curve, the ceiling minus the reference, the positive
    control's difference with its interval and test, the design's detectable difference, and a
    plain go/no-go sentence (which says where the ceiling's runs did not converge: then the ceiling
    is a lower bound). None where the experiment ran no headroom arm or positive control."""
    from .power import design_power

    curve_arms = [a for a in summ if a.startswith("headroom@")]
    positive = next((a for a in summ if a.startswith("+real@")), None)
    if reference is None or reference not in summ or not (curve_arms or positive):
        return None
    mean = {a: summ[a][primary]["mean"] for a in [reference, *curve_arms] + ([positive] if positive else [])}
    curve = [{"arm": a, "mean": mean[a], "ci_low": summ[a][primary]["ci_low"], "ci_high": summ[a][primary]["ci_high"]}
             for a in [reference, *curve_arms]]
    top = max(curve_arms, key=lambda a: mean[a]) if curve_arms else None
    out = {"reference": reference, "reference_mean": mean[reference], "curve": curve, "ceiling_arm": top,
           "ceiling_minus_reference": None if top is None else mean[top] - mean[reference], "positive": None,
           "ceiling_unconverged": (unconverged or {}).get(top) if top else None, "sentence": ""}
    if positive:
        c = comps.get(reference, {}).get(positive, {}).get(primary)
        if c is not None:
            sd = float(np.std(c["diffs"], ddof=1)) if len(c["diffs"]) > 1 else None
            power = design_power(sd, c["n"], alpha, max(1, n_family), min_effect)
            p = c["p_ttest"]
            detected = (p is not None and p < alpha and c["ci_low"] > 0 and c["wilcoxon_min_p"] <= alpha)
            out["positive"] = {"arm": positive, "mean_diff": c["mean_diff"], "ci_low": c["ci_low"],
                               "ci_high": c["ci_high"], "p_ttest": p, "n": c["n"], "detected": detected,
                               "wilcoxon_min_p": c["wilcoxon_min_p"],
                               "min_detectable_effect": power["min_detectable_effect"]}
    out["sentence"] = go_sentence(out, primary, alpha)
    return out


def control_recovered(h: dict | None, summ: dict, primary: str, arms: list[str]) -> dict[str, float]:
    """{augmented arm: its mean gain over the reference as a share of the positive control's}: how much of
    what real images in a generator's place gave each arm recovered. Empty where the positive control's gain
    was not registered (a share of an undetected gain is noise over noise)."""
    pos = (h or {}).get("positive")
    if not pos or not pos["detected"] or pos["mean_diff"] <= 0:
        return {}
    base = summ[h["reference"]][primary]["mean"]
    return {a: (summ[a][primary]["mean"] - base) / pos["mean_diff"] for a in arms if a in summ}


def go_sentence(h: dict, primary: str, alpha: float) -> str:
    """The go/no-go sentence of a headroom block."""
    from .power import floor_units

    parts = []
    if h["ceiling_arm"] is not None:
        parts.append(f"The reference ({h['reference']}) scores {h['reference_mean']:.4f} {primary}; the best "
                     f"point of the learning curve, {h['ceiling_arm']}, {h['reference_mean'] + h['ceiling_minus_reference']:.4f} "
                     f"(ceiling minus reference {h['ceiling_minus_reference']:+.4f}).")
        missed = h.get("ceiling_unconverged")
        if missed and missed[0]:
            parts.append(f"{missed[0]} of its {missed[1]} runs did not converge (under 95% of their own training "
                         "images right), so the ceiling is a lower bound: more steps could raise it.")
    pos = h["positive"]
    if pos is None:
        parts.append("No positive control was run (the source holds no labelled images beyond the subset), so "
                     "the learning curve's slope is the only evidence of what more images could give.")
        return " ".join(parts)
    mde = pos["min_detectable_effect"]
    few = too_few_units(pos, alpha)  # then a t-test power says nothing of a rule that cannot claim at this size
    mde_text = f"; the design detects {mde:.4f} with 80% power" if mde is not None and not few else ""
    p_text = f"p {pos['p_ttest']:.3g}" if pos["p_ttest"] is not None else "no test"
    parts.append(f"The positive control {pos['arm']} (real images where a generator's would go) moved it "
                 f"{pos['mean_diff']:+.4f} (95% interval [{pos['ci_low']:+.4f}, {pos['ci_high']:+.4f}], {p_text}, "
                 f"{pos['n']} units){mde_text}.")
    if pos["detected"]:
        parts.append(f"**Go**: the design registers the gain of real images at level {alpha:g}, so a synthetic "
                     "arm's null result is informative.")
    elif few:
        parts.append(f"**No-go by the number of units**: the t test clears level {alpha:g} with an interval above "
                     f"zero, but with {pos['n']} units the decision rule's exact Wilcoxon check cannot (its smallest "
                     f"p is {pos['wilcoxon_min_p']:.3g}), so no arm can be declared helped; at least "
                     f"{floor_units(alpha)} replicates can.")
    else:
        parts.append(f"**No-go**: the design does not register even the gain of real images at level {alpha:g}, "
                     "so it cannot answer whether synthetic images help; a null result below says nothing about "
                     "the generator.")
    return " ".join(parts)


def too_few_units(pos: dict, alpha: float) -> bool:
    """The positive control's t test and interval clear alpha, but its units are too few for the rule's
    Wilcoxon check to (2 / 2^n > alpha): the design's size, not the data, says no."""
    p, low, floor = pos.get("p_ttest"), pos.get("ci_low"), pos.get("wilcoxon_min_p")
    return p is not None and p < alpha and low is not None and low > 0 and floor is not None and floor > alpha
