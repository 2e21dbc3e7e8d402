"""The venue's WebSocket streams, seen by a client written from Backpack's documents (the
`websockets` library), against real `bkr serve` processes.

Two clients trade over REST, each through a different `bkr serve` process on one database; a
third client, connected to one of them, sees the book change, the trade, and the maker sees its
own order filled, each within a second of the order, on SQLite and on PostgreSQL. Then what a
subscription means: nothing before it is live, nothing after it is withdrawn, a malformed request
or an unknown stream is answered with an error that says what is wrong, and a private stream is
refused without a valid signature of a known key.
"""

import asyncio
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from stream_support import Listener, subscription_signature
from venue_support import Key, run_bkr

from bkr.venue.client import BackpackClient
from serve_support import BkrServer, start_bkr_serve

pytestmark = pytest.mark.slow

SYMBOL = "SOL_USDC"
WITHIN = 1.0  # seconds from an order's answer to the messages it causes


def trading_users(db_url: str, *names: str) -> dict[str, Key]:
    """Users with accounts and keys, made with bkr's own command line."""
    admin = json.loads(run_bkr("operator", "add", "root", "--role", "admin", "--json", "--db", db_url))["token"]
    made = {}
    for name in names:
        created = json.loads(run_bkr("user", "key", "create", name, "--json", "--key", admin, "--db", db_url))
        made[name] = Key(created["api_key"], created["secret"])
    return made


def rest(server: BkrServer, key: Key) -> BackpackClient:
    return BackpackClient(server.base, key.api_key, key.secret)


@dataclass
class Served:
    servers: list[BkrServer]
    users: dict[str, Key]


@pytest.fixture
def two_processes(db_url: str, tmp_path: Path) -> Iterator[Served]:
    users = trading_users(db_url, "maker", "taker", "watcher")
    servers: list[BkrServer] = []
    try:
        for _ in range(2):
            servers.append(start_bkr_serve(db_url, tmp_path, "--no-scheduled-close"))
        yield Served(servers, users)
    finally:
        for server in servers:
            server.stop()


def test_a_third_client_sees_within_a_second_what_two_processes_matched(two_processes: Served) -> None:
    first, second = two_processes.servers
    maker_key, taker_key = two_processes.users["maker"], two_processes.users["taker"]

    async def scenario() -> None:
        watcher = await Listener.open(second.base)  # watches the process the maker does not trade on
        maker_stream = await Listener.open(first.base)  # the maker's own updates, where the taker does not trade
        try:
            answer = await watcher.request("SUBSCRIBE", [f"depth.{SYMBOL}", f"trade.{SYMBOL}", f"bookTicker.{SYMBOL}"])
            assert answer == {"id": 1, "result": None}
            answer = await maker_stream.request("SUBSCRIBE", ["account.orderUpdate"],
                                                subscription_signature(maker_key.api_key, maker_key.secret))
            assert answer == {"id": 1, "result": None}

            # the maker's ask rests, placed through the first process
            ask = await asyncio.to_thread(rest(first, maker_key).order, symbol=SYMBOL, side="Ask", orderType="Limit",
                                          price="151.25", quantity="2", timeInForce="GTC")
            placed_at = time.monotonic()
            depth = await watcher.first(lambda m: m.get("stream") == f"depth.{SYMBOL}"
                                        and ["151.25", "2"] in m["data"]["a"])
            assert depth.at - placed_at < WITHIN
            top = await watcher.first(lambda m: m.get("stream") == f"bookTicker.{SYMBOL}"
                                      and m["data"]["a"] == "151.25")
            assert top.message["data"]["A"] == "2" and top.at - placed_at < WITHIN
            accepted = await maker_stream.first(lambda m: m.get("data", {}).get("e") == "orderAccepted")
            assert accepted.message["stream"] == "account.orderUpdate"
            assert accepted.message["data"]["i"] == ask["id"] and accepted.message["data"]["X"] == "New"

            # the taker buys part of it through the second process
            bid = await asyncio.to_thread(rest(second, taker_key).order, symbol=SYMBOL, side="Bid",
                                          orderType="Market", quantity="0.5")
            traded_at = time.monotonic()
            assert bid["status"] == "Filled"
            trade = await watcher.first(lambda m: m.get("stream") == f"trade.{SYMBOL}")
            data = trade.message["data"]
            assert (data["e"], data["s"], data["p"], data["q"]) == ("trade", SYMBOL, "151.25", "0.5")
            assert (data["b"], data["a"], data["m"]) == (bid["id"], ask["id"], False)
            assert trade.at - traded_at < WITHIN
            after = await watcher.first(lambda m: m.get("stream") == f"depth.{SYMBOL}"
                                        and ["151.25", "1.5"] in m["data"]["a"])
            assert after.at - traded_at < WITHIN
            assert after.message["data"]["U"] == depth.message["data"]["u"] + 1  # the book's updates chain
            fill = await maker_stream.first(lambda m: m.get("data", {}).get("e") == "orderFill")
            data = fill.message["data"]
            assert fill.at - traded_at < WITHIN
            assert (data["i"], data["l"], data["L"], data["z"], data["X"], data["m"]) == (
                ask["id"], "0.5", "151.25", "0.5", "PartiallyFilled", True)
            assert Decimal(data["n"]) == Decimal("151.25") * Decimal("0.5") * Decimal("0.0008")  # the maker fee
            # the taker's own order is not the maker's business
            assert {data["i"] for data in maker_stream.on("account.orderUpdate")} == {ask["id"]}
        finally:
            await watcher.close()
            await maker_stream.close()

    run(scenario())


