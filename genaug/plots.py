"""matplotlib (Agg) figures written atomically: shared by the report, `explain` and `nearest`."""

from __future__ import annotations

from pathlib import Path

from .io import atomic_path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    pyplot().close(fig)


def overlay_heatmap(ax, image, cam) -> None:
    """A C x H x W uint8 image in grey with a [0, 1] heatmap (H x W array or None) over it, no axes."""
    ax.imshow(image.float().mean(0).numpy(), cmap="gray", vmin=0, vmax=255)
    if cam is not None:
        ax.imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    ax.axis("off")
