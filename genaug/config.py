"""Run configs as data: YAML files in `configs/`, overridden by command-line options."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import GenaugError
from .io import write_text

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def load_config(path: str | Path | None) -> dict[str, Any]:
    """Read a YAML config; a bare name such as `ddpm-28` is looked up in `configs/`."""
    if path is None:
        return {}
    p = Path(path)
    if not p.exists() and not p.suffix:
        p = CONFIG_DIR / f"{path}.yaml"
    if not p.exists():
        raise GenaugError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise GenaugError(f"config {p} is not valid YAML: {e}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise GenaugError(f"config {p} must hold a mapping of settings")
    return data


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge `overrides` into a copy of `base`; `None` values in overrides are ignored."""
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def save_config(config: Mapping[str, Any], path: str | Path) -> None:
    write_text(path, yaml.safe_dump(dict(config), sort_keys=False))
