"""The experiment report: `report.json` (every figure), `report.md` (the answer first, then tables),
`results.csv` (the long table of rows), and PNG figures (`figures.py`)."""

from __future__ import annotations

import math

import numpy as np

from ...data.copies import copies_text
from ...data.imagesets import slug
from ...io import read_json, sha256_file, write_json, write_text
from ..stats import analysis
from ..stats.ceiling import budget_text, control_recovered, headroom_report, resolve_min_effect, unconverged_by_arm
from .dose_report import count_dose, share_dose, share_dose_table
from .judgement import judge, versions, write_outputs
from .quality_report import acceptance_tables, quality_tables
from .run_notes import convergence_note, precision_note
from .semi_report import render_semi, semi_block, semi_extra
from ..stats.text import adjusted_interval, interval_methods, number as _f, p_value as _p
from ..run import timing
from ..stats import verdict
from ..stages.accepted import decisions_path, gate_path
from ..stages.classifier_run import result_path
from .protocol import protocol_text
from ..stages.quality import quality_path
from ..design.spec import ExperimentSpec, Unit
from ..run.store import Store
from ..stages.teacher import RECORD, teacher_folder
from ..stages.unit_data import real_subset, validation_plan
from ...classifiers.metrics import SCALAR_METRICS, with_composite

def collect(e, units: list, arms: list | None = None) -> list[dict]:
    """Every classifier run's result, in (replicate, seed, arm, architecture) order."""
    results = [{"classifier": arch, **read_json(result_path(e, unit, arm, k, arch))}
               for unit in units for k in range(int(e.config["seeds"])) for arm in (arms or e.arms)
               for arch in e.architectures]
    return [{**r, "test": with_composite(r["test"])} for r in results]


def write_headroom(e: ExperimentSpec, units: list[Unit]) -> dict:
    """`headroom.md` and `headroom.json` from the headroom stage's runs alone (`genaug headroom`)."""
    c = e.config
    arms = [a for a in e.arms if a.kind in ("headroom", "positive") or a.name == c.get("reference")]
    results = [r for r in collect(e, units, arms) if r["classifier"] == e.architectures[0]]
    unit, by_unit = analysis.unit_values(analysis.rows_of(results), int(c["replicates"]), bool(c["cv"]))
    names = [a.name for a in arms]
    alpha, primary = float(c["alpha"]), c["primary_metric"]
    comps = verdict.comparisons(by_unit, names, primary, alpha, rule="iut", reference=c.get("reference"))
    n_family = max(1, len(verdict.family_arms(c)))
    summ = analysis.summaries(by_unit)
    room = _headroom(c, comps, summ, n_family, resolve_min_effect(c["min_effect"], summ, primary, c.get("reference"))[0],
                     results)
    not_converged = sum(1 for r in results if r.get("converged") is False)
    text = ["# Headroom", "", room["sentence"] if room else "No headroom arm or positive control was run.", "",
            *_headroom_section(room, primary),
            f"{len(results)} runs ({unit}s: {len(next(iter(by_unit.values()))[primary])}); step budget "
            f"{c['steps']}; {not_converged} run(s) not converged. The family size for the detectable difference: "
            f"{n_family} augmented arm(s) planned.", ""]
    write_json(e.folder / "headroom.json", {"headroom": room, "comparisons": comps, "unit": unit})
    write_text(e.folder / "headroom.md", "\n".join(text))
    return room or {}


def _headroom(c: dict, comps: dict, summ: dict, n_family: int, min_effect: float, results: list[dict]) -> dict | None:
    """The headroom block both reports open with (stats/ceiling.py), with how its points were trained."""
    room = headroom_report(comps, summ, c["primary_metric"], c.get("reference"), float(c["alpha"]), n_family,
                           min_effect, unconverged_by_arm(results))
    if room:
        room["budget"] = budget_text(c)
    return room


