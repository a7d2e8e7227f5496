"""Every random stream of an experiment, derived from (experiment seed, replicate, stage, unit).

numpy's SeedSequence hashes the four numbers into a seed, so no two stages, replicates or
experiments share a stream: with the old offsets, `--seed 0` and `--seed 1` shared two of three
replicate subsets (seed + r), and a replicate's classifier seed k equalled its generator seed
for class k. Folders started before this scheme keep their `offset` seeds (config `seed_scheme`),
so they resume unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STAGES = ("subset", "validation", "unlabeled", "generator", "sample", "classifier", "duplicates", "filter", "gate",
          "cas", "floor", "real")
SCHEMES = ("sequence", "offset")
SAMPLE_SEED_SPAN = 1_000_000  # offset scheme: images per class and replicate never reach the next class's seeds
CONDITIONAL_UNIT = 500  # the generator unit of a class-conditional model (per-class models use the label)
OFFSET_UNITS = {"subset": None, "validation": None, "unlabeled": None, "gate": None, "filter": 998, "duplicates": 999,
          "cas": 0, "floor": 997, "real": 996}


@dataclass(frozen=True)
class Seeds:
    """The seeds of one replicate. `of(stage, unit)` is a 32-bit seed (scikit-learn takes no more);
    `sample` seeds start a range (image i of a class uses base + i), so they are 62-bit and their
    ranges never meet another seed."""

    experiment: int
    replicate: int
    scheme: str = "sequence"

    def __post_init__(self):
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown seed scheme {self.scheme!r}")

    @property
    def replicate_seed(self) -> int:
        """The offset scheme's replicate seed (experiment seed + replicate); also what --runs hints quote."""
        return self.experiment + self.replicate

    def of(self, stage: str, unit: int = 0) -> int:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        if self.scheme == "offset":
            return self._offset(stage, unit)
        entropy = [self.experiment % 2 ** 64, self.replicate, STAGES.index(stage), unit]
        state = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
        if stage == "sample":
            return (int(state[0]) << 30) | (int(state[1]) >> 2)  # 62 bits: base + i stays below 2^63
        return int(state[0])

    def _offset(self, stage: str, unit: int) -> int:
        r = self.replicate_seed
        if stage == "sample":
            return (r * 1000 + unit) * SAMPLE_SEED_SPAN
        if stage in ("generator", "classifier"):
            return r * 1000 + unit
        return r if OFFSET_UNITS[stage] is None else r * 1000 + OFFSET_UNITS[stage]
