"""Measure the calibrated memorisation gate (the rank bound of genaug/metrics/memorization.py) on real data.

Draws what an `augment-and-train` replicate has (`--per-class` labelled images per class: the
real training part plus a validation part of `--val-fraction`, from the source's val split when
it has one), calibrates the gate on the validation part exactly as the harness does, and
measures per class:
- the share of near-copies of the training images it rejects: those the pixel similarity searches
  over (mirror images when flips are plausible for the data, shifts of 1-3 px) and those it does
  not (rotation by 3-5 degrees, 90-110% rescale with a crop, brightness and contrast by 10%,
  Gaussian blur, JPEG at quality 50), with Gaussian noise of 5 grey levels and JPEG at 75;
- the share of held-out real images it falsely rejects: `--heldout` test-split images per class
  that calibrated nothing, and leave-one-out inside the validation part.
Repeated over `--replicates` draws (seed + r). Prints one JSON line.

    python scripts/gate_rates.py --data medmnist:pneumoniamnist --data-root ../shared/data
    python scripts/gate_rates.py --data ../shared/data/cifar10-subset.npz --flips
"""

from __future__ import annotations

import json
import sys
import time

import click
import numpy as np
import torch

from genaug.cli import _quiet_libraries
from genaug.data import RealImages, draw_subset, load_split, open_source
from genaug.data.splits import carve_validation
from genaug.metrics import memorization as gate
from genaug.metrics.similarity import similarity_matrix


def _draw(source, labels, per_class, val_fraction, seed, size):
    """The labelled subset split into training and validation parts, as a harness replicate does."""
    n_val = max(1, round(per_class * val_fraction))
    if "val" in source.splits:
        train, _ = draw_subset(source, labels, per_class - n_val, seed, size)
        val, _ = draw_subset(source, labels, n_val, seed, size, split="val")
    else:
        real, _ = draw_subset(source, labels, per_class, seed, size)
        tr, va = carve_validation(real.labels.numpy(), real.groups, val_fraction, seed)
        train = RealImages(real.images[tr], real.labels[tr], real.classes, [])
        val = RealImages(real.images[va], real.labels[va], real.classes, [])
    lookup = {s: i for i, s in enumerate(labels)}
    pos = lambda t: torch.tensor([lookup[int(v)] for v in t])  # noqa: E731
    return train.images, pos(train.labels), val.images, pos(val.labels)


@click.command()
@click.option("--data", required=True, help="data spec (e.g. medmnist:pneumoniamnist, cifar10)")
@click.option("--data-root", default=None)
@click.option("--per-class", default=50, show_default=True, help="labelled images per class (train + validation)")
@click.option("--val-fraction", default=0.2, show_default=True)
@click.option("--heldout", default=200, show_default=True, help="test-split images per class for false rejections")
@click.option("--replicates", default=3, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--quantile", default=gate.DEFAULTS["quantile"], show_default=True)
@click.option("--robust", default=gate.DEFAULTS["robust"], show_default=True,
              help="highest held-out similarities that never set the threshold")
@click.option("--max-shift", default=gate.DEFAULTS["max_shift"], show_default=True)
@click.option("--flips/--no-flips", default=False, help="mirror images count as copies (natural images)")
@click.option("--device", default="auto")
def main(data, data_root, per_class, val_fraction, heldout, replicates, seed, quantile, robust, max_shift, flips,
         device):
    _quiet_libraries()
    settings = gate.GateSettings(quantile=quantile, robust=robust)
    source = open_source(data, data_root)
    labels = source.resolve_classes("all")
    classes = [source.classes[i] for i in labels]
    size = source.default_size()
    test = load_split(source, "test", labels, size)
    lookup = {s: i for i, s in enumerate(labels)}
    test_y_all = torch.tensor([lookup[int(v)] for v in test.labels])

    def similarity(queries, gallery, space):
        return similarity_matrix(queries, gallery, space, cache_gallery=True, max_shift=max_shift, flips=flips,
                                 device=device)

    start = time.time()
    reps = []
    for r in range(replicates):
        train_x, train_y, val_x, val_y = _draw(source, labels, per_class, val_fraction, seed + r, size)
        g = torch.Generator().manual_seed(seed + r)
        pick = torch.cat([torch.nonzero(test_y_all == c).flatten()[torch.randperm(int((test_y_all == c).sum()),
                                                                                   generator=g)[:heldout]]
                          for c in range(len(classes))])
        rates = gate.gate_rates(train_x, train_y, val_x, val_y, classes, similarity, list(gate.SPACES), settings,
                                flips, test.images[pick], test_y_all[pick], seed=seed + r)
        reps.append({"replicate": r, "n_train": len(train_x), "n_val": len(val_x), **rates})
        print(json.dumps({"progress": r, "seconds": round(time.time() - start, 1)}), file=sys.stderr)
    summary = {}
    for name in classes:
        rows = [rep["per_class"][name] for rep in reps]
        keys = [k for k in rows[0] if k.startswith(("rejects_", "false_rejection"))]
        summary[name] = {k: float(np.mean([row[k] for row in rows if row[k] is not None])) for k in keys}
    print(json.dumps({"bench": "memorization_gate", "data": data, "per_class": per_class, "val_fraction": val_fraction,
                      "heldout_per_class": heldout, "replicates": replicates, "quantile": quantile,
                      "robust": robust, "max_shift": max_shift, "flips": flips, "mean_over_replicates": summary,
                      "replicate_rows": reps, "torch": torch.__version__, "seconds": round(time.time() - start, 1)}))


if __name__ == "__main__":
    main()