def _ensemble_block(results: list[dict], test_labels: dict, classes: list[str], arm_names: list[str],
                    primary: str, n_rep: int, cv: bool, alpha: float) -> dict:
    ens = analysis.ensembles(results, test_labels, classes)
    units = analysis.ensemble_units(ens, n_rep, cv)
    return {"runs": [{k: v for k, v in row.items() if k != "test"} | {m: row["test"][m] for m in SCALAR_METRICS}
                     for row in ens],
            "summary": analysis.summaries(units),
            "vs_baseline": verdict.comparisons(units, arm_names, primary, alpha).get("baseline", {})}


def _architecture_block(results: list[dict], n_replicates: int, cv: bool, arm_names: list[str], primary: str,
                        alpha: float) -> dict:
    """Summary and paired differences to the baseline of one further architecture's single models."""
    unit, units = analysis.unit_values(analysis.rows_of(results), n_replicates, cv)
    return {"unit_of_inference": unit, "summary": analysis.summaries(units),
            "vs_baseline": verdict.comparisons(units, arm_names, primary, alpha).get("baseline", {})}


def write_report(e: ExperimentSpec, replicates: list[Unit]) -> dict:
    """The report of spec `e` over its units, from the stages' outputs and records."""
    from .figures import write_figures

    c = e.config
    primary = c["primary_metric"]
    every_run = collect(e, replicates)
    history = e.history
    results = [r for r in every_run if r["classifier"] == e.architectures[0]]  # the headline architecture
    rows = analysis.rows_of(results)
    n_rep, cv = int(c["replicates"]), bool(c["cv"])
    cells = analysis.unit_values(rows, n_rep, cv, unit="cell")[1]  # one value per (replicate, fold)
    arm_names = [a.name for a in e.arms]
    j = judge(e, rows, arm_names, SCALAR_METRICS)
    unit, summ, min_effect, min_effect_note, judged = j.unit, j.summary, j.min_effect, j.min_effect_note, j.verdict
    alpha = float(c["alpha"])
    comps = judged["comparisons"]
    n_family = sum(1 for a in arm_names if verdict.augmented(a))
    room = _headroom(c, comps, summ, n_family, min_effect, results)
    if room:
        room["recovered"] = control_recovered(room, summ, primary, [a for a in arm_names if verdict.augmented(a)])
    max_count = max(c["synthetic_per_class"])
    arm_of = {a.source: a.name for a in e.arms if a.kind == "synthetic" and a.count == max_count}
    quality = ({s: [{**read_json(quality_path(e, rep, s)), "replicate": rep.replicate, "fold": rep.fold}
                    for rep in replicates] for s in e.sources}
               if c["quality"] else {})
    data = {rep: real_subset(e, rep) for rep in replicates}  # reloaded from each unit's manifest
    first = data[replicates[0]]
    test_labels = {rep.replicate: data[rep].test_y.numpy() for rep in replicates}
    plan = validation_plan(e, replicates[0], first)
    report = {
        "headroom": room,
        "answer": ([room["sentence"]] if room else []) + judged["answer"],
        "protocol": protocol_text(c, patients_known=first.patients_known, validation=plan,
                                  seed_scheme=c["seed_scheme"], alpha=alpha, min_effect=min_effect),
        "design": {"replicates": n_rep, "cv_folds": c["cv"], "seeds": int(c["seeds"]), "unit_of_inference": unit,
                   "primary_metric": primary, "secondary_metrics": [m for m in SCALAR_METRICS if m != primary],
                   "alpha": alpha, "min_effect": min_effect, "min_effect_from": min_effect_note,
                   "select_metric": c["select_metric"] or primary,
                   "seed_scheme": c["seed_scheme"], "intervals": judged["intervals"], "history": history},
        "config": c,
        "versions": versions(),
        "data": {"source": e.data, "kind": e.source.kind, "classes": e.classes, "image_size": e.image_size,
                 "channels": e.source.channels, "per_class": c["per_class"], "n_real_train": len(first.train_x),
                 "n_val": len(first.val_x), "n_test": len(first.test_x), "split_origin": e.source.split_origin,
                 "validation": plan, "group_by": c["group_by"], "fit": first.manifest["fit"],
                 "intensity": first.manifest["intensity"], "hflip": c["hflip"], "copies": first.manifest.get("copies"),
                 "manifest_sha256": [sha256_file(e.unit_folder(rep) / "manifest.json") for rep in replicates]},
        "arms": {a.name: {"kind": a.kind, "source": a.source, "count": a.count,
                          "runs": [_run_summary(r) for r in results if r["arm"] == a.name],
                          "summary": summ.get(a.name, {})} for a in e.arms},
        "comparisons": comps,
        "power": judged["power"],
        "classifiers": {"architectures": e.architectures, "pretrained": bool(c["pretrained"]),
                        "finetune": bool(c["finetune"]), "stem": c["stem"],
                        "bf16": any(r.get("bf16") for r in every_run), "channels_last": bool(c.get("channels_last")),
                        "others": {arch: _architecture_block([r for r in every_run if r["classifier"] == arch],
                                                             n_rep, cv, arm_names, primary, alpha)
                                   for arch in e.architectures[1:]}},
        "ensembles": _ensemble_block(results, test_labels, e.classes, arm_names, primary, n_rep, cv, alpha),
        "ensembles_all_architectures": (_ensemble_block(every_run, test_labels, e.classes, arm_names, primary,
                                                        n_rep, cv, alpha)
                                        if len(e.architectures) > 1 else {}),
        "generators": {s: {cls: [read_json(e.unit_folder(rep) / "synthetic" / s / slug(cls) / "samples.json")["model_sha256"]
                                 for rep in replicates] for cls in e.classes}
                       for s, spec in e.source_specs.items() if "family" in spec},
        "acceptance": {s: [{"replicate": rep.replicate, "fold": rep.fold, **row} for rep in replicates
                           for row in read_json(decisions_path(e, rep, s))["rows"]]
                       for s in e.sources},
        "memorization_gate": ([{"replicate": rep.replicate, "fold": rep.fold, **read_json(gate_path(e, rep))}
                               for rep in replicates] if gate_path(e, replicates[0]).exists() else []),
        "quality": quality,
        "quality_vs_gain": analysis.quality_vs_gain(quality, cells, arm_of, primary) if quality else {},
        "folds": _fold_table(cells, arm_names, primary) if cv else {},
        "pair_confusion": analysis.pair_confusion(results, e.classes, arm_names),
        "dose_response": count_dose(e, comps, primary),
        "share_dose": share_dose(e, j.units, primary),
        "scarcity_gap_recovered": analysis.scarcity_gap(summ, primary),
        "collapsed_runs": _collapsed(results, len(e.classes)),
        "semi": semi_block(e, results),
        "teacher": [{"replicate": rep.replicate, "fold": rep.fold,
                     **{k: v for k, v in read_json(teacher_folder(e, rep) / RECORD).items() if k != "pool_probs"}}
                    for rep in replicates if (teacher_folder(e, rep) / RECORD).exists()],
        "timings": timing.summary(Store(e.folder).records(), [e.unit_folder(rep) for rep in replicates]),
    }
    write_figures(e, replicates[0], first, report)
    if c.get("explain"):
        from ...explain.views import explain_experiment

        report["explain"] = explain_experiment(e.folder, e.folder / "explain", c["explain"], 0, e.data_root,
                                               device=e.device)
    return write_outputs(e, report, rows, render_markdown)


