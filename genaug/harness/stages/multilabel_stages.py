"""The stage functions of a multi-label experiment (several findings per image); the task graph and
the store are those of every experiment (run/plan.py).

Per unit: `subset` (at least `per_class` positive images of every label and as many without a
finding, whole patients at a time; a stratified, patient-disjoint validation carve), `generator`
(one label-set DDPM on the training part), `samples` per source (`<family>`: label sets drawn from
the training part's own distribution; `<family>-targeted`: label sets of training images that hold
one of the `target_labels`, taken in turn, to lift rare findings), `acceptance` per source (the
memorisation gate against every training image; `confidence`: the real-trained classifier must find
every intended label, and none for an intended empty set); the `classifier` stage is classifier_run.py's,
with `LabelSetInputs` (sigmoid outputs, binary cross-entropy, thresholds chosen on the validation part).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ... import runs
from ...data.intensity import IntensityRule
from ...data.multilabel import draw_subset, load_split, reload_subset
from ...data.multilabel_splits import carve
from ...data.imagesets import load_image_folder
from ...data.subsets import MANIFEST_NAME, load_manifest
from ...errors import GenaugError
from ...io import read_json, write_json
from ...metrics import acceptance
from .accepted import gallery_similarity
from .filter_model import filter_model
from .generation import generator_config
from ...classifiers.multilabel_metrics import choose_thresholds, multilabel_metrics
from ..design.arms import Arm, plan_arms
from ..design.seeds import CONDITIONAL_UNIT
from ..design.spec import ExperimentSpec, Unit
from .classifier_run import UnitInputs
from .unit_data import UnitData

TARGETED = "-targeted"  # the suffix of a source sampled for the target labels


# -- sources and arms -------------------------------------------------------------------------------
def sources(spec: ExperimentSpec) -> dict[str, dict]:
    """{source: {"family", "targets"}}: per label-set generator, its training-distribution source and,
    with `target_labels`, a targeted one sampled from the same model."""
    out = {}
    targets = target_names(spec)
    for family in spec.config["generators"]:
        out[family] = {"family": family, "targets": None}
        if targets:
            out[family + TARGETED] = {"family": family, "targets": targets}
    return out


def target_names(spec: ExperimentSpec) -> list[str]:
    """`target_labels`: label names (a list or comma list), or `rarest:K`, the K labels with the fewest
    positive images in the source's train split."""
    return resolve_targets(spec.config["target_labels"], spec.source)


def resolve_targets(value, source) -> list[str]:
    if not value:
        return []
    names = list(source.classes)
    if isinstance(value, str) and value.startswith("rarest:"):
        try:
            k = int(value.split(":", 1)[1])
        except ValueError:
            k = 0
        if not 1 <= k <= len(names):
            raise GenaugError(f"target_labels {value!r}: write rarest:K with K from 1 to {len(names)}")
        counts = source.split("train").labels.sum(0)
        return [names[j] for j in sorted(range(len(names)), key=lambda j: (counts[j], names[j]))[:k]]
    chosen = [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v) for v in value]
    unknown = [v for v in chosen if v not in names]
    if unknown:
        raise GenaugError(f"target_labels: unknown label {unknown[0]!r}; the labels are {', '.join(names)}")
    return chosen


def arms(spec: ExperimentSpec) -> list[Arm]:
    """The arms of design/arms.py over this experiment's sources, without the headroom stage's (its
    learning curve and +real@N draw images per class, which a label set does not have)."""
    return [a for a in plan_arms(spec.config, list(sources(spec))) if a.kind not in ("headroom", "positive")]


