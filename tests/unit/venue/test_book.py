"""The order book: price-time priority, time in force, post-only, market orders by base and by quote,
self-trade prevention, validation — then random order flows checked step by step against a plain model."""

from dataclasses import dataclass
from decimal import Decimal

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from bkr.domain.errors import InvalidInput
from bkr.domain.fills import Side
from bkr.venue.book import (
    FOK_UNFILLABLE,
    NO_LIQUIDITY,
    POST_ONLY_WOULD_TAKE,
    SELF_TRADE,
    BookError,
    Execution,
    OrderBook,
    OrderRequest,
    OrderStatus,
    OrderType,
    RestingOrder,
    SelfTradePrevention,
    TimeInForce,
)

TICK = Decimal("0.5")
STEP = Decimal("0.1")
BID, ASK = Side.BID, Side.ASK
GTC, IOC, FOK = TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK
STP = SelfTradePrevention


def D(text: str) -> Decimal:
    return Decimal(text)


def new_book() -> OrderBook:
    return OrderBook("SOL_USDC", tick_size=TICK, step_size=STEP)


def limit(order_id: int, side: Side, price: str, quantity: str, *, user: str = "alice", tif: TimeInForce = GTC,
          post_only: bool = False, stp: SelfTradePrevention = STP.REJECT_TAKER,
          sequence: int | None = None) -> OrderRequest:
    return OrderRequest(order_id, user, side, OrderType.LIMIT, D(price), D(quantity), None, tif, post_only, stp,
                        order_id if sequence is None else sequence)


def market(order_id: int, side: Side, *, quantity: str | None = None, quote: str | None = None, user: str = "bob",
           tif: TimeInForce = IOC, stp: SelfTradePrevention = STP.REJECT_TAKER) -> OrderRequest:
    return OrderRequest(order_id, user, side, OrderType.MARKET, None, None if quantity is None else D(quantity),
                        None if quote is None else D(quote), tif, False, stp, order_id)


def book_with(*requests: OrderRequest) -> OrderBook:
    book = new_book()
    for request in requests:
        assert book.submit(request).matches == ()
    return book


def fills(execution: Execution) -> list[tuple[int, Decimal, Decimal]]:
    return [(match.maker_order_id, match.price, match.quantity) for match in execution.matches]


def snapshot(book: OrderBook) -> list[tuple[int, str, Side, Decimal, Decimal, int]]:
    return sorted((o.order_id, o.user_id, o.side, o.price, o.remaining, o.sequence) for o in book.orders())


# --- limit orders and priority -------------------------------------------------------------------

def test_limit_order_that_crosses_nothing_rests_as_new() -> None:
    book = new_book()
    execution = book.submit(limit(1, BID, "10", "1.5"))
    assert execution.status is OrderStatus.NEW
    assert execution.matches == () and execution.reason is None
    assert execution.resting is not None and execution.resting.remaining == D("1.5")
    assert book.best_bid() == D("10") and book.best_ask() is None and len(book) == 1


def test_gtc_limit_matches_what_crosses_and_rests_the_remainder_as_partially_filled() -> None:
    book = book_with(limit(1, ASK, "10", "1"))
    execution = book.submit(limit(2, BID, "10.5", "3", user="bob"))
    assert fills(execution) == [(1, D("10"), D("1"))]
    assert execution.status is OrderStatus.PARTIALLY_FILLED
    assert execution.executed_quantity == D("1") and execution.executed_quote_quantity == D("10")
    assert execution.resting is not None and execution.resting.remaining == D("2")
    assert execution.resting.price == D("10.5")
    assert book.best_bid() == D("10.5") and book.best_ask() is None


def test_trades_happen_at_the_makers_price_not_the_takers_limit() -> None:
    book = book_with(limit(1, BID, "12", "1"))
    execution = book.submit(limit(2, ASK, "9", "1", user="bob"))
    assert fills(execution) == [(1, D("12"), D("1"))]
    assert execution.status is OrderStatus.FILLED and execution.executed_quote_quantity == D("12")
    assert len(book) == 0


def test_better_price_is_matched_first_across_levels() -> None:
    book = book_with(limit(1, ASK, "11", "1"), limit(2, ASK, "10", "1"), limit(3, ASK, "10.5", "1"))
    execution = book.submit(limit(4, BID, "11", "2.5", user="bob"))
    assert fills(execution) == [(2, D("10"), D("1")), (3, D("10.5"), D("1")), (1, D("11"), D("0.5"))]
    assert book.get(1) is not None and book.get(1).remaining == D("0.5")  # type: ignore[union-attr]


def test_at_one_price_the_earlier_sequence_is_matched_first() -> None:
    book = book_with(limit(1, ASK, "10", "1", sequence=5), limit(2, ASK, "10", "1", sequence=6),
                     limit(3, ASK, "10", "1", sequence=7))
    execution = book.submit(limit(4, BID, "10", "1.5", user="bob", sequence=8))
    assert fills(execution) == [(1, D("10"), D("1")), (2, D("10"), D("0.5"))]
    assert [o.order_id for o in sorted(book.orders(), key=lambda o: o.sequence)] == [2, 3]


