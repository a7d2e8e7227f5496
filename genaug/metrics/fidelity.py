"""FID, KID and precision/recall through torch-fidelity, on genaug's image sets.

torch-fidelity extracts and caches the features and computes KID and precision/recall; genaug
gives it uint8 image `Dataset`s, the offline Inception weights (`inception.py`), and cache names
made from the content of each real set and the weights' checksum, so a real set's features are
extracted once however many generators are compared with it. FID is torch-fidelity's number,
its trace term taken from the features (`frechet_distance`: an SVD of n1 x n2 instead of the
eigenvalues of a 2048 x 2048 product). Precision/recall use the same Inception pool3 features (torch-fidelity's
default VGG16 would need a download). Grayscale images are replicated to 3 channels; images
go in as uint8 at their own size and torch-fidelity resizes them to 299 px.
"""

from __future__ import annotations

import functools

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..device import resolve_device
from ..errors import GenaugError
from ..inception import InceptionPool3, default_cache_dir, ensure_weights

FEW_IMAGES_WARNING = 2048  # FID is biased upward below this many images per side
LAYER = "2048"  # pool3: FID, KID and precision/recall all read it


@dataclass
class ImageSet:
    """uint8 images (N x C x H x W, C = 1 or 3) with a description; `cacheable` for real sets;
    `features` (N x 2048, from `with_features`) when they were extracted already: subsets of one
    synthetic set (per class) then need no second Inception pass."""

    images: torch.Tensor
    description: str
    cacheable: bool = False
    features: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def subset(self, mask: torch.Tensor, description: str) -> "ImageSet":
        """The images where `mask` holds, with their features when this set has them."""
        return ImageSet(self.images[mask], description, self.cacheable,
                        None if self.features is None else self.features[mask])

    def content_hash(self) -> str:
        h = hashlib.sha256(repr(tuple(self.images.shape)).encode())
        h.update(self.images.contiguous().numpy().tobytes())
        return h.hexdigest()[:24]


class _RGBUint8(Dataset):
    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = self.images[i]
        return img.expand(3, -1, -1).contiguous() if img.shape[0] == 1 else img