# -- settings ---------------------------------------------------------------------------------------
def check_multilabel(config: dict, source, runs_dir) -> None:
    """Refuse, in one line and before anything is written, what a multi-label experiment does not do;
    the primary metric defaults to macro AUROC."""
    from ...generators.registry import get_family
    from ...classifiers.multilabel_metrics import MULTILABEL_METRICS

    wrong = [f for f in config["generators"] if not get_family(f).multilabel]
    refusals = [
        (str(config["classes"]).lower() != "all", "--class: every label of the file is classified (choose the "
                                                    "labels with --label-columns)"),
        (bool(wrong), f"--generator {','.join(wrong)}: with several labels per image the generator is "
                      "ddpm-multilabel (the label-set DDPM)"),
        (bool(config["synthetic"]), "--synthetic: external sets have one class per folder"),
        (bool(config["semi"]) or config["unlabeled"] is not None or bool(config["unlabeled_data"]),
         "--semi/--unlabeled: the semi-supervised arms have one class per image"),
        (bool(config["cv"]), "--cv: the multi-label harness carves one validation part per replicate"),
        (runs_dir is not None, "--runs: the label-set generator trains per replicate here"),
        (bool(config["full_real"]), "--full-real"),
        (config["synthetic_ratio"] is not None, "--synthetic-ratio: extra images join in proportion to their count"),
        ("fid-gate" in config["accept"], "--accept fid-gate: the FID gate is per class"),
        ("," in str(config["classifier"]), "--classifier: one architecture"),
        (len(config["synthetic_per_class"]) > 1, "--synthetic-per-class: one count (a label-set source draws one set)"),
        (bool(config.get("share_dose")), "share_dose: the dose-response over the share is written for one class per image"),
        (isinstance(config["headroom"], list) and bool(config["headroom"]),
         "--headroom: its learning curve draws labelled images per class"),
        (config["select_metric"] not in (None, "macro_auroc"), "select_metric: epochs are selected by validation "
                                                                "macro AUROC"),
    ]
    for refused, what in refusals:
        if refused:
            raise GenaugError(f"{source.spec} has several labels per image; not built for it: {what}")
    if config["labelled_images"] is not None:
        train = len(source.split("train").ids)
        if not isinstance(config["labelled_images"], int) or not 2 <= config["labelled_images"] <= train:
            raise GenaugError(f"labelled_images must be a whole number from 2 to the {train} images of the train "
                              f"split (got {config['labelled_images']!r})")
    config["primary_metric"] = config["primary_metric"] or "macro_auroc"
    if config["primary_metric"] not in MULTILABEL_METRICS:
        raise GenaugError(f"primary_metric {config['primary_metric']!r} is a metric of one class per image; with "
                          f"several labels choose from {', '.join(MULTILABEL_METRICS)}")
    resolve_targets(config["target_labels"], source)


def check_single_label(config: dict) -> None:
    """The converse: label-set generators, targets and multi-label metrics need several labels per image."""
    from ...generators.registry import get_family
    from ...classifiers.metrics import SCALAR_METRICS

    for family in config["generators"]:
        if get_family(family).multilabel:
            raise GenaugError(f"{family} generates images with several labels; this experiment has one class per "
                              "image: choose ddpm-cond")
    for key in ("target_labels", "labelled_images"):
        if config[key]:
            raise GenaugError(f"{key} applies to a multi-label file; this experiment has one class per image "
                              "(per_class sets its scarcity)")
    config["primary_metric"] = config["primary_metric"] or "balanced_accuracy"
    for key in ("primary_metric", "select_metric"):
        if config[key] is not None and config[key] not in SCALAR_METRICS:
            raise GenaugError(f"{key} {config[key]!r} is a metric of several labels per image; with one class per "
                              f"image choose from {', '.join(SCALAR_METRICS)}")