def test_limit_does_not_match_beyond_its_price() -> None:
    book = book_with(limit(1, ASK, "10", "1"), limit(2, ASK, "11", "1"))
    execution = book.submit(limit(3, BID, "10.5", "2", user="bob"))
    assert fills(execution) == [(1, D("10"), D("1"))]
    assert book.best_bid() == D("10.5") and book.best_ask() == D("11")


def test_equal_prices_written_differently_share_one_level() -> None:
    book = book_with(limit(1, ASK, "10", "1"), limit(2, ASK, "10.0", "1"))
    assert book.depth() == ([], [(D("10"), D("2"))])


# --- time in force -------------------------------------------------------------------------------

def test_ioc_remainder_never_rests() -> None:
    book = book_with(limit(1, ASK, "10", "1"))
    execution = book.submit(limit(2, BID, "10", "3", user="bob", tif=IOC))
    assert fills(execution) == [(1, D("10"), D("1"))]
    assert execution.status is OrderStatus.EXPIRED and execution.reason == NO_LIQUIDITY
    assert execution.resting is None and book.get(2) is None and len(book) == 0


def test_ioc_that_crosses_nothing_expires_with_no_liquidity() -> None:
    book = book_with(limit(1, ASK, "11", "1"))
    execution = book.submit(limit(2, BID, "10", "1", user="bob", tif=IOC))
    assert (execution.status, execution.reason) == (OrderStatus.EXPIRED, NO_LIQUIDITY)
    assert execution.executed_quantity == 0
    assert snapshot(book) == [(1, "alice", ASK, D("11"), D("1"), 1)]


def test_ioc_fully_filled_is_filled() -> None:
    book = book_with(limit(1, ASK, "10", "2"))
    execution = book.submit(limit(2, BID, "10", "2", user="bob", tif=IOC))
    assert execution.status is OrderStatus.FILLED and execution.reason is None and len(book) == 0


def test_fok_with_exactly_enough_liquidity_fills_in_full() -> None:
    book = book_with(limit(1, ASK, "10", "1"), limit(2, ASK, "10.5", "1.4"), limit(3, ASK, "11", "5"))
    execution = book.submit(limit(4, BID, "10.5", "2.4", user="bob", tif=FOK))
    assert execution.status is OrderStatus.FILLED and execution.executed_quantity == D("2.4")
    assert fills(execution) == [(1, D("10"), D("1")), (2, D("10.5"), D("1.4"))]
    assert book.best_ask() == D("11")


def test_fok_one_step_short_changes_nothing() -> None:
    book = book_with(limit(1, ASK, "10", "1"), limit(2, ASK, "10.5", "1.4"), limit(3, ASK, "11", "5"))
    before = snapshot(book)
    execution = book.submit(limit(4, BID, "10.5", "2.5", user="bob", tif=FOK))
    assert execution.status is OrderStatus.EXPIRED and execution.reason == FOK_UNFILLABLE
    assert execution.matches == () and execution.executed_quantity == 0 and execution.cancelled_makers == ()
    assert snapshot(book) == before


def test_fok_blocked_by_reject_taker_self_trade_changes_nothing() -> None:
    book = book_with(limit(1, ASK, "10", "1", user="bob"), limit(2, ASK, "10", "5"))
    before = snapshot(book)
    execution = book.submit(limit(3, BID, "10", "2", user="bob", tif=FOK, stp=STP.REJECT_BOTH))
    assert execution.reason == FOK_UNFILLABLE and execution.cancelled_makers == ()
    assert snapshot(book) == before


def test_fok_with_reject_maker_skips_own_orders_and_fills_from_others() -> None:
    book = book_with(limit(1, ASK, "10", "1", user="bob"), limit(2, ASK, "10", "2"))
    execution = book.submit(limit(3, BID, "10", "2", user="bob", tif=FOK, stp=STP.REJECT_MAKER))
    assert execution.status is OrderStatus.FILLED and fills(execution) == [(2, D("10"), D("2"))]
    assert [o.order_id for o in execution.cancelled_makers] == [1] and len(book) == 0


def test_fok_market_by_quantity_is_all_or_nothing() -> None:
    book = book_with(limit(1, BID, "10", "1"))
    assert book.submit(market(2, ASK, quantity="1.1", tif=FOK)).reason == FOK_UNFILLABLE
    assert book.submit(market(3, ASK, quantity="1", tif=FOK)).status is OrderStatus.FILLED


# --- post-only -----------------------------------------------------------------------------------

