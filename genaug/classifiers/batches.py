"""Which images make each training batch: the real training images, and an arm's added images
(synthetic, duplicated, or extra real ones) at a declared share.

- `share` None (the protocol before 0.2): added images join the real ones and every batch is a
  uniform draw of the union, so the real images' share falls as the added set grows.
- `share` s in [0, 1): `round(s * batch)` places of every batch hold added images and the rest
  real ones, whatever the added set's size (DA-Fusion's `synthetic_probability`). With one class
  per image the added places go to the classes in turn (a running count, so over any run of
  batches each class gets the same number of places to within one), each class's images in its
  own seeded shuffles; real images keep their own shuffles.
"""

from __future__ import annotations

import torch

from ..errors import GenaugError


class Stream:
    """An endless stream of seeded permutations of `items` (indices)."""

    def __init__(self, items: list[int] | int, generator: torch.Generator):
        self.items = list(range(items)) if isinstance(items, int) else list(items)
        self.generator, self.buffer = generator, []

    def take(self, k: int) -> list[int]:
        while len(self.buffer) < k:
            self.buffer += [self.items[i] for i in torch.randperm(len(self.items), generator=self.generator).tolist()]
        out, self.buffer = self.buffer[:k], self.buffer[k:]
        return out


def check_share(share: float | None) -> float | None:
    if share is not None and (isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share < 1):
        raise GenaugError(f"synthetic_share must be a number in [0, 1) (got {share!r})")
    return share


class BatchDraw:
    """Batches of (images, labels, how many of them are added images) from real and added images."""

    def __init__(self, real: tuple[torch.Tensor, torch.Tensor], added: tuple[torch.Tensor, torch.Tensor] | None,
                 batch_size: int, share: float | None, generator: torch.Generator, stratify: bool = True):
        check_share(share)
        self.real_x, self.real_y = real
        has_added = added is not None and len(added[0]) > 0
        if has_added and share is None:  # proportional: one stream over the union
            self.real_x, self.real_y = torch.cat([real[0], added[0]]), torch.cat([real[1], added[1].to(real[1].dtype)])
            self.n_real, self.n_added_places = len(real[0]), 0
        else:
            self.n_real = len(real[0])
            self.n_added_places = round(share * batch_size) if has_added else 0
        self.batch_size, self.added = batch_size, added if self.n_added_places else None
        self.real_stream = Stream(len(self.real_x), generator)
        self.class_streams: list[Stream] = []
        if self.added is not None:
            labels = self.added[1]
            if stratify and labels.ndim == 1:
                self.class_streams = [Stream(torch.nonzero(labels == c).flatten().tolist(), generator)
                                      for c in torch.unique(labels).tolist()]
            else:
                self.class_streams = [Stream(len(labels), generator)]
        self.turn = 0

    def _added_indices(self) -> list[int]:
        out = []
        for _ in range(self.n_added_places):
            out += self.class_streams[self.turn % len(self.class_streams)].take(1)
            self.turn += 1
        return out

    def next(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        idx = self.real_stream.take(self.batch_size - self.n_added_places)
        images, labels = self.real_x[idx], self.real_y[idx]
        n_added = sum(1 for i in idx if i >= self.n_real)  # proportional draws: the added part of the union
        if self.added is not None:
            aidx = self._added_indices()
            images = torch.cat([images, self.added[0][aidx]])
            labels = torch.cat([labels, self.added[1][aidx].to(labels.dtype)])
            n_added = len(aidx)
        return images, labels, n_added
