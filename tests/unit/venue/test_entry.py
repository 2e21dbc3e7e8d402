"""A venue fill as the broker program receives it: typed, its broker as the venue judged it, and
its amounts exactly as a fill file stating them in canonical text would give them."""

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from bkr.domain.fills import Fill, Side, parse_fill
from bkr.domain.money import D, canonical
from bkr.venue.entry import VenueFill
from bkr.venue.markets import DEFAULT_MARKETS

SOL_USDC = DEFAULT_MARKETS[0]
AT = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)

amounts = st.decimals(min_value=Decimal("1E-18"), max_value=Decimal("1E+12"), allow_nan=False,
                      allow_infinity=False, places=None)


def venue_fill(price: Decimal = Decimal("150.250"), quantity: Decimal = Decimal("3.00"),
               fee: Decimal = Decimal("0.360600"), at: datetime = AT, broker_id: int | None = 1400,
               broker_active: bool | None = True) -> VenueFill:
    return VenueFill("venue-7-maker", 7, 12, "maker", SOL_USDC, Side.ASK, price, quantity, fee, "USDC", True, None,
                     broker_id, broker_active, at)


def as_a_file_states_it(fill: VenueFill) -> Fill:
    """The same fill read from a file row, the way every file and request body is read."""
    return parse_fill({"fill_id": fill.fill_id, "order_id": str(fill.order_id), "user_id": fill.user_id,
                       "symbol": fill.market.symbol, "market_type": fill.market.market_type.value,
                       "side": fill.side.value, "price": canonical(fill.price), "quantity": canonical(fill.quantity),
                       "fee": canonical(fill.fee), "fee_symbol": fill.fee_symbol, "is_maker": fill.is_maker,
                       "timestamp": fill.at.isoformat(), "broker_id": fill.broker_id,
                       "trade_id": f"venue-{fill.trade_id}"})


def test_the_program_receives_the_fill_a_file_stating_it_would_give() -> None:
    decided = venue_fill().for_program()
    assert decided.fill == as_a_file_states_it(venue_fill())
    assert decided.fill.content_key() == as_a_file_states_it(venue_fill()).content_key()
    assert (str(decided.fill.price), str(decided.fill.quantity), str(decided.fill.fee)) == ("150.25", "3", "0.3606")


def test_the_venue_s_judgement_of_the_broker_travels_with_the_fill() -> None:
    assert venue_fill(broker_active=False).for_program().broker_active is False
    unknown = venue_fill(broker_id=9999, broker_active=None).for_program()
    assert (unknown.fill.broker_id, unknown.broker_active) == (9999, None)


def test_a_fill_time_in_another_zone_is_given_in_utc() -> None:
    at = AT.astimezone(timezone(timedelta(hours=2)))
    assert venue_fill(at=at).for_program().fill.timestamp.tzinfo is UTC
    assert venue_fill(at=at).for_program().fill == as_a_file_states_it(venue_fill(at=at))


@given(amounts, st.integers(min_value=0, max_value=6))
def test_an_amount_is_given_as_its_canonical_text_reads_back(amount: Decimal, zeros: int) -> None:
    sign, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)
    scaled = Decimal((sign, digits + (0,) * zeros, exponent - zeros))  # the same amount, `zeros` more places
    assert scaled == amount
    given_fee = venue_fill(fee=scaled).for_program().fill.fee
    assert given_fee.as_tuple() == D(canonical(scaled)).as_tuple()


def test_zero_and_round_hundreds_are_given_as_canonical_text_reads_back() -> None:
    for amount in (Decimal("0.000"), Decimal("-0"), Decimal("1E+2"), Decimal("100.00"), Decimal("1E-7")):
        assert venue_fill(fee=amount).for_program().fill.fee.as_tuple() == D(canonical(amount)).as_tuple()
