"""Candles (Backpack's K-lines) made from the venue's own trades, exactly.

A candle covers one interval of time, `[start, end)`, in UTC. Intervals are Backpack's
(`KlineInterval`): those of a fixed length are counted from the Unix epoch (a `4h` candle starts
at 00:00, 04:00, …; a `3d` one every third day from 1970-01-01), a week starts on Monday 00:00 and
a month on its first day. A candle is a function of its interval alone, never of the request
that asks for it: it holds every trade of its interval (the current one, those so far), so a
REST answer and a stream show the same candle.

Each trade counts once, by its taker's side (the maker's fill is the same trade): `open` and
`close` are the prices of the interval's first and last trades, `volume` is the base quantity
traded, `quoteVolume` Σ price × quantity, exact, and `trades` their number. An interval without
trades has no candle, as Backpack lists none for it.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import Connection, select

from bkr.domain.money import ZERO, add, mul
from bkr.store.tables import venue_fills

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FIRST_MONDAY = datetime(1970, 1, 5, tzinfo=UTC)  # weeks start on Monday, as ISO 8601 counts them


class KlineInterval(StrEnum):
    """Backpack's `KlineInterval`, spelled as its API spells it."""

    SECOND = "1s"
    MINUTE = "1m"
    MINUTES_3 = "3m"
    MINUTES_5 = "5m"
    MINUTES_15 = "15m"
    MINUTES_30 = "30m"
    HOUR = "1h"
    HOURS_2 = "2h"
    HOURS_4 = "4h"
    HOURS_6 = "6h"
    HOURS_8 = "8h"
    HOURS_12 = "12h"
    DAY = "1d"
    DAYS_3 = "3d"
    WEEK = "1w"
    MONTH = "1month"


_LENGTHS = {
    KlineInterval.SECOND: timedelta(seconds=1), KlineInterval.MINUTE: timedelta(minutes=1),
    KlineInterval.MINUTES_3: timedelta(minutes=3), KlineInterval.MINUTES_5: timedelta(minutes=5),
    KlineInterval.MINUTES_15: timedelta(minutes=15), KlineInterval.MINUTES_30: timedelta(minutes=30),
    KlineInterval.HOUR: timedelta(hours=1), KlineInterval.HOURS_2: timedelta(hours=2),
    KlineInterval.HOURS_4: timedelta(hours=4), KlineInterval.HOURS_6: timedelta(hours=6),
    KlineInterval.HOURS_8: timedelta(hours=8), KlineInterval.HOURS_12: timedelta(hours=12),
    KlineInterval.DAY: timedelta(days=1), KlineInterval.DAYS_3: timedelta(days=3),
    KlineInterval.WEEK: timedelta(weeks=1),
}


@dataclass(frozen=True, slots=True)
class Kline:
    """One interval's trades: `[start, end)` in UTC."""

    start: datetime
    end: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal  # base quantity
    quote_volume: Decimal  # Σ price × quantity
    trades: int


@dataclass(frozen=True, slots=True)
class Trade:
    """A trade as a candle needs it (its taker's fill)."""

    trade_id: int
    price: Decimal
    quantity: Decimal
    at: datetime


def interval_of(moment: datetime, interval: KlineInterval) -> tuple[datetime, datetime]:
    """The interval (`[start, end)`, UTC) of kind `interval` that holds `moment`."""
    moment = moment.astimezone(UTC)
    if interval is KlineInterval.MONTH:
        start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
        following = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
        return start, datetime(*following, 1, tzinfo=UTC)
    length = _LENGTHS[interval]
    origin = FIRST_MONDAY if interval is KlineInterval.WEEK else EPOCH
    start = origin + ((moment - origin) // length) * length
    return start, start + length


def aggregate(trades: Iterable[Trade], interval: KlineInterval) -> list[Kline]:
    """The candles of `trades`, given in the order they happened (time, then trade id)."""
    candles: list[Kline] = []
    current: tuple[datetime, datetime] | None = None
    prices: list[Decimal] = []
    volume = quote_volume = ZERO
    for trade in trades:
        if current is None or not current[0] <= trade.at < current[1]:
            if current is not None:
                candles.append(_candle(current, prices, volume, quote_volume))
            current, prices, volume, quote_volume = interval_of(trade.at, interval), [], ZERO, ZERO
        prices.append(trade.price)
        volume = add(volume, trade.quantity)
        quote_volume = add(quote_volume, mul(trade.price, trade.quantity))
    if current is not None:
        candles.append(_candle(current, prices, volume, quote_volume))
    return candles


def _candle(interval: tuple[datetime, datetime], prices: Sequence[Decimal], volume: Decimal,
            quote_volume: Decimal) -> Kline:
    return Kline(interval[0], interval[1], prices[0], max(prices), min(prices), prices[-1], volume, quote_volume,
                 len(prices))


def klines(connection: Connection, symbol: str, interval: KlineInterval, start: datetime,
           end: datetime) -> list[Kline]:
    """The candles of `symbol` whose intervals meet `[start, end)`, oldest first: the one that
    holds `start` and the one that holds the instant before `end` included, each whole."""
    if end <= start:
        return []
    first, _ = interval_of(start, interval)
    last_start, last_end = interval_of(end, interval)
    until = last_end if last_start < end else last_start
    rows = connection.execute(
        select(venue_fills.c.trade_id, venue_fills.c.price, venue_fills.c.quantity, venue_fills.c.ts)
        .where((venue_fills.c.symbol == symbol) & venue_fills.c.is_maker.is_(False)
               & (venue_fills.c.ts >= first) & (venue_fills.c.ts < until))
        .order_by(venue_fills.c.ts, venue_fills.c.trade_id))
    return aggregate((Trade(int(r.trade_id), r.price, r.quantity, r.ts) for r in rows), interval)
