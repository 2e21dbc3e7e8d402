"""Plausibility: a fill dated in the future or before the program, or whose fee dwarfs its trade,
is refused with the field to blame; anything at the edge of the rules is accepted."""

import decimal
from datetime import UTC, datetime, timedelta

import pytest
from test_domain_fills import raw_row

from bkr.domain.config import DEFAULT_USD_RATES, ProgramConfig
from bkr.domain.errors import InvalidInput
from bkr.domain.fills import check_plausible, parse_fill, price_in_usd
from bkr.domain.money import D
from bkr.domain.periods import Month
from bkr.settings import parse_config

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
RULES = ProgramConfig(start=Month(2024, 1), max_fee_share=D("0.01")).plausibility


def check(**overrides: object) -> None:
    check_plausible(price_in_usd(parse_fill(raw_row(**overrides)), DEFAULT_USD_RATES), NOW, RULES)


@pytest.mark.parametrize("timestamp", ["2024-01-01T00:00:00Z", "2026-12-03T12:05:00Z", "2026-12-03T12:04:59.999Z"])
def test_a_fill_inside_the_program_and_at_most_five_minutes_ahead_is_plausible(timestamp: str) -> None:
    check(timestamp=timestamp)


@pytest.mark.parametrize(("timestamp", "reason"), [
    ("2026-12-03T12:05:00.000001Z", "timestamp: 2026-12-03T12:05:00.000001+00:00 is in the future (bkr's clock says "
                                    "2026-12-03T12:00:00+00:00; at most 5 minutes ahead is accepted)"),
    ("2099-01-01T00:00:00Z", "timestamp: 2099-01-01T00:00:00+00:00 is in the future"),
    ("9999-12-31T23:59:59Z", "timestamp: 9999-12-31T23:59:59+00:00 is in the future"),
    ("2023-12-31T23:59:59.999999Z", "timestamp: 2023-12-31T23:59:59.999999+00:00 is before the program's start "
                                    "(2024-01-01T00:00:00+00:00)"),
    ("0001-01-01T00:00:00Z", "timestamp: 0001-01-01T00:00:00+00:00 is before the program's start"),
    ("1970-01-01T00:00:00Z", "timestamp: 1970-01-01T00:00:00+00:00 is before the program's start"),
])
def test_a_fill_out_of_time_is_refused(timestamp: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        check(timestamp=timestamp, fee="0")
    assert str(raised.value).startswith(reason)
    assert raised.value.field == "timestamp"


@pytest.mark.parametrize("fee", ["3.005", "-3.005", "0"])  # 1% of 150.25 × 2 = 300.5
def test_a_fee_or_rebate_up_to_the_share_of_the_notional_is_plausible(fee: str) -> None:
    check(fee=fee)


@pytest.mark.parametrize(("fee", "symbol"), [("3.0050001", "USDC"), ("-3.0050001", "USDC"), ("0.0201", "SOL")])
def test_a_fee_above_the_share_of_the_notional_is_refused(fee: str, symbol: str) -> None:
    with pytest.raises(InvalidInput, match=r"^fee: .* USD is more than 0\.01 × the fill's notional of 300\.5 USD$"):
        check(fee=fee, fee_symbol=symbol)


def test_a_correction_of_the_fee_alone_is_not_compared_with_its_zero_notional() -> None:
    check(fee="-0.3", quantity="0", corrects="f-0", fill_id="f-0-fix")


def test_the_program_starts_at_its_earliest_tier_schedule_unless_configured() -> None:
    assert ProgramConfig().first_month == Month(2000, 1)
    configured = parse_config({"program": {"start": "2024-05", "future_tolerance_seconds": 60,
                                           "max_fee_share": "0.05"}})
    assert (configured.first_month, configured.future_tolerance, configured.max_fee_share) == (
        Month(2024, 5), timedelta(seconds=60), D("0.05"))


@pytest.mark.parametrize("context", [decimal.Context(), "hostile"])
def test_a_fee_of_many_digits_exactly_at_the_limit_is_plausible_whatever_the_threads_context(
        context: decimal.Context | str, hostile_decimal_context: decimal.Context) -> None:
    """|fee| is taken in the money context: in Python's default one (28 digits) a 40-digit fee
    rounded up past the limit, and under ccxt's traps it raised."""
    rules = ProgramConfig(start=Month(2024, 1), max_fee_share=D("1")).plausibility
    largest, below = "999999999999999.999999999999999999", "999999999999999.999999999999999998"
    with decimal.localcontext(hostile_decimal_context if context == "hostile" else context):
        at_limit = price_in_usd(parse_fill(raw_row(price=largest, quantity="1", fee="-" + largest)),
                                DEFAULT_USD_RATES)
        check_plausible(at_limit, NOW, rules)
        beyond = price_in_usd(parse_fill(raw_row(price=below, quantity="1", fee="-" + largest)), DEFAULT_USD_RATES)
        with pytest.raises(InvalidInput, match=r"^fee: 999999999999999\.999999999999999999 USD is more than 1 × "
                                               r"the fill's notional of 999999999999999\.999999999999999998 USD$"):
            check_plausible(beyond, NOW, rules)
