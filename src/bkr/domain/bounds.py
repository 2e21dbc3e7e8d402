"""The bounds of every decimal that enters bkr, and why they keep every sum exact.

An amount read from a file, a request or the settings is refused (with its field named) unless
it has at most so many integer digits and so many decimal places. The bounds are generous for
any market (prices and quantities up to 10^15 with 18 decimal places, the precision of an
ERC-20 token), and they are what lets the program promise that no sum it keeps can leave its
decimal context (`bkr.domain.money.MONEY`, `PRECISION` digits with `Inexact` trapped), so that no
accepted input can make a later import, close or statement fail on arithmetic.

The headroom, worst case, for a month of N = 10^12 fills:

    fill volume or fee in USD     price × quantity × USD rate       15+15+9 = 39 integer digits,
                                                                    18+18+18 = 54 decimal places
    any sum of them               + log10(N) = 12 integer digits    51 + 54 = 105 digits
    a line's payout               fee base × rate (a fraction)      51 integer digits, 54+18 = 72 places
    a statement's payout, carry   the lines' sum (≤ the fee base)   51 + 72 = 123 digits, + 1 for a carry

so every figure bkr keeps has at most 124 significant digits, and `PRECISION` (160) leaves 36
more for the ledger's balances over months and brokers (rounded to the quantum, 2 places).
`test_the_bounds_keep_every_figure_inside_the_money_context` checks this arithmetic.
"""

from dataclasses import dataclass
from decimal import Decimal

from bkr.domain.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class Bounds:
    """At most `integer_digits` digits before the point and `decimal_places` after it."""

    integer_digits: int
    decimal_places: int

    def describe(self) -> str:
        return f"at most {self.integer_digits} integer digits and {self.decimal_places} decimal places"


AMOUNT = Bounds(15, 18)  # a fill's price, quantity and fee; a tier's volume threshold
USD_RATE = Bounds(9, 18)  # the USD value of one unit of an asset
FRACTION = Bounds(1, 18)  # a rate in [0, 1]: affiliate and broker rates, the cap
QUANTUM = Bounds(6, 18)  # the rounding quantum of a statement

# The worst case of the table above, as numbers (the test of the headroom reads them).
FILLS_PER_MONTH_ASSUMED = 10**12
PRECISION = 160

_SHOWN = 40  # characters of a refused value quoted back: a 10 MB number is not echoed


def digits_of(value: Decimal) -> tuple[int, int]:
    """(integer digits, decimal places) of a finite value, trailing zeros ignored: 1.50 has
    (1, 1), 0.001 has (0, 3), 1E+3 has (4, 0). Exact for any size: no arithmetic happens."""
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int), "only finite values reach the bounds"
    significant = list(digits)
    while len(significant) > 1 and significant[-1] == 0:
        significant.pop()
        exponent += 1
    if significant == [0]:
        return 0, 0
    places = max(0, -exponent)
    integer = max(0, len(significant) + exponent)
    return integer, places


def bounded(value: Decimal, bounds: Bounds, field: str) -> Decimal:
    """`value` if it is within `bounds`, else `InvalidInput` whose message starts with `field`."""
    integer, places = digits_of(value)
    if integer > bounds.integer_digits or places > bounds.decimal_places:
        shown = format(value, "f") if integer + places <= _SHOWN else str(value)
        if len(shown) > _SHOWN:
            shown = shown[:_SHOWN] + "…"
        found = (f"{integer} integer digits" if integer > bounds.integer_digits
                 else f"{places} decimal places")
        raise InvalidInput(f"{field}: {shown} has {found}; {bounds.describe()} are accepted", field=field)
    return value
