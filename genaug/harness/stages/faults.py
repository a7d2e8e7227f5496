"""Fault injection, for the executors' tests: `GENAUG_FAULT=kill:<label>:<marker>` ends the worker
process in the middle of the first task whose label contains `<label>` (once: the marker file records
that it happened, so the retry runs through); `GENAUG_FAULT=raise:<label>` makes every such task raise.
Labels read like `classifier rep-1 +dup resnet18 seed 0`. Unset, nothing happens."""

from __future__ import annotations

import os
from pathlib import Path

ENV = "GENAUG_FAULT"


class InjectedFault(RuntimeError):
    pass


def inject(point: str, label: str) -> None:
    value = os.environ.get(ENV)
    if not value or not label:
        return
    kind, _, rest = value.partition(":")
    target, _, marker = rest.partition(":")
    if kind != point or not target or target not in label:
        return
    if kind == "raise":
        raise InjectedFault(f"injected fault ({ENV}={value})")
    if marker:
        if Path(marker).exists():
            return
        Path(marker).write_text(label)
    os._exit(137)
