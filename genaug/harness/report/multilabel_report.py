"""The report of a multi-label experiment: the answer on the primary metric (macro AUROC unless
declared otherwise) by the same decision rule as every report (verdict.py: the declared reference and
each arm's matched +dup, or Holm over every augmented arm x reference in folders before 0.2, with
intervals and power), then per label the AUROC of every arm and its paired
difference to each reference with a 95% t interval over replicates, so a user sees which findings
gained and which lost (those per-label intervals are not adjusted for the 14 labels: exploratory).
"""

from __future__ import annotations

import math

import numpy as np

from ...io import read_json
from ..stats import analysis, verdict
from ..run import timing
from ..stages.classifier_run import result_path
from ..stages.multilabel_stages import arms as planned_arms, decisions_path, sources, target_names
from ...classifiers.multilabel_metrics import MULTILABEL_METRICS, choose_thresholds, multilabel_metrics
from .judgement import judge, versions, write_outputs
from ..design.spec import ExperimentSpec, Unit
from ..stats.paired import paired_difference
from ..run.store import Store

PER_LABEL = "auroc/"  # the long table's metric name of one label's AUROC


def rows_of(results: list[dict], names: list[str]) -> list[dict]:
    """One row per (replicate, arm, seed, metric): the summaries and each label's AUROC (where the test
    split has both classes of it)."""
    out = []
    for r in results:
        values = {m: r["test"][m] for m in MULTILABEL_METRICS}
        values |= {PER_LABEL + n: r["test"]["per_label"][n]["auroc"] for n in names}
        out += [{"replicate": r["replicate"], "fold": r.get("fold"), "arm": r["arm"], "seed": r["seed_index"],
                 "metric": m, "value": v} for m, v in values.items() if v is not None]
    return out


def per_label_table(units: dict, arms: list[str], names: list[str], comparisons: dict) -> dict:
    """{label: {"mean": {arm: AUROC}, "vs": {reference: {arm: paired difference}}}} over replicates, for
    the pairs the primary metric's `comparisons` hold."""
    out = {}
    for n in names:
        m = PER_LABEL + n
        present = [a for a in arms if m in units.get(a, {})]
        out[n] = {"mean": {a: float(np.mean(list(units[a][m].values()))) for a in present}, "vs": {}}
        for ref, block in comparisons.items():
            if ref in present:
                out[n]["vs"][ref] = {a: paired_difference(*analysis.paired_values(units[a][m], units[ref][m]))
                                     for a in present if a in block}
    return out


def ensembles(results: list[dict], test_y: dict, val_y: dict, names: list[str]) -> dict:
    """Per arm and replicate, the seeds' averaged probabilities scored (thresholds on the averaged
    validation probabilities): {arm: {replicate: metrics}} where an arm has two seeds or more."""
    out: dict = {}
    for arm in sorted({r["arm"] for r in results}):
        for rep in sorted({r["replicate"] for r in results}):
            runs = [r for r in results if r["arm"] == arm and r["replicate"] == rep]
            if len(runs) < 2:
                continue
            val = np.mean([r["val_probs"] for r in runs], axis=0)
            test = np.mean([r["test_probs"] for r in runs], axis=0)
            scored = multilabel_metrics(test_y[rep], test, choose_thresholds(val_y[rep], val), names)
            out.setdefault(arm, {})[rep] = {m: scored[m] for m in MULTILABEL_METRICS}
    return out