# -- stage 1: the real subset ----------------------------------------------------------------------
def real_subset(spec: ExperimentSpec, unit: Unit) -> UnitData:
    """Drawn once (recorded by id and hash, the validation carve by id) and reloaded afterwards."""
    c, folder, seeds = spec.config, spec.unit_folder(unit), spec.seeds(unit)
    path = folder / MANIFEST_NAME
    if path.exists():
        manifest = load_manifest(folder)
        images, labels = reload_subset(manifest, spec.data_root, spec.source)
    else:
        rule = IntensityRule.parse(c["intensity"]).with_preprocess(c["preprocess"])
        images, labels, manifest = draw_subset(spec.source, c["per_class"], seeds.of("subset"), spec.image_size,
                                               c["fit"], rule, total=c["labelled_images"])
    items = manifest["train"]["items"]
    if "validation_ids" in manifest:
        held = set(manifest["validation_ids"])
        val_idx = np.array([i for i, it in enumerate(items) if it["id"] in held], dtype=np.int64)
        train_idx = np.array([i for i, it in enumerate(items) if it["id"] not in held], dtype=np.int64)
    else:
        groups = [it["group"] for it in items] if items and "group" in items[0] else None
        train_idx, val_idx = carve(labels.numpy(), groups, float(c["val_fraction"]), seeds.of("validation"))
    train_y = labels[train_idx]
    empty = [name for name, n in zip(spec.classes, train_y.sum(0).tolist()) if n == 0]
    if empty:
        knob = (f"labelled_images {c['labelled_images']}" if c["labelled_images"] else f"per_class {c['per_class']}")
        raise GenaugError(f"label {empty[0]!r} has no positive image in the training part of {unit.name} "
                          f"({knob}); raise it or drop the label")
    if not path.exists():  # written only once every check passed
        manifest["validation_ids"] = [items[i]["id"] for i in val_idx]
        manifest["validation_carve"] = {"images": len(val_idx), "train_images": len(train_idx),
                                        "val_fraction": c["val_fraction"], "seed": seeds.of("validation")}
        write_json(path, manifest)
    test_x, test_y = test_set(spec, manifest["fit"], json.dumps(manifest["intensity"], sort_keys=True))
    steps = int(np.ceil(len(train_idx) / spec.settings.batch_size))
    return UnitData(images[train_idx], train_y, images[val_idx], labels[val_idx], test_x, test_y,
                    [items[i] for i in train_idx], [items[i] for i in val_idx], manifest, steps)


