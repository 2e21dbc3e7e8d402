"""The venue against a client written from Backpack's documentation alone (backpack_docs_client,
which imports nothing of bkr): orders with `X-Broker-Id`, a batch, a cancel whose parameters travel
in a DELETE's JSON body, open orders, fills history between two instants in ms, balances, the
account's fee rates in basis points, the depth's microsecond timestamp, and errors as Backpack's
`{"code", "message"}`. The broker's volume over bkr's broker API must equal the fills' volume.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from backpack_docs_client import DocsClient
from venue_support import BkrServer, Key, VenueWorld, venue_world

pytestmark = pytest.mark.slow

SYMBOL = "SOL_USDC"


@dataclass
class Served:
    world: VenueWorld
    server: BkrServer

    def client(self, key: Key, broker_header: tuple[str, str] | None = None) -> DocsClient:
        return DocsClient(self.server.base, key.api_key, key.secret, broker_header=broker_header)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with venue_world(tmp_path_factory.mktemp("venue")) as world:
        world.active_broker(1400)
        world.active_broker(2200)
        yield Served(world, world.serve())


def order(side: str, quantity: str, price: str | None = None, symbol: str = SYMBOL) -> dict[str, str]:
    if price is None:
        return {"orderType": "Market", "quantity": quantity, "side": side, "symbol": symbol}
    return {"orderType": "Limit", "price": price, "quantity": quantity, "side": side, "symbol": symbol}


def volume_and_fee_base(fills: list[dict[str, Any]]) -> tuple[Decimal, Decimal]:
    """Σ price × quantity, and the fees in USD: USDC as is, the base asset at the fill's price."""
    volume, fee_base = Decimal(0), Decimal(0)
    for fill in fills:
        price = Decimal(fill["price"])
        volume += price * Decimal(fill["quantity"])
        fee_base += Decimal(fill["fee"]) * (1 if fill["feeSymbol"] == "USDC" else price)
    return volume, fee_base


def held(client: DocsClient) -> dict[str, Decimal]:
    capital = client.ok("GET", "/api/v1/capital")
    return {asset: Decimal(b["available"]) + Decimal(b["locked"]) + Decimal(b["staked"])
            for asset, b in capital.items() if asset in ("SOL", "USDC")}


def moved_by(fills: list[dict[str, Any]]) -> dict[str, Decimal]:
    moved = {"SOL": Decimal(0), "USDC": Decimal(0)}
    for fill in fills:
        sign = 1 if fill["side"] == "Bid" else -1
        moved["SOL"] += sign * Decimal(fill["quantity"])
        moved["USDC"] -= sign * Decimal(fill["price"]) * Decimal(fill["quantity"])
        moved[fill["feeSymbol"]] -= Decimal(fill["fee"])
    return moved


def is_backpack_error(body: Any, code: str) -> bool:
    return isinstance(body, dict) and set(body) == {"code", "message"} and body["code"] == code and bool(
        body["message"])


def test_a_documented_client_trades_and_the_broker_is_paid_for_exactly_its_fills(served: Served) -> None:
    world, server = served.world, served.server
    header = ("X-Broker-Id", "1400")
    maker, taker = served.client(world.user("maker"), header), served.client(world.user("taker"), header)
    before = world.broker_figures(server, 1400)
    held_before = {"maker": held(maker), "taker": held(taker)}
    since_ms = int(time.time() * 1000)

    ask = maker.ok("POST", "/api/v1/order", order("Ask", "2", "150"))
    bids = maker.ok("POST", "/api/v1/orders", [order("Bid", "1", "140"), order("Bid", "1", "139")])
    depth = maker.public("/api/v1/depth", symbol=SYMBOL).json()
    bought = taker.ok("POST", "/api/v1/order", order("Bid", "1.5"))
    crossed = taker.ok("POST", "/api/v1/orders", [order("Ask", "1"), order("Bid", "0.5", "150")])

    assert (ask["status"], [b["status"] for b in bids]) == ("New", ["New", "New"])
    assert [b["operation"] for b in bids] == ["Ok", "Ok"]  # a batch answers each order with its outcome
    assert (depth["asks"], depth["bids"]) == ([["150", "2"]], [["139", "1"], ["140", "1"]])  # ascending, as documented
    now_us = time.time() * 1_000_000
    assert isinstance(depth["timestamp"], int) and abs(depth["timestamp"] - now_us) < 60 * 1_000_000  # µs, not ms
    assert (bought["status"], bought["executedQuantity"], bought["executedQuoteQuantity"]) == ("Filled", "1.5", "225")
    assert [(o["status"], o["executedQuoteQuantity"]) for o in crossed] == [("Filled", "140"), ("Filled", "75")]

    filled = maker.call("GET", "/api/v1/order", {"orderId": ask["id"], "symbol": SYMBOL})
    assert filled.status_code == 404 and is_backpack_error(filled.json(), "RESOURCE_NOT_FOUND")
    resting = maker.ok("GET", "/api/v1/order", {"orderId": bids[1]["id"], "symbol": SYMBOL})
    assert (resting["id"], resting["status"], resting["price"]) == (bids[1]["id"], "New", "139")
    assert [o["id"] for o in maker.ok("GET", "/api/v1/orders", {"symbol": SYMBOL})] == [bids[1]["id"]]
    cancelled = maker.ok("DELETE", "/api/v1/order", {"orderId": bids[1]["id"], "symbol": SYMBOL})
    assert (cancelled["id"], cancelled["status"]) == (bids[1]["id"], "Cancelled")
    assert maker.ok("GET", "/api/v1/orders", {"symbol": SYMBOL}) == []

    until_ms = int(time.time() * 1000) + 1
    window = {"from": since_ms, "symbol": SYMBOL, "to": until_ms}
    maker_fills = maker.ok("GET", "/wapi/v1/history/fills", window)
    taker_fills = taker.ok("GET", "/wapi/v1/history/fills", window)
    assert sorted((f["side"], f["price"], f["quantity"], f["isMaker"]) for f in taker_fills) == [
        ("Ask", "140", "1", False), ("Bid", "150", "0.5", False), ("Bid", "150", "1.5", False)]
    assert sorted((f["side"], f["price"], f["quantity"], f["isMaker"]) for f in maker_fills) == [
        ("Ask", "150", "0.5", True), ("Ask", "150", "1.5", True), ("Bid", "140", "1", True)]
    assert maker.ok("GET", "/wapi/v1/history/fills", {"from": since_ms - 60_000, "to": since_ms - 1}) == []
    for who, client, fills in [("maker", maker, maker_fills), ("taker", taker, taker_fills)]:
        now = held(client)
        assert {asset: now[asset] - held_before[who][asset] for asset in now} == moved_by(fills), who

    volume, fee_base = volume_and_fee_base(maker_fills + taker_fills)
    assert volume == Decimal("880")  # 440 USDC a side: both users sent X-Broker-Id 1400
    after = world.broker_figures(server, 1400)
    assert (after[0] - before[0], after[1] - before[1]) == (volume, fee_base)


