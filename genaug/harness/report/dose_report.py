"""The report's dose-responses: over the synthetic count (`synthetic_per_class` with several
counts, arms `+<source>@<count>`) and over the added images' share of every batch (`share_dose`,
arms `share-<s>:+<source>` beside the declared share's). The count's arms are members of the decision
family, drawn here against the baseline; the share's arms are secondary, outside it."""

from __future__ import annotations

from ..design.arms import share_dose_names
from ..stats import analysis, verdict
from ..stats.paired import paired_difference
from ..stats.text import number as _f, p_value as _p


def count_dose(e, comps: dict, primary: str) -> dict:
    """{source: [{count, difference to the baseline}]} when several synthetic counts are compared."""
    counts = e.config["synthetic_per_class"]
    if len(counts) < 2:
        return {}
    out = {}
    for arm in e.arms:
        if arm.kind == "synthetic":
            c = comps["baseline"][arm.name][primary]
            out.setdefault(arm.source, []).append({"count": arm.count, "mean_diff": c["mean_diff"],
                                                   "ci_low": c["ci_low"], "ci_high": c["ci_high"]})
    return out


def share_dose(e, units: dict, primary: str) -> dict:
    """{source: rows per share}: the arm and its matched +dup at each share of `share_dose` and at the
    declared `synthetic_share` (the decision's arms), each against the reference and the arm against its
    +dup: paired differences with unadjusted 95% t intervals (secondary: outside the decision family)."""
    c = e.config
    dose, reference = c.get("share_dose") or {}, c.get("reference") or "baseline"
    if not dose:
        return {}
    names = [a.name for a in e.arms]

    def diff(a: str | None, b: str) -> dict | None:
        if a not in units:
            return None
        d = paired_difference(*analysis.paired_values(units[a][primary], units[b][primary]))
        return {k: d[k] for k in ("mean_diff", "ci_low", "ci_high", "p_ttest", "n")}

    out: dict = {}
    declared = float(c["synthetic_share"])
    for arm in (a for a in e.arms if a.kind == "synthetic" and a.source in dose and a.count == max(c["synthetic_per_class"])):
        points = [(declared, arm.name, verdict.matched_dup(arm.name, names))]
        points += [(s, *share_dose_names(s, arm.name)) for s in dose[arm.source]]
        rows = []
        for share, name, dup in sorted(points):
            if name not in units or reference not in units:
                continue
            dup = dup if dup in units else None
            rows.append({"share": share, "arm": name, "dup": dup, "declared": share == declared,
                         "vs_reference": diff(name, reference), "dup_vs_reference": diff(dup, reference),
                         "vs_dup": diff(name, dup) if dup else None})
        out[arm.source] = {"reference": reference, "rows": rows}
    return out


def share_dose_table(r: dict, primary: str) -> list[str]:
    """The dose-response over the added images' share (`share_dose`), secondary."""
    dose = r.get("share_dose") or {}
    if not dose:
        return []

    def cell(d: dict | None) -> str:
        if not d:
            return "–"
        return f"{_f(d['mean_diff'])} [{_f(d['ci_low'])}, {_f(d['ci_high'])}], p {_p(d['p_ttest'])}"

    lines = [f"## The added images' share (dose-response on {primary}; secondary)", "",
             "The same accepted images (and the same duplicate draw) at other shares of every batch. Outside the "
             "decision family: unadjusted 95% t intervals, descriptive only; a share chosen after seeing them is "
             "a new hypothesis for a new experiment.", ""]
    for source, block in dose.items():
        ref = block["reference"]
        lines += [f"| {source}: share | arm − {ref} | its +dup − {ref} | arm − its +dup | pairs |", "|---|---|---|---|---|"]
        for row in block["rows"]:
            n = (row["vs_reference"] or {}).get("n", "–")
            lines.append(f"| {row['share']:g}" + (" (declared)" if row["declared"] else "") + f" | {cell(row['vs_reference'])} | "
                         f"{cell(row['dup_vs_reference'])} | {cell(row['vs_dup'])} | {n} |")
        lines.append("")
    return lines
