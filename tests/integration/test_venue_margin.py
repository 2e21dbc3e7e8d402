"""The venue's money rules, through its HTTP API on both databases: margin over the whole account
(10x leverage and no more), orders that only reduce need no new margin, an account below its
maintenance margin may only reduce, and no balance ever goes below zero — not by the taker's
order, not by a resting order filled later, not by a spot order.

Every account starts with the default play money (1,000,000 USDC); perpetual fees are 0.05%
(taker) and 0.02% (maker); the initial margin is 10% and the maintenance margin 5%."""

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select
from test_venue import Venue, _venue

from bkr.domain.config import ProgramConfig
from bkr.domain.money import D
from bkr.store.tables import venue_orders
from bkr.venue.client import BackpackClient, BackpackError
from bkr.venue.markets import VenueConfig

PERP = "SOL_USDC_PERP"


@pytest.fixture
def venue(engine: Engine) -> Iterator[Venue]:
    yield from _venue(engine, VenueConfig(), ProgramConfig())


def order(client: BackpackClient, side: str, quantity: str, price: str | None = None, **extra: object) -> dict:
    if price is None:
        return client.order(symbol=PERP, side=side, orderType="Market", quantity=quantity, **extra)
    return client.order(symbol=PERP, side=side, orderType="Limit", price=price, quantity=quantity, **extra)


def refused(client: BackpackClient, side: str, quantity: str, price: str | None = None) -> BackpackError:
    with pytest.raises(BackpackError) as caught:
        order(client, side, quantity, price)
    assert caught.value.status == 400
    return caught.value


def long_near_the_limit(venue: Venue) -> BackpackClient:
    """`trader` buys 99,000 at 100: a notional of 9,900,000 USDC, 990,000 of initial margin, from an
    equity of 1,000,000 less the taker fee of 4,950."""
    maker, trader = venue.user("maker"), venue.user("trader")
    order(maker, "Ask", "99000", "100")
    order(trader, "Bid", "99000")
    assert venue.balance("trader", "USDC") == (D(1_000_000) - D(4_950), D(0))
    return trader


def move_the_mark(venue: Venue, price: str) -> None:
    """Two other accounts trade 0.01 at `price`: the market's last trade price."""
    order(venue.user("mover-a"), "Ask", "0.01", price)
    order(venue.user("mover-b"), "Bid", "0.01", price)


def position(client: BackpackClient) -> str:
    found = client.signed("GET", "/api/v1/position")
    return found[0]["netQuantity"] if found else "0"


def test_a_10x_leveraged_account_is_refused_before_its_balance_goes_negative(venue: Venue) -> None:
    trader = long_near_the_limit(venue)
    order(venue.user("maker-2"), "Ask", "99000", "100")
    # 600 more: equity 995,050 - 30 of fee, initial margin 996,000
    error = refused(trader, "Bid", "600")
    assert error.code == "INSUFFICIENT_MARGIN"
    assert "995020" in str(error) and "996000" in str(error)
    assert venue.balance("trader", "USDC") == (D(995_050), D(0)) and position(trader) == "99000"
    assert refused(trader, "Bid", "99000").code == "INSUFFICIENT_MARGIN"  # what the tester got accepted
    order(trader, "Bid", "500")  # 995,025 covers 995,000: exactly what is left
    assert venue.balance("trader", "USDC") == (D(995_025), D(0)) and position(trader) == "99500"


def test_the_orders_that_drove_a_balance_below_zero_leave_it_at_zero_or_above(venue: Venue) -> None:
    # a long of 9.9M, another 9.9M on top (accepted before: margin was checked per order), the
    # price falls 10%, and the position is closed
    trader = long_near_the_limit(venue)
    order(venue.user("maker-2"), "Ask", "99000", "100")
    assert refused(trader, "Bid", "99000").code == "INSUFFICIENT_MARGIN"
    order(venue.user("bidder"), "Bid", "99000", "90")
    order(trader, "Ask", "99000")  # closes at 90: a loss of 990,000 and a fee of 4,455
    assert venue.balance("trader", "USDC") == (D(595), D(0)) and position(trader) == "0"


def test_a_reducing_order_needs_no_new_margin(venue: Venue) -> None:
    trader = long_near_the_limit(venue)
    # a take-profit for the whole position: 11.88M of notional, refused before for want of 1.188M free
    take_profit = order(trader, "Ask", "99000", "120")
    assert take_profit["status"] == "New"
    move_the_mark(venue, "95")  # equity 500,050: below the initial margin (940,500), above maintenance
    assert refused(trader, "Bid", "1").code == "INSUFFICIENT_MARGIN"
    trader.signed("DELETE", "/api/v1/order", {"symbol": PERP, "orderId": take_profit["id"]})
    order(venue.user("bidder"), "Bid", "49500", "95")
    order(trader, "Ask", "49500")  # half the position, at 95
    assert position(trader) == "49500"
    assert venue.balance("trader", "USDC") == (D(995_050) - D("0.0005") * D(4_702_500), D(0))


def test_an_account_below_maintenance_may_only_reduce(venue: Venue) -> None:
    trader = long_near_the_limit(venue)
    move_the_mark(venue, "90")  # equity 5,050, maintenance 445,500
    order(venue.user("seller"), "Ask", "1", "91")
    assert refused(trader, "Bid", "1").code == "INSUFFICIENT_MARGIN"
    order(venue.user("bidder"), "Bid", "1000", "90")
    order(trader, "Ask", "1000")  # still below maintenance after it, but smaller
    assert position(trader) == "98000"
    # past zero is more than reducing: the short of 1 it opens needs the initial margin (9) covered,
    # which it is once the loss is realized: 995,050 - 45 - 4,410.045 of fees - 990,000
    order(venue.user("bidder"), "Bid", "98001", "90")
    order(trader, "Ask", "98001")
    assert position(trader) == "-1" and venue.balance("trader", "USDC") == (D("594.955"), D(0))