def _fold_table(cells: dict, arm_names: list[str], primary: str) -> dict:
    """{arm: {"replicate/fold": mean over seeds}} on the primary metric, with mean and std over folds."""
    out = {}
    for arm in arm_names:
        by = cells.get(arm, {}).get(primary, {})
        values = list(by.values())
        out[arm] = {"cells": {f"{r}/{f}": v for (r, f), v in sorted(by.items())},
                    "mean": float(np.mean(values)) if values else math.nan,
                    "std": float(np.std(values, ddof=1)) if len(values) > 1 else math.nan}
    return out


def _run_summary(r: dict) -> dict:
    return {"replicate": r["replicate"], "fold": r.get("fold"), "seed": r["seed"], "best_epoch": r["best_epoch"],
            "converged": r.get("converged"), "train_fit": r.get("train_fit"), "bf16": r.get("bf16"),
            "n_extra": r["n_extra"],
            "n_real_train": r["n_real_train"], "optimizer_steps": r["optimizer_steps"],
            "images_seen": r["images_seen"], **{m: r["test"][m] for m in SCALAR_METRICS},
            "per_class": r["test"]["per_class"], "confusion_matrix": r["test"]["confusion_matrix"]}


def _collapsed(results: list[dict], n_classes: int) -> list[dict]:
    """Runs whose balanced accuracy is within 0.02 of chance (1 / classes): a failed training, not a result."""
    return [{"arm": r["arm"], "replicate": r["replicate"], "seed": r["seed"], "seed_index": r["seed_index"],
             "best_epoch": r["best_epoch"],
             "balanced_accuracy": r["test"]["balanced_accuracy"]}
            for r in results if r["test"]["balanced_accuracy"] <= 1 / n_classes + 0.02]


