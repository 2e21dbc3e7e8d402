"""Perpetual market data on both databases, through the venue's HTTP API: funding applied at each
interval's end, exactly and once (also with two processes on one database), into the accounts'
balances and their funding history; the rate history, mark prices, open interest and the
history of positions opened and closed.

The venue runs on a clock the test moves; the client signs on the same clock (the venue refuses
a request stamped outside its window)."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from test_venue import Venue

from bkr.api.app import create_app
from bkr.api.funding_tick import FundingTick
from bkr.domain.config import ProgramConfig
from bkr.domain.money import D
from bkr.settings import ServiceSettings
from bkr.store.tables import venue_funding_payments, venue_funding_rates
from bkr.venue import client as client_module
from bkr.venue.client import BackpackClient
from bkr.venue.exchange import Venue as Exchange
from bkr.venue.perpetuals import next_interval_end
from bkr.venue.settings import parse_venue_config

PERP = "SOL_USDC_PERP"
HOUR = timedelta(hours=1)
RATE = D("0.0001")
CONFIG = parse_venue_config({"funding_rate": "0.0001"})


class MovingClock:
    """Real time, moved on by the test: it starts 10 minutes after an hour's end."""

    def __init__(self) -> None:
        real = datetime.now(UTC)
        self.offset = next_interval_end(real, HOUR) + timedelta(minutes=10) - real

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def move(self, span: timedelta) -> None:
        self.offset += span

    @property
    def hour(self) -> datetime:
        """The end of the interval the clock started after."""
        return self().replace(minute=0, second=0, microsecond=0)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> MovingClock:
    moving = MovingClock()
    monkeypatch.setattr(client_module, "time", SimpleNamespace(time=lambda: moving().timestamp()))
    return moving


def _served(engine: Engine, clock: MovingClock) -> Iterator[Venue]:
    app = create_app(engine, ProgramConfig(), ServiceSettings(), clock=clock, venue_config=CONFIG)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Venue(engine, client, CONFIG)


@pytest.fixture
def venue(engine: Engine, clock: MovingClock) -> Iterator[Venue]:
    yield from _served(engine, clock)


def trade(venue: Venue, buyer: BackpackClient, seller: BackpackClient, quantity: str, price: str) -> None:
    seller.order(symbol=PERP, side="Ask", orderType="Limit", price=price, quantity=quantity)
    done = buyer.order(symbol=PERP, side="Bid", orderType="Market", quantity=quantity)
    assert done["status"] == "Filled"


def usdc(venue: Venue, user_id: str) -> Decimal:
    return venue.balance(user_id, "USDC")[0]


def _naive(moment: datetime) -> str:
    return moment.replace(tzinfo=None).isoformat()


def test_at_an_interval_s_end_longs_pay_shorts_exactly_and_it_shows_in_balances_and_history(
        venue: Venue, clock: MovingClock) -> None:
    long, short = venue.user("long"), venue.user("short")
    trade(venue, long, short, "10", "150")
    before = {u: usdc(venue, u) for u in ("long", "short")}
    end = clock.hour + HOUR
    clock.move(HOUR)  # past the next interval's end

    paid = long.signed("GET", "/wapi/v1/history/funding")  # the read applies what is due
    assert paid == [{"userId": 0, "subaccountId": 0, "symbol": PERP, "quantity": "-0.15",
                     "intervalEndTimestamp": _naive(end), "fundingRate": "0.0001"}]
    assert short.signed("GET", "/wapi/v1/history/funding")[0]["quantity"] == "0.15"
    assert usdc(venue, "long") == before["long"] - D("0.15")  # 10 × 150 × 0.0001
    assert usdc(venue, "short") == before["short"] + D("0.15")
    [position] = long.signed("GET", "/api/v1/position")
    assert (position["cumulativeFundingPayment"], position["markPrice"]) == ("-0.15", "150")
    assert long.public("/api/v1/fundingRates", symbol=PERP) == [
        {"symbol": PERP, "intervalEndTimestamp": _naive(end), "fundingRate": "0.0001"}]


