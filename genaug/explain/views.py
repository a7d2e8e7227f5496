"""`genaug explain`: heatmaps of every arm's saved classifier on the same test images.

Images: a fixed, seeded sample per class of test images the first model (the baseline) gets right
and gets wrong. Every model's heatmap is for the image's true class ("where does it find evidence
for the right answer"), so columns compare like with like. Beside the examples, the mean heatmap
per class and model over up to `mean_count` test images of the class, and how much each arm's
mean heatmap agrees with the baseline's (Pearson correlation): a number for "did synthetic images
change where the classifier looks".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml

from ..data.multilabel import load_split as load_label_split
from ..errors import GenaugError
from ..plots import overlay_heatmap, pyplot, save_figure
from ..io import write_json
from .cams import METHODS, heatmap_correlation, heatmaps
from .labels import explain_labels


def saved_models(experiment: Path, replicate: int = 0) -> dict[str, Path]:
    """{arm: the first saved classifier of the arm} in one replicate, baseline first."""
    folder = experiment / f"rep-{replicate}" / "classifiers"
    if not folder.is_dir() and (experiment / f"rep-{replicate}" / "fold-0").is_dir():
        folder = experiment / f"rep-{replicate}" / "fold-0" / "classifiers"  # cross-validation: the first fold
    if not (experiment / "config.yaml").exists():
        raise GenaugError(f"{experiment} is not an augment-and-train folder (no config.yaml)")
    found = {}
    for arm_dir in sorted(folder.iterdir()) if folder.is_dir() else []:
        files = sorted(arm_dir.glob("seed-*.safetensors"))
        if files:
            found[arm_dir.name] = files[0]
    if not found:
        raise GenaugError(f"{experiment} has no saved classifiers in replicate {replicate}: run augment-and-train "
                          "with --save-models first (the default) into a new --out, or pass --model FILE --data SPEC")
    order = sorted(found, key=lambda a: (a != "baseline", a != "baseline-strong", a != "plus-dup", a))
    return {a: found[a] for a in order}


def choose_images(predicted: np.ndarray, labels: np.ndarray, per_class: int, seed: int = 0) -> list[int]:
    """Per class, up to `per_class` correctly and `per_class` wrongly predicted images (seeded)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        for right in (True, False):
            idx = np.flatnonzero((labels == c) & ((predicted == labels) == right))
            chosen += sorted(rng.permutation(idx)[:per_class].tolist())
    return chosen


def explain_models(models: dict, images: torch.Tensor, labels: torch.Tensor, classes: list[str], out: str | Path,
                   method: str = "gradcam", per_class: int = 2, mean_count: int = 64, seed: int = 0,
                   device: str = "auto") -> dict:
    """Figures `OUT/heatmaps-<method>.png`, `OUT/mean-<method>.png` and `OUT/explain-<method>.json`."""
    from ..classifiers.inference import predict_proba

    if method not in METHODS:
        raise GenaugError(f"unknown heatmap method {method!r}; choose from {', '.join(METHODS)}")
    if len(images) == 0:
        raise GenaugError("no test images to explain")
    y = labels.numpy()
    probs = {name: predict_proba(m, images, device) for name, m in models.items()}
    first = next(iter(models))
    chosen = choose_images(probs[first].argmax(1), y, per_class, seed)
    maps = {name: heatmaps(m, images[chosen], y[chosen], method, device) for name, m in models.items()}
    rng = np.random.default_rng(seed)
    mean_idx = {c: sorted(rng.permutation(np.flatnonzero(y == c))[:mean_count].tolist()) for c in range(len(classes))}
    means = {name: {c: heatmaps(m, images[idx], [c] * len(idx), method, device).mean(0) if idx else None
                    for c, idx in mean_idx.items()} for name, m in models.items()}
    agreement = {name: {classes[c]: heatmap_correlation(means[name][c], means[first][c]) for c in mean_idx}
                 for name in models if name != first}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _examples_figure(images[chosen], y[chosen], probs, chosen, maps, classes, method, out / f"heatmaps-{method}.png")
    _means_figure(means, classes, method, {c: len(i) for c, i in mean_idx.items()}, out / f"mean-{method}.png")
    result = {"method": method, "target": "true class", "models": list(models), "reference": first,
              "images": [{"test_index": int(i), "class": classes[y[i]],
                          "predicted": {n: classes[int(p[i].argmax())] for n, p in probs.items()},
                          "p_true": {n: float(p[i, y[i]]) for n, p in probs.items()}} for i in chosen],
              "mean_heatmap_images": {classes[c]: len(i) for c, i in mean_idx.items()},
              "mean_heatmap_correlation_with_reference": agreement,
              "figures": [f"heatmaps-{method}.png", f"mean-{method}.png"]}
    write_json(out / f"explain-{method}.json", result)
    return result


