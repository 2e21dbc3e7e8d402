"""How figures are written on the pages. Amounts stay `Decimal`; these only choose the digits shown.

Display rounds half-even to the places asked for, as a person reads a figure; what a broker is
paid is the statement's own `payout`, already rounded once by the close and shown as it is.
"""

from decimal import Decimal

_SUFFIXES = ((Decimal(10) ** 9, "B"), (Decimal(10) ** 6, "M"), (Decimal(10) ** 3, "k"))


def amount(value: Decimal, *, places: int = 2, compact: bool = False) -> str:
    """`1234567.891` → `1,234,567.89`; with `compact`, `1.2M` (for chart axes)."""
    if compact:
        for size, suffix in _SUFFIXES:
            if abs(value) >= size:
                return f"{value / size:,.1f}".removesuffix(".0") + suffix
    return f"{value:,.{places}f}"


def rate(value: Decimal) -> str:
    """A fraction as a percentage: `0.35` → `35%`, `0.125` → `12.5%`."""
    text = f"{value * 100:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text}%"