def test_post_only_that_would_take_liquidity_is_refused_and_the_book_is_unchanged() -> None:
    book = book_with(limit(1, ASK, "10", "1"))
    before = snapshot(book)
    execution = book.submit(limit(2, BID, "10", "1", user="bob", post_only=True))
    assert execution.status is OrderStatus.EXPIRED and execution.reason == POST_ONLY_WOULD_TAKE
    assert execution.matches == () and execution.resting is None and snapshot(book) == before


def test_post_only_that_does_not_cross_rests() -> None:
    book = book_with(limit(1, ASK, "10", "1"))
    execution = book.submit(limit(2, BID, "9.5", "1", user="bob", post_only=True))
    assert execution.status is OrderStatus.NEW and execution.resting is not None
    assert book.best_bid() == D("9.5")


# --- market orders -------------------------------------------------------------------------------

def test_market_by_quantity_walks_the_book_and_never_rests() -> None:
    book = book_with(limit(1, ASK, "10", "1"), limit(2, ASK, "11", "1"))
    execution = book.submit(market(3, BID, quantity="1.5"))
    assert fills(execution) == [(1, D("10"), D("1")), (2, D("11"), D("0.5"))]
    assert execution.status is OrderStatus.FILLED and execution.executed_quote_quantity == D("15.5")
    assert execution.resting is None and book.get(3) is None


def test_market_larger_than_the_book_takes_everything_and_expires() -> None:
    book = book_with(limit(1, BID, "10", "1"))
    execution = book.submit(market(2, ASK, quantity="5"))
    assert execution.executed_quantity == D("1") and execution.status is OrderStatus.EXPIRED
    assert execution.reason == NO_LIQUIDITY and len(book) == 0


def test_market_on_an_empty_side_expires_with_no_liquidity() -> None:
    execution = new_book().submit(market(1, BID, quote="100"))
    assert (execution.status, execution.reason, execution.matches) == (OrderStatus.EXPIRED, NO_LIQUIDITY, ())


def test_market_bid_by_quote_rounds_each_level_down_to_the_step() -> None:
    book = book_with(limit(1, ASK, "10", "1"), limit(2, ASK, "12", "5"))
    execution = book.submit(market(3, BID, quote="20"))
    # 1 at 10 costs 10; the 10 left buys floor(10 / 1.2) = 8 steps of 0.1 at 12 = 9.6; 0.4 cannot buy a step
    assert fills(execution) == [(1, D("10"), D("1")), (2, D("12"), D("0.8"))]
    assert execution.status is OrderStatus.FILLED and execution.reason is None
    assert execution.executed_quantity == D("1.8") and execution.executed_quote_quantity == D("19.6")
    assert book.get(2) is not None and book.get(2).remaining == D("4.2")  # type: ignore[union-attr]


def test_market_by_quote_that_exactly_spends_its_quote_is_filled() -> None:
    book = book_with(limit(1, ASK, "12", "5"))
    execution = book.submit(market(2, BID, quote="12"))
    assert execution.status is OrderStatus.FILLED and execution.executed_quantity == D("1")


def test_market_by_quote_too_small_for_one_step_matches_nothing_and_is_filled() -> None:
    book = book_with(limit(1, ASK, "12", "5"))
    execution = book.submit(market(2, BID, quote="1.19"))
    assert execution.matches == () and execution.status is OrderStatus.FILLED
    assert snapshot(book) == [(1, "alice", ASK, D("12"), D("5"), 1)]


def test_market_ask_by_quote_receives_at_most_its_quote() -> None:
    book = book_with(limit(1, BID, "10", "1"), limit(2, BID, "9.5", "3"))
    execution = book.submit(market(3, ASK, quote="20"))
    # 1 at 10 brings 10; the 10 left: floor(10 / 0.95) = 10 steps = 1 at 9.5 = 9.5
    assert fills(execution) == [(1, D("10"), D("1")), (2, D("9.5"), D("1"))]
    assert execution.executed_quote_quantity == D("19.5") and execution.status is OrderStatus.FILLED


def test_market_by_quote_that_exhausts_the_book_expires() -> None:
    book = book_with(limit(1, ASK, "10", "1"))
    execution = book.submit(market(2, BID, quote="50"))
    assert execution.executed_quantity == D("1") and execution.executed_quote_quantity == D("10")
    assert execution.status is OrderStatus.EXPIRED and execution.reason == NO_LIQUIDITY


# --- self-trade prevention -----------------------------------------------------------------------

def test_reject_taker_stops_the_taker_and_leaves_the_maker() -> None:
    book = book_with(limit(1, ASK, "10", "1", user="bob"), limit(2, ASK, "10", "1"))
    execution = book.submit(limit(3, BID, "10", "1", user="bob", stp=STP.REJECT_TAKER))
    assert execution.matches == () and execution.cancelled_makers == ()
    assert execution.status is OrderStatus.EXPIRED and execution.reason == SELF_TRADE
    assert execution.resting is None and len(book) == 2


