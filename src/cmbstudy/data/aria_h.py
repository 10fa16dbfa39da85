"""ARIA-H microhaemorrhage categories of a CMB count: 0, 1-4, 5-9, >= 10.

The burden categories of the paper's Table 6. They are defined here, below
every stage, because the synthetic cohort spreads its subjects over them, the
cross-validation splits are stratified by them and the evaluation compares them.
"""

from __future__ import annotations

__all__ = ["ARIA_H_CATEGORIES", "aria_h_category", "format_aria_h_categories"]

ARIA_H_CATEGORIES: tuple[str, ...] = ("0", "1-4", "5-9", ">=10")


def aria_h_category(count: int) -> str:
    """ARIA-H microhaemorrhage category of a CMB count: "0", "1-4", "5-9" or ">=10".

    Raises:
        ValueError: count is negative or not an integer.
    """
    if isinstance(count, bool) or int(count) != count or count < 0:
        raise ValueError(f"CMB count {count!r} must be a non-negative integer")
    count = int(count)
    if count == 0:
        return "0"
    if count <= 4:
        return "1-4"
    if count <= 9:
        return "5-9"
    return ">=10"


def format_aria_h_categories(separator: str) -> str:
    """The categories as prose prints them, with an en dash and a sign: "0 / 1–4 / 5–9 / ≥10"."""
    return separator.join(ARIA_H_CATEGORIES).replace(">=", "≥").replace("-", "–")
