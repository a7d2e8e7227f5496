"""An experiment folder as one archive, to continue it on another host (or in a later session on a
fresh machine): `genaug pack OUT FILE.tar.gz`, then `tar xzf` it there and run the same command.

`without_weights` leaves out the model files no stage still ahead reads (finished generators whose
samples are drawn, their checkpoints, saved classifiers): their records stay, but a stage whose weights
are missing is not done (`stages.output_exists`), and the scheduler reruns it only where a stage that
reads it is still ahead (`plan.needed`). So a complete replicate travels as its results, samples and
decisions. Two kinds of weights travel anyway: a finished generator that a stage still ahead reads
(the pool pretraining every replicate's fine-tunes start from, a generator whose samples are not all
drawn: `plan.weights_still_read`; a teacher retrains, minutes against 45 MB), and the newest
checkpoint of a training whose final model is not written yet (about 18 MB for a 64 px DDPM), the
only copy of that work in progress; both would otherwise be trained again there. Lease files are left out: a lease belongs to a process on this host.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from ...errors import GenaugError
from ...generators.training import CHECKPOINTS, MODEL_DIR, checkpoints
from ...io import WEIGHT_SUFFIXES, atomic_path
from ..design.spec import ExperimentSpec
from .plan import plan, weights_still_read


def is_weights(relative: Path) -> bool:
    """A model file, or anything inside a training checkpoint."""
    return relative.suffix in WEIGHT_SUFFIXES or any(part.startswith("checkpoint") for part in relative.parts[:-1])


def unfinished_checkpoints(folder: Path) -> list[Path]:
    """The newest checkpoint of each training under `folder` that has no final model yet."""
    return [checkpoints(found.parent)[-1] for found in sorted(folder.rglob(CHECKPOINTS))
            if found.is_dir() and checkpoints(found.parent) and not (found.parent / MODEL_DIR).is_dir()]


def read_weights(spec: ExperimentSpec) -> list[Path]:
    """The run folders of the finished generators in the experiment that a stage still to run reads
    (plan.weights_still_read); their `model/` travels."""
    return [f.resolve() for f in weights_still_read(spec, plan(spec))]


def pack(folder: str | Path, archive: str | Path, without_weights: bool = False) -> dict:
    """Write `archive` (.tar.gz, atomically) holding `folder` under its own name; returns
    {"files", "bytes", "left_out": {"weights", "weights_bytes", "leases"}, "kept_checkpoints", "kept_models"}."""
    folder, archive = Path(folder), Path(archive)
    if not (folder / "spec.json").exists():
        raise GenaugError(f"{folder}: no spec.json; not an augment-and-train folder")
    # what stays to run is read from the spec: one that does not parse is a one-line error, nothing written
    spec = ExperimentSpec.read_folder(folder) if without_weights else None
    if archive.resolve().is_relative_to(folder.resolve()):
        raise GenaugError(f"{archive}: the archive cannot go inside the folder it packs")
    if not archive.name.endswith((".tar.gz", ".tgz")):
        raise GenaugError(f"{archive}: name the archive FILE.tar.gz")
    counts = {"files": 0, "bytes": 0, "left_out": {"weights": 0, "weights_bytes": 0, "leases": 0}}
    in_progress = unfinished_checkpoints(folder) if without_weights else []
    still_read = [m / MODEL_DIR for m in read_weights(spec)] if without_weights else []
    counts["kept_checkpoints"], counts["kept_models"] = len(in_progress), len(still_read)
    kept = {p.resolve() for p in in_progress} | set(still_read)
    with atomic_path(archive) as tmp, tarfile.open(tmp, "w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if not path.is_file() or any(part.startswith(".") for part in relative.parts):
                continue  # an atomic write in progress (or an old folder being replaced) is not a file
            if ".lease-" in path.name:
                counts["left_out"]["leases"] += 1
                continue
            if without_weights and is_weights(relative) and not set(path.resolve().parents) & kept:
                counts["left_out"]["weights"] += 1
                counts["left_out"]["weights_bytes"] += path.stat().st_size
                continue
            tar.add(path, arcname=str(Path(folder.name) / relative), recursive=False)
            counts["files"] += 1
            counts["bytes"] += path.stat().st_size
    return counts