# --- what a subscription means ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def one_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("streams")
    db_url = f"sqlite:///{directory / 'venue.db'}"
    run_bkr("db", "upgrade", "--db", db_url)
    users = trading_users(db_url, "maker", "taker")
    server = start_bkr_serve(db_url, directory, "--no-scheduled-close")
    try:
        yield Served([server], users)
    finally:
        server.stop()


def run(coroutine: Any) -> Any:
    """Run `coroutine` to its end in a thread of its own: a test earlier in the process may have
    left an event loop running in this one (Playwright's sync API does), where asyncio.run() refuses
    to start."""
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, coroutine).result()


def test_an_unsubscribed_stream_sends_nothing_more(one_server: Served) -> None:
    server, maker = one_server.servers[0], one_server.users["maker"]

    async def scenario() -> None:
        listener = await Listener.open(server.base)
        try:
            assert await listener.request("SUBSCRIBE", ["depth.BTC_USDC", "trade.BTC_USDC"]) == {"id": 1,
                                                                                                 "result": None}
            await asyncio.to_thread(rest(server, maker).order, symbol="BTC_USDC", side="Bid", orderType="Limit",
                                    price="50000", quantity="0.01", timeInForce="GTC")
            await listener.first(lambda m: m.get("stream") == "depth.BTC_USDC")
            assert await listener.request("UNSUBSCRIBE", ["depth.BTC_USDC"]) == {"id": 2, "result": None}
            count = len(listener.on("depth.BTC_USDC"))
            await asyncio.to_thread(rest(server, maker).order, symbol="BTC_USDC", side="Bid", orderType="Limit",
                                    price="50001", quantity="0.01", timeInForce="GTC")
            # a later subscription on the same connection is answered after the order's change was read
            await listener.request("SUBSCRIBE", ["ticker.BTC_USDC"])
            await asyncio.sleep(0.3)
            assert len(listener.on("depth.BTC_USDC")) == count
        finally:
            await listener.close()

    run(scenario())


@pytest.mark.parametrize(("frame", "code", "says"), [
    ("not json", 4000, "not valid JSON"),
    ('["SUBSCRIBE"]', 4000, "JSON object"),
    ('{"method": "LISTEN", "params": ["depth.SOL_USDC"], "id": 7}', 4000, "'LISTEN' is not SUBSCRIBE"),
    ('{"method": "SUBSCRIBE", "params": [], "id": 7}', 4000, "params must list"),
    ('{"method": "SUBSCRIBE", "params": ["depth.DOGE_USDC"], "id": 7}', 4006, "no market 'DOGE_USDC'"),
    ('{"method": "SUBSCRIBE", "params": ["depth.SOL_USDC", "candles.SOL_USDC"], "id": 7}', 4006,
     "'candles.SOL_USDC'; the sandbox serves depth.<symbol>"),
    ('{"method": "SUBSCRIBE", "params": ["kline.7m.SOL_USDC"], "id": 7}', 4006, "no kline interval '7m'"),
    ('{"method": "SUBSCRIBE", "params": ["markPrice.SOL_USDC_PERP"], "id": 7}', 4006,
     "does not serve markPrice streams"),
    ('{"method": "SUBSCRIBE", "params": ["account.orderUpdate"], "id": 7}', 4001, 'need "signature"'),
])
def test_a_bad_request_is_answered_with_what_is_wrong(one_server: Served, frame: str, code: int, says: str) -> None:
    async def scenario() -> dict[str, Any]:
        listener = await Listener.open(one_server.servers[0].base)
        try:
            await listener.send_raw(frame)
            return (await listener.first(lambda m: "error" in m)).message
        finally:
            await listener.close()

    answer = run(scenario())
    assert answer["error"]["code"] == code
    assert says in answer["error"]["message"]
    assert answer["id"] == (7 if '"id": 7' in frame else None)