# -- Markdown ----------------------------------------------------------------------------------

def _intensity_text(rule: dict) -> str:
    step = rule.get("preprocess")
    return _rule_text(rule) + (f"; then {step} on every image, real and synthetic" if step else "")


def _rule_text(rule: dict) -> str:
    if rule["rule"] == "dataset" and rule["window"] is None:
        return "8-bit images, unchanged"
    if rule["rule"] == "image":
        return "per-image min-max"
    low, high = rule["window"]
    return f"{rule['rule']} window [{low:.6g}, {high:.6g}] (8-bit images unchanged)"


def render_markdown(r: dict) -> str:
    d, design = r["data"], r["design"]
    primary, unit = design["primary_metric"], design["unit_of_inference"]
    lines = ["# augment-and-train report", "", "## Answer", "", *r["answer"], ""]
    lines += _headroom_section(r.get("headroom"), primary)
    lines += convergence_note(r) + precision_note(r)
    lines += _notes(r)
    lines += ["## Design", "",
              f"{design['replicates']} replicate(s) x "
              + (f"{design['cv_folds']} cross-validation folds x " if design.get("cv_folds") else "")
              + f"{design['seeds']} classifier seed(s); unit of inference: "
              f"{unit}. Primary metric (declared before the run): `{primary}`; secondary: "
              f"{', '.join(design['secondary_metrics'])}. " + _classifier_text(r.get("classifiers")) +
              _history_text(design["history"]), "",
              "## Protocol", "", r["protocol"], "", "## Data", "",
              f"Source `{d['source']}` ({d['kind']}), classes {', '.join(d['classes'])}, {d['image_size']} px, "
              f"{d['channels']} channel(s). Per replicate: {d['n_real_train']} real training images "
              f"(+{d['n_val']} validation), {d['per_class']} labelled per class in all; test images: {d['n_test']} "
              f"(split: {d['split_origin']}). Validation: {d['validation']}. Geometry: {d['fit']}; intensity: "
              f"{_intensity_text(d['intensity'])}. Horizontal flips: {'on' if d['hflip'] else 'off'}."
              + "".join(f" Copies: {line}." for line in copies_text(d.get("copies"))), ""]
    lines += _arm_table(r, primary, unit)
    lines += _comparison_tables(r, primary)
    lines += share_dose_table(r, primary)
    lines += _fold_section(r, primary)
    lines += _pair_confusion_table(r)
    lines += render_semi(r.get("semi", {}))
    lines += _architecture_tables(r, primary)
    lines += _ensemble_table(r, primary, "ensembles", "each arm's seeds")
    lines += _ensemble_table(r, primary, "ensembles_all_architectures", "each arm's seeds and architectures")
    lines += quality_tables(r, primary)
    lines += acceptance_tables(r)
    lines += _explain_section(r.get("explain"))
    lines += timing.render(r.get("timings") or {})
    lines += ["Figures: `figures/forest.png` (paired differences), `figures/metrics.png`, "
              "`figures/quality-vs-gain.png`, `figures/dose-response.png` (several synthetic counts), "
              "`figures/confusion-<arm>.png`, `figures/<source>-<class>-accepted.png` / `-rejected.png` "
              "(replicate 0). Every run: `results.csv`, `report.json`.", ""]
    return "\n".join(lines)


