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