def test_reject_taker_after_a_partial_fill_drops_the_gtc_remainder() -> None:
    book = book_with(limit(1, ASK, "10", "1"), limit(2, ASK, "10.5", "1", user="bob"))
    execution = book.submit(limit(3, BID, "11", "3", user="bob"))
    assert fills(execution) == [(1, D("10"), D("1"))]
    assert execution.status is OrderStatus.EXPIRED and execution.reason == SELF_TRADE
    assert book.get(3) is None and book.get(2) is not None


def test_reject_maker_removes_the_makers_and_keeps_matching() -> None:
    book = book_with(limit(1, ASK, "10", "1", user="bob"), limit(2, ASK, "10", "1"), limit(3, ASK, "10.5", "2",
                                                                                         user="bob"))
    execution = book.submit(limit(4, BID, "10.5", "2", user="bob", stp=STP.REJECT_MAKER))
    assert fills(execution) == [(2, D("10"), D("1"))]
    assert [(o.order_id, o.remaining) for o in execution.cancelled_makers] == [(1, D("1")), (3, D("2"))]
    assert execution.status is OrderStatus.PARTIALLY_FILLED and execution.resting is not None
    assert snapshot(book) == [(4, "bob", BID, D("10.5"), D("1"), 4)]


def test_reject_both_removes_the_maker_and_stops_the_taker() -> None:
    book = book_with(limit(1, ASK, "10", "1", user="bob"), limit(2, ASK, "10", "1"))
    execution = book.submit(limit(3, BID, "10", "1", user="bob", stp=STP.REJECT_BOTH))
    assert execution.matches == () and [o.order_id for o in execution.cancelled_makers] == [1]
    assert execution.reason == SELF_TRADE and [o.order_id for o in book.orders()] == [2]


def test_allow_trades_with_yourself() -> None:
    book = book_with(limit(1, ASK, "10", "1", user="bob"))
    execution = book.submit(limit(2, BID, "10", "1", user="bob", stp=STP.ALLOW))
    assert fills(execution) == [(1, D("10"), D("1"))] and execution.status is OrderStatus.FILLED
    assert execution.matches[0].maker_user_id == execution.matches[0].taker_user_id == "bob"


def test_the_takers_mode_decides_not_the_makers() -> None:
    book = book_with(limit(1, ASK, "10", "1", user="bob", stp=STP.ALLOW))
    execution = book.submit(limit(2, BID, "10", "1", user="bob", stp=STP.REJECT_TAKER))
    assert execution.matches == () and execution.reason == SELF_TRADE


def test_self_trade_prevention_applies_to_market_orders_by_quote() -> None:
    book = book_with(limit(1, ASK, "10", "1", user="bob"), limit(2, ASK, "10", "1"))
    execution = book.submit(market(3, BID, quote="10", stp=STP.REJECT_MAKER))
    assert fills(execution) == [(2, D("10"), D("1"))] and [o.order_id for o in execution.cancelled_makers] == [1]


# --- validation ----------------------------------------------------------------------------------

def bad(**changes: object) -> OrderRequest:
    fields: dict[str, object] = {"order_id": 9, "user_id": "bob", "side": BID, "order_type": OrderType.LIMIT,
                                 "price": D("10"), "quantity": D("1"), "quote_quantity": None}
    fields.update(changes)
    return OrderRequest(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("request_", "field"), [
    (bad(price=None), "price"),
    (bad(quantity=None), "quantity"),
    (bad(price=D("10.3")), "price"),
    (bad(price=D("0")), "price"),
    (bad(price=D("-10")), "price"),
    (bad(price=D("NaN")), "price"),
    (bad(quantity=D("1.05")), "quantity"),
    (bad(quantity=D("0")), "quantity"),
    (bad(quantity=D("-1")), "quantity"),
    (bad(quantity=D("Infinity")), "quantity"),
    (bad(quantity=D("1e-90")), "quantity"),
    (bad(quote_quantity=D("10")), "quote_quantity"),
    (bad(post_only=True, time_in_force=IOC), "time_in_force"),
    (bad(order_type=OrderType.MARKET), "price"),
    (bad(order_type=OrderType.MARKET, price=None, quote_quantity=D("5")), "quantity"),
    (bad(order_type=OrderType.MARKET, price=None, quantity=None), "quantity"),
    (bad(order_type=OrderType.MARKET, price=None, post_only=True), "post_only"),
    (bad(order_type=OrderType.MARKET, price=None, quantity=None, quote_quantity=D("0")), "quote_quantity"),
    (bad(order_type=OrderType.MARKET, price=None, quantity=None, quote_quantity=D("5"), time_in_force=FOK),
     "time_in_force"),
])
def test_invalid_requests_raise_book_error_naming_the_field(request_: OrderRequest, field: str) -> None:
    book = book_with(limit(1, ASK, "10", "1"))
    with pytest.raises(BookError) as raised:
        book.submit(request_)
    assert raised.value.field == field
    assert snapshot(book) == [(1, "alice", ASK, D("10"), D("1"), 1)]


