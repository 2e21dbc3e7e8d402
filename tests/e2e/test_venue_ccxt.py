"""ccxt's own Backpack client (the pinned release, unmodified but for its URLs) trading on a real
`bkr serve`, and the broker program paying for exactly what ccxt says was traded.

Two users trade with each other through ccxt: a maker posts limit orders, a taker crosses them
with market and limit orders, both batch. The broker's month-to-date API volume and fee base,
read over bkr's broker API with the broker's own key, must equal to the digit what the two users'
`fetch_my_trades` report; their balances must have moved by exactly those trades. ccxt sends
`X-Broker-Id: 1400` by itself; the same flow runs as broker 2200, as an unknown id the program
ignores, and as an unknown id a program configured to reject refuses.

ccxt's unified numbers are floats, so every figure is taken from the strings of `info`; the
balances' unified totals (short decimals, which a float's repr gives back digit for digit) are
checked against the raw strings too.
"""

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import ccxt
import pytest
from venue_support import BkrServer, Key, VenueWorld, venue_world

pytestmark = pytest.mark.slow

REJECT_UNKNOWN_BROKERS = '[program]\nunknown_broker_policy = "reject"\n'


@dataclass(frozen=True)
class Scale:
    """A spot market and the size of the flow's numbers in it: the flow is written at SOL's
    prices (around 150) and amounts (units of 1); `price` and `unit` rescale it."""

    symbol: str
    base: str
    quote: str
    price: Decimal
    unit: Decimal

    def p(self, at: str) -> float:
        return float(Decimal(at) * self.price)

    def q(self, amount: str) -> float:
        return float(Decimal(amount) * self.unit)


SOL = Scale("SOL/USDC", "SOL", "USDC", Decimal(1), Decimal(1))
BTC = Scale("BTC/USDC", "BTC", "USDC", Decimal(400), Decimal("0.01"))
ETH = Scale("ETH/USDC", "ETH", "USDC", Decimal(20), Decimal("0.1"))


@dataclass(frozen=True)
class Trade:
    side: str  # Bid | Ask, as the venue wrote it
    price: Decimal
    quantity: Decimal
    fee: Decimal
    fee_currency: str