def _extractor_name(weights_sha: str) -> str:
    """Register the Inception once per weights file; the name carries the checksum (cache key)."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    name = f"genaug-inception-{weights_sha[:16]}"
    if name not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(name, InceptionPool3)
    return name


def _check(s: ImageSet, min_count: int) -> None:
    if len(s.images) == 0:
        raise GenaugError(f"{s.description}: no images")
    if len(s.images) < min_count:
        raise GenaugError(f"{s.description}: {len(s.images)} images; at least {min_count} are needed")
    if s.images.dtype != torch.uint8 or s.images.ndim != 4 or s.images.shape[1] not in (1, 3):
        raise GenaugError(f"{s.description}: expected uint8 N x C x H x W images with C = 1 or 3")


def compute_metrics(a: ImageSet, b: ImageSet, kid: bool = False, prc: bool = False, batch_size: int = 64,
                    device: str = "auto", cache_dir: str | Path | None = None,
                    weights: str | Path | None = None, verbose: bool = False) -> dict:
    """FID (and optionally KID, precision/recall) between two image sets, as a flat dict.

    The steps of torch-fidelity's `calculate_metrics` with its own functions (feature extraction and
    its cache, KID, precision/recall) and one loaded network per process; only FID's trace term is
    taken from the features themselves below 2048 images per side (`frechet_distance`)."""
    from torch_fidelity.metric_kid import kid_featuresdict_to_metric
    from torch_fidelity.metric_prc import prc_featuresdict_to_metric
    from torch_fidelity.utils import extract_featuresdict_from_input_id_cached

    minimum = 4 if prc else 2  # precision/recall's k-NN radii (k = 3) need more than 3 images
    _check(a, minimum)
    _check(b, minimum)
    n_a, n_b = len(a.images), len(b.images)
    network, kwargs = _fidelity_kwargs(a, b, batch_size, device, cache_dir, weights, verbose)
    kwargs["kid_subset_size"] = min(1000, max(2, min(n_a, n_b) // 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f1, f2 = ({LAYER: s.features} if s.features is not None else
                  extract_featuresdict_from_input_id_cached(i, network, **kwargs) for i, s in ((1, a), (2, b)))
        fid = frechet_distance(f1[LAYER], f2[LAYER])
        result = {"fid": 0.0 if abs(fid) < 5e-4 else fid, "n_a": n_a, "n_b": n_b}  # no "-0.000" for identical sets
        if kid:
            out = kid_featuresdict_to_metric(f1, f2, LAYER, **kwargs)
            result["kid_mean"] = float(out["kernel_inception_distance_mean"])
            result["kid_std"] = float(out["kernel_inception_distance_std"])
        if prc:
            out = prc_featuresdict_to_metric(f1, f2, LAYER, **kwargs)
            result["precision"] = float(out["precision"])
            result["recall"] = float(out["recall"])
    if min(n_a, n_b) < FEW_IMAGES_WARNING:
        result["warning"] = (f"FID with fewer than {FEW_IMAGES_WARNING} images per side is biased upward "
                             f"({n_a} vs {n_b}); compare only figures made with equal counts")
    return result


def _fidelity_kwargs(a: ImageSet, b: ImageSet | None, batch_size: int, device: str, cache_dir, weights,
                     verbose: bool) -> tuple[InceptionPool3, dict]:
    """The network (loaded once per process) and torch-fidelity's keyword arguments for one or two sets
    (cache names from their content)."""
    cache_dir = Path(cache_dir or default_cache_dir())
    weights_path, weights_sha = ensure_weights(cache_dir, weights)
    cuda = resolve_device(device).type == "cuda"
    kwargs = dict(cache_root=str(cache_dir / "fidelity"), cache=True, batch_size=batch_size, cuda=cuda,
                  save_cpu_ram=True, verbose=verbose)
    for i, s in ((1, a), (2, b)):
        if s is not None:
            kwargs[f"input{i}"] = _RGBUint8(s.images)
            kwargs[f"input{i}_cache_name"] = f"genaug-{s.content_hash()}" if s.cacheable else None
    return _pool3_network(str(weights_path), weights_sha, cuda), kwargs


def with_features(s: ImageSet, batch_size: int = 64, device: str = "auto", cache_dir: str | Path | None = None,
                  weights: str | Path | None = None) -> ImageSet:
    """The set with its pool3 features extracted (through torch-fidelity and its cache, as in `compute_metrics`)."""
    from torch_fidelity.utils import extract_featuresdict_from_input_id_cached

    _check(s, 1)
    network, kwargs = _fidelity_kwargs(s, None, batch_size, device, cache_dir, weights, False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        features = extract_featuresdict_from_input_id_cached(1, network, **kwargs)[LAYER]
    return ImageSet(s.images, s.description, s.cacheable, features)


def frechet_distance(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """FID between two feature sets (rows), the number torch-fidelity's `fid_statistics_to_metric` gives.

    Its trace term, tr sqrt(S1 S2), sums the square roots of the eigenvalues of a d x d product (d = 2048:
    2.3 s on one core for every FID). With A1, A2 the centred features, S1 S2 = A1' A1 A2' A2 / c has the
    same nonzero eigenvalues as M M' with M = A1 A2' / sqrt(c) (n1 x n2), so the term is the sum of M's
    singular values: exact, and an n1 x n2 SVD while either side has fewer images than dimensions.
    Otherwise torch-fidelity's own computation runs."""
    n1, n2, d = len(f1), len(f2), f1.shape[1]
    if min(n1, n2) >= d:
        from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

        stats = [fid_features_to_statistics(f.float().cpu()) for f in (f1, f2)]
        return float(fid_statistics_to_metric(*stats, False)["frechet_inception_distance"])
    a, b = f1.double().cpu(), f2.double().cpu()
    mu1, mu2 = a.mean(0), b.mean(0)
    a, b = a - mu1, b - mu2
    c1, c2 = n1 - 1, n2 - 1
    trace_sqrt = torch.linalg.svdvals(a @ b.T).sum() / (c1 * c2) ** 0.5
    return float((mu1 - mu2).square().sum() + a.square().sum() / c1 + b.square().sum() / c2 - 2 * trace_sqrt)


@functools.lru_cache(maxsize=2)
def _pool3_network(weights_path: str, weights_sha: str, cuda: bool) -> InceptionPool3:
    """One loaded network per weights file and device in a process (it runs in inference mode only)."""
    model = InceptionPool3(_extractor_name(weights_sha), [LAYER], feature_extractor_weights_path=weights_path)
    model.requires_grad_(False).eval()
    return model.cuda() if cuda else model


def inception_features(images: torch.Tensor, cache: bool = False, batch_size: int = 64, device: str = "auto",
                       cache_dir: str | Path | None = None, weights: str | Path | None = None) -> torch.Tensor:
    """N x 2048 pool3 features (float64) of uint8 images, for nearest-neighbour checks: the same
    extraction as `with_features`. With `cache` (a real gallery) each image's row is kept by its
    content (`feature_rows`), so galleries that share images, such as the pools of two replicates,
    extract each image once. An empty set has no features rather than an error: a gate may have
    nothing left to check."""
    if len(images) == 0:
        return torch.zeros(0, int(LAYER), dtype=torch.float64)

    def extract(x: torch.Tensor) -> torch.Tensor:
        return with_features(ImageSet(x, "images"), batch_size, device, cache_dir, weights).features

    if not cache:
        return extract(images).double()
    from .feature_rows import cached_rows

    cache_dir = Path(cache_dir or default_cache_dir())
    _, weights_sha = ensure_weights(cache_dir, weights)
    return cached_rows(images, extract, cache_dir / "feature-rows" / _extractor_name(weights_sha)).double()
