"""How much there is to gain, measured before any generator trains: the reference recipe at more
labelled images per class (`headroom@N`, `headroom@all`), and the positive control `+real@N`
(the reference recipe with N extra real labelled images per class added through the same share
and budget as a synthetic arm's: what a perfect generator would give).

Extra real images come from the source's train split outside the unit's labelled, validation and
test items and their patients (`data.unlabeled.candidates`), in one seeded order per class and
replicate, so the draws are nested: `+real@50`'s images are the first 50 of `headroom@200`'s.
A source without such images still gets a learning curve inside its labelled set (`headroom@N`
below the labelled count: a seeded share of each class's labelled training images).
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.unlabeled import candidates
from ..errors import GenaugError
from .spec import ExperimentSpec, Unit
from .unit_data import UnitData


def available_per_class(source, source_labels: list[int], per_class: int) -> int:
    """Labelled train-split images per class beyond a subset of `per_class` (before patients are kept apart)."""
    labels = np.asarray([int(y) for y in source.split("train").labels])
    return int(min((labels == k).sum() for k in source_labels)) - per_class


def default_headroom(source, source_labels: list[int], config: dict) -> list:
    """2x and 10x the labelled count per class and all of the split where the source holds them (with
    half its extra images to spare, as keeping patients apart removes some); a learning curve inside
    the labelled set (25% and 50% of it) where it holds no more."""
    n, left = int(config["per_class"]), available_per_class(source, source_labels, int(config["per_class"]))
    if left <= 0:
        return sorted({max(2, round(n * 0.25)), max(2, round(n * 0.5))} - {n})
    return [k for k in (2 * n, 10 * n) if k - n <= left // 2] + ["all"]


def check_extra_real(source, source_labels: list[int], config: dict) -> None:
    """Refuse, before anything is written, a `+real@N` the source cannot serve."""
    if "real" not in config["controls"]:
        return
    want = max(config["synthetic_per_class"])
    left = available_per_class(source, source_labels, int(config["per_class"]))
    if want > left:
        raise GenaugError(f"the positive control +real@{want} needs {want} more labelled images per class than the "
                          f"subset, and the source's train split holds {max(left, 0)} more of its smallest class: "
                          "lower --synthetic-per-class, or drop real from --controls")


def extra_real(spec: ExperimentSpec, unit: Unit, data: UnitData, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `per_class` images of each class in the unit's seeded order of extra real images."""
    held = [] if data.manifest.get("validation") else data.val_items
    pool = candidates(spec.source, list(spec.source_labels), data.manifest, held)
    split = spec.source.split("train")
    label_of = {i: int(y) for i, y in zip(split.ids, split.labels)}
    rng = np.random.default_rng(spec.seeds(unit).of("real"))
    chosen, labels = [], []
    for k in spec.source_labels:
        ids = [i for i in pool if label_of[i] == k]
        order = rng.permutation(len(ids))
        if per_class > len(ids):
            raise GenaugError(f"{per_class} extra real images of class {spec.source.classes[k]!r} wanted, and "
                              f"{len(ids)} are left outside the labelled, validation and test items and their "
                              "patients")
        chosen += [ids[j] for j in order[:per_class]]
        labels += [k] * per_class
    if not chosen:
        return data.train_x[:0], data.train_y[:0]
    m = data.manifest
    loaded = spec.source.load("train", chosen, spec.image_size, m["fit"], m["intensity"])
    by_id = dict(zip(chosen, labels))
    return loaded.images, spec.positions(torch.tensor([by_id[i] for i in loaded.ids]))


def labelled_share(spec: ExperimentSpec, unit: Unit, data: UnitData, per_class: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """`per_class` of each class's labelled training images (a seeded draw): the learning curve's points."""
    g = torch.Generator().manual_seed(spec.seeds(unit).of("real"))
    keep = []
    for label in spec.labels:
        idx = torch.nonzero(data.train_y == label).flatten()
        keep += idx[torch.randperm(len(idx), generator=g)[:per_class]].tolist()
    keep = sorted(keep)
    return data.train_x[keep], data.train_y[keep]


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
    from .config import HEADROOM_MAX_SCALE

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
                               "min_detectable_effect": power["min_detectable_effect"]}
    out["sentence"] = go_sentence(out, primary, alpha)
    return out


def go_sentence(h: dict, primary: str, alpha: float) -> str:
    """The go/no-go sentence of a headroom block."""
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
    mde_text = f"; the design detects {mde:.4f} with 80% power" if mde is not None else ""
    p_text = f"p {pos['p_ttest']:.3g}" if pos["p_ttest"] is not None else "no test"
    parts.append(f"The positive control {pos['arm']} (real images where a generator's would go) moved it "
                 f"{pos['mean_diff']:+.4f} (95% interval [{pos['ci_low']:+.4f}, {pos['ci_high']:+.4f}], {p_text}, "
                 f"{pos['n']} units){mde_text}.")
    if pos["detected"]:
        parts.append(f"**Go**: the design registers the gain of real images at level {alpha:g}, so a synthetic "
                     "arm's null result is informative.")
    else:
        parts.append(f"**No-go**: the design does not register even the gain of real images at level {alpha:g}, "
                     "so it cannot answer whether synthetic images help; a null result below says nothing about "
                     "the generator.")
    return " ".join(parts)