def _headroom_section(h: dict | None, primary: str) -> list[str]:
    """The learning curve of the reference recipe and the positive control, before any verdict."""
    if not h:
        return []
    lines = ["## Headroom", "", f"The reference recipe ({h['reference']}) at more labelled images per class, "
             f"{h.get('budget', 'same step budget')}; {primary}, mean over units with its 95% t interval.", "",
             "| arm | mean | 95% interval |", "|---|---|---|"]
    for row in h["curve"]:
        lines.append(f"| {row['arm']} | {_f(row['mean'])} | [{_f(row['ci_low'])}, {_f(row['ci_high'])}] |")
    pos = h.get("positive")
    if pos:
        lines.append(f"| {pos['arm']} - {h['reference']} | {pos['mean_diff']:+.4f} | "
                     f"[{pos['ci_low']:+.4f}, {pos['ci_high']:+.4f}] |")
    if h.get("recovered"):
        lines += ["", f"Share of the positive control's gain ({pos['arm']} - {h['reference']}, {pos['mean_diff']:+.4f}) "
                  "each augmented arm recovered (its mean gain over the reference divided by it; a point estimate, "
                  "the decision is the rule's): " + ", ".join(f"{a} {v:.0%}" for a, v in h["recovered"].items()) + "."]
    return lines + [""]


