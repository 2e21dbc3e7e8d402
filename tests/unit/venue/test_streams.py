"""The pure parts of the venue's streams: the book's levels, candle boundaries and stream names."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from bkr.domain.fills import Side
from bkr.venue.klines import KlineInterval, interval_of
from bkr.venue.markets import VenueConfig
from bkr.venue.stream_wire import INVALID_STREAM, StreamRefused, micros, parse_stream
from bkr.venue.streams import LevelBook

D = Decimal


def test_applying_an_order_twice_leaves_its_level_as_once() -> None:
    book = LevelBook()
    book.apply(1, Side.ASK, D("151.25"), D("2"), True)
    book.apply(2, Side.ASK, D("151.25"), D("0.5"), True)
    book.apply(1, Side.ASK, D("151.25"), D("1.5"), True)
    book.apply(1, Side.ASK, D("151.25"), D("1.5"), True)
    assert book.levels(Side.ASK) == [(D("151.25"), D("2.0"))]
    book.apply(2, Side.ASK, D("151.25"), D("0"), False)
    book.apply(1, Side.ASK, D("151.25"), D("0"), False)
    assert book.levels(Side.ASK) == [] and book.best(Side.ASK) is None


def test_the_best_bid_is_the_highest_and_the_best_ask_the_lowest() -> None:
    book = LevelBook()
    for order_id, side, price in [(1, Side.BID, "149"), (2, Side.BID, "150"), (3, Side.ASK, "152"),
                                  (4, Side.ASK, "151")]:
        book.apply(order_id, side, D(price), D("1"), True)
    assert book.best(Side.BID) == (D("150"), D("1")) and book.best(Side.ASK) == (D("151"), D("1"))
    assert [p for p, _ in book.levels(Side.BID)] == [D("150"), D("149")]


@pytest.mark.parametrize(("interval", "at", "start", "end"), [
    ("1m", "2026-12-04T12:03:59.999999", "2026-12-04T12:03:00", "2026-12-04T12:04:00"),
    ("4h", "2026-12-04T03:59:00", "2026-12-04T00:00:00", "2026-12-04T04:00:00"),
    ("1d", "2026-12-04T00:00:00", "2026-12-04T00:00:00", "2026-12-05T00:00:00"),
    ("1w", "2026-12-06T23:00:00", "2026-11-30T00:00:00", "2026-12-07T00:00:00"),  # Monday to Monday
    ("1month", "2026-12-31T23:59:59", "2026-12-01T00:00:00", "2027-01-01T00:00:00"),
    ("1month", "2026-02-10T00:00:00", "2026-02-01T00:00:00", "2026-03-01T00:00:00"),
])
def test_a_candle_holds_its_start_and_not_its_end(interval: str, at: str, start: str, end: str) -> None:
    def moment(text: str) -> datetime:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)

    assert interval_of(moment(at), KlineInterval(interval)) == (moment(start), moment(end))


@pytest.mark.parametrize(("name", "kind", "symbol", "interval"), [
    ("depth.SOL_USDC", "depth", "SOL_USDC", None),
    ("depth.200ms.SOL_USDC", "depth", "SOL_USDC", None),
    ("kline.1h.BTC_USDC_PERP", "kline", "BTC_USDC_PERP", "1h"),
    ("account.orderUpdate", "account.orderUpdate", None, None),
    ("account.positionUpdate.SOL_USDC_PERP", "account.positionUpdate", "SOL_USDC_PERP", None),
    ("account.rfqUpdate", "account.rfqUpdate", None, None),
])
def test_a_stream_name_is_read_as_backpack_spells_it(name: str, kind: str, symbol: str | None,
                                                     interval: str | None) -> None:
    stream = parse_stream(name, VenueConfig())
    assert (stream.name, stream.kind, stream.symbol, stream.interval) == (name, kind, symbol, interval)
    assert stream.private == name.startswith("account.")


@pytest.mark.parametrize("name", ["depth", "depth.SOL_USDC.x", "trade", "kline.SOL_USDC", "account.orderUpdate.X_Y",
                                  "account", "ticker.sol_usdc", "openInterest.SOL_USDC_PERP", ""])
def test_a_stream_the_sandbox_does_not_serve_is_refused(name: str) -> None:
    with pytest.raises(StreamRefused) as refused:
        parse_stream(name, VenueConfig())
    assert refused.value.ws_code == INVALID_STREAM


def test_times_are_exact_microseconds() -> None:
    assert micros(datetime(2026, 12, 4, 12, 0, 0, 123456, tzinfo=UTC)) == 1_796_385_600_123_456
