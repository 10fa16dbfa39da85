"""How numbers read from results are turned into floats and into text, in one place.

Evaluation files store an undefined value (precision without predictions, F1
without lesions) as JSON ``null``; tables and figures show it as ``n/a``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["as_float", "format_value"]


def as_float(value: Any) -> float:
    """``value`` as a float; None (JSON null) becomes NaN."""
    return math.nan if value is None else float(value)


def format_value(value: Any, digits: int = 3) -> str:
    """``digits`` decimals for a real number, the integer itself for an integer, "n/a" when undefined.

    Undefined: None, NaN or an infinity. Other values are returned as ``str(value)``.
    """
    if value is None:
        return "n/a"
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Real):
        return f"{float(value):.{digits}f}" if math.isfinite(value) else "n/a"
    return str(value)
