"""The experiment report: `report.json` (every figure), `report.md` (tables), PNG figures."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from ..data.images import save_grid
from ..data.imagesets import slug
from ..io import sha256_file, write_json, write_text
from ..runs import model_hash
from . import experiment as exp
from .stats import SCALAR_METRICS, paired_difference, summarize, t_half_width

PACKAGES = ("genaug", "torch", "torchvision", "diffusers", "accelerate", "torch-fidelity", "scipy", "scikit-learn")


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _arm_summary(runs: list[dict], classes: list[str]) -> dict:
    summary = {m: summarize([r["test"][m] for r in runs]) for m in SCALAR_METRICS}
    per_class = {c: {k: summarize([r["test"]["per_class"][c][k] for r in runs])["mean"]
                     for k in ("sensitivity", "specificity")} for c in classes}
    cm = np.sum([np.asarray(r["test"]["confusion_matrix"]) for r in runs], axis=0)
    return {"summary": summary, "per_class_mean": per_class, "confusion_matrix_sum": cm.tolist(),
            "runs": [{"seed": r["seed"], "best_epoch": r["best_epoch"], "n_synthetic": r["n_synthetic"],
                      "optimizer_steps": r["optimizer_steps"], **{m: r["test"][m] for m in SCALAR_METRICS}}
                     for r in runs]}


def write_report(e: "exp.Experiment", results: dict[str, list[dict]], acceptance_info: dict) -> dict:
    out = e.out
    arms = {arm: _arm_summary(runs, e.classes) for arm, runs in results.items()}
    comparisons = {arm: {m: paired_difference([r["test"][m] for r in runs], [r["test"][m] for r in results["baseline"]])
                         for m in SCALAR_METRICS}
                   for arm, runs in results.items() if arm != "baseline"}
    report = {
        "protocol": exp.__doc__.split("Protocol (also written into every report):")[1].split("Every stage")[0].strip(),
        "config": e.config,
        "versions": _versions(),
        "data": {"source": e.data, "kind": e.source.kind, "classes": e.classes, "image_size": e.image_size,
                 "channels": e.source.channels, "per_class": e.config["per_class"], "n_real_train": len(e.train_x),
                 "n_val": len(e.val_x), "n_test": len(e.test_x), "split_origin": e.source.split_origin,
                 "validation": e.validation_plan(), "group_by": e.config["group_by"],
                 "fit": e.manifest["fit"], "intensity": e.manifest["intensity"],
                 "manifest_sha256": sha256_file(out / "manifest.json"), "hflip": e.config["hflip"]},
        "generators": {f: {c: {"run": str(e.runs_dir / f / slug(c)), "model_sha256": model_hash(e.runs_dir / f / slug(c))}
                           for c in e.classes} for f in acceptance_info},
        "acceptance": {f: info["decisions"]["rows"] for f, info in acceptance_info.items()},
        "arms": arms,
        "comparisons": comparisons,
    }
    _figures(e, report, acceptance_info)
    write_json(out / "report.json", report)
    write_text(out / "report.md", render_markdown(report))
    return report


def _intensity_text(rule: dict) -> str:
    if rule["rule"] == "dataset" and rule["window"] is None:
        return "8-bit images, unchanged"
    if rule["rule"] == "image":
        return "per-image min-max"
    low, high = rule["window"]
    return f"{rule['rule']} window [{low:.6g}, {high:.6g}] (8-bit images unchanged)"


def _fmt(x: float, digits: int = 4) -> str:
    return "nan" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def _empty_arm(arm: str, a: dict) -> bool:
    return arm != "baseline" and bool(a["runs"]) and all(run["n_synthetic"] == 0 for run in a["runs"])


def _notes(r: dict) -> list[str]:
    """Plain sentences for results that would otherwise read as normal: empty arms, one seed."""
    notes = []
    for arm, a in r["arms"].items():
        if _empty_arm(arm, a):
            notes.append(f"- **{arm} had no accepted synthetic images**: it trained on the same data as the "
                         "baseline, so its difference measures seed noise only, not the generator.")
    n = next(iter(r["arms"].values()))["summary"]["accuracy"]["n"]
    if n < 2:
        notes.append("- **One seed**: a standard deviation, confidence interval or p-value needs at least two "
                     "paired runs, so they read `nan`. Use at least 3 seeds (`--seeds 3`).")
    return ["", *notes] if notes else []


def render_markdown(r: dict) -> str:
    d = r["data"]
    lines = ["# augment-and-train report", "", "## Protocol", "", r["protocol"], "",
             "## Data", "",
             f"Source `{d['source']}` ({d['kind']}), classes {', '.join(d['classes'])}, {d['image_size']} px, "
             f"{d['channels']} channel(s). Real training images: {d['n_real_train']} (+{d['n_val']} validation), "
             f"{d['per_class']} labelled per class in all; test images: {d['n_test']} "
             f"(split: {d['split_origin']}). Validation: {d['validation']}. "
             f"Geometry: {d['fit']}; intensity: {_intensity_text(d['intensity'])}. "
             f"Horizontal flips: {'on' if d['hflip'] else 'off'}. "
             f"Manifest sha256 `{d['manifest_sha256'][:16]}`.", ""]
    if r["acceptance"]:
        lines += ["## Acceptance of synthetic images", "", "| generator | class | policy | seen | kept | rejected |",
                  "|---|---|---|---|---|---|"]
        for family, rows in r["acceptance"].items():
            lines += [f"| {family} | {row['class']} | {row['policy']} | {row['seen']} | {row['kept']} | {row['rejected']} |"
                      for row in rows]
        lines.append("")
    n = next(iter(r["arms"].values()))["summary"]["accuracy"]["n"]
    lines += [f"## Test metrics per arm (mean ± std over {n} seeds)", "",
              "| arm | " + " | ".join(SCALAR_METRICS) + " |", "|---|" + "---|" * len(SCALAR_METRICS)]
    for arm, a in r["arms"].items():
        label = f"{arm} (no accepted images)" if _empty_arm(arm, a) else arm
        lines.append(f"| {label} | " + " | ".join(f"{_fmt(a['summary'][m]['mean'])} ± {_fmt(a['summary'][m]['std'])}"
                                                for m in SCALAR_METRICS) + " |")
    lines += ["", "## Paired difference to the baseline (arm − baseline)", "",
              "| arm | metric | mean diff | 95% CI (t) | p paired t | p Wilcoxon | seeds |",
              "|---|---|---|---|---|---|---|"]
    for arm, comp in r["comparisons"].items():
        for m, c in comp.items():
            lines.append(f"| {arm} | {m} | {_fmt(c['mean_diff'])} | [{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}] | "
                         f"{_fmt(c['p_ttest'], 3)} | {_fmt(c['p_wilcoxon'], 3)} | {c['n_seeds']} |")
    lines += _notes(r)
    lines += ["", "## Per-class sensitivity / specificity (mean over seeds)", "",
              "| arm | " + " | ".join(d["classes"]) + " |", "|---|" + "---|" * len(d["classes"])]
    for arm, a in r["arms"].items():
        lines.append(f"| {arm} | " + " | ".join(f"{_fmt(a['per_class_mean'][c]['sensitivity'], 3)} / "
                                                f"{_fmt(a['per_class_mean'][c]['specificity'], 3)}" for c in d["classes"]) + " |")
    lines += ["", "Figures: `figures/metrics.png`, `figures/confusion-<arm>.png`, "
              "`figures/<generator>-<class>-accepted.png` and `-rejected.png`.", ""]
    return "\n".join(lines)


def _figures(e: "exp.Experiment", report: dict, acceptance_info: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir = e.out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    arms = list(report["arms"])
    fig, axes = plt.subplots(1, len(SCALAR_METRICS), figsize=(3.2 * len(SCALAR_METRICS), 3.2))
    for ax, m in zip(axes, SCALAR_METRICS):
        means, halves = [], []
        for arm in arms:
            s = report["arms"][arm]["summary"][m]
            means.append(s["mean"])
            halves.append(t_half_width(s["std"], s["n"]) if s["n"] > 1 else 0.0)
        ax.bar(arms, means, yerr=halves, capsize=4, color=["#888"] + ["#3a7"] * (len(arms) - 1))
        ax.set_title(m, fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle("test metrics, mean with 95% t interval over seeds", fontsize=9)
    fig.tight_layout()
    _save_fig(fig, fig_dir / "metrics.png")
    for arm in arms:
        cm = np.asarray(report["arms"][arm]["confusion_matrix_sum"])
        fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(e.classes), 1 + 0.6 * len(e.classes)))
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(e.classes)), e.classes, rotation=45, fontsize=8)
        ax.set_yticks(range(len(e.classes)), e.classes, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{arm} (summed over seeds)", fontsize=9)
        fig.tight_layout()
        _save_fig(fig, fig_dir / f"confusion-{arm.replace('+', 'plus-')}.png")
    for family, info in acceptance_info.items():
        for label, name in enumerate(e.classes):
            images = info["synthetic"][label]
            kept = set(info["decisions"]["kept"][name])
            for tag, idx in (("accepted", sorted(kept)), ("rejected", sorted(set(range(len(images))) - kept))):
                if idx:
                    save_grid(images[torch.tensor(idx[:64])], fig_dir / f"{family}-{slug(name)}-{tag}.png")


def _save_fig(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    from ..io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