def write_multilabel_report(e: ExperimentSpec, units: list[Unit]) -> dict:
    from ..stages.multilabel_stages import real_subset

    c, names = e.config, list(e.classes)
    primary, alpha = c["primary_metric"], float(c["alpha"])
    planned = planned_arms(e)
    arms, kinds = [a.name for a in planned], {a.name: a.kind for a in planned}
    results = [read_json(result_path(e, u, arm, k, e.architectures[0])) for u in units for arm in planned
               for k in range(int(c["seeds"]))]
    rows = rows_of(results, names)
    j = judge(e, rows, arms, MULTILABEL_METRICS)  # no headroom stage with several labels: min_effect as given
    unit, by_unit, summ, min_effect, judged = j.unit, j.units, j.summary, j.min_effect, j.verdict
    data = {u: real_subset(e, u) for u in units}
    first = data[units[0]]
    test_pos = first.test_y.sum(0).tolist()
    report = {
        "answer": judged["answer"],
        "multilabel": True,
        "design": {"replicates": int(c["replicates"]), "seeds": int(c["seeds"]), "unit_of_inference": unit,
                   "primary_metric": primary, "secondary_metrics": [m for m in MULTILABEL_METRICS if m != primary],
                   "alpha": alpha, "min_effect": min_effect, "select_metric": "macro_auroc",
                   "intervals": judged["intervals"], "history": e.history},
        "config": c,
        "versions": versions(),
        "data": {"source": e.data, "kind": e.source.kind, "labels": names, "image_size": e.image_size,
                 "channels": e.source.channels, "split_origin": e.source.split_origin,
                 "per_label_positives_at_least": c["per_class"],
                 "subset": [{"replicate": u.replicate, **data[u].manifest["took"],
                             "train_images": len(data[u].train_x), "validation_images": len(data[u].val_x),
                             "train_positives": data[u].train_y.sum(0).tolist(),
                             "validation_positives": data[u].val_y.sum(0).tolist()} for u in units],
                 "n_test": len(first.test_x), "test_positives": dict(zip(names, test_pos)),
                 "patients_known": first.patients_known, "fit": first.manifest["fit"],
                 "intensity": first.manifest["intensity"], "unused_val_split": "val" in e.source.splits},
        "targets": target_names(e),
        "arms": {a: {"kind": kinds[a], "summary": summ.get(a, {}),
                     "n_extra": [r["n_extra"] for r in results if r["arm"] == a],
                     "best_epoch": [r["best_epoch"] for r in results if r["arm"] == a]} for a in arms},
        "comparisons": judged["comparisons"],
        "power": judged["power"],
        "per_label": per_label_table(by_unit, arms, names, judged["comparisons"]),
        "ensembles": ensembles(results, {u.replicate: data[u].test_y.numpy() for u in units},
                               {u.replicate: data[u].val_y.numpy() for u in units}, names),
        "acceptance": {s: [{"replicate": u.replicate, **row, "accepted_positives":
                            read_json(decisions_path(e, u, s))["kept_positives"]}
                           for u in units for row in read_json(decisions_path(e, u, s))["rows"]]
                       for s in sources(e)},
        "timings": timing.summary(Store(e.folder).records(), [e.unit_folder(u) for u in units]),
    }
    return write_outputs(e, report, rows, render)