@lru_cache(maxsize=4)
def test_set(spec: ExperimentSpec, fit: str, intensity: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The test split (N x L 0/1 labels) with a replicate's recorded intensity rule, once per rule and process."""
    return load_split(spec.source, "test", spec.image_size, fit, json.loads(intensity))


def training_manifest(data: UnitData) -> dict:
    """The unit's manifest with the training part (validation removed) as its train items."""
    return {**data.manifest, "train": {**data.manifest["train"], "count": len(data.train_items),
                                       "items": data.train_items},
            "note": "real training part of a multi-label augment-and-train replicate (validation removed)"}


# -- stages 2 and 3: the generator and its samples -------------------------------------------------
def generator_run(spec: ExperimentSpec, unit: Unit, data: UnitData, family: str) -> Path:
    config = {**generator_config(spec.config, family, spec.image_size), "data": spec.data,
              "image_size": spec.image_size, "class": "all", "classes": list(spec.classes),
              "seed": spec.seeds(unit).of("generator", CONDITIONAL_UNIT)}
    return runs.train_on(family, data.train_x, training_manifest(data), spec.unit_folder(unit) / "generators" / family,
                         config, resume=True, device=spec.device, progress=spec.progress, labels=data.train_y)


def samples_folder(spec: ExperimentSpec, unit: Unit, source: str) -> Path:
    return spec.unit_folder(unit) / "synthetic" / source


def targeted_label_sets(train_items: list[dict], targets: list[str], n: int, seed: int) -> list[list[str]]:
    """`n` label sets: the targets in turn, each image's set drawn (seeded) from the training images that
    hold that target, so co-occurring findings come along as often as they do in the data."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        target = targets[i % len(targets)]
        holding = [it["labels"] for it in train_items if target in it["labels"]] or [[target]]
        out.append(list(holding[int(rng.integers(len(holding)))]))
    return out


def draw_samples(spec: ExperimentSpec, unit: Unit, data: UnitData, source: str) -> None:
    """`max(synthetic_per_class)` images of one source, each with its label set (in samples.json)."""
    n = max(spec.config["synthetic_per_class"])
    every = sources(spec)
    s = every[source]
    run_dir = generator_run(spec, unit, data, s["family"])
    seed = spec.seeds(unit).of("sample", list(every).index(source))
    sets = targeted_label_sets(data.train_items, s["targets"], n, seed) if s["targets"] else None
    runs.sample(run_dir, n, samples_folder(spec, unit, source), spec.config["sampler"], spec.config["sample_steps"],
                seed=seed, device=spec.device, progress=spec.progress, label_sets=sets)


def synthetic_set(spec: ExperimentSpec, unit: Unit, data: UnitData, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The drawn images of a source (through the run's preprocessing step) and their N x L label vectors."""
    folder = samples_folder(spec, unit, source)
    n = max(spec.config["synthetic_per_class"])
    images = IntensityRule.parse(data.manifest["intensity"]).finish(load_image_folder(folder)[:n])
    drawn = sorted(read_json(folder / "samples.json")["images"], key=lambda im: im["index"])[:n]
    labels = torch.zeros(len(drawn), len(spec.classes), dtype=torch.int64)
    for i, im in enumerate(drawn):
        labels[i, [spec.classes.index(name) for name in im["labels"]]] = 1
    return images, labels


# -- stage 4: acceptance ---------------------------------------------------------------------------
def decisions_path(spec: ExperimentSpec, unit: Unit, source: str) -> Path:
    return spec.unit_folder(unit) / "acceptance" / f"{source}.json"


def set_agreement(probs: np.ndarray, thresholds: np.ndarray, intended: np.ndarray) -> np.ndarray:
    """Per image: the classifier finds every intended label (probability at or above the label's
    threshold), and no label at all where the intended set is empty."""
    found = probs >= thresholds[None, :]
    intended = intended.astype(bool)
    every = ~(intended & ~found).any(1)
    return np.where(intended.any(1), every, ~found.any(1))


def decide(spec: ExperimentSpec, unit: Unit, data: UnitData, source: str) -> dict:
    """Which drawn images of `source` each policy keeps (the policies in turn, as for one class per image)."""
    images, labels = synthetic_set(spec, unit, data, source)
    settings = {**acceptance.DEFAULTS, **spec.config["acceptance"]}
    keep_heldout = data.heldout_without_training_patients()
    one = torch.zeros(len(data.train_x), dtype=torch.int64)  # one gallery: every training image, whatever its labels
    ctx = acceptance.AcceptanceContext(data.train_x, one, ["every label set"], settings,
                                       heldout_images=data.val_x[keep_heldout],
                                       heldout_labels=torch.zeros(int(keep_heldout.sum()), dtype=torch.int64),
                                       similarity=gallery_similarity(spec))
    keep, rows = np.ones(len(images), bool), []
    policies = acceptance.parse_policies(spec.config["accept"])
    for policy in policies:
        idx = np.flatnonzero(keep)
        if policy == "confidence":
            model, thresholds = filter_classifier(spec, unit, data)
            from ...classifiers.inference import predict_proba

            probs = predict_proba(model, images[idx], spec.device, precision=spec.settings.mixed_precision,
                                  multilabel=True) if len(idx) else np.zeros((0, len(spec.classes)))
            ok = set_agreement(probs, thresholds, labels[idx].numpy())
            row = {"policy": policy, "class": "every label set", "seen": len(idx), "kept": int(ok.sum()),
                   "rejected": int((~ok).sum())}
            keep[idx[~ok]] = False
        else:
            ok_all, found = acceptance.accept(images[idx], 0, [policy], ctx)
            keep[idx[~ok_all]] = False
            row = found[0]
        rows.append(row)
    out = {"policies": policies, "settings": settings, "rows": rows,
           "kept": np.flatnonzero(keep).tolist(),
           "kept_positives": dict(zip(spec.classes, labels[keep].sum(0).tolist()))}
    write_json(decisions_path(spec, unit, source), out)
    return out


def filter_classifier(spec: ExperimentSpec, unit: Unit, data: UnitData):
    """The confidence policy's classifier: the baseline recipe on the real training part alone, and its
    per-label thresholds chosen on the validation part; trained once per unit (filter_model.py)."""
    from ...classifiers.inference import predict_proba
    from ...classifiers.multilabel_kind import train_multilabel

    def train():
        trained = train_multilabel(data.train_x, data.train_y, data.val_x, data.val_y, list(spec.classes),
                                   spec.helper_settings, spec.seeds(unit).of("filter"), data.steps_per_epoch, spec.device,
                                   pos_weight=bool(spec.config["pos_weight"]))
        val = predict_proba(trained.model, data.val_x, spec.device, precision=spec.settings.mixed_precision,
                            multilabel=True)
        return trained.model, {"thresholds": choose_thresholds(data.val_y.numpy(), val).tolist()}

    model, extra = filter_model(spec, unit, int(data.train_x.shape[1]), train)
    return model, np.asarray(extra["thresholds"])


def accepted(spec: ExperimentSpec, unit: Unit, data: UnitData, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = synthetic_set(spec, unit, data, source)
    kept = read_json(decisions_path(spec, unit, source))["kept"]
    return images[kept], labels[kept]


def rare_duplicates(spec: ExperimentSpec, unit: Unit, data: UnitData, count: int | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """+dup: `count` real training images (matched to one source's accepted set), or as many as the
    largest accepted set (folders before 0.2), drawn with replacement towards rare labels: an image's
    weight is 1 / (training positives of its rarest label), or 1 / (images without a finding) for an
    empty set."""
    if count is None:
        count = max([len(read_json(decisions_path(spec, unit, s))["kept"]) for s in sources(spec)]
                    or [max(spec.config["synthetic_per_class"])])
    weight = rare_weights(data.train_y.numpy())
    g = np.random.default_rng(spec.seeds(unit).of("duplicates"))
    pick = torch.from_numpy(g.choice(len(weight), size=count, replace=True, p=weight / weight.sum()))
    return data.train_x[pick], data.train_y[pick]


def rare_weights(labels: np.ndarray) -> np.ndarray:
    """Per image, 1 / (positives of its rarest label), or 1 / (images without a finding) for an empty set."""
    y = np.asarray(labels).astype(bool)
    positives = y.sum(0)
    empty = max(int((~y.any(1)).sum()), 1)
    return np.array([1 / positives[row].min() if row.any() else 1 / empty for row in y], dtype=float)


# -- stage 5: the classifier runs (classifier_run.py), with what several labels per image change --------
class LabelSetInputs(UnitInputs):
    """A multi-label unit's inputs to the one classifier stage: accepted sets with their label vectors,
    +dup drawn towards rare labels, sigmoid binary cross-entropy, and test metrics at per-label
    thresholds chosen on the validation part."""

    def accepted(self, source: str, count: int):
        return accepted(self.spec, self.unit, self.data, source)

    def duplicates(self):
        return rare_duplicates(self.spec, self.unit, self.data)

    def matched_duplicates(self, source: str, count: int):
        kept = len(read_json(decisions_path(self.spec, self.unit, source))["kept"])
        return rare_duplicates(self.spec, self.unit, self.data, kept)

    def full_real(self):
        raise GenaugError("full-real has one class per image")  # refused by check_multilabel

    def extra_real(self, per_class: int):
        raise GenaugError("+real@N draws per class; a label-set source has none")  # never planned: arms()

    def headroom_data(self, per_class: int | None):
        raise GenaugError("the headroom stage needs one class per image")  # never planned: arms()

    def train(self, args: tuple, extra):
        from ...classifiers.multilabel_kind import train_multilabel

        x, y, val_x, val_y, _, settings, seed, steps_per_epoch, device = args
        return train_multilabel(x, y, val_x, val_y, list(self.spec.classes), settings, seed, steps_per_epoch, device,
                                extra=extra, pos_weight=bool(self.config["pos_weight"]))

    def score(self, model, settings) -> tuple[dict, dict]:
        from ...classifiers.inference import predict_proba

        d, names = self.data, list(self.spec.classes)
        val = predict_proba(model, d.val_x, self.spec.device, precision=settings.mixed_precision, multilabel=True)
        test = predict_proba(model, d.test_x, self.spec.device, precision=settings.mixed_precision, multilabel=True)
        thresholds = choose_thresholds(d.val_y.numpy(), val)
        return ({"thresholds": thresholds.tolist(), "test": multilabel_metrics(d.test_y.numpy(), test, thresholds, names),
                 "val_probs": np.round(val, 6).tolist(), "test_probs": np.round(test, 6).tolist()},  # for ensembles
                {"multilabel": True, "thresholds": thresholds.tolist()})  # for `genaug explain --label`
