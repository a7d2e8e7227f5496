"""How close two image sets get: cosine similarity of features, and a shift-tolerant pixel similarity.

Feature spaces (`FEATURES`):
- `inception`: the 2048-d pool3 features of the FID network (cached for real sets, like FID's);
- `classifier`: the penultimate activations of a trained genaug classifier (`--model FILE`);
- `pixels`: the images themselves, compared by `pixel_similarity`.

`pixel_similarity` is the Pearson correlation of the central crop of each gallery image with the
query shifted by up to `max_shift` pixels each way (and mirrored, when flips are plausible for the
data), maximised over those alignments: a copy moved by a few pixels scores like an exact copy,
and brightness/contrast changes do not hide it. 1.0 means identical up to an affine intensity map.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import GenaugError

FEATURES = ("inception", "classifier", "pixels")


def _standardise(x: torch.Tensor) -> torch.Tensor:
    """Rows to zero mean and unit norm (constant rows stay zero)."""
    x = x - x.mean(dim=1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp(min=1e-8)


def pixel_similarity(queries: torch.Tensor, gallery: torch.Tensor, max_shift: int = 3, flips: bool = False,
                     chunk: int = 512) -> torch.Tensor:
    """N x M: for each query and gallery image, the best Pearson correlation over alignments."""
    _check_pair(queries, gallery)
    h, w = gallery.shape[-2:]
    s = int(max_shift)
    if not 0 <= 2 * s < min(h, w):
        raise GenaugError(f"max_shift {s} is too large for {h}x{w} images")
    g = _standardise(gallery[..., s:h - s, s:w - s].reshape(len(gallery), -1).double())
    variants = [queries, queries.flip(-1)] if flips else [queries]
    best = torch.full((len(queries), len(gallery)), -1.0, dtype=torch.float64)
    for q_all in variants:
        for dy in range(-s, s + 1):
            for dx in range(-s, s + 1):
                for i in range(0, len(q_all), chunk):
                    q = q_all[i:i + chunk, ..., s + dy:h - s + dy, s + dx:w - s + dx]
                    sims = _standardise(q.reshape(len(q), -1).double()) @ g.T
                    best[i:i + chunk] = torch.maximum(best[i:i + chunk], sims)
    return best


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """N x M cosine similarities of feature rows."""
    a = torch.nn.functional.normalize(a.double(), dim=1)
    b = torch.nn.functional.normalize(b.double(), dim=1)
    return a @ b.T


def similarity_matrix(queries: torch.Tensor, gallery: torch.Tensor, features: str = "inception", *,
                      embed: Callable[[torch.Tensor], torch.Tensor] | None = None, cache_gallery: bool = False,
                      max_shift: int = 3, flips: bool = False, device: str = "auto") -> torch.Tensor:
    """N x M similarities of `queries` to `gallery` in one feature space (`embed` for `classifier`)."""
    _check_pair(queries, gallery)
    if features == "pixels":
        return pixel_similarity(queries, gallery, max_shift=max_shift, flips=flips)
    if features == "inception":
        from .fidelity import inception_features

        return cosine_similarity(inception_features(queries, device=device),
                                 inception_features(gallery, cache_gallery, device=device))
    if features == "classifier":
        if embed is None:
            raise GenaugError("--features classifier needs a trained classifier (--model FILE)")
        return cosine_similarity(embed(queries), embed(gallery))
    raise GenaugError(f"unknown feature space {features!r}; choose from {', '.join(FEATURES)}")


def top_k(similarities: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k most similar gallery images per query: (values, indices), best first."""
    if k < 1:
        raise GenaugError(f"k must be at least 1 (got {k})")
    if k > similarities.shape[1]:
        raise GenaugError(f"k = {k} is larger than the gallery ({similarities.shape[1]} images)")
    return similarities.topk(k, dim=1)


def _check_pair(queries: torch.Tensor, gallery: torch.Tensor) -> None:
    if len(queries) == 0:
        raise GenaugError("no query images")
    if len(gallery) == 0:
        raise GenaugError("the gallery is empty")
    if queries.shape[1:] != gallery.shape[1:]:
        raise GenaugError(f"query images are {tuple(queries.shape[1:])} but gallery images are "
                          f"{tuple(gallery.shape[1:])}: load both at one size and channel count")
