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