def test_a_duplicate_order_id_on_the_book_is_refused() -> None:
    book = book_with(limit(1, BID, "9", "1"))
    with pytest.raises(BookError, match="already on the book"):
        book.submit(limit(1, ASK, "10", "1"))


def test_book_error_is_invalid_input_so_the_api_answers_422() -> None:
    assert issubclass(BookError, InvalidInput)


@pytest.mark.parametrize(("tick", "step"), [(D("0"), D("1")), (D("1"), D("-1")), (D("NaN"), D("1"))])
def test_a_book_needs_positive_tick_and_step(tick: Decimal, step: Decimal) -> None:
    with pytest.raises(BookError):
        OrderBook("X", tick_size=tick, step_size=step)


# --- cancel, depth, rest, reduce, copies ---------------------------------------------------------

def test_cancel_removes_the_order_and_its_empty_level() -> None:
    book = book_with(limit(1, BID, "10", "1"), limit(2, BID, "9.5", "2"))
    cancelled = book.cancel(1)
    assert cancelled is not None and (cancelled.order_id, cancelled.remaining) == (1, D("1"))
    assert book.best_bid() == D("9.5") and len(book) == 1
    assert book.cancel(1) is None and book.cancel(77) is None


def test_depth_aggregates_levels_best_first() -> None:
    book = book_with(limit(1, BID, "10", "1"), limit(2, BID, "10", "2"), limit(3, BID, "9", "1"),
                     limit(4, ASK, "11", "1"), limit(5, ASK, "12", "0.5"), limit(6, ASK, "11", "0.3"))
    assert book.depth() == ([(D("10"), D("3")), (D("9"), D("1"))], [(D("11"), D("1.3")), (D("12"), D("0.5"))])
    assert book.depth(1) == ([(D("10"), D("3"))], [(D("11"), D("1.3"))])
    assert book.depth(0) == ([], [])


def test_rest_rebuilds_priority_from_sequences_whatever_the_order_given() -> None:
    book = new_book()
    for sequence, order_id in ((3, 30), (1, 10), (2, 20)):
        book.rest(RestingOrder(order_id, "alice", ASK, D("10"), D("1"), sequence, STP.REJECT_TAKER))
    execution = book.submit(market(99, BID, quantity="3"))
    assert [match.maker_order_id for match in execution.matches] == [10, 20, 30]


@pytest.mark.parametrize(("order", "message"), [
    (RestingOrder(1, "bob", BID, D("9"), D("1"), 5, STP.REJECT_TAKER), "already on the book"),
    (RestingOrder(2, "bob", ASK, D("9"), D("1"), 5, STP.REJECT_TAKER), "cross"),
    (RestingOrder(2, "bob", ASK, D("10.2"), D("1"), 5, STP.REJECT_TAKER), "tick"),
    (RestingOrder(2, "bob", ASK, D("10"), D("0.05"), 5, STP.REJECT_TAKER), "step"),
])
def test_rest_refuses_what_a_live_book_could_not_hold(order: RestingOrder, message: str) -> None:
    book = book_with(limit(1, BID, "9", "1"))
    with pytest.raises(BookError, match=message):
        book.rest(order)
    assert len(book) == 1


def test_reduce_lowers_remaining_and_keeps_priority() -> None:
    book = book_with(limit(1, ASK, "10", "2"), limit(2, ASK, "10", "2"))
    book.reduce(1, D("0.5"))
    execution = book.submit(market(3, BID, quantity="1"))
    assert fills(execution) == [(1, D("10"), D("0.5")), (2, D("10"), D("0.5"))]
    with pytest.raises(BookError):
        book.reduce(2, D("5"))
    with pytest.raises(BookError):
        book.reduce(1, D("0.1"))  # gone: fully filled


def test_orders_handed_out_are_copies_that_cannot_change_the_book() -> None:
    book = book_with(limit(1, ASK, "10", "2"))
    copy = book.get(1)
    assert copy is not None
    copy.remaining = D("100")
    book.orders()[0].remaining = D("100")
    assert book.depth() == ([], [(D("10"), D("2"))])


# --- one user's orders, and undoing a submit -------------------------------------------------------

def test_orders_of_a_user_follow_rests_fills_and_cancels() -> None:
    book = book_with(limit(1, ASK, "10", "2"), limit(2, ASK, "10.5", "1", user="carol"), limit(3, BID, "9", "1"))
    assert sorted(o.order_id for o in book.orders_of("alice")) == [1, 3]
    book.submit(market(4, BID, quantity="2"))  # takes alice's ask 1 whole
    assert [o.order_id for o in book.orders_of("alice")] == [3]
    book.cancel(3)
    assert book.orders_of("alice") == [] and [o.order_id for o in book.orders_of("carol")] == [2]
    mine = book.orders_of("carol")[0]
    mine.remaining = D("100")  # a copy
    assert book.depth() == ([], [(D("10.5"), D("1"))])


