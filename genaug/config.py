"""Run configs as data: YAML files shipped in the package (`genaug/configs/`, also reachable as
`configs/` in a checkout), found by name from any folder, overridden by command-line options."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import GenaugError
from .io import write_text

def packaged_config(name: str):
    """The shipped config called `name` (a Traversable), or None."""
    from importlib.resources import files

    candidate = files("genaug").joinpath("configs", f"{name}.yaml")
    return candidate if candidate.is_file() else None


def list_configs() -> list[tuple[str, str]]:
    """(name, first comment line) of every shipped config, sorted by name."""
    from importlib.resources import files

    out = []
    for entry in files("genaug").joinpath("configs").iterdir():
        if entry.name.endswith(".yaml"):
            first = next((ln.lstrip("# ").strip() for ln in entry.read_text().splitlines() if ln.startswith("#")), "")
            out.append((entry.name[: -len(".yaml")], first))
    return sorted(out)


def load_config(path: str | Path | None) -> dict[str, Any]:
    """Read a YAML config: a file, or the name of a shipped config such as `ddpm-28`."""
    if path is None:
        return {}
    p = Path(path)
    if not p.exists() and not p.suffix and packaged_config(str(path)) is not None:
        p = packaged_config(str(path))
    if not p.is_file():
        names = ", ".join(n for n, _ in list_configs())
        raise GenaugError(f"config not found: {path} (a YAML file, or one of the shipped names: {names}; "
                          "`genaug configs` describes them)")
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
