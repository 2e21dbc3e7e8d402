"""An account's margin: equity against the initial and maintenance margin of its positions and of
the resting orders that would increase them, exactly, whatever the thread's decimal context."""

from decimal import ROUND_HALF_UP, Context, Decimal, Inexact, localcontext

from hypothesis import given
from hypothesis import strategies as st

from bkr.domain.money import D
from bkr.venue.margin import MarketExposure, account_margin

IMF, MMF = D("0.1"), D("0.05")


def test_equity_is_the_collateral_and_the_unrealized_pnl_at_the_marks() -> None:
    long = MarketExposure("SOL_USDC_PERP", D(10), D(1000), D(90))  # bought 10 at 100, now 90
    short = MarketExposure("ETH_USDC_PERP", D("-0.5"), D(-1500), D(2800))  # sold 0.5 at 3000, now 2800
    margin = account_margin(D(1000), [long, short], IMF, MMF)
    assert (long.unrealized_pnl, short.unrealized_pnl) == (D(-100), D(100))
    assert margin.equity == D(1000)
    assert margin.initial == D("0.1") * (D(900) + D(1400)) and margin.maintenance == D("0.05") * D(2300)
    assert margin.covers_initial and margin.covers_maintenance


def test_orders_that_would_only_close_a_position_need_nothing() -> None:
    short = MarketExposure("SOL_USDC_PERP", D(-10), D(-1000), D(100), bids=((D(95), D(4)), (D(99), D(6))))
    assert short.opening_notional == 0
    assert account_margin(D(100), [short], IMF, MMF).initial == D(100)  # the position alone


def test_orders_past_the_position_count_at_their_own_prices_the_closing_ones_filling_first() -> None:
    # against a short of 10: the bid at 99 fills first and closes 6, the one at 95 closes 4 and opens 5
    short = MarketExposure("SOL_USDC_PERP", D(-10), D(-1000), D(100), bids=((D(95), D(9)), (D(99), D(6))))
    assert short.opening_notional == D(5) * D(95)
    # asks against a long: the lowest fills first
    long = MarketExposure("SOL_USDC_PERP", D(2), D(200), D(100), asks=((D(120), D(3)), (D(110), D(1))))
    assert long.opening_notional == D(2) * D(120)


def test_only_the_larger_side_of_resting_orders_counts() -> None:
    flat = MarketExposure("SOL_USDC_PERP", D(0), D(0), None, bids=((D(90), D(10)),), asks=((D(110), D(5)),))
    assert flat.opening_notional == D(900)
    assert account_margin(D(0), [flat], IMF, MMF).initial == D(90)
    assert account_margin(D(0), [flat], IMF, MMF).maintenance == 0  # orders need no maintenance


def test_a_position_in_a_market_that_never_traded_counts_at_its_cost() -> None:
    unmarked = MarketExposure("SOL_USDC_PERP", D(-3), D(-300), None)
    assert (unmarked.unrealized_pnl, unmarked.notional) == (0, D(300))


def test_an_account_below_maintenance_covers_neither() -> None:
    margin = account_margin(D(1000), [MarketExposure("SOL_USDC_PERP", D(1000), D(100_000), D(99))], IMF, MMF)
    assert margin.equity == D(0) and margin.maintenance == D("4950")
    assert not margin.covers_initial and not margin.covers_maintenance


prices = st.integers(1, 10**8).map(lambda cents: Decimal(cents).scaleb(-2))
quantities = st.integers(1, 10**6).map(lambda n: Decimal(n).scaleb(-3))
orders = st.lists(st.tuples(prices, quantities), max_size=4).map(tuple)
exposures = st.builds(MarketExposure, st.sampled_from(["A", "B", "C"]),
                      st.integers(-10**6, 10**6).map(lambda n: Decimal(n).scaleb(-3)),
                      st.integers(-10**14, 10**14).map(lambda n: Decimal(n).scaleb(-6)),
                      st.one_of(st.none(), prices), orders, orders)
fractions = st.integers(1, 1000).map(lambda n: Decimal(n).scaleb(-3))


@given(st.lists(exposures, max_size=4), prices, fractions, fractions)
def test_the_figures_are_exact_and_the_same_in_a_hostile_decimal_context(
        found: list[MarketExposure], collateral: Decimal, a: Decimal, b: Decimal) -> None:
    initial, maintenance = max(a, b), min(a, b)
    expected = account_margin(collateral, found, initial, maintenance)
    hostile = Context(prec=6, rounding=ROUND_HALF_UP, traps=[Inexact])  # as a library in the process may set
    with localcontext(hostile):
        assert account_margin(collateral, found, initial, maintenance) == expected
    assert expected.initial >= expected.maintenance >= 0
    positions = sum((e.notional for e in found), D(0))
    assert expected.maintenance == maintenance * positions
    assert expected.initial >= initial * positions  # resting orders never lower it


@given(exposures)
def test_orders_on_the_side_that_closes_never_open_more_than_they_exceed_the_position(e: MarketExposure) -> None:
    bids = sum((q for _, q in e.bids), D(0))
    asks = sum((q for _, q in e.asks), D(0))
    if e.position > 0 and not e.bids and asks <= e.position:
        assert e.opening_notional == 0
    if e.position < 0 and not e.asks and bids <= -e.position:
        assert e.opening_notional == 0
    top = max((p for p, _ in (*e.bids, *e.asks)), default=D(0))
    assert e.opening_notional <= top * max(bids, asks)