def test_revert_puts_every_maker_back_in_its_place_and_takes_the_remainder_off() -> None:
    book = book_with(limit(1, ASK, "10", "1"), limit(2, ASK, "10", "2", user="carol"), limit(3, ASK, "10.5", "1"),
                     limit(4, ASK, "11", "3", user="carol"))
    before = snapshot(book)
    # alice's own asks 1 and 3 are cancelled (RejectMaker), carol's 2 fills, and 2 rest at 10.5
    execution = book.submit(limit(5, BID, "10.5", "4", stp=STP.REJECT_MAKER))
    assert fills(execution) == [(2, D("10"), D("2"))]
    assert [o.order_id for o in execution.cancelled_makers] == [1, 3]
    assert execution.resting is not None and execution.resting.remaining == D("2")
    book.revert()
    assert snapshot(book) == before and book.depth() == ([], [(D("10"), D("3")), (D("10.5"), D("1")),
                                                               (D("11"), D("3"))])
    assert sorted(o.order_id for o in book.orders_of("alice")) == [1, 3]
    # priority is back too: alice's 1 is still ahead of carol's 2 at 10
    assert fills(book.submit(market(6, BID, quantity="2", user="bob"))) == [(1, D("10"), D("1")),
                                                                           (2, D("10"), D("1"))]


def test_revert_after_a_partial_fill_gives_the_maker_its_quantity_back() -> None:
    book = book_with(limit(1, BID, "10", "5"))
    book.submit(market(2, ASK, quantity="1.5"))
    book.revert()
    assert book.get(1) is not None and book.get(1).remaining == D("5")  # type: ignore[union-attr]
    book.revert()  # a second revert has nothing left to undo
    assert book.depth() == ([(D("10"), D("5"))], [])


# --- properties: random order flow against a plain model -----------------------------------------

@dataclass
class Ref:
    """The model's own record of a resting order."""

    order_id: int
    user: str
    side: Side
    price: Decimal
    remaining: Decimal
    sequence: int


USERS = ("u1", "u1", "u2", "u3")  # u1 often, so self-trade prevention triggers often
PRICES = st.integers(19, 22).map(lambda ticks: ticks * TICK)  # 9.5 .. 11: few levels, many crosses
QUANTITIES = st.integers(1, 30).map(lambda steps: steps * STEP)
QUOTES = st.integers(1, 600).map(lambda cents: cents * D("0.05"))
MODES = st.sampled_from(list(STP))
Action = tuple[object, ...]

LIMITS = st.tuples(st.just("limit"), st.sampled_from(USERS), st.sampled_from(Side), PRICES, QUANTITIES,
                   st.sampled_from([GTC, GTC, GTC, IOC, FOK]), st.sampled_from([False, False, False, True]), MODES)
MARKETS = st.tuples(st.just("market"), st.sampled_from(USERS), st.sampled_from(Side), QUANTITIES, st.booleans(), MODES)
QUOTE_MARKETS = st.tuples(st.just("quote"), st.sampled_from(USERS), st.sampled_from(Side), QUOTES, MODES)
CANCELS = st.tuples(st.just("cancel"), st.integers(0, 50))
ACTIONS = st.one_of(LIMITS, MARKETS, QUOTE_MARKETS, CANCELS)
SEEDS = st.tuples(st.just("limit"), st.sampled_from(USERS), st.sampled_from(Side), PRICES, QUANTITIES, st.just(GTC),
                  st.just(False), MODES)  # plain GTC limits first, so that takers find a book worth taking


def request_for(action: Action, order_id: int) -> OrderRequest:
    kind = action[0]
    if kind == "limit":
        _, user, side, price, quantity, tif, post_only, mode = action
        post_only = post_only and tif is GTC
        return OrderRequest(order_id, user, side, OrderType.LIMIT, price, quantity, None, tif, post_only, mode,  # type: ignore[arg-type]
                            order_id)
    if kind == "market":
        _, user, side, quantity, fok, mode = action
        return OrderRequest(order_id, user, side, OrderType.MARKET, None, quantity, None,  # type: ignore[arg-type]
                            FOK if fok else IOC, False, mode, order_id)  # type: ignore[arg-type]
    _, user, side, quote, mode = action
    return OrderRequest(order_id, user, side, OrderType.MARKET, None, None, quote, IOC, False, mode,  # type: ignore[arg-type]
                        order_id)


def within(request: OrderRequest, price: Decimal) -> bool:
    """Would this taker trade at `price`?"""
    if request.price is None:
        return True
    return price <= request.price if request.side is BID else price >= request.price


def priority(request: OrderRequest, ref: Ref) -> tuple[Decimal, int]:
    """Sort key of makers for this taker: best price first, then earliest sequence."""
    return (ref.price if request.side is BID else -ref.price, ref.sequence)


def makers_in_priority(request: OrderRequest, model: dict[int, Ref]) -> list[Ref]:
    return sorted((r for r in model.values() if r.side is not request.side), key=lambda r: priority(request, r))


