"""The report's block on the semi-supervised arms: how many unlabelled images each used, and how
right the pseudo-labels were against the withheld true labels (a diagnostic, never a training input)."""

from __future__ import annotations

import numpy as np

from ..stats.text import number as fmt


def semi_block(e, results: list[dict]) -> dict:
    """{arm: {"method", "unlabeled_pool", "labelled_share", "accuracy", "per_class": {class: {...}}}}, means over runs."""
    if not e.config["semi"]:
        return {}
    out = {}
    for arm in (a for a in e.arms if a.kind == "semi"):
        checks = [r["pseudo_labels"] for r in results if r["arm"] == arm.name and r.get("pseudo_labels")]
        runs = [r for r in results if r["arm"] == arm.name]
        entry = {"method": arm.method, "runs": len(runs), "settings": e.config["semi_settings"],
                 "unlabeled_seen": _mean([r["images_seen"].get("unlabeled") for r in runs]),
                 "pseudo_labelled": _mean([r["images_seen"].get("pseudo_labelled") for r in runs])}
        if checks:
            entry["pool"] = _mean([c["pool"] for c in checks])
            entry["labelled_share"] = _mean([c["labelled"] / c["pool"] for c in checks])
            entry["accuracy"] = _mean([c["accuracy"] for c in checks])
            entry["per_class"] = {cls: {"labelled_share": _mean([c["per_class"][cls]["labelled"] / c["per_class"][cls]["pool"]
                                                                 for c in checks if c["per_class"][cls]["pool"]]),
                                        "accuracy": _mean([c["per_class"][cls]["accuracy"] for c in checks])}
                                  for cls in e.classes}
        out[arm.name] = entry
    return out


def _mean(values) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def render_semi(block: dict) -> list[str]:
    if not block:
        return []
    classes = next((list(b["per_class"]) for b in block.values() if b.get("per_class")), [])
    lines = ["## Unlabelled images: pseudo-label check (against the withheld true labels; diagnostic only)", "",
             "+pseudo: the share of the pool whose pseudo-label passed the threshold and how many of those were "
             "right; +mpl: the final teacher's labels on the whole pool. Means over runs.", "",
             "| arm | runs | pool | labelled share | accuracy | " + " | ".join(f"{c}: share / accuracy" for c in classes)
             + " |", "|---" * (5 + len(classes)) + "|"]
    for arm, b in block.items():
        per = [f"{fmt(b['per_class'][c]['labelled_share'], 3)} / {fmt(b['per_class'][c]['accuracy'], 3)}"
               for c in classes] if b.get("per_class") else ["–"] * len(classes)
        lines.append(f"| {arm} | {b['runs']} | {fmt(b.get('pool'), 0)} | {fmt(b.get('labelled_share'), 3)} | "
                     f"{fmt(b.get('accuracy'), 3)} | " + " | ".join(per) + " |")
    settings = next(iter(block.values()))["settings"]
    lines += ["", "Settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()) + ".", ""]
    return lines


def semi_extra(semi: dict | None) -> str:
    """What a semi-supervised arm adds beyond its synthetic images: the pseudo-labelled images
    (+pseudo, mean over runs) or the unlabelled pool the teacher labels (+mpl)."""
    if not semi:
        return ""
    if semi.get("pseudo_labelled") is not None:
        return f" + {semi['pseudo_labelled']:.0f} pseudo-labelled"
    return f" + unlabelled pool of {semi['pool']:.0f}" if semi.get("pool") else ""
