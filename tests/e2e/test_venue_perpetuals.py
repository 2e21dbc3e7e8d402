"""Perpetual market data on a real `bkr serve` of two processes over one database (both
databases), read by ccxt's own Backpack client (mark price and funding rate, open interest, the
funding rate history and an account's funding payments) and by a client written from Backpack's
documentation alone (the position history, which ccxt does not implement).

The venue funds every 2 seconds here, at 0.01% an interval, so that several intervals pass within
a test: both processes' ticks race to apply each one, and each must be applied exactly once, the
long paying exactly what the short receives, every payment in the balances to the digit.
"""

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import ccxt
import pytest
from backpack_docs_client import DocsClient
from venue_support import Key, run_bkr

from serve_support import BkrServer, start_bkr_serve

pytestmark = pytest.mark.slow

PERP, UNIFIED = "SOL_USDC_PERP", "SOL/USDC:USDC"
CONFIG = '[venue]\nfunding_rate = "0.0001"\nfunding_interval = "2s"\n'
INTERVAL_MS = 2_000


@dataclass
class Served:
    servers: list[BkrServer]
    users: dict[str, Key]


@pytest.fixture
def two_processes(db_url: str, tmp_path: Path) -> Iterator[Served]:
    token = json.loads(run_bkr("operator", "add", "root", "--role", "admin", "--json", "--db", db_url))["token"]
    users = {}
    for name in ("long", "short"):
        created = json.loads(run_bkr("user", "key", "create", name, "--json", "--key", token, "--db", db_url))
        users[name] = Key(created["api_key"], created["secret"])
    config = tmp_path / "bkr.toml"
    config.write_text(CONFIG)
    servers: list[BkrServer] = []
    try:
        for _ in range(2):
            servers.append(start_bkr_serve(db_url, tmp_path, "--no-scheduled-close", "--config", str(config)))
        yield Served(servers, users)
    finally:
        for server in servers:
            server.stop()


def ccxt_client(server: BkrServer, key: Key) -> ccxt.backpack:
    exchange = ccxt.backpack({"apiKey": key.api_key, "secret": key.secret})
    exchange.urls["api"] = {"public": server.base, "private": server.base}
    return exchange


def usdc(exchange: ccxt.backpack) -> Decimal:
    raw = exchange.privateGetApiV1Capital()["USDC"]
    return Decimal(raw["available"]) + Decimal(raw["locked"])


def test_funding_is_paid_once_per_interval_across_two_processes_and_every_figure_agrees(
        two_processes: Served) -> None:
    first, second = two_processes.servers
    long = ccxt_client(first, two_processes.users["long"])
    short = ccxt_client(second, two_processes.users["short"])
    short.create_order(UNIFIED, "limit", "sell", 10, 150)
    long.create_order(UNIFIED, "market", "buy", 10)

    rate = long.fetch_funding_rate(UNIFIED)
    assert (rate["info"]["fundingRate"], rate["info"]["markPrice"], rate["info"]["indexPrice"]) == (
        "0.0001", "150", "150")
    assert 0 < rate["nextFundingTimestamp"] - int(time.time() * 1000) <= INTERVAL_MS + 100
    interest = short.fetch_open_interest(UNIFIED)
    assert interest["info"] == {"symbol": PERP, "openInterest": "10", "timestamp": interest["info"]["timestamp"]}

    time.sleep(2.5 * INTERVAL_MS / 1000)  # at least two ends pass, applied by the ticks
    long.create_order(UNIFIED, "limit", "sell", 10, 150)  # close at the same price: no PnL, the same mark
    short.create_order(UNIFIED, "market", "buy", 10)
    time.sleep(1.5 * INTERVAL_MS / 1000)  # an end after the close pays nothing: both are flat

    paid = {name: [(p["info"]["intervalEndTimestamp"], p["info"]["quantity"], p["info"]["fundingRate"])
                   for p in exchange.fetch_funding_history(UNIFIED)]
            for name, exchange in (("long", long), ("short", short))}
    ends = sorted(end for end, _, _ in paid["long"])
    assert len(ends) >= 2 and len(set(ends)) == len(ends)  # each interval once, whichever process applied it
    assert {q for _, q, _ in paid["long"]} == {"-0.15"} and {q for _, q, _ in paid["short"]} == {"0.15"}
    assert sorted(end for end, _, _ in paid["short"]) == ends  # the long paid exactly what the short received
    n = len(ends)
    # fees: 1,500 of notional each way, 0.05% taker and 0.02% maker
    assert usdc(long) == Decimal(1_000_000) - Decimal("0.75") - Decimal("0.3") - n * Decimal("0.15")
    assert usdc(short) == Decimal(1_000_000) - Decimal("0.3") - Decimal("0.75") + n * Decimal("0.15")

    history = long.fetch_funding_rate_history(UNIFIED)
    assert {h["info"]["fundingRate"] for h in history} == {"0.0001"}
    assert set(ends) <= {h["info"]["intervalEndTimestamp"] for h in history}

    docs = DocsClient(first.base, two_processes.users["long"].api_key, two_processes.users["long"].secret)
    try:
        [position] = docs.ok("GET", "/wapi/v1/history/position", {"symbol": PERP})
    finally:
        docs.close()
    assert (position["state"], position["netQuantity"], position["cumulativePnlRealized"]) == ("Closed", "0", "0")
    assert (position["closedVolume"], position["entryPrice"], position["closingPrice"]) == ("10", "150", "150")
    assert Decimal(position["fundingQuantity"]) == -n * Decimal("0.15")
    assert Decimal(position["fees"]) == Decimal("1.05")