def test_every_interval_that_passed_is_applied_once_with_the_positions_held_at_its_end(
        venue: Venue, clock: MovingClock) -> None:
    long, short = venue.user("long"), venue.user("short")
    trade(venue, long, short, "4", "100")
    start = usdc(venue, "long")
    clock.move(3 * HOUR)  # three ends pass with no order
    trade(venue, short, long, "4", "120")  # this order's transaction applies them first, then closes
    # the closing trade marks at 120, but the three ends were marked at 100, when they happened
    payments = long.signed("GET", "/wapi/v1/history/funding", {"sortDirection": "Asc"})
    assert [p["quantity"] for p in payments] == ["-0.04"] * 3
    fee_in, fee_out = D(400) * D("0.0005"), D(480) * D("0.0002")  # taker, then maker
    assert usdc(venue, "long") == start + D(80) - fee_out - 3 * D("0.04")
    assert start == D(1_000_000) - fee_in
    clock.move(2 * HOUR)  # flat now: nothing more to pay
    assert len(long.signed("GET", "/wapi/v1/history/funding")) == 3
    with venue.engine.connect() as connection:
        ends = connection.execute(select(func.count()).select_from(venue_funding_rates)
                                  .where(venue_funding_rates.c.symbol == PERP)).scalar()
    assert ends == 5  # every end has its rate row, paid or not


def test_a_second_process_applies_nothing_twice(venue: Venue, engine: Engine, clock: MovingClock) -> None:
    long, short = venue.user("long"), venue.user("short")
    trade(venue, long, short, "2", "50")
    clock.move(2 * HOUR)
    others = [Exchange(engine, CONFIG, clock) for _ in range(3)]  # processes of their own on the same database
    for other in others:
        FundingTick(other).tick()
    others[0].settle_funding()
    long.signed("GET", "/api/v1/capital")  # and this process's read
    with engine.connect() as connection:
        rows = connection.execute(select(venue_funding_payments.c.user_id, venue_funding_payments.c.quantity)
                                  .order_by(venue_funding_payments.c.interval_end,
                                            venue_funding_payments.c.user_id)).all()
    assert [(r.user_id, r.quantity) for r in rows] == [("long", D("-0.01")), ("short", D("0.01"))] * 2
    assert usdc(venue, "long") == D(1_000_000) - D(100) * D("0.0005") - D("0.02")


def test_mark_prices_open_interest_and_the_market_s_funding_interval(venue: Venue, clock: MovingClock) -> None:
    a, b, c = venue.user("a"), venue.user("b"), venue.user("c")
    trade(venue, a, b, "3", "150")
    trade(venue, c, b, "2", "151")
    a.order(symbol=PERP, side="Bid", orderType="Limit", price="149", quantity="1")
    c.order(symbol=PERP, side="Ask", orderType="Limit", price="150.5", quantity="1")
    [mark] = a.public("/api/v1/markPrices", symbol=PERP)
    next_end = int((clock.hour + HOUR).timestamp() * 1000)
    assert mark == {"fundingRate": "0.0001", "indexPrice": "150.5", "markPrice": "150.5",  # 151 held under the ask
                    "nextFundingTimestamp": next_end, "symbol": PERP}
    assert {m["symbol"] for m in a.public("/api/v1/markPrices")} == {"SOL_USDC_PERP", "BTC_USDC_PERP",
                                                                     "ETH_USDC_PERP"}
    [interest] = a.public("/api/v1/openInterest", symbol=PERP)
    assert (interest["symbol"], interest["openInterest"]) == (PERP, "5")  # longs 3 + 2, short 5
    assert a.public("/api/v1/market", symbol=PERP)["fundingInterval"] == 3_600_000


def test_the_position_history_lists_positions_opened_and_closed_with_their_pnl_and_funding(
        venue: Venue, clock: MovingClock) -> None:
    trader, other = venue.user("trader"), venue.user("other")
    trade(venue, trader, other, "10", "100")  # long 10 at 100
    clock.move(HOUR)
    trade(venue, other, trader, "25", "110")  # sells 25: closes the long (+100), opens a short of 15
    clock.move(HOUR)
    rows = trader.signed("GET", "/wapi/v1/history/position", {"sortDirection": "Asc"})
    assert [(r["state"], r["netQuantity"], r["cumulativePnlRealized"], r["fundingQuantity"]) for r in rows] == [
        ("Closed", "0", "100", "-0.1"),  # paid 10 × 100 × 0.0001 at the first end
        ("Open", "-15", "0", "0.165")]  # received 15 × 110 × 0.0001 at the second
    closed, short = rows
    assert (closed["closingPrice"], closed["closedVolume"], closed["entryPrice"]) == ("110", "10", "100")
    assert (short["entryPrice"], short["markPrice"], short["closedAt"]) == ("110", "110", None)
    only_open = trader.signed("GET", "/wapi/v1/history/position", {"state": "Open"})
    assert [r["id"] for r in only_open] == [short["id"]]
