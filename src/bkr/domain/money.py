"""Money: one constructor, one arithmetic context, one rounding function.

Every amount in bkr is a `Decimal` made by `D`. Arithmetic runs in `MONEY`, a context with
more digits than any sum of bounded amounts can need (`bkr.domain.bounds` derives it), and with
`Inexact` trapped: an operation that would have to round raises instead of silently
dropping digits (Python's default context keeps 28 digits, which rounds an 18-decimal sum
above $10^10). The only rounding in the program is `round_down`, applied once per statement.
"""

from collections.abc import Iterable
from decimal import ROUND_DOWN, Context, Decimal, Inexact, InvalidOperation, localcontext

from bkr.domain.bounds import PRECISION
from bkr.domain.errors import InvalidInput

# PRECISION is derived from the bounds of every amount that enters (see bkr.domain.bounds).
MONEY = Context(prec=PRECISION, traps=[InvalidOperation, Inexact])
ZERO = Decimal(0)
CENT = Decimal("0.01")


def D(value: str | int | Decimal) -> Decimal:
    """Make an exact amount from a string, an int or a Decimal; floats are refused."""
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise InvalidInput(f"not an exact number: {value!r} ({type(value).__name__})")
    if isinstance(value, str) and "_" in value:  # Decimal reads "1_5" as 15; a file never means that
        raise InvalidInput(f"not a number: {value!r}")
    try:  # construction is exact whatever the context's precision; only arithmetic rounds
        result = Decimal(value.strip() if isinstance(value, str) else value)
    except (InvalidOperation, ValueError):
        raise InvalidInput(f"not a number: {value!r}") from None
    if not result.is_finite():
        raise InvalidInput(f"not a finite number: {value!r}")
    return result


# The context's own methods: exact (Inexact is trapped) without switching the thread's context.
# Python's operators, `-x` and `abs(x)` included, round in the thread's context instead, which a
# library in the same process may have changed (ccxt sets ROUND_HALF_UP and traps on it): on
# money, use these.
add = MONEY.add
mul = MONEY.multiply
sub = MONEY.subtract
neg = MONEY.minus
magnitude = MONEY.abs


def total(values: Iterable[Decimal]) -> Decimal:
    """Exact sum of amounts."""
    with localcontext(MONEY):
        result = ZERO
        for value in values:
            result += value
        return result


def round_down(amount: Decimal, quantum: Decimal = CENT) -> Decimal:
    """Round towards zero to a multiple of `quantum` (0.01 by default). Used once per statement."""
    with localcontext(MONEY) as context:
        context.traps[Inexact] = False  # the one place where dropping digits is intended
        return amount.quantize(quantum, rounding=ROUND_DOWN)


def plain(amount: Decimal) -> str:
    """An amount in plain notation with every digit it has, trailing zeros included: how a
    payout is written, so that "0.00" shows the quantum it was rounded to. (Formatting with
    "f" and no precision never rounds, whatever the thread's context.)"""
    return format(amount, "f")


def canonical(amount: Decimal) -> str:
    """The one text form of an amount: plain notation, no exponent, no trailing zeros.

    Used for storage on SQLite, for keys, and in every document bkr writes, so that the same
    amount is always the same bytes.
    """
    text = str(amount)
    if "E" in text:  # str() chose scientific notation: take the slow, general path
        if amount.is_zero():
            return "0"
        with localcontext(MONEY):
            return format(amount.normalize(), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text

