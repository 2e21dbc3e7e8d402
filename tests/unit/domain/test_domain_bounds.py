"""Bounds: every decimal that enters has a stated size, and with those sizes no sum bkr keeps can
leave the money context, so no accepted input can make a later close fail on arithmetic."""

from decimal import Decimal, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_domain_fills import raw_row

from bkr.domain.bounds import (
    AMOUNT,
    FILLS_PER_MONTH_ASSUMED,
    FRACTION,
    PRECISION,
    USD_RATE,
    Bounds,
    bounded,
    digits_of,
)
from bkr.domain.errors import InvalidInput
from bkr.domain.fills import parse_fill
from bkr.domain.money import MONEY, add, mul
from bkr.domain.registry import check_rate


@pytest.mark.parametrize(("text", "digits"), [
    ("0", (0, 0)), ("-0.000", (0, 0)), ("1", (1, 0)), ("1.50", (1, 1)), ("0.001", (0, 3)), ("1E+3", (4, 0)),
    ("123.45", (3, 2)), ("-999999999999999.999999999999999999", (15, 18)), ("1e-72", (0, 72)),
    ("1.3333333333333333333333333333333333333333333", (1, 43)), ("1E+30", (31, 0)),
])
def test_digits_are_counted_without_trailing_zeros(text: str, digits: tuple[int, int]) -> None:
    assert digits_of(Decimal(text)) == digits


def largest(bounds: Bounds) -> Decimal:
    """The largest value within `bounds`: every digit a 9."""
    return Decimal("9" * bounds.integer_digits + "." + "9" * bounds.decimal_places)


def smallest_step(bounds: Bounds) -> Decimal:
    return Decimal(1).scaleb(-bounds.decimal_places)


def test_the_ends_of_a_bound_are_accepted_and_one_digit_more_is_not() -> None:
    assert bounded(largest(AMOUNT), AMOUNT, "price") == largest(AMOUNT)
    assert bounded(smallest_step(AMOUNT), AMOUNT, "price") == smallest_step(AMOUNT)
    with pytest.raises(InvalidInput, match=r"^price: 1000000000000000 has 16 integer digits; at most 15 integer "
                                           r"digits and 18 decimal places are accepted$"):
        bounded(Decimal(10) ** 15, AMOUNT, "price")
    with pytest.raises(InvalidInput, match=r"^price: 0\.0000000000000000001 has 19 decimal places"):
        bounded(smallest_step(AMOUNT) / 10, AMOUNT, "price")


def test_a_huge_value_is_not_quoted_back_whole() -> None:
    with pytest.raises(InvalidInput) as raised:
        bounded(Decimal("1" * 100_000), AMOUNT, "quantity")
    assert len(str(raised.value)) < 200
    assert "100000 integer digits" in str(raised.value)


@pytest.mark.parametrize(("name", "value", "reason"), [
    ("price", "1." + "3" * 43, "price: 1." + "3" * 38 + "… has 43 decimal places"),
    ("quantity", "1e-72", "quantity: 1E-72 has 72 decimal places"),
    ("fee", "1e30", "fee: 1000000000000000000000000000000 has 31 integer digits"),
])
def test_a_fill_amount_beyond_its_bounds_is_refused_with_its_field(name: str, value: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_fill(raw_row(**{name: value}))
    assert str(raised.value).startswith(reason)


def test_a_referral_rate_has_at_most_18_decimal_places() -> None:
    assert check_rate(Decimal("0.123456789012345678")) == Decimal("0.123456789012345678")
    with pytest.raises(InvalidInput, match=r"^rate: 1E-100 has 100 decimal places"):
        check_rate(Decimal("1e-100"))


def test_the_bounds_keep_every_figure_inside_the_money_context() -> None:
    """The worst case of bkr.domain.bounds' table, computed in MONEY (which traps any rounding):
    the largest price, quantity, fee and USD rate, summed over FILLS_PER_MONTH_ASSUMED fills, paid
    at the rate with the most decimal places, with a carry on top."""
    price = quantity = fee = largest(AMOUNT)
    usd = largest(USD_RATE)
    rate = Decimal("0." + "9" * FRACTION.decimal_places)  # a fraction with every decimal place used
    volume = mul(mul(price, quantity), usd)
    fee_usd = mul(mul(fee, price), usd)  # a fee in the base asset: fee × price × quote rate
    month_volume = mul(volume, Decimal(FILLS_PER_MONTH_ASSUMED))
    fee_base = mul(fee_usd, Decimal(FILLS_PER_MONTH_ASSUMED))
    payout = mul(fee_base, rate)
    statement = add(payout, -payout)  # a carry of the same size
    for figure in (volume, fee_usd, month_volume, fee_base, payout, statement):
        integer, places = digits_of(figure)
        assert integer + places <= PRECISION - 30  # 30 digits to spare for ledger balances
    assert sum(digits_of(payout)) <= 51 + 72  # the table's bound on the largest figure a statement holds
    assert MONEY.prec == PRECISION


@given(value=st.decimals(allow_nan=False, allow_infinity=False, places=None))
def test_digits_of_agrees_with_the_text_of_the_value(value: Decimal) -> None:
    with localcontext() as context:
        context.prec = 10_000
        text = format(abs(value).normalize(), "f") if value else "0"
    whole, _, fraction = text.partition(".")
    assert digits_of(value) == (0 if whole == "0" else len(whole), len(fraction))