def reference_fillable(request: OrderRequest, model: dict[int, Ref]) -> Decimal:
    """How much a FOK could take, walked the simplest way."""
    found = D("0")
    for ref in makers_in_priority(request, model):
        if not within(request, ref.price):
            break
        if ref.user == request.user_id and request.self_trade_prevention is not STP.ALLOW:
            if request.self_trade_prevention is STP.REJECT_MAKER:
                continue
            break
        found += ref.remaining
    return found


def model_state(model: dict[int, Ref]) -> list[tuple[int, str, Side, Decimal, Decimal, int]]:
    return sorted((r.order_id, r.user, r.side, r.price, r.remaining, r.sequence) for r in model.values())


def check_book_matches_model(book: OrderBook, model: dict[int, Ref]) -> None:
    assert snapshot(book) == model_state(model)
    assert len(book) == len(model)
    for user in {*USERS, "sweeper"}:
        assert sorted(o.order_id for o in book.orders_of(user)) == sorted(r.order_id for r in model.values()
                                                                           if r.user == user)
    bids = [r.price for r in model.values() if r.side is BID]
    asks = [r.price for r in model.values() if r.side is ASK]
    assert book.best_bid() == (max(bids) if bids else None)
    assert book.best_ask() == (min(asks) if asks else None)
    if bids and asks:
        assert max(bids) < min(asks), "the resting book is crossed"
    depth_bids, depth_asks = book.depth()
    assert depth_bids == [(p, sum((r.remaining for r in model.values() if r.side is BID and r.price == p), D("0")))
                          for p in sorted(set(bids), reverse=True)]
    assert depth_asks == [(p, sum((r.remaining for r in model.values() if r.side is ASK and r.price == p), D("0")))
                          for p in sorted(set(asks))]


def check_submit(book: OrderBook, model: dict[int, Ref], request: OrderRequest) -> None:
    """Submit one order and check everything the rules promise against the model, then update the model."""
    before = model_state(model)
    total_before = sum((r.remaining for r in model.values()), D("0"))
    fillable = reference_fillable(request, model)
    best_opposite = makers_in_priority(request, model)[:1]
    execution = book.submit(request)
    mode = request.self_trade_prevention
    kind = "quote" if request.quote_quantity is not None else f"{request.order_type} {request.time_in_force}"
    event(f"{kind} {mode}: {execution.status} {execution.reason} stp-cancelled={bool(execution.cancelled_makers)}")

    # conservation inside the execution
    assert execution.executed_quantity == sum((m.quantity for m in execution.matches), D("0"))
    assert execution.executed_quote_quantity == sum((m.price * m.quantity for m in execution.matches), D("0"))

    # self-trade prevention removed only the taker's own orders, untouched, and only in the modes that do so
    cancelled_ids = {o.order_id for o in execution.cancelled_makers}
    for removed in execution.cancelled_makers:
        ref = model[removed.order_id]
        assert ref.user == request.user_id and removed.remaining == ref.remaining
    if mode in (STP.REJECT_TAKER, STP.ALLOW):
        assert not cancelled_ids
    if mode is STP.REJECT_BOTH:
        assert len(cancelled_ids) <= 1

    # every match: at the maker's price, within the taker's limit, in price-time priority
    working = {order_id: Ref(**vars(ref)) for order_id, ref in model.items()}
    matched = D("0")
    for match in execution.matches:
        assert (match.taker_order_id, match.taker_user_id, match.taker_side) == (
            request.order_id, request.user_id, request.side)
        maker = working[match.maker_order_id]
        assert maker.side is not request.side and maker.user == match.maker_user_id
        assert match.price == maker.price and within(request, match.price)
        assert D("0") < match.quantity <= maker.remaining
        assert maker.user != request.user_id or mode is STP.ALLOW
        for other in working.values():
            if other.side is not request.side and other.order_id not in cancelled_ids:
                assert priority(request, other) >= priority(request, maker), f"{other} skipped for {maker}"
        maker.remaining -= match.quantity
        matched += match.quantity
        if not maker.remaining:
            del working[maker.order_id]
    for order_id in cancelled_ids:
        del working[order_id]

    # what rests: only a GTC limit remainder
    if execution.resting is not None:
        assert request.order_type is OrderType.LIMIT and request.time_in_force is GTC
        assert request.price is not None and request.quantity is not None
        assert execution.resting.remaining == request.quantity - execution.executed_quantity
        assert execution.resting.price == request.price and execution.reason is None
        expected = OrderStatus.PARTIALLY_FILLED if execution.matches else OrderStatus.NEW
        assert execution.status is expected
        working[request.order_id] = Ref(request.order_id, request.user_id, request.side, request.price,
                                        execution.resting.remaining, request.sequence)
    else:
        assert execution.status in (OrderStatus.FILLED, OrderStatus.EXPIRED)
        assert book.get(request.order_id) is None

    # the book moved exactly as the model says
    total_after = sum((r.remaining for r in working.values()), D("0"))
    rested = execution.resting.remaining if execution.resting else D("0")
    stp_removed = sum((o.remaining for o in execution.cancelled_makers), D("0"))
    assert total_after == total_before - matched - stp_removed + rested
    model.clear()
    model.update(working)
    check_book_matches_model(book, model)

    # the rules of each kind of order
    if request.quantity is not None and execution.status is OrderStatus.FILLED:
        assert execution.executed_quantity == request.quantity and execution.reason is None
    if request.time_in_force is FOK:
        assert request.quantity is not None
        if fillable >= request.quantity:
            assert execution.executed_quantity == request.quantity
        else:
            assert execution.reason == FOK_UNFILLABLE and execution.matches == () and model_state(model) == before
    if request.post_only:
        crosses = bool(best_opposite) and within(request, best_opposite[0].price)
        if crosses:
            assert execution.reason == POST_ONLY_WOULD_TAKE and model_state(model) == before
        else:
            assert execution.status is OrderStatus.NEW and execution.matches == ()
    if execution.reason == NO_LIQUIDITY:  # nothing tradable within the limit was left behind
        assert not any(r.side is not request.side and within(request, r.price) for r in model.values())
    if execution.reason == SELF_TRADE:
        assert mode in (STP.REJECT_TAKER, STP.REJECT_BOTH)
        if mode is STP.REJECT_TAKER:
            assert makers_in_priority(request, model)[0].user == request.user_id
    if request.quote_quantity is not None:
        left = request.quote_quantity - execution.executed_quote_quantity
        assert left >= 0
        if execution.status is OrderStatus.FILLED:
            best = makers_in_priority(request, model)[:1]
            assert left == 0 or (best and left < best[0].price * STEP)


