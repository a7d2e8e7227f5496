"""The report's figures (matplotlib, Agg): forest plot, metrics per arm, quality against gain,
dose-response, confusion matrices, grids of accepted and rejected synthetic images."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ...data.images import save_grid
from ...data.imagesets import slug
from ...plots import pyplot, save_figure


def write_figures(e, unit, data, report: dict) -> None:
    """Every figure of the report; the image grids show the first unit's synthetic sets."""
    from ...io import read_json
    from ..stages.accepted import decisions_path
    from ..stages.generation import synthetic_set

    folder = e.folder / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    primary = report["design"]["primary_metric"]
    _forest(report, primary, folder / "forest.png")
    _metrics(report, primary, folder / "metrics.png")
    if report["quality_vs_gain"]:
        _quality_vs_gain(report["quality_vs_gain"], primary, folder / "quality-vs-gain.png")
    if report["dose_response"]:
        _dose(report["dose_response"], primary, folder / "dose-response.png")
    for arm, a in report["arms"].items():
        if a["runs"]:
            _confusion(np.sum([run["confusion_matrix"] for run in a["runs"]], axis=0), e.classes, arm,
                       folder / f"confusion-{arm.replace('+', 'plus-').replace('@', '-at-')}.png")
    for source in e.sources:
        kept_by_class = read_json(decisions_path(e, unit, source))["kept"]
        drawn = synthetic_set(e, unit, data, source)
        for label, name in enumerate(e.classes):
            images = drawn[label]
            kept = set(kept_by_class[name])
            for tag, idx in (("accepted", sorted(kept)), ("rejected", sorted(set(range(len(images))) - kept))):
                if idx:
                    save_grid(images[torch.tensor(idx[:64])], folder / f"{slug(source)}-{slug(name)}-{tag}.png")


def _forest(report: dict, primary: str, path: Path) -> None:
    rows = [(f"{arm} − {ref}", c[primary]) for ref, block in report["comparisons"].items() for arm, c in block.items()]
    if not rows:
        return
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(rows) + 1.2))
    for i, (label, c) in enumerate(reversed(rows)):
        adjusted = c.get("adj_confidence") is not None  # family pairs: the Holm-adjusted interval
        lo, hi = (c["adj_low"], c["adj_high"]) if adjusted else (c["ci_low"], c["ci_high"])
        ax.plot([lo, hi] if not math.isnan(lo) else [c["mean_diff"]] * 2, [i, i], color="#345" if adjusted else "#99a",
                lw=2)
        color = {"better": "#2a7", "worse": "#c33"}.get(c.get("decision"), "#345")
        ax.plot(c["mean_diff"], i, "o", color=color)
    ax.axvline(0, color="#999", lw=1, ls="--")
    ax.set_yticks(range(len(rows)), [label for label, _ in reversed(rows)], fontsize=8)
    ax.set_xlabel(f"paired difference in {primary}\n(mean; Holm-adjusted t interval; grey: controls, 95% t)")
    fig.tight_layout()
    save_figure(fig, path)


def _metrics(report: dict, primary: str, path: Path) -> None:
    arms = [a for a, v in report["arms"].items() if v["summary"]]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.1 * len(arms) + 2, 3.4))
    means = [report["arms"][a]["summary"][primary]["mean"] for a in arms]
    lows = [report["arms"][a]["summary"][primary]["ci_low"] for a in arms]
    err = [m - lo if not math.isnan(lo) else 0 for m, lo in zip(means, lows)]
    colours = {"synthetic": "#3a7", "semi": "#37a"}  # generated images green, unlabelled real images blue
    ax.bar(arms, means, yerr=err, capsize=4, color=[colours.get(report["arms"][a]["kind"], "#888") for a in arms])
    ax.set_ylabel(primary)
    ax.set_ylim(max(0, min(means) - 0.15), min(1, max(means) + 0.1))
    ax.tick_params(axis="x", labelsize=8, rotation=30)
    ax.set_title(f"{primary} per arm, mean with 95% t interval over {report['design']['unit_of_inference']}s",
                 fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def _quality_vs_gain(qvg: dict, primary: str, path: Path) -> None:
    plt = pyplot()
    names = list(qvg)
    fig, axes = plt.subplots(1, len(names), figsize=(3 * len(names), 3))
    for ax, name in zip(np.atleast_1d(axes), names):
        v = qvg[name]
        for source in sorted({p["source"] for p in v["points"]}):
            pts = [p for p in v["points"] if p["source"] == source]
            ax.scatter([p["quality"] for p in pts], [p["gain"] for p in pts], label=source, s=18)
        rho = v["spearman_rho"]
        ax.set_title(f"{name}: rho {rho:.2f}" if rho is not None else name, fontsize=9)
        ax.axhline(0, color="#999", lw=1, ls="--")
        ax.set_xlabel(name, fontsize=8)
    np.atleast_1d(axes)[0].set_ylabel(f"gain in {primary}")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def _dose(dose: dict, primary: str, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for source, points in dose.items():
        xs = [p["count"] for p in points]
        ys = [p["mean_diff"] for p in points]
        lo = [p["mean_diff"] - p["ci_low"] if not math.isnan(p["ci_low"]) else 0 for p in points]
        hi = [p["ci_high"] - p["mean_diff"] if not math.isnan(p["ci_high"]) else 0 for p in points]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=source)
    ax.axhline(0, color="#999", lw=1, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("synthetic images drawn per class")
    ax.set_ylabel(f"gain in {primary} over baseline")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _confusion(cm: np.ndarray, classes: list[str], arm: str, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(classes), 1 + 0.6 * len(classes)))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(classes)), classes, rotation=45, fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{arm} (summed over runs)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
