"""FID, KID and precision/recall through torch-fidelity, on genaug's image sets.

torch-fidelity does the maths; genaug gives it uint8 image `Dataset`s, the offline Inception
weights (`inception.py`), and cache names made from the content of each real set and the
weights' checksum, so a real set's features are extracted once however many generators are
compared with it. Precision/recall use the same Inception pool3 features (torch-fidelity's
default VGG16 would need a download). Grayscale images are replicated to 3 channels; images
go in as uint8 at their own size and torch-fidelity resizes them to 299 px.
"""

from __future__ import annotations

import functools

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..device import resolve_device
from ..errors import GenaugError
from ..inception import InceptionPool3, default_cache_dir, ensure_weights

FEW_IMAGES_WARNING = 2048  # FID is biased upward below this many images per side


@dataclass
class ImageSet:
    """uint8 images (N x C x H x W, C = 1 or 3) with a description; `cacheable` for real sets."""

    images: torch.Tensor
    description: str
    cacheable: bool = False

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
    """FID (and optionally KID, precision/recall) between two image sets, as a flat dict."""
    import torch_fidelity

    minimum = 4 if prc else 2  # precision/recall's k-NN radii (k = 3) need more than 3 images
    _check(a, minimum)
    _check(b, minimum)
    cache_dir = Path(cache_dir or default_cache_dir())
    weights_path, weights_sha = ensure_weights(cache_dir, weights)
    extractor = _extractor_name(weights_sha)
    cuda = resolve_device(device).type == "cuda"
    names = [f"genaug-{s.content_hash()}" if s.cacheable else None for s in (a, b)]
    n_a, n_b = len(a.images), len(b.images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = torch_fidelity.calculate_metrics(
            input1=_RGBUint8(a.images), input2=_RGBUint8(b.images),
            input1_cache_name=names[0], input2_cache_name=names[1],
            cache_root=str(cache_dir / "fidelity"), cache=True,
            fid=True, kid=kid, prc=prc, isc=False,
            feature_extractor=extractor, feature_extractor_weights_path=str(weights_path),
            feature_layer_prc="2048",
            kid_subset_size=min(1000, max(2, min(n_a, n_b) // 2)),
            batch_size=batch_size, cuda=cuda, save_cpu_ram=True, verbose=verbose,
        )
    fid = float(out["frechet_inception_distance"])
    result = {"fid": 0.0 if abs(fid) < 5e-4 else fid, "n_a": n_a, "n_b": n_b}  # no "-0.000" for identical sets
    if kid:
        result["kid_mean"] = float(out["kernel_inception_distance_mean"])
        result["kid_std"] = float(out["kernel_inception_distance_std"])
    if prc:
        result["precision"] = float(out["precision"])
        result["recall"] = float(out["recall"])
    if min(n_a, n_b) < FEW_IMAGES_WARNING:
        result["warning"] = (f"FID with fewer than {FEW_IMAGES_WARNING} images per side is biased upward "
                             f"({n_a} vs {n_b}); compare only figures made with equal counts")
    return result


@functools.lru_cache(maxsize=2)
def _pool3_network(weights_path: str, weights_sha: str, cuda: bool) -> InceptionPool3:
    """One loaded network per weights file and device in a process (it runs in inference mode only)."""
    model = InceptionPool3(_extractor_name(weights_sha), ["2048"], feature_extractor_weights_path=weights_path)
    return model.cuda() if cuda else model


def inception_features(images: torch.Tensor, batch_size: int = 64, device: str = "auto",
                       cache_dir: str | Path | None = None, weights: str | Path | None = None) -> torch.Tensor:
    """2048-d pool3 features of uint8 images (for nearest-neighbour checks)."""
    from torch_fidelity.utils import get_featuresdict_from_dataset

    weights_path, weights_sha = ensure_weights(Path(cache_dir or default_cache_dir()), weights)
    cuda = resolve_device(device).type == "cuda"
    model = _pool3_network(str(weights_path), weights_sha, cuda)
    feats = get_featuresdict_from_dataset(_RGBUint8(images), model, batch_size, cuda, True, False)
    return feats["2048"].double()