@settings(max_examples=500, deadline=None)
@given(st.lists(SEEDS, min_size=1, max_size=20), st.lists(ACTIONS, min_size=1, max_size=40))
def test_random_order_flow_keeps_every_rule(seeds: list[Action], actions: list[Action]) -> None:
    book = new_book()
    model: dict[int, Ref] = {}
    for order_id, action in enumerate(seeds + actions, start=1):
        if action[0] == "cancel":
            ids = sorted(model)
            target = ids[int(action[1]) % len(ids)] if ids else 10_000  # type: ignore[call-overload]
            cancelled = book.cancel(target)
            if target in model:
                ref = model.pop(target)
                assert cancelled is not None and (cancelled.order_id, cancelled.remaining) == (target, ref.remaining)
            else:
                assert cancelled is None
            check_book_matches_model(book, model)
        else:
            check_submit(book, model, request_for(action, order_id))

    # a book rebuilt from its orders, in priority order, is the same book and matches the same way
    rebuilt = new_book()
    for order in sorted(book.orders(), key=lambda o: o.sequence):
        rebuilt.rest(order)
    assert rebuilt.depth() == book.depth() and snapshot(rebuilt) == snapshot(book)
    for side in Side:
        sweep = OrderRequest(10**6, "sweeper", side, OrderType.MARKET, None, D("10000"), None, IOC, False, STP.ALLOW,
                             10**6)
        assert book.submit(sweep).matches == rebuilt.submit(sweep).matches


@settings(max_examples=300, deadline=None)
@given(st.lists(SEEDS, min_size=1, max_size=20), st.lists(ACTIONS, min_size=0, max_size=20),
       st.one_of(LIMITS, MARKETS, QUOTE_MARKETS))
def test_a_reverted_submit_leaves_the_book_as_if_it_never_came(seeds: list[Action], actions: list[Action],
                                                                 taker: Action) -> None:
    books = new_book(), new_book()
    for book in books:
        for order_id, action in enumerate(seeds + actions, start=1):
            if action[0] == "cancel":
                ids = sorted(o.order_id for o in book.orders())
                if ids:
                    book.cancel(ids[int(action[1]) % len(ids)])  # type: ignore[call-overload]
            else:
                book.submit(request_for(action, order_id))
    tried, untouched = books
    tried.submit(request_for(taker, 1000))
    tried.revert()
    assert snapshot(tried) == snapshot(untouched) and tried.depth() == untouched.depth()
    for user in {*USERS}:
        assert snapshot_of(tried.orders_of(user)) == snapshot_of(untouched.orders_of(user))
    for n, side in enumerate(Side):  # and in the same priority: a sweep matches the same orders, in order
        sweep = OrderRequest(10**6 + n, "sweeper", side, OrderType.MARKET, None, D("10000"), None, IOC, False,
                             STP.ALLOW, 10**6 + n)
        assert tried.submit(sweep).matches == untouched.submit(sweep).matches


def snapshot_of(orders: list[RestingOrder]) -> list[tuple[int, str, Side, Decimal, Decimal, int]]:
    return sorted((o.order_id, o.user_id, o.side, o.price, o.remaining, o.sequence) for o in orders)
