"""Numbers as the reports print them (one place, so every table reads the same)."""

from __future__ import annotations

import math


def number(x, digits: int = 4) -> str:
    """Fixed decimals; a dash for a missing or undefined value."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}"


def p_value(x) -> str:
    """Three significant digits; a dash when no test was possible."""
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


def adjusted_interval(c: dict) -> str:
    """A comparison's Holm-adjusted interval with its confidence level (verdict.py), or a dash."""
    if not c.get("adj_confidence"):
        return "–"
    return f"[{number(c['adj_low'])}, {number(c['adj_high'])}] ({c['adj_confidence']:.2%})"


def interval_methods(iv: dict) -> str:
    """The interval methods a report used, with their simulated coverage, and what it left out."""
    return ((iv.get("t") or "t interval") + (f"; {iv['bootstrap']}" if iv.get("bootstrap") else "")
            + (f". Left out: {iv['bootstrap_left_out']}" if iv.get("bootstrap_left_out") else ""))
