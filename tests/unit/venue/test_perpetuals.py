"""Perpetual markets' pure rules: the mark price, funding intervals and payments (exact, netting to
zero over a market), and a position's life replayed from its fills as order entry settles them."""

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Context, Decimal, Inexact, localcontext

from hypothesis import given
from hypothesis import strategies as st

from bkr.domain.fills import Side
from bkr.domain.money import D
from bkr.venue.perpetuals import (
    FundingPaid,
    PositionFill,
    funding_payment,
    funding_payments,
    interval_ends,
    last_interval_end,
    mark_price,
    next_interval_end,
    open_interest,
    position_lives,
    settle_fill,
)

HOUR = timedelta(hours=1)
T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def test_the_mark_is_the_last_trade_held_inside_a_two_sided_book() -> None:
    assert mark_price(D(99), D(101), D(100)) == D(100)  # inside: the last trade
    assert mark_price(D(99), D(101), D(150)) == D(101)  # above the best ask: the ask
    assert mark_price(D(99), D(101), D(50)) == D(99)  # below the best bid: the bid


def test_a_one_sided_or_empty_book_leaves_the_mark_at_the_last_trade() -> None:
    assert mark_price(None, D(89), D(100)) == D(100)
    assert mark_price(D(120), None, D(100)) == D(100)
    assert mark_price(None, None, D(100)) == D(100)


def test_a_market_that_never_traded_is_marked_at_its_index_price_or_not_at_all() -> None:
    assert mark_price(D(99), D(101), None, D(150)) == D(150)
    assert mark_price(D(99), D(101), None) is None


def test_intervals_end_on_whole_multiples_of_the_interval_since_the_epoch() -> None:
    assert interval_ends(T0 - timedelta(minutes=90), T0 + timedelta(minutes=1), HOUR) == [T0 - HOUR, T0]
    assert interval_ends(T0, T0, HOUR) == []  # an end already applied is not applied again
    assert interval_ends(T0 - timedelta(microseconds=1), T0, HOUR) == [T0]  # an end is due at its very instant
    assert last_interval_end(T0 + timedelta(minutes=59), HOUR) == T0
    assert next_interval_end(T0, HOUR) == T0 + HOUR
    eight = timedelta(hours=8)
    assert interval_ends(T0, T0 + timedelta(days=1), eight) == [datetime(2026, 12, 4, 16, tzinfo=UTC),
                                                               datetime(2026, 12, 5, 0, tzinfo=UTC),
                                                               datetime(2026, 12, 5, 8, tzinfo=UTC)]


def test_a_long_pays_and_a_short_receives_when_the_rate_is_positive() -> None:
    assert funding_payment(D(10), D(150), D("0.0001")) == D("-0.15")
    assert funding_payment(D(-10), D(150), D("0.0001")) == D("0.15")
    assert funding_payment(D(10), D(150), D("-0.0001")) == D("0.15")  # negative: shorts pay
    assert funding_payments({"a": D(10), "b": D(0), "c": D(-10)}, D(150), D("0.0001")) == {"a": D("-0.15"),
                                                                                         "c": D("0.15")}


def _market_positions(trades: list[tuple[int, int, Decimal]], accounts: int) -> dict[str, Decimal]:
    """The positions a list of trades (buyer, seller, quantity) leaves: they sum to zero."""
    positions = {f"u{i}": Decimal(0) for i in range(accounts)}
    for buyer, seller, quantity in trades:
        if buyer != seller:
            positions[f"u{buyer}"] += quantity
            positions[f"u{seller}"] -= quantity
    return positions


amounts = st.decimals(min_value=D("0.000001"), max_value=D("99999999"), places=6, allow_nan=False,
                      allow_infinity=False)
rates = st.decimals(min_value=D("-0.05"), max_value=D("0.05"), places=9, allow_nan=False, allow_infinity=False)


@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7), amounts), max_size=40), amounts, rates)
def test_funding_payments_equal_a_plain_reference_and_net_to_zero_over_a_market(
        trades: list[tuple[int, int, Decimal]], mark: Decimal, rate: Decimal) -> None:
    positions = _market_positions(trades, 8)
    with localcontext(Context(prec=200, rounding=ROUND_HALF_UP, traps=[Inexact])):  # a context that cannot round
        reference = {u: -(q * mark * rate) for u, q in positions.items() if q}
        paid = funding_payments(positions, mark, rate)
        assert paid == reference
        assert sum(paid.values(), Decimal(0)) == 0  # longs pay exactly what shorts receive


