"""`genaug explain` for classifiers with several labels per image: heatmaps per label.

For each chosen label, a seeded sample of test images that carry it, and every model's heatmap for
that label's output (its logit: where the network finds evidence of that finding), with the
model's probability of it; beside them, per label and model, the mean heatmap over up to
`mean_count` positive images and its Pearson correlation with the first model's (the baseline's).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import GenaugError
from ..io import write_json
from ..plots import overlay_heatmap, pyplot, save_figure
from .cams import METHODS, heatmap_correlation, heatmaps


def choose_labels(names: list[str], wanted: str | None, labels: np.ndarray) -> list[int]:
    """The labels asked for (a comma list; default every label with a positive image), as positions."""
    if not wanted:
        return [j for j in range(len(names)) if labels[:, j].any()]
    chosen = [w.strip() for w in wanted.split(",") if w.strip()]
    unknown = [w for w in chosen if w not in names]
    if unknown:
        raise GenaugError(f"--label {unknown[0]!r}: not a label of this classifier ({', '.join(names)})")
    empty = [w for w in chosen if not labels[:, names.index(w)].any()]
    if empty:
        raise GenaugError(f"--label {empty[0]!r}: no image of the split carries it")
    return [names.index(w) for w in chosen]


def explain_labels(models: dict, images: torch.Tensor, labels: torch.Tensor, names: list[str], out: str | Path,
                   method: str = "gradcam", wanted: str | None = None, per_label: int = 2, mean_count: int = 64,
                   seed: int = 0, device: str = "auto") -> dict:
    """Figures `OUT/label-heatmaps-<method>.png`, `OUT/label-mean-<method>.png` and `OUT/explain-labels-<method>.json`."""
    from ..classifiers.inference import predict_proba

    if method not in METHODS:
        raise GenaugError(f"unknown heatmap method {method!r}; choose from {', '.join(METHODS)}")
    out = Path(out)
    y = labels.numpy().astype(bool)
    chosen = choose_labels(names, wanted, y)
    rng = np.random.default_rng(seed)
    examples = [(j, int(i)) for j in chosen for i in sorted(rng.permutation(np.flatnonzero(y[:, j]))[:per_label])]
    probs = {name: predict_proba(m, images, device, multilabel=True) for name, m in models.items()}
    idx = [i for _, i in examples]
    targets = [j for j, _ in examples]
    maps = {name: heatmaps(m, images[idx], targets, method, device) for name, m in models.items()}
    means, counts = {name: {} for name in models}, {}
    for j in chosen:
        pos = sorted(rng.permutation(np.flatnonzero(y[:, j]))[:mean_count].tolist())
        counts[names[j]] = len(pos)
        for name, m in models.items():
            means[name][names[j]] = heatmaps(m, images[pos], [j] * len(pos), method, device).mean(0)
    first = next(iter(models))
    agreement = {name: {label: heatmap_correlation(means[name][label], means[first][label]) for label in counts}
                 for name in models}
    _examples_figure(images[idx], examples, names, probs, maps, method, out / f"label-heatmaps-{method}.png")
    _means_figure(means, counts, method, out / f"label-mean-{method}.png")
    result = {"method": method, "models": list(models), "labels": [names[j] for j in chosen],
              "images": [{"test_index": i, "label": names[j], "labels": [names[k] for k in np.flatnonzero(y[i])],
                          "probability": {n: float(p[i, j]) for n, p in probs.items()}} for j, i in examples],
              "mean_heatmap_images": counts, "agreement_with_first": agreement,
              "figures": [f"label-heatmaps-{method}.png", f"label-mean-{method}.png"]}
    write_json(out / f"explain-labels-{method}.json", result)
    return result


def _examples_figure(images, examples, names, probs, maps, method, path: Path) -> None:
    plt = pyplot()
    models = list(maps)
    fig, axes = plt.subplots(len(examples), len(models) + 1, figsize=(1.5 * (len(models) + 1), 1.55 * len(examples)),
                             squeeze=False)
    for row, (j, i) in enumerate(examples):
        overlay_heatmap(axes[row, 0], images[row], None)
        axes[row, 0].set_title(f"{names[j][:14]} #{i}", fontsize=6)
        for col, name in enumerate(models):
            overlay_heatmap(axes[row, col + 1], images[row], maps[name][row])
            axes[row, col + 1].set_title(f"{name[:14]}\np({names[j][:10]}) {probs[name][i, j]:.2f}", fontsize=6)
    fig.suptitle(f"{method}: evidence for each finding, on test images that carry it", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _means_figure(means, counts, method, path: Path) -> None:
    plt = pyplot()
    models, labels = list(means), list(counts)
    fig, axes = plt.subplots(len(labels), len(models), figsize=(1.6 * len(models), 1.7 * len(labels)), squeeze=False)
    for r, label in enumerate(labels):
        for col, name in enumerate(models):
            axes[r, col].imshow(means[name][label], cmap="jet", vmin=0, vmax=1)
            axes[r, col].set_title(f"{name[:14]}\n{label[:12]} (n={counts[label]})", fontsize=6)
            axes[r, col].axis("off")
    fig.suptitle(f"mean {method} heatmap per finding and model (positive test images)", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