def test_the_account_reports_tier_1_fees_in_basis_points(served: Served) -> None:
    client = served.client(served.world.user("fees"))

    account = client.ok("GET", "/api/v1/account")

    assert {k: account[k] for k in ("spotMakerFee", "spotTakerFee", "futuresMakerFee", "futuresTakerFee")} == {
        "spotMakerFee": "8", "spotTakerFee": "10", "futuresMakerFee": "2", "futuresTakerFee": "5"}


def test_errors_come_as_backpack_code_and_message(served: Served) -> None:
    client = served.client(served.world.user("errors"))
    rich_order = order("Bid", "10000", "150", symbol="BTC_USDC")  # 1.5M USDC for an account holding 1M

    tampered = client.call("GET", "/api/v1/capital", tamper=True)
    too_dear = client.call("POST", "/api/v1/order", rich_order)
    unknown = client.call("GET", "/api/v1/order", {"orderId": "987654", "symbol": SYMBOL})
    bad_market = client.call("POST", "/api/v1/order", order("Bid", "1", "1", symbol="DOGE_USDC"))

    assert tampered.status_code in (400, 401) and is_backpack_error(tampered.json(), "INVALID_SIGNATURE")
    assert too_dear.status_code == 400 and is_backpack_error(too_dear.json(), "INSUFFICIENT_FUNDS")
    assert unknown.status_code == 404 and is_backpack_error(unknown.json(), "RESOURCE_NOT_FOUND")
    assert bad_market.status_code == 400 and bad_market.json()["code"] in ("INVALID_MARKET", "INVALID_SYMBOL")
    assert client.ok("GET", "/api/v1/orders", {"symbol": "BTC_USDC"}) == []  # nothing was left resting


def test_an_upper_case_x_broker_id_header_is_attributed_like_any_other_spelling(served: Served) -> None:
    """Hummingbot spells the header X-BROKER-ID (as Backpack's parameter lists do)."""
    world, server = served.world, served.server
    header = ("X-BROKER-ID", "2200")
    maker, taker = served.client(world.user("hb-maker"), header), served.client(world.user("hb-taker"), header)
    before = {b: world.broker_figures(server, b) for b in (1400, 2200)}

    maker.ok("POST", "/api/v1/order", order("Ask", "1", "151", symbol="ETH_USDC"))
    taken = taker.ok("POST", "/api/v1/order", order("Bid", "1", symbol="ETH_USDC"))

    assert taken["status"] == "Filled"
    fills = [f for c in (maker, taker) for f in c.ok("GET", "/wapi/v1/history/fills", {"symbol": "ETH_USDC"})]
    volume, fee_base = volume_and_fee_base(fills)
    assert volume == Decimal("302")
    after = {b: world.broker_figures(server, b) for b in (1400, 2200)}
    assert (after[2200][0] - before[2200][0], after[2200][1] - before[2200][1]) == (volume, fee_base)
    assert after[1400] == before[1400]


def test_a_market_order_by_quote_quantity_buys_the_whole_steps_its_budget_covers(served: Served) -> None:
    """150 USDC at 99 buys 1.51 SOL (a step is 0.01) for 149.49: the budget need not divide by the price."""
    world = served.world
    seller, buyer = served.client(world.user("q-seller")), served.client(world.user("q-buyer"))
    seller.ok("POST", "/api/v1/order", order("Ask", "4", "99", symbol="SOL_USDC"))

    answer = buyer.call("POST", "/api/v1/order", {"orderType": "Market", "quoteQuantity": "150", "side": "Bid",
                                                   "symbol": "SOL_USDC"})
    seller.ok("DELETE", "/api/v1/orders", {"symbol": "SOL_USDC"})

    assert answer.status_code == 200, answer.text
    assert (answer.json()["status"], answer.json()["executedQuantity"], answer.json()["executedQuoteQuantity"]) == (
        "Filled", "1.51", "149.49")