@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7), amounts), max_size=20), amounts, rates)
def test_funding_does_not_depend_on_the_thread_s_decimal_context(
        trades: list[tuple[int, int, Decimal]], mark: Decimal, rate: Decimal) -> None:
    positions = _market_positions(trades, 8)
    exact = funding_payments(positions, mark, rate)
    with localcontext(Context(prec=6, rounding=ROUND_HALF_UP)):  # what a library in the process might set
        assert funding_payments(positions, mark, rate) == exact


def test_open_interest_is_the_long_side() -> None:
    assert open_interest("SOL_USDC_PERP", [D(3), D(-1), D("-2"), D(0)]).quantity == D(3)


def _fill(trade_id: int, side: Side, price: str, quantity: str, fee: str = "0", minute: int = 0) -> PositionFill:
    return PositionFill(trade_id, side, D(price), D(quantity), D(fee), T0 + timedelta(minutes=minute))


def test_a_position_opens_grows_shrinks_and_closes_with_its_pnl_fees_and_funding() -> None:
    fills = [_fill(1, Side.BID, "100", "10", "0.5", 0), _fill(2, Side.BID, "110", "10", "0.55", 10),
             _fill(3, Side.ASK, "120", "5", "0.3", 70), _fill(4, Side.ASK, "130", "15", "0.975", 130)]
    funding = [FundingPaid(T0 + HOUR, D("-0.21")), FundingPaid(T0 + 2 * HOUR, D("-0.18"))]
    [life] = position_lives("SOL_USDC_PERP", fills, funding)
    assert (life.position_id, life.opened_at, life.closed_at) == ("1", T0, T0 + timedelta(minutes=130))
    assert life.realized_pnl == D(450)  # bought 20 for 2,100, sold them for 600 + 1,950
    assert (life.closed_volume, life.closing_price, life.net_quantity) == (D(20), D(130), D(0))
    assert life.fees == D("2.325") and life.funding == D("-0.39")
    assert life.entry_price(D("0.01")) == D(105)


def test_a_fill_through_zero_closes_one_position_and_opens_the_next_with_the_rest() -> None:
    fills = [_fill(1, Side.BID, "100", "10", "1", 0), _fill(7, Side.ASK, "90", "25", "2.5", 30)]
    funding = [FundingPaid(T0 + timedelta(minutes=30), D(-1)), FundingPaid(T0 + HOUR, D(2))]
    first, second = position_lives("SOL_USDC_PERP", fills, funding)
    assert (first.realized_pnl, first.closed_at, first.fees, first.funding) == (D(-100), fills[1].at, D(2), D(-1))
    assert (second.position_id, second.net_quantity, second.net_cost) == ("7", D(-15), D(-1350))
    assert (second.fees, second.funding, second.is_open) == (D("1.5"), D(2), True)
    assert second.entry_price(D("0.01")) == D(90)


sides = st.sampled_from([Side.BID, Side.ASK])
prices = st.integers(1, 10_000).map(lambda cents: Decimal(cents) / 100)
quantities = st.integers(1, 500).map(lambda hundredths: Decimal(hundredths) / 100)


@given(st.lists(st.tuples(sides, prices, quantities), min_size=1, max_size=30))
def test_the_replayed_lives_end_where_order_entry_leaves_the_position(fills: list[tuple[Side, Decimal, Decimal]]
                                                                      ) -> None:
    net = cost = realized = Decimal(0)
    for side, price, quantity in fills:
        net, cost, pnl = settle_fill(net, cost, side, quantity, price * quantity)
        realized += pnl
    lives = position_lives("X_USDC_PERP", [_fill(i, s, str(p), str(q)) for i, (s, p, q) in enumerate(fills)])
    assert sum((life.realized_pnl for life in lives), Decimal(0)) == realized
    assert all(not life.is_open for life in lives[:-1])
    last = lives[-1]
    assert (last.net_quantity, last.net_cost, last.is_open) == ((net, cost, True) if net else (0, 0, False))
