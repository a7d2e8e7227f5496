"""The report's sections on the synthetic images themselves: their quality (FID, KID,
precision/recall, CAS, per-class FIDs beside the real-vs-real floor, which metric predicts the
gain) and their acceptance (per policy, and the memorisation gate's calibration)."""

from __future__ import annotations

import numpy as np

from ..stats import analysis
from ..stats.text import number as _f, p_value as _p


def quality_tables(r: dict, primary: str) -> list[str]:
    if not r["quality"]:
        return []
    lines = ["## Quality of each synthetic set (accepted images against the real training part)", "",
             "| source | replicates | n real / n synthetic | FID | KID | precision | recall | "
             f"CAS {primary} | label fidelity |", "|---|---|---|---|---|---|---|---|---|"]
    for source, per_rep in r["quality"].items():
        def stat(get):
            vals = [get(q) for q in per_rep if get(q) is not None]
            return f"{np.mean(vals):.3f} ± {np.std(vals, ddof=1):.3f}" if len(vals) > 1 else (
                f"{vals[0]:.3f}" if vals else "–")
        counts = f"{per_rep[0]['n_real']} / {int(np.mean([q['n_synthetic'] for q in per_rep]))}"
        lines.append(f"| {source} | {len(per_rep)} | {counts} | {stat(lambda q: q.get('fid'))} | "
                     f"{stat(lambda q: q.get('kid_mean'))} | {stat(lambda q: q.get('precision'))} | "
                     f"{stat(lambda q: q.get('recall'))} | {stat(lambda q: (q.get('cas') or {}).get(primary))} | "
                     f"{stat(lambda q: (q.get('label_fidelity') or {}).get('mean'))} |")
    lines += ["", "FID/KID with this few images are biased upward: compare them only between sources of this "
              "experiment (same counts). CAS: a classifier trained on the accepted synthetic images alone, with "
              "the shared recipe, scored on the real test split. Label fidelity: the share of accepted images that "
              "a classifier trained on the real labelled images (the teacher) assigns to the intended class, "
              "mean over classes (per class in report.json): a sample of the wrong class is label noise.", ""]
    lines += _class_fid_table(r)
    lines += _strength_table(r)
    lines += _teacher_lines(r.get("teacher") or [])
    qvg = r["quality_vs_gain"]
    if qvg:
        lines += [f"Which quality metric predicts the gain over the baseline ({primary}), across sources and "
                  "replicates (Spearman):", "", "| metric | rho | p | points |", "|---|---|---|---|"]
        lines += [f"| {m} | {_f(v['spearman_rho'], 3)} | {_p(v['p'])} | {v['n']} |" for m, v in qvg.items()]
        lines += ["", f"p: exact (every pairing of the points) up to {analysis.EXACT_SPEARMAN_MAX} points, else the t "
                  "approximation; with 3 points no p-value falls below 1/3.", ""]
    return lines


def _strength_table(r: dict) -> list[str]:
    """An edit source's accepted images per strength: count, FID and label fidelity over replicates."""
    rows = {}
    for source, per_rep in r["quality"].items():
        for q in per_rep:
            for strength, row in (q.get("by_strength") or {}).items():
                rows.setdefault((source, float(strength)), []).append(row)
    if not rows:
        return []

    def cell(values, digits):
        values = [v for v in values if v is not None]
        if not values:
            return "–"
        return (f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}" if len(values) > 1
                else f"{values[0]:.{digits}f}")

    lines = ["Edits per strength (the dose-response inside an edit source; FID at these counts only compares "
             "strengths with each other):", "", "| source | strength | images (mean) | FID | label fidelity |",
             "|---|---|---|---|---|"]
    for (source, strength), found in sorted(rows.items()):
        lines.append(f"| {source} | {strength:g} | {np.mean([f['n'] for f in found]):.0f} | "
                     f"{cell([f['fid'] for f in found], 1)} | "
                     f"{cell([(f['label_fidelity'] or {}).get('mean') for f in found], 3)} |")
    return [*lines, ""]


def _class_fid_table(r: dict) -> list[str]:
    """FID per class against the class's real training images, beside the real-vs-real floor."""
    rows = {}
    for source, per_rep in r["quality"].items():
        for q in per_rep:
            for cls, row in (q.get("per_class") or {}).items():
                rows.setdefault(cls, {}).setdefault(source, []).append(row)
    if not rows:
        return []

    def cell(values):
        values = [v for v in values if v is not None]
        if not values:
            return "–"
        return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}" if len(values) > 1 else f"{values[0]:.1f}"

    sources = list(r["quality"])
    lines = ["FID per class against the class's real training images (mean ± sd over replicates), beside the "
             "floor: the FID of as many other real images of the class (train split, never validation or test) "
             "against the same real training images:", "",
             "| class | n real | " + " | ".join(sources) + " | real-vs-real floor (n) |",
             "|---|---|" + "---|" * (len(sources) + 1)]
    for cls, by_source in rows.items():
        first = next(iter(by_source.values()))
        floor = cell([row.get("floor_fid") for row in first])
        lines.append(f"| {cls} | {first[0]['n_real']} | "
                     + " | ".join(cell([row["fid"] for row in by_source.get(s, [])]) for s in sources)
                     + f" | {floor} ({first[0].get('n_floor', '–')}) |")
    return lines + [""]