def test_a_refused_request_subscribes_to_none_of_its_streams(one_server: Served) -> None:
    server, maker = one_server.servers[0], one_server.users["maker"]

    async def scenario() -> None:
        listener = await Listener.open(server.base)
        try:
            answer = await listener.request("SUBSCRIBE", ["trade.ETH_USDC", "trade.NOPE_USDC"])
            assert answer["error"]["code"] == 4006
            assert await listener.request("SUBSCRIBE", ["depth.ETH_USDC"]) == {"id": 2, "result": None}
            await asyncio.to_thread(rest(server, maker).order, symbol="ETH_USDC", side="Bid", orderType="Limit",
                                    price="2000", quantity="0.1", timeInForce="GTC")
            await listener.first(lambda m: m.get("stream") == "depth.ETH_USDC")
            assert listener.on("trade.ETH_USDC") == []
        finally:
            await listener.close()

    run(scenario())


@pytest.mark.parametrize("spoil", ["other key", "other instruction", "expired", "unknown key", "not base64"])
def test_a_private_stream_is_refused_without_a_valid_signature(one_server: Served, spoil: str) -> None:
    maker, taker = one_server.users["maker"], one_server.users["taker"]
    signature = subscription_signature(maker.api_key, maker.secret)
    if spoil == "other key":  # signed by the taker, presented as the maker's
        signature[1] = subscription_signature(taker.api_key, taker.secret)[1]
    elif spoil == "other instruction":
        signature = subscription_signature(maker.api_key, maker.secret, instruction="orderExecute")
    elif spoil == "expired":
        signature = subscription_signature(maker.api_key, maker.secret, timestamp=int(time.time() * 1000) - 60_000)
    elif spoil == "unknown key":
        from bkr.domain.signing import new_key_pair

        stranger = new_key_pair()
        signature = subscription_signature(stranger.api_key, stranger.secret)
    else:
        signature[0] = "not base64!"

    async def scenario() -> dict[str, Any]:
        listener = await Listener.open(one_server.servers[0].base)
        try:
            return await listener.request("SUBSCRIBE", ["account.orderUpdate.SOL_USDC"], signature)
        finally:
            await listener.close()

    answer = run(scenario())
    assert answer["error"]["code"] == 4001
    assert answer["error"]["message"].startswith("Invalid signature")


# --- ccxt's own WebSocket client for Backpack ---------------------------------------------------------

def pro_client(server: BkrServer, key: Key | None = None) -> Any:
    """ccxt.pro's Backpack client, unmodified but for its URLs; its book snapshot is taken at the
    first update rather than after ten (the sandbox's book moves only when the test trades)."""
    import ccxt.pro

    config: dict[str, Any] = {"options": {"watchOrderBook": {"snapshotDelay": 0}}}
    if key is not None:
        config.update(apiKey=key.api_key, secret=key.secret)
    exchange = ccxt.pro.backpack(config)
    ws = server.base.replace("http://", "ws://", 1) + "/"
    exchange.urls["api"] = {"public": server.base, "private": server.base, "ws": {"public": ws, "private": ws}}
    return exchange


