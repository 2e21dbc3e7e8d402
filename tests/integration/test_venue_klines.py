"""K-lines from the venue's trades, on SQLite and PostgreSQL: for any trades, any interval and any
window, `bkr.venue.klines.klines` gives what a plain reference computes over the same trades (each
trade once, by its taker's fill; every candle whole; none for an interval without trades), exactly.
The reference finds an interval by calendar arithmetic rather than by timedelta division."""

import itertools
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, insert

from bkr.store.tables import venue_fills
from bkr.venue.klines import Kline, KlineInterval, interval_of, klines

ORIGIN = datetime(2026, 2, 20, tzinfo=UTC)  # a window over a month's end, a week's and a year's not
SPAN = timedelta(days=45)
FIXED = {"1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200, "4h": 14400,
         "6h": 21600, "8h": 28800, "12h": 43200, "1d": 86400, "3d": 259200}


@dataclass(frozen=True)
class Sent:
    at: datetime
    price: Decimal
    quantity: Decimal


def reference_interval(moment: datetime, interval: str) -> tuple[datetime, datetime]:
    if interval == "1month":
        start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
        return start, datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=UTC)
    if interval == "1w":
        monday = moment.date() - timedelta(days=moment.weekday())
        start = datetime(monday.year, monday.month, monday.day, tzinfo=UTC)
        return start, start + timedelta(days=7)
    seconds = FIXED[interval]
    since_epoch = (moment.date() - date(1970, 1, 1)).days * 86400 + moment.hour * 3600 + moment.minute * 60 \
        + moment.second
    start = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=since_epoch - since_epoch % seconds)
    return start, start + timedelta(seconds=seconds)


def reference(trades: list[Sent], interval: str, start: datetime, end: datetime) -> list[Kline]:
    ordered = [t for _, t in sorted(enumerate(trades), key=lambda t: (t[1].at, t[0]))]  # time, then trade id
    candles = []
    for (first, last), grouped in itertools.groupby(ordered, key=lambda t: reference_interval(t.at, interval)):
        group = list(grouped)
        if start < end and first < end and last > start:  # an empty window meets no interval
            prices = [t.price for t in group]
            candles.append(Kline(first, last, prices[0], max(prices), min(prices), prices[-1],
                                 sum((t.quantity for t in group), Decimal(0)),
                                 sum((t.price * t.quantity for t in group), Decimal(0)), len(group)))
    return candles


def _store(engine: Engine, symbol: str, trades: list[Sent]) -> None:
    """Both sides of each trade (the maker's must not count twice), and a trade of another market."""
    rows: list[dict[str, Any]] = []
    for trade_id, trade in enumerate(trades):
        for market in (symbol, f"{symbol}_PERP") if trade_id == 0 else (symbol,):
            for is_maker in (False, True):
                rows.append({"fill_id": f"{market}-{trade_id}-{is_maker}", "trade_id": trade_id,
                             "order_id": trade_id, "user_id": "u", "symbol": market, "side": "Bid",
                             "price": trade.price, "quantity": trade.quantity, "fee": Decimal(0),
                             "fee_symbol": "USDC", "is_maker": is_maker, "client_id": None, "ts": trade.at})
    if rows:
        with engine.begin() as connection:
            connection.execute(insert(venue_fills), rows)


moments = st.integers(0, int(SPAN.total_seconds() * 1_000_000)).map(lambda us: ORIGIN + timedelta(microseconds=us))
amounts = st.decimals(Decimal("0.000001"), Decimal("99999.99"), places=6)
trades_strategy = st.lists(st.builds(Sent, moments, amounts, amounts), max_size=40)
counter = itertools.count()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(trades=trades_strategy, interval=st.sampled_from([i.value for i in KlineInterval]), start=moments,
       length=st.integers(0, int(SPAN.total_seconds())))
def test_klines_are_what_a_plain_reference_computes_over_the_trades(engine: Engine, trades: list[Sent], interval: str,
                                                                   start: datetime, length: int) -> None:
    symbol = f"K{next(counter)}_USDC"  # one database for every example: each its own market
    _store(engine, symbol, trades)
    end = start + timedelta(seconds=length)

    with engine.connect() as connection:
        found = klines(connection, symbol, KlineInterval(interval), start, end)

    assert found == reference(trades, interval, start, end)
    for kline in found:
        assert kline.trades > 0 and kline.start.tzinfo is not None


@pytest.mark.parametrize(("moment", "interval", "expected"), [
    ("2026-03-04T10:17:59.999999", "1m", ("2026-03-04T10:17:00", "2026-03-04T10:18:00")),
    ("2026-03-04T10:17:00", "4h", ("2026-03-04T08:00:00", "2026-03-04T12:00:00")),
    ("2026-03-04T10:17:00", "3d", ("2026-03-02T00:00:00", "2026-03-05T00:00:00")),
    ("2026-03-04T10:17:00", "1w", ("2026-03-02T00:00:00", "2026-03-09T00:00:00")),  # Monday to Monday
    ("2026-12-31T23:59:59", "1month", ("2026-12-01T00:00:00", "2027-01-01T00:00:00")),
    ("1970-01-02T00:00:00", "1w", ("1969-12-29T00:00:00", "1970-01-05T00:00:00")),
])
def test_an_interval_starts_where_backpack_s_does(moment: str, interval: str, expected: tuple[str, str]) -> None:
    found = interval_of(datetime.fromisoformat(moment).replace(tzinfo=UTC), KlineInterval(interval))

    assert found == tuple(datetime.fromisoformat(e).replace(tzinfo=UTC) for e in expected)