def _teacher_lines(teachers: list[dict]) -> list[str]:
    """How right the teacher (ddpm-pseudo's pool labels, label fidelity) is on the pool's withheld labels."""
    checks = [t["pool_check"] for t in teachers if t.get("pool_check")]
    if not checks:
        return []
    acc = [c["accuracy"] for c in checks if c.get("accuracy") is not None]
    return [f"The teacher (a classifier on the real labelled images, the baseline's recipe and first seed) labels "
            f"the unlabelled pool at {np.mean(acc):.1%} accuracy against its withheld labels (mean of {len(acc)} "
            "replicate(s); a diagnostic, never used for training).", ""]


def acceptance_tables(r: dict) -> list[str]:
    if not r["acceptance"]:
        return []
    lines = ["## Acceptance of synthetic images (summed over replicates)", "",
             "| source | class | policy | seen | kept | rejected | resembling a labelled / a pool image |",
             "|---|---|---|---|---|---|---|"]
    for source, rows in r["acceptance"].items():
        totals: dict = {}
        for row in rows:
            key = (row["class"], row["policy"])
            t = totals.setdefault(key, [0, 0, 0, None, None])
            t[0], t[1], t[2] = t[0] + row["seen"], t[1] + row["kept"], t[2] + row["rejected"]
            if "rejected_pool" in row:
                t[3], t[4] = (t[3] or 0) + row["rejected_labelled"], (t[4] or 0) + row["rejected_pool"]
        lines += [f"| {source} | {cls} | {policy} | {s} | {k} | {j} | " + ("–" if lab is None else f"{lab} / {pool}")
                  + " |" for (cls, policy), (s, k, j, lab, pool) in totals.items()]
    lines += ["", "A generator that trained on the unlabelled pool is gated against the pool too (its own "
              "thresholds); an image may resemble both.", ""] if any(
        "rejected_pool" in row for rows in r["acceptance"].values() for row in rows) else [""]
    return [*lines, *_edit_table(r["acceptance"]), *_gate_table(r.get("memorization_gate") or [])]


def _edit_table(acceptance: dict) -> list[str]:
    """Edits (ddpm-edit): their mean similarity to their own source image, per strength and space,
    averaged over replicates and classes (the gate judged them against the other real images)."""
    sums: dict = {}
    for source, rows in acceptance.items():
        for row in rows:
            for space, by_strength in (row.get("source_similarity") or {}).items():
                for strength, value in by_strength.items():
                    sums.setdefault((source, space, strength), []).append(value)
    if not sums:
        return []
    lines = ["### Edits and their sources", "",
             "An edit of a real image resembles its source by design: the memorisation gate judged each edit "
             "against every real training image except its own source (with the same thresholds). Its mean "
             "similarity to its source, per strength (0 keeps the image, 1 ignores it):", "",
             "| source | space | strength | similarity to own source |", "|---|---|---|---|"]
    lines += [f"| {source} | {space} | {strength} | {sum(v) / len(v):.3f} |"
              for (source, space, strength), v in sorted(sums.items(), key=lambda kv: (kv[0][0], kv[0][1],
                                                                                       float(kv[0][2])))]
    return [*lines, ""]


def _gate_table(gates: list[dict]) -> list[str]:
    """The memorisation gate's thresholds and how it does, per replicate and class."""
    if not gates:
        return []
    kinds = gates[0]["near_copy_kinds"]
    spaces = gates[0]["spaces"]
    rank = gates[0].get("method") == "rank bound"
    how = (f"a rank (split-conformal) bound at level {gates[0]['quantile']} on the held-out images' nearest-neighbour "
           f"similarities to the real training part, never set by the {gates[0].get('robust', 1)} highest, with "
           "suspected duplicates (a held-out image at or above "
           f"{gates[0].get('duplicate')} in every space) left out; its distribution-free guarantee is the bound on "
           "the false-rejection rate per space below (where too few images calibrate it, exact copies only)"
           if rank else f"the one-sided {gates[0]['quantile']} prediction bound (Fisher z, Student t) for one more "
           "real image's nearest-neighbour similarity to the real training part (an earlier genaug's gate)")
    lines = ["### The memorisation gate", "",
             f"Calibrated per class on the validation images: the threshold is {how}, in {' and '.join(spaces)} "
             "space; a synthetic image at or above it in any space is rejected. Measured per replicate: the share of "
             "near-copies of the training images rejected, and the share of validation images rejected when the "
             "gate is calibrated on the others (leave-one-out).", "",
             "| replicate | class | n calib. | " + ("suspected duplicates | bound per space | " if rank else "")
             + " | ".join(f"threshold {s}" for s in spaces) + " | "
             + " | ".join(f"rejects {k}" for k in kinds) + " | false rejections (LOO) |",
             "|---|---|---|" + ("---|---|" if rank else "") + "---|" * (len(spaces) + len(kinds) + 1)]
    pct = lambda v: "–" if v is None else f"{100 * v:.0f}%"  # noqa: E731
    for g in gates:
        for cls, row in g["per_class"].items():
            extra = (f"{row['suspected_duplicates']} | "
                     + (pct(row["false_rejection_bound"]) if row["false_rejection_bound"] is not None
                        else "exact copies only") + " | ") if rank else ""
            lines.append(f"| {g['replicate']} | {cls} | {row['n_calibration']} | {extra}"
                         + " | ".join(f"{row['thresholds'][s]:.3f}" for s in spaces) + " | "
                         + " | ".join(pct(row[f"rejects_{k}"]) for k in kinds)
                         + f" | {pct(row['false_rejection_loo'])} |")
    return [*lines, ""]