def test_a_loss_larger_than_the_balance_is_not_realized(venue: Venue) -> None:
    trader = long_near_the_limit(venue)
    order(venue.user("bidder"), "Bid", "99000", "89")
    error = refused(trader, "Ask", "99000")  # a loss of 1,089,000 from a balance of 995,050
    assert error.code == "INSUFFICIENT_FUNDS" and "USDC balance" in str(error)
    assert venue.balance("trader", "USDC") == (D(995_050), D(0)) and position(trader) == "99000"
    assert venue.user("bidder").depth(PERP)["bids"] == [["89", "99000"]]  # the bid was put back


def _status(venue: Venue, order_id: str) -> tuple[str, str | None]:
    with venue.engine.connect() as connection:
        row = connection.execute(select(venue_orders.c.status, venue_orders.c.expiry_reason)
                                 .where(venue_orders.c.order_id == int(order_id))).one()
    return row.status, row.expiry_reason


def test_a_resting_order_that_would_take_its_balance_below_zero_is_cancelled_when_reached(venue: Venue) -> None:
    trader = long_near_the_limit(venue)
    stop = order(trader, "Ask", "99000", "89")  # reduces, so it may rest; filled, it would lose 1,089,000
    other = order(venue.user("other"), "Ask", "10", "89.5")
    buyer = venue.user("buyer")
    bought = order(buyer, "Bid", "99010")
    assert (bought["executedQuantity"], bought["executedQuoteQuantity"]) == ("10", "895")  # from `other` only
    assert _status(venue, stop["id"]) == ("Cancelled", "InsufficientFunds")
    assert _status(venue, other["id"]) == ("Filled", None)
    assert venue.balance("trader", "USDC") == (D(995_050), D(0)) and position(trader) == "99000"


def test_a_refused_order_changes_nothing_in_a_batch_either_the_orders_cancelled_on_its_way_rest_again(
        venue: Venue) -> None:
    buyer = long_near_the_limit(venue)
    order(venue.user("maker-2"), "Ask", "99000", "100")
    order(venue.user("trader-2"), "Bid", "99000")  # a second account near its limit
    stop = order(venue.user("trader-2"), "Ask", "99000", "89")  # cannot be honoured (a loss of 1,089,000)
    other = order(venue.user("other"), "Ask", "10", "89.5")
    # the stop is cancelled on the way; then buying 10 at 89.5 marks the buyer's 99,010 at 89.5
    [answer] = buyer.orders([{"symbol": PERP, "side": "Bid", "orderType": "Market", "quantity": "99010"}])
    assert (answer["operation"], answer["code"]) == ("Err", "INSUFFICIENT_MARGIN")
    assert _status(venue, stop["id"]) == ("New", None) and _status(venue, other["id"]) == ("New", None)
    assert buyer.depth(PERP)["asks"] == [["89", "99000"], ["89.5", "10"]]
    assert venue.balance("trader", "USDC") == (D(995_050), D(0)) and position(buyer) == "99000"


def test_a_resting_order_that_would_grow_a_position_below_maintenance_is_cancelled_when_reached(
        venue: Venue) -> None:
    trader = long_near_the_limit(venue)
    dip = order(trader, "Bid", "100", "80")  # 8,000 more at 80: covered when placed (990,800 of 995,050)
    move_the_mark(venue, "90")
    sold = order(venue.user("seller"), "Ask", "100")
    assert (sold["status"], sold["executedQuantity"]) == ("Expired", "0")
    assert _status(venue, dip["id"]) == ("Cancelled", "InsufficientMargin")
    assert position(trader) == "99000"


def test_a_spot_bid_may_not_spend_the_collateral_a_position_needs(venue: Venue) -> None:
    trader = long_near_the_limit(venue)  # 5,050 USDC above the initial margin
    with pytest.raises(BackpackError) as caught:
        trader.order(symbol="SOL_USDC", side="Bid", orderType="Limit", price="150", quantity="40")  # 6,000
    assert caught.value.code == "INSUFFICIENT_MARGIN"
    trader.order(symbol="SOL_USDC", side="Bid", orderType="Limit", price="150", quantity="33")  # 4,950
    assert venue.balance("trader", "USDC") == (D(995_050) - D(4_950), D(4_950))


def test_a_market_bid_never_spends_more_than_the_balance_whatever_self_trade_prevention_cancels(
        engine: Engine) -> None:
    config = VenueConfig(starting_balances={"USDC": D(150), "SOL": D(10)})
    for venue in _venue(engine, config, ProgramConfig()):
        venue.user("seller").order(symbol="SOL_USDC", side="Ask", orderType="Limit", price="200", quantity="1")
        buyer = venue.user("buyer")
        own = buyer.order(symbol="SOL_USDC", side="Ask", orderType="Limit", price="100", quantity="1")
        # the walk priced the bid at 100 (its own ask); RejectMaker cancels that and takes the 200
        with pytest.raises(BackpackError) as caught:
            buyer.order(symbol="SOL_USDC", side="Bid", orderType="Market", quantity="1",
                        selfTradePrevention="RejectMaker")
        assert caught.value.code == "INSUFFICIENT_FUNDS"
        assert venue.balance("buyer", "USDC") == (D(150), D(0))
        assert _status(venue, own["id"]) == ("New", None)  # its own ask is back on the book
        assert buyer.depth("SOL_USDC")["asks"] == [["100", "1"], ["200", "1"]]