def test_ccxt_watches_the_book_the_trades_and_its_orders_that_another_process_matched(
        two_processes: Served) -> None:
    first, second = two_processes.servers
    watcher = pro_client(second)
    maker = pro_client(first, two_processes.users["maker"])
    taker = pro_client(second, two_processes.users["taker"])

    async def scenario() -> None:
        try:
            await asyncio.gather(watcher.load_markets(), maker.load_markets(), taker.load_markets())
            book = asyncio.ensure_future(watcher.watch_order_book("SOL/USDC"))
            trades = asyncio.ensure_future(watcher.watch_trades("SOL/USDC"))
            orders = asyncio.ensure_future(maker.watch_orders())
            await asyncio.sleep(1.0)  # ccxt does not wait for an answer: let the subscriptions go live
            ask = await maker.create_order("SOL/USDC", "limit", "sell", 2, 151.25)
            seen = await asyncio.wait_for(book, 5)
            assert seen["asks"][0] == [151.25, 2.0]
            accepted = await asyncio.wait_for(orders, 5)
            assert [(o["id"], o["status"]) for o in accepted] == [(ask["id"], "open")]

            # a watch answers the next update: these wait before the taker trades
            book = asyncio.ensure_future(watcher.watch_order_book("SOL/USDC"))
            orders = asyncio.ensure_future(maker.watch_orders())
            await asyncio.sleep(0.1)
            bid = await taker.create_order("SOL/USDC", "market", "buy", 0.5)
            printed = await asyncio.wait_for(trades, 5)
            assert [(t["price"], t["amount"], t["side"], t["order"]) for t in printed] == [
                (151.25, 0.5, "buy", bid["id"])]
            after = await asyncio.wait_for(book, 5)
            assert after["asks"][0] == [151.25, 1.5]
            filled = await asyncio.wait_for(orders, 5)
            assert filled[-1]["id"] == ask["id"] and filled[-1]["info"]["e"] == "orderFill"
            assert filled[-1]["info"]["z"] == "0.5"
        finally:
            await asyncio.gather(watcher.close(), maker.close(), taker.close())

    run(scenario())


def test_a_perpetual_trade_streams_its_ticker_candle_and_the_positions_it_opens_and_closes(
        one_server: Served) -> None:
    server, maker, taker = one_server.servers[0], one_server.users["maker"], one_server.users["taker"]
    perp = "ETH_USDC_PERP"

    async def scenario() -> None:
        market = await Listener.open(server.base)
        mine = await Listener.open(server.base)
        try:
            await market.request("SUBSCRIBE", [f"ticker.{perp}", f"kline.1m.{perp}", f"kline.1month.{perp}"])
            answer = await mine.request("SUBSCRIBE", [f"account.positionUpdate.{perp}"],
                                        subscription_signature(taker.api_key, taker.secret))
            assert answer == {"id": 1, "result": None}
            maker_rest, taker_rest = rest(server, maker), rest(server, taker)
            await asyncio.to_thread(maker_rest.order, symbol=perp, side="Ask", orderType="Limit", price="3000.5",
                                    quantity="0.4", timeInForce="GTC")
            await asyncio.to_thread(taker_rest.order, symbol=perp, side="Bid", orderType="Market", quantity="0.3")
            opened = (await mine.first(lambda m: m.get("data", {}).get("e") == "positionOpened")).message["data"]
            assert (opened["s"], opened["q"], opened["B"], opened["n"]) == (perp, "0.3", "3000.5", "900.15")
            ticker = (await market.first(lambda m: m.get("stream") == f"ticker.{perp}")).message["data"]
            assert (ticker["c"], ticker["v"], ticker["V"], ticker["n"]) == ("3000.5", "0.3", "900.15", 1)
            minute = (await market.first(lambda m: m.get("stream") == f"kline.1m.{perp}")).message["data"]
            assert (minute["o"], minute["h"], minute["l"], minute["c"], minute["v"], minute["n"], minute["X"]) == (
                "3000.5", "3000.5", "3000.5", "3000.5", "0.3", 1, False)
            assert minute["t"].endswith(":00") and minute["T"] > minute["t"]
            month = (await market.first(lambda m: m.get("stream") == f"kline.1month.{perp}")).message["data"]
            assert month["t"].endswith("-01T00:00:00")

            # a new subscription first lists the open position as it stands (no event type)
            again = await Listener.open(server.base)
            try:
                await again.request("SUBSCRIBE", ["account.positionUpdate"],
                                    subscription_signature(taker.api_key, taker.secret))
                standing = (await again.first(lambda m: m.get("stream") == "account.positionUpdate")).message["data"]
                assert "e" not in standing and standing["q"] == "0.3"
            finally:
                await again.close()

            await asyncio.to_thread(maker_rest.order, symbol=perp, side="Bid", orderType="Limit", price="2990",
                                    quantity="0.3", timeInForce="GTC")
            await asyncio.to_thread(taker_rest.order, symbol=perp, side="Ask", orderType="Market", quantity="0.3")
            closed = (await mine.first(lambda m: m.get("data", {}).get("e") == "positionClosed")).message["data"]
            assert closed["q"] == "0" and Decimal(closed["p"]) == Decimal("2990") * Decimal("0.3") - Decimal("900.15")
        finally:
            await market.close()
            await mine.close()

    run(scenario())