def _f(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def _d(c: dict) -> str:
    if c.get("p_ttest") is None:
        return f"{c['mean_diff']:+.4f}"
    return f"{c['mean_diff']:+.4f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"


def _arms_text(r: dict) -> str:
    """What every arm did: the epochs protocol of folders from before 0.2, or the instrument's (a step
    budget, added images at a fixed share, matched +dup per source, the reference's augmentation)."""
    c = r["config"]
    loss = "Every arm: sigmoid outputs, binary cross-entropy" + (" (positive-weighted per label)" if c["pos_weight"] else "")
    targeted = (f"accepted label-set DDPM samples; `-targeted`: label sets holding one of "
                f"{', '.join(r['targets']) or '(none)'} in turn")
    if c.get("reference") is None:
        return (loss + ", the baseline's optimizer steps, epochs selected by validation macro AUROC, per-label "
                "thresholds (F1 and kappa) chosen on the validation part. Arms: baseline, baseline-strong (strong "
                "augmentation with MixUp/CutMix on multi-hot targets), +dup (real images drawn towards rare labels, as "
                f"many as the largest accepted synthetic set), +<source> ({targeted}).")
    share = ("in proportion to their count" if c.get("synthetic_share") is None
             else f"at {c['synthetic_share']:g} of every batch")
    return (loss + f", {c['steps']} optimizer steps, per-label thresholds (F1 and kappa) chosen on the validation part. "
            "Arms: baseline, baseline-strong (strong augmentation with MixUp/CutMix on multi-hot targets), +<source> "
            f"({targeted}), each with its +dup (real images drawn towards rare labels, as many as its accepted set); "
            f"added images {share}, with {c['synthetic_augment']} augmentation. Reference: `{c['reference']}`.")


def render(r: dict) -> str:
    d, design = r["data"], r["design"]
    primary, unit = design["primary_metric"], design["unit_of_inference"]
    arms = list(r["arms"])
    lines = ["# augment-and-train report (several labels per image)", "", "## Answer", "", *r["answer"], "",
             "## Design", "",
             f"{design['replicates']} replicate(s) x {design['seeds']} classifier seed(s); unit of inference: {unit}. "
             f"Primary metric (declared before the run): `{primary}`; secondary: "
             f"{', '.join(design['secondary_metrics'])}. " + _arms_text(r), "",
             "## Data", "",
             f"Source `{d['source']}` ({d['kind']}), {len(d['labels'])} labels, {d['image_size']} px; test split: "
             f"{d['split_origin']}, {d['n_test']} images, "
             + ("patient-disjoint from every training and validation image" if d["patients_known"]
                else "by image (no patient ids)") + ". Each replicate draws "
             + (f"about {r['config']['labelled_images']} labelled images by iterative stratification over patients"
                if r["config"].get("labelled_images") else
                f"at least {d['per_label_positives_at_least']} positive images of every label (and as many without "
                "a finding), whole patients at a time")
             + ", then carves a stratified, patient-disjoint validation part: "
             + "; ".join(f"rep {s['replicate']}: {s['train_images']} training + {s['validation_images']} validation"
                         for s in d["subset"]) + "."
             + (" The source's own val split is not used (the validation part is carved)." if d["unused_val_split"]
                else ""), "",
             f"## Test metrics per arm (mean ± SD over {unit}s)", "",
             "| arm | extra images | " + " | ".join(MULTILABEL_METRICS) + " |",
             "|---|---|" + "---|" * len(MULTILABEL_METRICS)]
    for a in arms:
        s = r["arms"][a]["summary"]
        extra = int(np.mean(r["arms"][a]["n_extra"])) if r["arms"][a]["n_extra"] else 0
        lines.append(f"| {a} | {extra} | " + " | ".join(
            f"{_f(s[m]['mean'])} ± {_f(s[m]['std'])}" if m in s else "n/a" for m in MULTILABEL_METRICS) + " |")
    rule = ("the intersection-union rule: the reference and the matched +dup, Holm over the arms"
            if r["config"].get("decision_rule") == "iut" else "Holm over the family, step-down intervals")
    lines += ["", f"## Paired differences on {primary} ({rule})", "",
              "| arm | vs | mean diff | 95% t interval | Holm p | adjusted interval | decision |",
              "|---|---|---|---|---|---|---|"]
    for ref, block in r["comparisons"].items():
        for a, metrics in block.items():
            c = metrics[primary]
            adj = (f"[{c['adj_low']:+.4f}, {c['adj_high']:+.4f}] ({c['adj_confidence']:.2%})"
                   if c.get("adj_confidence") is not None else "n/a")
            p = c.get("p_holm")
            lines.append(f"| {a} | {ref} | {c['mean_diff']:+.4f} | [{_f(c['ci_low'])}, {_f(c['ci_high'])}] | "
                         f"{'n/a' if p is None else f'{p:.3g}'} | {adj} | {c['decision']} |")
    refs = [ref for ref in verdict.REFERENCES if ref in arms]
    lines += ["", f"## Per-label test AUROC (mean over {unit}s) and paired differences (95% t interval, "
              "not adjusted for the labels: exploratory)", "",
              "| label | test positives | " + " | ".join(arms) + " | " +
              " | ".join(f"{a} − {ref}" for ref in refs for a in arms if verdict.compared(a, ref) and ref == "baseline")
              + " |",
              "|---|---|" + "---|" * len(arms) + "---|" * sum(1 for a in arms if verdict.compared(a, "baseline"))]
    for n, row in r["per_label"].items():
        diffs = row["vs"].get("baseline", {})
        lines.append(f"| {n} | {d['test_positives'][n]} | " + " | ".join(_f(row["mean"].get(a)) for a in arms)
                     + " | " + " | ".join(_d(diffs[a]) if a in diffs else "n/a" for a in arms
                                          if verdict.compared(a, "baseline")) + " |")
    gained = {a: [n for n, row in r["per_label"].items() if a in row["vs"].get("baseline", {})
                  and row["vs"]["baseline"][a].get("ci_low", math.nan) > 0] for a in arms}
    lost = {a: [n for n, row in r["per_label"].items() if a in row["vs"].get("baseline", {})
                and row["vs"]["baseline"][a].get("ci_high", math.nan) < 0] for a in arms}
    lines += ["", "Labels whose unadjusted 95% interval against the baseline lies above zero: "
              + ("; ".join(f"{a}: {', '.join(v)}" for a, v in gained.items() if v) or "none")
              + ". Below zero: " + ("; ".join(f"{a}: {', '.join(v)}" for a, v in lost.items() if v) or "none") + ".",
              ""]
    if r["ensembles"]:
        lines += ["## Seed ensembles (averaged probabilities)", "", f"| arm | {primary} per replicate |", "|---|---|"]
        for a, reps in r["ensembles"].items():
            lines.append(f"| {a} | " + ", ".join(_f(v[primary]) for v in reps.values()) + " |")
        lines.append("")
    lines += ["## Acceptance", "", "| source | replicate | policy | seen | kept | rejected |", "|---|---|---|---|---|---|"]
    for s, rows in r["acceptance"].items():
        for row in rows:
            lines.append(f"| {s} | {row['replicate']} | {row['policy']} | {row['seen']} | {row['kept']} | "
                         f"{row['rejected']} |")
    lines += ["", "FID, KID and precision/recall are not computed for label-set samples (the quality stage is "
              "per class).", ""]
    lines += timing.render(r.get("timings") or {})
    lines += ["Every run: `results.csv` (one row per replicate, arm, seed and metric; `auroc/<label>` per label), "
              "`report.json`.", ""]
    return "\n".join(lines)
