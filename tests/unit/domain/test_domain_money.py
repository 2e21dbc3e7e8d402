"""Money: the one constructor `D`, exact arithmetic in `MONEY`, the one rounding, the one text form."""

import decimal
from decimal import Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bkr.domain.errors import InvalidInput
from bkr.domain.money import CENT, MONEY, D, add, canonical, magnitude, mul, neg, round_down, sub, total

EIGHTEEN_PLACES = st.decimals(min_value=Decimal("-1e15"), max_value=Decimal("1e15"), places=18,
                              allow_nan=False, allow_infinity=False)


def exactly(operation: str, a: Decimal, b: Decimal) -> Decimal:
    """The reference: the same operation with far more digits than any operand needs."""
    with localcontext() as context:
        context.prec = 100
        return {"+": a + b, "-": a - b, "*": a * b}[operation]


# --- D -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("1.23", Decimal("1.23")),
    (" 1.5 ", Decimal("1.5")),
    (7, Decimal(7)),
    (Decimal("0.000000000000000001"), Decimal("1E-18")),
    ("123456789012345678901234567890.123456789012345678",
     Decimal("123456789012345678901234567890.123456789012345678")),
])
def test_d_makes_the_exact_amount_written(value: str | int | Decimal, expected: Decimal) -> None:
    amount = D(value)
    assert amount == expected
    assert amount.as_tuple() == expected.as_tuple()


@pytest.mark.parametrize("value", [0.1, 1.0, float("nan"), float("inf")])
def test_d_refuses_floats(value: float) -> None:
    with pytest.raises(InvalidInput, match="not an exact number"):
        D(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [True, False, None, [1], b"1"])
