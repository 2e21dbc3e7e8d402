"""K-lines over HTTP from `bkr serve`, on SQLite and PostgreSQL: users trade, then ccxt's
`fetch_ohlcv` and the client written from Backpack's documentation read candles that are the
trades' own figures, exactly (each trade once), in Backpack's shape; a window without trades
has no candles, and what Backpack would refuse is refused with its error."""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt
import pytest
from backpack_docs_client import DocsClient
from venue_support import BkrServer, VenueWorld, venue_world

pytestmark = pytest.mark.slow

SYMBOL = "SOL_USDC"


@dataclass
class Traded:
    world: VenueWorld
    server: BkrServer
    public: DocsClient
    fills: list[dict[str, Any]]  # the taker's: one per trade
    started: int  # seconds


@pytest.fixture
def traded(db_url: str, tmp_path: Path) -> Iterator[Traded]:
    with venue_world(tmp_path, db_url) as world:
        maker_key, taker_key = world.user("maker"), world.user("taker")
        server = world.serve()
        maker = DocsClient(server.base, maker_key.api_key, maker_key.secret)
        taker = DocsClient(server.base, taker_key.api_key, taker_key.secret)
        started = int(datetime.now(UTC).timestamp())
        for price, quantity in (("150.25", "1.5"), ("150.5", "2"), ("149.75", "0.25")):
            maker.ok("POST", "/api/v1/order", {"orderType": "Limit", "price": price, "quantity": quantity,
                                               "side": "Ask", "symbol": SYMBOL})
        for quantity in ("0.5", "1.25", "0.01", "1.99"):
            taker.ok("POST", "/api/v1/order", {"orderType": "Market", "quantity": quantity, "side": "Bid",
                                               "symbol": SYMBOL})
        fills = taker.ok("GET", "/wapi/v1/history/fills", {"symbol": SYMBOL, "sortDirection": "Asc"})
        public = DocsClient(server.base)
        yield Traded(world, server, public, fills, started)
        for client in (maker, taker, public):
            client.close()


def plain(amount: Decimal) -> str:
    return format(amount.normalize(), "f")


def expected_minutes(fills: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The trades' candles by minute, summed here from the fill history's own figures."""
    by_minute: dict[str, list[dict[str, Any]]] = {}
    for fill in fills:  # naive UTC ISO text, as Backpack's histories give it
        by_minute.setdefault(fill["timestamp"][:16], []).append(fill)
    candles = []
    for minute, group in sorted(by_minute.items()):
        prices = [Decimal(f["price"]) for f in group]
        start = datetime.fromisoformat(minute)
        candles.append({
            "start": f"{start:%Y-%m-%d %H:%M:%S}", "end": f"{start + timedelta(minutes=1):%Y-%m-%d %H:%M:%S}",
            "open": plain(prices[0]), "high": plain(max(prices)), "low": plain(min(prices)),
            "close": plain(prices[-1]), "volume": plain(sum((Decimal(f["quantity"]) for f in group), Decimal(0))),
            "quoteVolume": plain(sum((Decimal(f["price"]) * Decimal(f["quantity"]) for f in group), Decimal(0))),
            "trades": str(len(group))})
    return candles


def test_candles_are_the_trades_own_figures_for_ccxt_and_the_documented_client(traded: Traded) -> None:
    window = {"symbol": SYMBOL, "startTime": traded.started - 60}
    answer = traded.public.public("/api/v1/klines", interval="1m", **window)
    day = traded.public.public("/api/v1/klines", interval="1d", **window).json()
    exchange = ccxt.backpack()
    exchange.urls["api"] = {"public": traded.server.base, "private": traded.server.base}

    assert answer.status_code == 200, answer.text
    assert len(traded.fills) == 5  # 0.5 and 1.25 at 149.75 … 150.5: some orders took two asks
    assert answer.json() == expected_minutes(traded.fills)
    assert [(c["trades"], c["volume"], c["quoteVolume"]) for c in day] == [
        ("5", "3.75", plain(sum((Decimal(f["price"]) * Decimal(f["quantity"]) for f in traded.fills),
                                Decimal(0))))]
    for timeframe, candles in (("1m", answer.json()), ("1d", day)):
        starts = [int(datetime.fromisoformat(c["start"]).replace(tzinfo=UTC).timestamp() * 1000) for c in candles]
        ohlcv = exchange.fetch_ohlcv("SOL/USDC", timeframe, since=starts[0])  # ccxt keeps candles from `since`
        assert ohlcv == [[start, float(c["open"]), float(c["high"]), float(c["low"]), float(c["close"]),
                          float(c["volume"])] for start, c in zip(starts, candles, strict=True)], timeframe


def test_a_window_without_trades_has_no_candles_and_what_backpack_refuses_is_refused(traded: Traded) -> None:
    before = traded.public.public("/api/v1/klines", symbol=SYMBOL, interval="1h", startTime=0,
                                  endTime=traded.started - 3600)
    bad_interval = traded.public.public("/api/v1/klines", symbol=SYMBOL, interval="2m", startTime=0)
    no_start = traded.public.public("/api/v1/klines", symbol=SYMBOL, interval="1m")
    mark = traded.public.public("/api/v1/klines", symbol=SYMBOL, interval="1m", startTime=0, priceType="Mark")
    unknown_market = traded.public.public("/api/v1/klines", symbol="NOPE_USDC", interval="1m", startTime=0)

    assert (before.status_code, before.json()) == (200, [])
    for refused, code, text in ((bad_interval, "INVALID_CLIENT_REQUEST", "interval"),
                                (no_start, "INVALID_CLIENT_REQUEST", "startTime"),
                                (mark, "INVALID_CLIENT_REQUEST", "priceType"),
                                (unknown_market, "INVALID_MARKET", "NOPE_USDC")):
        assert refused.status_code == 400 and refused.json()["code"] == code, refused.text
        assert text in refused.json()["message"]