@dataclass
class Served:
    world: VenueWorld
    server: BkrServer
    rejecting_world: VenueWorld
    rejecting_server: BkrServer


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Brokers 1400 and 2200 active on a default venue, and a second venue (broker 1400 active)
    whose program rejects unknown broker ids; both servers start together."""
    with venue_world(tmp_path_factory.mktemp("venue")) as world, \
            venue_world(tmp_path_factory.mktemp("rejecting")) as rejecting_world:
        world.active_broker(1400)
        world.active_broker(2200)
        rejecting_world.active_broker(1400)
        server, rejecting_server = world.serve(wait=False), rejecting_world.serve(REJECT_UNKNOWN_BROKERS, wait=False)
        server.wait_until_it_answers()
        rejecting_server.wait_until_it_answers()
        yield Served(world, server, rejecting_world, rejecting_server)


def ccxt_client(server: BkrServer, key: Key, broker_header: str | None = None) -> ccxt.backpack:
    exchange = ccxt.backpack({"apiKey": key.api_key, "secret": key.secret})
    exchange.urls["api"] = {"public": server.base, "private": server.base}
    if broker_header is not None:
        exchange.headers = {"X-Broker-Id": broker_header}
    return exchange


def my_trades(exchange: ccxt.backpack, scale: Scale) -> list[Trade]:
    trades = exchange.fetch_my_trades(scale.symbol)
    return [Trade(t["info"]["side"], Decimal(t["info"]["price"]), Decimal(t["info"]["quantity"]),
                  Decimal(t["info"]["fee"]), t["fee"]["currency"]) for t in trades]


def volume_and_fee_base(trades: list[Trade], scale: Scale) -> tuple[Decimal, Decimal]:
    """What the program should count: Σ price × quantity, and the fees in USD (USDC at 1; a fee
    in the base asset at the fill's price)."""
    volume = sum((t.price * t.quantity for t in trades), Decimal(0))
    fee_base = Decimal(0)
    for trade in trades:
        assert trade.fee_currency in (scale.base, scale.quote)
        fee_base += trade.fee if trade.fee_currency == scale.quote else trade.fee * trade.price
    return volume, fee_base


def holdings(exchange: ccxt.backpack, scale: Scale) -> dict[str, Decimal]:
    """The base and quote totals from fetch_balance, checked against the raw strings it parsed."""
    balance = exchange.fetch_balance()
    raw = exchange.privateGetApiV1Capital()
    totals = {}
    for asset in (scale.base, scale.quote):
        exact = Decimal(raw[asset]["available"]) + Decimal(raw[asset]["locked"]) + Decimal(raw[asset]["staked"])
        assert Decimal(repr(balance[asset]["total"])) == exact
        totals[asset] = exact
    return totals


def moved_by(trades: list[Trade], scale: Scale) -> dict[str, Decimal]:
    """How a user's base and quote holdings move with its trades, fees included."""
    moved = {scale.base: Decimal(0), scale.quote: Decimal(0)}
    for trade in trades:
        sign = 1 if trade.side == "Bid" else -1
        moved[scale.base] += sign * trade.quantity
        moved[scale.quote] -= sign * trade.price * trade.quantity
        moved[trade.fee_currency] -= trade.fee
    return moved


def trade_a_round(maker: ccxt.backpack, taker: ccxt.backpack, scale: Scale) -> None:
    """The maker rests limits on both sides; the taker crosses them with market and limit orders
    and a batch; the maker's leftovers are cancelled. Asserts each step's outcome on the way."""
    s, p, q = scale.symbol, scale.p, scale.q
    empty = taker.fetch_order_book(s)
    assert (empty["asks"], empty["bids"]) == ([], [])  # the market is this test's alone
    ask = maker.create_order(s, "limit", "sell", q("2"), p("150"))
    bid = maker.create_order(s, "limit", "buy", q("3"), p("140"))
    assert (ask["status"], bid["status"]) == ("open", "open")

    book = taker.fetch_order_book(s)
    assert (book["asks"], book["bids"]) == ([[p("150"), q("2")]], [[p("140"), q("3")]])
    assert book["timestamp"] is not None and abs(book["timestamp"] - taker.milliseconds()) < 60_000

    bought = taker.create_order(s, "market", "buy", q("1.5"))
    sold = taker.create_order(s, "market", "sell", q("1"))
    crossed_up = taker.create_order(s, "limit", "buy", q("0.5"), p("151"))
    crossed_down = taker.create_order(s, "limit", "sell", q("1"), p("139"))
    for order, quantity, quote in [(bought, "1.5", "225"), (sold, "1", "140"), (crossed_up, "0.5", "75"),
                                   (crossed_down, "1", "140")]:
        assert order["status"] == "closed"
        assert Decimal(order["info"]["executedQuantity"]) == Decimal(quantity) * scale.unit
        assert Decimal(order["info"]["executedQuoteQuantity"]) == Decimal(quote) * scale.unit * scale.price

    resting = maker.create_orders([{"symbol": s, "type": "limit", "side": "sell", "amount": q("1"), "price": p("155")},
                                   {"symbol": s, "type": "limit", "side": "sell", "amount": q("1"), "price": p("156")}])
    taken = taker.create_orders([{"symbol": s, "type": "market", "side": "buy", "amount": q("1")},
                                 {"symbol": s, "type": "limit", "side": "buy", "amount": q("0.5"), "price": p("156")}])
    assert [o["status"] for o in resting] == ["open", "open"]
    assert [o["status"] for o in taken] == ["closed", "closed"]

    still_open = {o["id"]: Decimal(o["info"]["quantity"]) - Decimal(o["info"]["executedQuantity"])
                  for o in maker.fetch_open_orders(s)}
    assert still_open == {bid["id"]: Decimal(1) * scale.unit, resting[1]["id"]: Decimal("0.5") * scale.unit}
    assert taker.fetch_open_orders(s) == []
    for order_id in still_open:
        assert maker.cancel_order(order_id, s)["status"] == "canceled"
    assert maker.fetch_open_orders(s) == []
    emptied = taker.fetch_order_book(s)
    assert (emptied["asks"], emptied["bids"]) == ([], [])


def expected_trades(scale: Scale, taker_side: str) -> Counter[tuple[str, Decimal, Decimal]]:
    """The fills `trade_a_round` makes, seen from the taker (or, sides swapped, the maker)."""
    other = {"Bid": "Ask", "Ask": "Bid"}
    flow = [("Bid", "150", "1.5"), ("Ask", "140", "1"), ("Bid", "150", "0.5"), ("Ask", "140", "1"),
            ("Bid", "155", "1"), ("Bid", "156", "0.5")]
    return Counter((side if taker_side == "Bid" else other[side], Decimal(price) * scale.price,
                    Decimal(quantity) * scale.unit) for side, price, quantity in flow)


def run_flow(served: Served, scale: Scale, name: str, broker_header: str | None
             ) -> tuple[list[Trade], dict[int, tuple[Decimal, Decimal]], dict[int, tuple[Decimal, Decimal]]]:
    """Two fresh users trade a round through ccxt; their trades (both users'), and brokers 1400's
    and 2200's figures before and after. Also checks their balances moved by exactly the trades."""
    world, server = served.world, served.server
    maker = ccxt_client(server, world.user(f"{name}-maker"), broker_header)
    taker = ccxt_client(server, world.user(f"{name}-taker"), broker_header)
    before = {b: world.broker_figures(server, b) for b in (1400, 2200)}
    held = {"maker": holdings(maker, scale), "taker": holdings(taker, scale)}

    trade_a_round(maker, taker, scale)

    maker_trades, taker_trades = my_trades(maker, scale), my_trades(taker, scale)
    assert Counter((t.side, t.price, t.quantity) for t in taker_trades) == expected_trades(scale, "Bid")
    assert Counter((t.side, t.price, t.quantity) for t in maker_trades) == expected_trades(scale, "Ask")
    assert {t.fee_currency for t in taker_trades + maker_trades} == {scale.base, scale.quote}
    for who, exchange, trades in [("maker", maker, maker_trades), ("taker", taker, taker_trades)]:
        now = holdings(exchange, scale)
        assert {a: now[a] - held[who][a] for a in now} == moved_by(trades, scale), who
    after = {b: world.broker_figures(server, b) for b in (1400, 2200)}
    return maker_trades + taker_trades, before, after


def delta(before: tuple[Decimal, Decimal], after: tuple[Decimal, Decimal]) -> tuple[Decimal, Decimal]:
    return after[0] - before[0], after[1] - before[1]


def test_ccxt_lists_the_venues_markets(served: Served) -> None:
    exchange = ccxt_client(served.server, served.world.user("lister"))

    markets = exchange.load_markets()

    assert {"SOL/USDC", "BTC/USDC", "ETH/USDC", "SOL/USDC:USDC", "BTC/USDC:USDC", "ETH/USDC:USDC"} <= set(markets)
    assert (markets["SOL/USDC"]["spot"], markets["SOL/USDC:USDC"]["swap"]) == (True, True)
    assert markets["BTC/USDC"]["info"]["filters"]["price"]["tickSize"] == "0.1"


def test_ccxt_trades_count_for_broker_1400_exactly_as_ccxt_reports_them(served: Served) -> None:
    trades, before, after = run_flow(served, SOL, "b1400", broker_header=None)  # ccxt's own X-Broker-Id: 1400

    volume, fee_base = volume_and_fee_base(trades, SOL)
    assert volume == Decimal("1626")  # 813 USDC a side: both users' orders carried 1400
    assert fee_base > 0
    assert delta(before[1400], after[1400]) == (volume, fee_base)
    assert delta(before[2200], after[2200]) == (0, 0)
    summary = served.world.broker_summary(served.server, 1400)
    assert Decimal(summary["api_volume"]) == Decimal(summary["spot_volume"]) + Decimal(summary["futures_volume"])


def test_ccxt_with_broker_header_2200_counts_for_2200_and_not_1400(served: Served) -> None:
    trades, before, after = run_flow(served, BTC, "b2200", broker_header="2200")

    volume, fee_base = volume_and_fee_base(trades, BTC)
    assert volume == Decimal("1626") * BTC.price * BTC.unit
    assert delta(before[2200], after[2200]) == (volume, fee_base)
    assert delta(before[1400], after[1400]) == (0, 0)


def test_ccxt_with_an_unknown_broker_id_trades_but_counts_for_nobody_under_ignore(served: Served) -> None:
    trades, before, after = run_flow(served, ETH, "b4242", broker_header="4242")

    assert volume_and_fee_base(trades, ETH)[0] == Decimal("1626") * ETH.price * ETH.unit  # it traded in full
    assert delta(before[1400], after[1400]) == (0, 0)
    assert delta(before[2200], after[2200]) == (0, 0)
    seen = served.world.broker_ids_seen()
    assert set(seen) == {"4242"}
    assert "4242" in seen["4242"]["reason"]
    # every order that carried the id: 6 single orders and two batches of 2 (not 8, one per request)
    assert (seen["4242"]["orders"], seen["4242"]["rejected"]) == (10, 0)


def test_ccxt_with_an_unknown_broker_id_is_refused_under_reject(served: Served) -> None:
    world, server = served.rejecting_world, served.rejecting_server
    maker = ccxt_client(server, world.user("reject-maker"))  # 1400: active, accepted
    taker = ccxt_client(server, world.user("reject-taker"), broker_header="4242")
    held = holdings(taker, SOL)
    resting = maker.create_order("SOL/USDC", "limit", "sell", 2, 150)
    volume_before = world.broker_figures(server, 1400)

    with pytest.raises(ccxt.BadRequest, match="4242"):
        taker.create_order("SOL/USDC", "market", "buy", 1)
    with pytest.raises(ccxt.BadRequest, match="4242"):
        taker.create_orders([{"symbol": "SOL/USDC", "type": "limit", "side": "buy", "amount": 1, "price": 150}])

    assert taker.fetch_my_trades("SOL/USDC") == [] and maker.fetch_my_trades("SOL/USDC") == []
    assert [(o["id"], o["info"]["executedQuantity"]) for o in maker.fetch_open_orders("SOL/USDC")] == [
        (resting["id"], "0")]
    assert holdings(taker, SOL) == held
    assert world.broker_figures(server, 1400) == volume_before
    seen = world.broker_ids_seen()
    assert (seen["4242"]["orders"], seen["4242"]["rejected"]) == (0, 2)