def test_d_refuses_values_that_are_not_numbers_or_text(value: object) -> None:
    with pytest.raises(InvalidInput):
        D(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["NaN", "nan", "sNaN", "Infinity", "-Infinity", "inf",
                                   Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")])
def test_d_refuses_non_finite_values(value: str | Decimal) -> None:
    with pytest.raises(InvalidInput, match="not a finite number"):
        D(value)


@pytest.mark.parametrize("value", ["", "   ", "abc", "1.2.3", "1,5", "$1"])
def test_d_refuses_text_that_is_not_a_number(value: str) -> None:
    with pytest.raises(InvalidInput, match="not a number"):
        D(value)


# --- MONEY arithmetic ----------------------------------------------------------------------------

def test_money_keeps_every_digit_of_an_18_decimal_sum_above_ten_billion() -> None:
    large = D("12345678901.123456789012345678")
    tiny = D("0.000000000000000001")
    assert add(large, tiny) == D("12345678901.123456789012345679")
    assert total([large, tiny]) == D("12345678901.123456789012345679")
    # The trap this guards against: Python's default 28-digit context drops the last digits.
    with localcontext(decimal.Context()):
        assert large + tiny != D("12345678901.123456789012345679")


def test_money_multiplication_that_needs_more_digits_than_the_context_raises() -> None:
    over_half = D("1." + "1" * (MONEY.prec // 2 + 1))  # its square has more digits than the context
    with pytest.raises(decimal.Inexact):
        mul(over_half, over_half)


@pytest.mark.parametrize("operation", [add, sub])
def test_money_addition_that_needs_more_digits_than_the_context_raises(operation: object) -> None:
    with pytest.raises(decimal.Inexact):
        operation(D("1E+100"), D("1E-100"))  # type: ignore[operator]


def test_money_total_that_needs_more_digits_than_the_context_raises() -> None:
    with pytest.raises(decimal.Inexact):
        total([D("1E+100"), D("1"), D("1E-100")])


def test_money_context_has_room_for_18_decimals_far_above_any_monthly_volume() -> None:
    assert MONEY.prec >= 18 + 30
    assert MONEY.traps[decimal.Inexact]


@settings(max_examples=200)
@given(a=EIGHTEEN_PLACES, b=EIGHTEEN_PLACES)
def test_money_arithmetic_is_exact_to_the_last_digit(a: Decimal, b: Decimal) -> None:
    assert add(a, b) == exactly("+", a, b)
    assert sub(a, b) == exactly("-", a, b)
    assert mul(a, b) == exactly("*", a, b)
    assert total([a, b, a]) == exactly("+", exactly("+", a, b), a)


# --- round_down ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("amount", "quantum", "expected"), [
    ("1.239", "0.01", "1.23"),
    ("1.231", "0.01", "1.23"),
    ("0.009999999999999999", "0.01", "0.00"),
    ("-1.239", "0.01", "-1.23"),  # towards zero
    ("5", "0.01", "5.00"),
    ("12345678901.999999999999999999", "0.01", "12345678901.99"),
    ("9.99", "1", "9"),
    ("1.23456789", "0.0001", "1.2345"),
])
def test_round_down_truncates_towards_zero_to_the_quantum(amount: str, quantum: str, expected: str) -> None:
    result = round_down(D(amount), D(quantum))
    assert result == D(expected)
    assert result.as_tuple().exponent == D(quantum).as_tuple().exponent


def test_round_down_uses_cents_by_default() -> None:
    assert round_down(D("10.4999")) == D("10.49")
    assert D("0.01") == CENT


@settings(max_examples=200)
@given(amount=st.decimals(min_value=0, max_value=Decimal("1e13"), places=18),
       quantum=st.sampled_from([D("0.01"), D("1"), D("0.0001"), D("0.000001")]))
def test_round_down_never_rounds_up_and_drops_less_than_one_quantum(amount: Decimal, quantum: Decimal) -> None:
    rounded = round_down(amount, quantum)
    with localcontext() as context:
        context.prec = 100
        assert rounded <= amount
        assert amount - rounded < quantum
        assert (rounded / quantum) == (rounded / quantum).to_integral_value()


# --- canonical -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("amount", "text"), [
    ("1.10", "1.1"),
    ("1.1", "1.1"),
    ("1.000000000000000000", "1"),
    ("100", "100"),
    ("1E+3", "1000"),
    ("0.00", "0"),
    ("-0", "0"),
    ("-2.50", "-2.5"),
    ("1E-20", "0.00000000000000000001"),
    ("12345678901.123456789012345678", "12345678901.123456789012345678"),
])
def test_canonical_writes_plain_notation_without_trailing_zeros(amount: str, text: str) -> None:
    assert canonical(D(amount)) == text


def test_canonical_gives_one_text_for_equal_amounts() -> None:
    assert D("1.10") == D("1.1")
    assert canonical(D("1.10")) == canonical(D("1.1"))


@settings(max_examples=200)
@given(amount=st.decimals(allow_nan=False, allow_infinity=False, min_value=Decimal("-1e30"),
                          max_value=Decimal("1e30"), places=18),
       extra_zeros=st.integers(min_value=0, max_value=20))
def test_canonical_is_the_same_for_every_way_of_writing_an_amount(amount: Decimal, extra_zeros: int) -> None:
    with localcontext() as context:
        context.prec = 100
        padded = amount.quantize(Decimal(1).scaleb(amount.as_tuple().exponent - extra_zeros))  # type: ignore[operator]
    assert padded == amount
    text = canonical(amount)
    assert canonical(padded) == text
    assert "E" not in text and "e" not in text
    assert D(text) == amount


def test_negation_and_magnitude_keep_every_digit_whatever_the_threads_context(
        hostile_decimal_context: decimal.Context) -> None:
    """Python's `-x` and `abs(x)` round in the thread's context (28 digits by default; a library
    such as ccxt changes its rounding and traps): `neg` and `magnitude` are the money context's."""
    amount = Decimal("-" + "9" * 51 + "." + "9" * 54)
    with localcontext(hostile_decimal_context):
        assert (neg(amount), magnitude(amount), neg(neg(amount))) == (amount.copy_negate(), amount.copy_abs(), amount)
    with localcontext(decimal.Context()):
        assert -amount != amount.copy_negate()  # what the operator does: rounded to 28 digits
