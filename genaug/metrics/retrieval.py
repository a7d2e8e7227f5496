"""`genaug nearest`: each query image beside its k most similar gallery images.

With synthetic images as queries and the real training part as gallery this is the memorisation
audit a reviewer asks for: the JSON table lists every (query, neighbour, similarity) pair and the
figure shows the closest ones, so copies of patient images can be seen, not only counted.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.images import match_channels
from ..data.imagesets import image_files, resolve_image_set
from ..errors import GenaugError
from ..io import write_json
from .similarity import FEATURES, similarity_matrix, top_k


def _names(arg: str, n: int) -> list[str]:
    folder = Path(arg)
    if folder.is_dir():
        return [p.name for p in image_files(folder)][:n]
    return [f"{arg}#{i}" for i in range(n)]


def _as_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    if images.shape[1] == channels:
        return images
    return torch.stack([match_channels(img, channels) for img in images])


def nearest(query: str, gallery: str, out: str | Path, k: int = 5, features: str = "inception",
            model: str | None = None, image_size: int | None = None, data_root: str | None = None,
            max_shift: int = 3, flips: bool = False, max_rows: int = 16, device: str = "auto") -> dict:
    """Write `OUT/nearest.json` (every pair) and `OUT/nearest.png` (the `max_rows` closest queries)."""
    if features not in FEATURES:
        raise GenaugError(f"unknown feature space {features!r}; choose from {', '.join(FEATURES)}")
    if k < 1:
        raise GenaugError(f"--k must be at least 1 (got {k})")
    embed = None
    if features == "classifier":
        if model is None:
            raise GenaugError("--features classifier needs --model FILE (a classifier saved by augment-and-train)")
        from ..classifiers.networks import embed as embed_images, load_classifier

        net, meta = load_classifier(model)
        image_size = meta["image_size"]
        embed = lambda x: embed_images(net, _as_channels(x, meta["in_channels"]), device)  # noqa: E731
    q, _ = resolve_image_set(query, data_root, image_size)
    g, g_real = resolve_image_set(gallery, data_root, image_size)
    if len(g) == 0:
        raise GenaugError(f"the gallery {gallery} is empty")
    if k > len(g):
        raise GenaugError(f"--k {k} is larger than the gallery ({len(g)} images in {gallery})")
    if q.shape[-2:] != g.shape[-2:]:
        raise GenaugError(f"query images are {tuple(q.shape[-2:])} px but gallery images {tuple(g.shape[-2:])}: "
                          "pass --image-size to compare them at one size")
    channels = max(q.shape[1], g.shape[1])
    q, g = _as_channels(q, channels), _as_channels(g, channels)
    sims = similarity_matrix(q, g, features, embed=embed, cache_gallery=g_real, max_shift=max_shift, flips=flips,
                             device=device)
    values, indices = top_k(sims, k)
    q_names, g_names = _names(query, len(q)), _names(gallery, len(g))
    pairs = [{"query": q_names[i], "rank": r + 1, "neighbour": g_names[int(indices[i, r])],
              "similarity": float(values[i, r])} for i in range(len(q)) for r in range(k)]
    result = {"query": query, "gallery": gallery, "features": features, "k": k, "n_query": len(q),
              "n_gallery": len(g), "pairs": pairs}
    if features == "pixels":
        result["pixels"] = {"max_shift": max_shift, "flips": flips}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _grid(q, g, values, indices, q_names, max_rows, out / "nearest.png")
    write_json(out / "nearest.json", result)
    return result


def _grid(q, g, values, indices, q_names, max_rows, path: Path) -> None:
    """The queries with the highest top-1 similarity, each beside its neighbours."""
    from ..plots import pyplot, save_figure

    plt = pyplot()
    order = torch.argsort(values[:, 0], descending=True)[:max_rows].tolist()
    k = indices.shape[1]
    fig, axes = plt.subplots(len(order), k + 1, figsize=(1.3 * (k + 1), 1.4 * len(order)), squeeze=False)
    show = lambda ax, img: ax.imshow(img.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=255)  # noqa: E731
    for row, i in enumerate(order):
        show(axes[row, 0], q[i])
        axes[row, 0].set_title(q_names[i][:14], fontsize=6)
        for r in range(k):
            show(axes[row, r + 1], g[int(indices[i, r])])
            axes[row, r + 1].set_title(f"{float(values[i, r]):.3f}", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("query | nearest gallery images (similarity)", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