def explain_experiment(experiment: str | Path, out: str | Path | None = None, method: str = "gradcam",
                       replicate: int = 0, data_root: str | None = None, per_class: int = 2, mean_count: int = 64,
                       device: str = "auto", labels_wanted: str | None = None) -> dict:
    """Every arm's saved classifier of one replicate, on that replicate's test images (per label, for
    a multi-label experiment: `labels_wanted`, a comma list, default every label)."""
    from ..data import load_split, open_source
    from ..data.subsets import load_manifest
    from ..classifiers.networks import load_classifier

    experiment = Path(experiment)
    paths = saved_models(experiment, replicate)
    config = yaml.safe_load((experiment / "config.yaml").read_text())
    unit = experiment / f"rep-{replicate}"
    if not (unit / "manifest.json").exists() and (unit / "fold-0" / "manifest.json").exists():
        unit = unit / "fold-0"  # cross-validation: the first fold's classifiers and manifest (saved_models)
    manifest = load_manifest(unit)
    source = open_source(config["data"], data_root, group_by=config.get("group_by"),
                         test_fraction=config.get("test_fraction"), given_split=config.get("given_split") or "use",
                         split_folders=config.get("split_folders"),
                         label_columns=config.get("label_columns"))
    if source.multilabel:
        loaded, y = load_label_split(source, "test", config["image_size"], manifest["fit"], manifest["intensity"])
        models = {arm: load_classifier(p)[0] for arm, p in paths.items()}
        return explain_labels(models, loaded, y, list(source.classes), out or experiment / "explain", method,
                              labels_wanted, per_class, mean_count, seed=replicate, device=device)
    labels = source.resolve_classes(str(config["classes"]))
    test = load_split(source, "test", labels, config["image_size"], fit=manifest["fit"],
                      intensity=manifest["intensity"])
    lookup = {s: i for i, s in enumerate(labels)}
    y = torch.tensor([lookup[int(v)] for v in test.labels])
    models = {arm: load_classifier(p)[0] for arm, p in paths.items()}
    classes = [source.classes[i] for i in labels]
    return explain_models(models, test.images, y, classes, out or experiment / "explain", method, per_class,
                          mean_count, seed=replicate, device=device)


def explain_model(model_path: str | Path, data: str, out: str | Path, method: str = "gradcam", split: str = "test",
                  data_root: str | None = None, per_class: int = 2, mean_count: int = 64, device: str = "auto",
                  labels_wanted: str | None = None) -> dict:
    """One saved classifier on a split of a data source (its recorded size, fit and intensity rule)."""
    from ..data import load_split, open_source
    from ..classifiers.networks import load_classifier

    model, meta = load_classifier(model_path)
    source = open_source(data, data_root)
    if meta.get("multilabel") or source.multilabel:
        if not (meta.get("multilabel") and source.multilabel and list(source.classes) == meta["classes"]):
            raise GenaugError(f"{model_path} has the labels {', '.join(meta['classes'])} and {data} "
                              + (f"the labels {', '.join(source.classes)}" if source.multilabel else "one class per image"))
        if split not in source.splits:
            raise GenaugError(f"{data} has no {split!r} split (has {', '.join(source.splits)})")
        images, y = load_label_split(source, split, meta["image_size"], meta.get("fit", "crop"), meta.get("intensity"))
        return explain_labels({meta.get("arm", Path(model_path).stem): model}, images, y, meta["classes"], out, method,
                              labels_wanted, per_class, mean_count, device=device)
    try:
        labels = [source.class_index(c) for c in meta["classes"]]
    except GenaugError as e:
        raise GenaugError(f"{data} does not have the classes the model was trained on ({', '.join(meta['classes'])})"
                          f": {e}") from None
    if split not in source.splits:
        raise GenaugError(f"{data} has no {split!r} split (has {', '.join(source.splits)})")
    images = load_split(source, split, labels, meta["image_size"], fit=meta.get("fit", "crop"),
                        intensity=meta.get("intensity"))
    lookup = {s: i for i, s in enumerate(labels)}
    y = torch.tensor([lookup[int(v)] for v in images.labels])
    name = meta.get("arm", Path(model_path).stem)
    return explain_models({name: model}, images.images, y, meta["classes"], out, method, per_class, mean_count,
                          device=device)


def _examples_figure(images, y, probs, chosen, maps, classes, method, path: Path) -> None:
    plt = pyplot()
    names = list(maps)
    fig, axes = plt.subplots(len(chosen), len(names) + 1, figsize=(1.5 * (len(names) + 1), 1.55 * len(chosen)),
                             squeeze=False)
    for row, i in enumerate(chosen):
        overlay_heatmap(axes[row, 0], images[row], None)
        axes[row, 0].set_title(f"{classes[y[row]][:12]} #{i}", fontsize=6)
        for col, name in enumerate(names):
            overlay_heatmap(axes[row, col + 1], images[row], maps[name][row])
            p = probs[name][i, y[row]]
            axes[row, col + 1].set_title(f"{name[:14]}\np(true) {p:.2f}", fontsize=6)
    fig.suptitle(f"{method}: evidence for the true class, same test images for every arm", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _means_figure(means, classes, method, counts, path: Path) -> None:
    plt = pyplot()
    names = list(means)
    fig, axes = plt.subplots(len(classes), len(names), figsize=(1.6 * len(names), 1.7 * len(classes)), squeeze=False)
    for c, cls in enumerate(classes):
        for col, name in enumerate(names):
            ax = axes[c, col]
            if means[name][c] is not None:
                ax.imshow(means[name][c], cmap="jet", vmin=0, vmax=1)
            ax.set_title(f"{name[:14]}\n{cls[:12]} (n={counts[c]})", fontsize=6)
            ax.axis("off")
    fig.suptitle(f"mean {method} heatmap per class and arm (true class)", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
