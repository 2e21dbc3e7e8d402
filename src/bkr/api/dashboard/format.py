"""How figures are written on the pages. Amounts stay `Decimal`; these only choose the digits shown.

Display rounds half-even to the places asked for, as a person reads a figure; what a broker is
paid is the statement's own `payout`, already rounded once by the close and shown as it is.
"""

from decimal import ROUND_HALF_EVEN, Context, Decimal

from bkr.domain.bounds import PRECISION
from bkr.domain.money import magnitude, mul

_SUFFIXES = ((Decimal("1E+9"), "B"), (Decimal("1E+6"), "M"), (Decimal("1E+3"), "k"))
# Formatting a Decimal rounds in the thread's current context, which a library may have changed
# (ccxt sets ROUND_HALF_UP on it): the digits shown are decided here, by this context alone.
_SHOWN = Context(prec=PRECISION, rounding=ROUND_HALF_EVEN)


def amount(value: Decimal, *, places: int = 2, compact: bool = False) -> str:
    """`1234567.891` → `1,234,567.89`; with `compact`, `1.2M` (for chart axes)."""
    if compact:
        for size, suffix in _SUFFIXES:
            if magnitude(value) >= size:
                return f"{_rounded(_SHOWN.divide(value, size), 1):,f}".removesuffix(".0") + suffix
    return f"{_rounded(value, places):,f}"


def _rounded(value: Decimal, places: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places, context=_SHOWN), context=_SHOWN)


def rate(value: Decimal) -> str:
    """A fraction as a percentage: `0.35` → `35%`, `0.125` → `12.5%`."""
    text = f"{mul(value, Decimal(100)):f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text}%"