def _explain_section(x: dict | None) -> list[str]:
    """Where the classifiers look (replicate 0's saved classifiers, heatmaps for the true class)."""
    if not x:
        return []
    lines = ["## Where the classifiers look", "",
             f"{x['method']} heatmaps of each arm's first saved classifier (replicate 0) for the true class, on "
             f"the same test images: `explain/{x['figures'][0]}`; mean heatmap per class and arm: "
             f"`explain/{x['figures'][1]}`. Agreement of each arm's mean heatmap with the {x['reference']}'s "
             "(Pearson correlation; 1 = looks at the same places):", ""]
    agreement = x["mean_heatmap_correlation_with_reference"]
    if agreement:
        classes = list(next(iter(agreement.values())))
        lines += ["| arm | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
        lines += [f"| {arm} | " + " | ".join("–" if v is None else f"{v:.2f}" for v in row.values()) + " |"
                  for arm, row in agreement.items()]
    return [*lines, ""]


def _classifier_text(x: dict | None) -> str:
    if not x:
        return ""
    archs = x["architectures"]
    how = ("pretrained, fine-tuned" if x["finetune"] else "pretrained, frozen with a trained linear head")
    scratch = "from scratch" + {"small": ", small-image stem", "imagenet": ", ImageNet stem"}.get(x.get("stem", "auto"), "")
    kinds = [f"{a} ({how})" if a == "inception-v3" or x["pretrained"] else f"{a} ({scratch})" for a in archs]
    bf16 = " Forward passes in bf16 (autocast; fp32 weights)." if x.get("bf16") else ""
    bf16 += " Channels-last memory format." if x.get("channels_last") else ""
    return (f"Classifier: {kinds[0]}" + (f"; also {', '.join(kinds[1:])}, reported after the headline tables"
                                         if len(kinds) > 1 else "") + "." + bf16 + " ")


def _history_text(history: list[dict]) -> str:
    if len(history) < 2:
        return ""
    steps = "; ".join(f"{h['time']}: {h['replicates']} replicate(s) x {h['seeds']} seed(s)"
                      + "".join(f", {k} set to {v}" for k, v in (h.get("arms_added") or {}).items())
                      + (" (post hoc: after a report existed)" if h.get("after_report") else "") for h in history)
    return f"The design grew on re-runs (results so far were kept): {steps}."


def _notes(r: dict) -> list[str]:
    """Plain sentences for results that would otherwise read as normal."""
    notes = []
    for arm, a in r["arms"].items():
        if a["kind"] == "synthetic" and a["runs"] and all(run["n_extra"] == 0 for run in a["runs"]):
            notes.append(f"- **{arm} had no accepted synthetic images**: it trained on the same data as the "
                         "baseline, so its difference measures seed noise only, not the generator.")
    n_units = next(iter(r["arms"].values()))["summary"][r["design"]["primary_metric"]]["n"]
    if n_units < 2:
        notes.append("- **One unit**: an interval or p-value needs at least two paired units, so they read `–`. "
                     "Use at least 6 replicates, the fewest with which the decision rule can make a claim.")
    if r["collapsed_runs"]:
        notes.append(f"- **{len(r['collapsed_runs'])} run(s) ended at chance level** (balanced accuracy within 0.02 "
                     "of chance): " + ", ".join(f"{c['arm']} replicate {c['replicate']} seed "
                                                f"{c.get('seed_index', c['seed'])}" for c in r["collapsed_runs"][:5]) + ".")
    return [*notes, ""] if notes else []


def _arm_table(r: dict, primary: str, unit: str) -> list[str]:
    boot = bool((r["design"].get("intervals") or {}).get("bootstrap"))
    lines = [f"## Test metrics per arm (mean over {unit}s, 95% t interval"
             + ("; BCa bootstrap interval for the primary)" if boot else ")"), "",
             f"| arm | extra images | {primary} (95% CI)" + (" [bootstrap]" if boot else "") + " | " +
             " | ".join(m for m in SCALAR_METRICS if m != primary) + " |",
             "|---|---|---|" + "---|" * (len(SCALAR_METRICS) - 1)]
    for arm, a in r["arms"].items():
        s = a["summary"]
        if not s:
            continue
        extra = int(np.mean([run["n_extra"] for run in a["runs"]])) if a["runs"] else 0
        label = f"{arm} (no accepted images)" if a["kind"] == "synthetic" and a["runs"] and extra == 0 else arm
        p = s[primary]
        cell = f"{_f(p['mean'])} ({_f(p['ci_low'])}, {_f(p['ci_high'])})"
        cell += f" [{_f(p['boot_low'])}, {_f(p['boot_high'])}]" if boot else ""
        lines.append(f"| {label} | {extra}{semi_extra(r.get('semi', {}).get(arm))} | {cell} | " + " | ".join(
            f"{_f(s[m]['mean'])} ± {_f(s[m]['std'])}" for m in SCALAR_METRICS if m != primary) + " |")
    lines += _ceiling_text(r)
    return [*lines, ""]


def _ceiling_text(r: dict) -> list[str]:
    """The ceiling's budget, the share of the scarcity gap recovered, and a sentence when it passes 100%."""
    runs = (r["arms"].get("full-real") or {}).get("runs") or []
    if not runs:
        return []
    lines = ["", f"full-real trained {int(np.mean([x['optimizer_steps'] for x in runs]))} optimizer steps on "
             f"{int(np.mean([x['n_real_train'] for x in runs]))} images: the baseline's epochs over its own data."]
    gap = {a: v for a, v in r["scarcity_gap_recovered"].items() if not math.isnan(v)}
    if gap:
        lines.append("Share of the scarcity gap (baseline to full-real) recovered on the primary metric: " +
                     ", ".join(f"{a} {v:.0%}" for a, v in gap.items()) + ".")
    over = [a for a, v in gap.items() if v > 1]
    if over:
        lines.append(f"{', '.join(over)} passed the ceiling (over 100%): full-real is the mean of its own runs, "
                     "not a bound, and with few units the means are noisy; read it as 'about as good as all "
                     "the real images', not as better than them.")
    return lines


def _comparison_tables(r: dict, primary: str) -> list[str]:
    boot = bool((r["design"].get("intervals") or {}).get("bootstrap"))
    lines = []
    for ref, block in r["comparisons"].items():
        if not block:
            continue
        lines += [f"## Paired differences to {ref} (arm − {ref})", "",
                  "| arm | metric | mean diff | Holm-adjusted CI (level) | 95% CI (t) |"
                  + (" BCa bootstrap CI |" if boot else "") + " p paired t | p Holm | decision | p Wilcoxon "
                  "(min attainable) | pairs |", "|---|---|---|---|---|" + ("---|" if boot else "") + "---|---|---|---|---|"]
        for arm, comp in block.items():
            for m in [primary] + [x for x in SCALAR_METRICS if x != primary]:
                c = comp[m]
                tag = f"**{m}**" if m == primary else m
                lines.append(f"| {arm} | {tag} | {_f(c['mean_diff'])} | {adjusted_interval(c)} | [{_f(c['ci_low'])}, "
                             f"{_f(c['ci_high'])}] |" + (f" [{_f(c['boot_low'])}, {_f(c['boot_high'])}] |" if boot else "")
                             + f" {_p(c['p_ttest'])} | {_p(c.get('p_holm'))} | {c.get('decision', '')} | "
                             f"{_p(c['p_wilcoxon'])} ({_p(c['wilcoxon_min_p'])}) | {c['n']} |")
        notes = sorted({c[m]["note"] for c in block.values() for m in SCALAR_METRICS if c[m].get("note")})
        lines += ["", *[f"- {n}" for n in notes]] if notes else []
        lines.append("")
    if lines:
        lines += ["The decision uses the Holm-adjusted interval: the paired t interval at the confidence of the "
                  "pair's Holm step (1 − alpha / d), so it lies above zero exactly when Holm rejects; the family is "
                  "every augmented arm x reference on the primary metric (controls against the baseline are shown "
                  "outside it). Secondary metrics are unadjusted. Interval methods: "
                  + interval_methods(r["design"].get("intervals") or {}) + ". "
                  "The exact Wilcoxon test cannot reach a p-value below its minimum with n nonzero paired "
                  "differences (2 / 2^n: 0.25 with 3, 0.0625 with 5, 0.031 with 6).", ""]
    return lines + _power_table(r)


def _power_table(r: dict) -> list[str]:
    power = r.get("power") or {}
    rows = [(ref, arm, p) for ref, block in power.items() for arm, p in block.items()]
    if not rows:
        return []
    p0 = rows[0][2]
    lines = [f"## Power (paired t-test at level {p0['alpha']:g} / {p0['family']} after Holm, "
             f"{p0['power_target']:.0%} power)", "",
             f"| arm | reference | SD of paired differences | smallest detectable difference | power at min_effect "
             f"{p0['min_effect']:g} | units needed for it (t-test; with the exact-test floor) |", "|---|---|---|---|---|---|"]
    for ref, arm, p in rows:
        need = p.get("units_needed") or {}
        lines.append(f"| {arm} | {ref} | {_f(p['sd'])} | {_f(p['min_detectable_effect'])} | "
                     f"{_f(p['power_at_min_effect'], 2)} | "
                     + (f"{need['t_test']}; {need['needed']}" if need.get("needed") else "–") + " |")
    return [*lines, "", "`genaug plan --experiment DIR` prints the same for planning a study from this one.", ""]


def _pair_confusion_table(r: dict, most: int = 10) -> list[str]:
    """The class pairs the baseline confuses most, and how each arm does on them."""
    pc = r.get("pair_confusion") or {}
    if "baseline" not in pc or len(pc["baseline"]) < 2:
        return []  # two classes: the pair's rate is 1 - accuracy, already in the tables
    pairs = sorted(pc["baseline"], key=lambda k: -pc["baseline"][k])[:most]
    lines = ["## Confusion between class pairs (share of the pair's test images predicted as the other; "
             "mean over runs)", "", "| arm | " + " | ".join(pairs) + " |", "|---|" + "---|" * len(pairs)]
    lines += [f"| {arm} | " + " | ".join(_f(row.get(p)) for p in pairs) + " |" for arm, row in pc.items()]
    if len(pc["baseline"]) > most:
        lines += ["", f"The {most} pairs the baseline confuses most of {len(pc['baseline'])}; all in `report.json`."]
    return [*lines, ""]


def _fold_section(r: dict, primary: str) -> list[str]:
    """Per cross-validation fold (mean over seeds), and mean ± std over folds."""
    folds = r.get("folds") or {}
    if not folds:
        return []
    cells = list(next(iter(folds.values()))["cells"])
    lines = [f"## Cross-validation folds ({primary}, mean over seeds; columns replicate/fold)", "",
             "| arm | " + " | ".join(cells) + " | mean ± std |", "|---|" + "---|" * (len(cells) + 1)]
    for arm, row in folds.items():
        lines.append(f"| {arm} | " + " | ".join(_f(row["cells"].get(k)) for k in cells) +
                     f" | {_f(row['mean'])} ± {_f(row['std'])} |")
    return [*lines, ""]


def _architecture_tables(r: dict, primary: str) -> list[str]:
    """Single-model figures of the architectures after the first (the headline one)."""
    lines = []
    for arch, block in (r.get("classifiers") or {}).get("others", {}).items():
        lines += [f"## Architecture {arch} (single models, mean over {block['unit_of_inference']}s)", "",
                  f"| arm | {primary} (95% CI) | {primary} − baseline (95% CI) | final_score |", "|---|---|---|---|"]
        for arm, s in block["summary"].items():
            p, c = s[primary], block["vs_baseline"].get(arm, {}).get(primary)
            diff = f"{_f(c['mean_diff'])} [{_f(c['ci_low'])}, {_f(c['ci_high'])}]" if c else "–"
            lines.append(f"| {arm} | {_f(p['mean'])} ({_f(p['ci_low'])}, {_f(p['ci_high'])}) | {diff} | "
                         f"{_f(s['final_score']['mean'])} |")
        lines.append("")
    return lines


def _ensemble_table(r: dict, primary: str, key: str, what: str) -> list[str]:
    """Ensembles (mean probabilities) beside the headline architecture's single models."""
    ens = r.get(key) or {}
    if not ens.get("summary"):
        return []
    lines = [f"## Ensembles of {what} (mean probabilities; unit: the replicate)", "",
             f"| arm | members | single models: {primary} | ensemble: {primary} (95% CI) | ensemble − baseline "
             f"ensemble (95% CI) | ensemble final_score |", "|---|---|---|---|---|---|"]
    members = {row["arm"]: row["members"] for row in ens["runs"]}
    for arm, s in ens["summary"].items():
        p, single = s[primary], r["arms"][arm]["summary"][primary]["mean"]
        c = ens["vs_baseline"].get(arm, {}).get(primary)
        diff = f"{_f(c['mean_diff'])} [{_f(c['ci_low'])}, {_f(c['ci_high'])}]" if c else "–"
        lines.append(f"| {arm} | {members[arm]} | {_f(single)} | {_f(p['mean'])} ({_f(p['ci_low'])}, "
                     f"{_f(p['ci_high'])}) | {diff} | {_f(s['final_score']['mean'])} |")
    if next(iter(ens["summary"].values()))[primary]["n"] < 2:
        lines += ["", "One replicate: one ensemble per arm, so no interval; use `--replicates 3` or more."]
    return [*lines, ""]
