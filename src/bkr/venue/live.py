"""`bkr simulate --live`: market makers and takers trading on a running `bkr serve` through the
venue's own Backpack API, so that the broker program's current month grows while one watches.

Everything goes over HTTP, signed like any Backpack client (`BackpackClient`); only the trading
accounts and their keys are made directly in the database, as `bkr user key create` makes them.
Makers (`mm-*`, no broker id) keep a few post-only levels on both sides of a mid price that
random-walks, replacing them with a cancel-all and a batch; takers (`taker-*`) send market and
IOC orders, most of them with the `X-Broker-Id` of an active broker, some with none, so that the
program sees attributed and unattributed volume side by side.

Money stays exact: prices are snapped to each market's tick size and quantities to its step
size, both read from GET /api/v1/markets, and the volume tallied is the venue's own
`executedQuoteQuantity` of each taker order. The random choices come from one seeded generator
(the interleaving with the clock, and so the fills, still depend on timing).
"""

import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from functools import partial
from typing import Any

import httpx
from sqlalchemy import Connection

from bkr.domain.errors import BkrError
from bkr.domain.money import ZERO, D, add, mul
from bkr.domain.registry import BrokerStatus
from bkr.domain.signing import KeyPair
from bkr.program import registry
from bkr.venue.accounts import create_user_key
from bkr.venue.client import BackpackClient, BackpackError
from bkr.venue.markets import VenueConfig

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_RATE = Decimal(20)  # orders per second, maker quotes included
MAKERS = ("mm-1", "mm-2", "mm-3")
TAKERS = tuple(f"taker-{n}" for n in range(1, 7))
UNATTRIBUTED_EVERY = 3  # every third taker trades without a broker id
LEVELS = 3  # price levels a maker quotes on each side
# where a market's mid starts when it has no trades yet (quote units per base unit)
REFERENCE_PRICES = {"BTC": D("60000"), "ETH": D("3000"), "SOL": D("150")}
OTHER_REFERENCE_PRICE = D("100")
QUOTE_ASSET = "USDC"
MAX_FAILURES_IN_A_ROW = 20


class VenueUnreachable(BkrError):
    """The venue is not running at the URL, or stopped answering, or does not know our keys."""

    code = "venue_unreachable"


@dataclass(frozen=True, slots=True)
class LiveMarket:
    symbol: str
    base: str
    tick_size: Decimal
    step_size: Decimal

    def price_nearest(self, value: Decimal) -> Decimal:
        return max(mul((value / self.tick_size).to_integral_value(ROUND_HALF_EVEN), self.tick_size), self.tick_size)

    def price_below(self, value: Decimal) -> Decimal:
        return max(mul(value // self.tick_size, self.tick_size), self.tick_size)

    def price_above(self, value: Decimal) -> Decimal:
        return mul(-(-value // self.tick_size), self.tick_size)

    def quantity_for(self, notional: Decimal, price: Decimal) -> Decimal:
        """The quantity worth about `notional` at `price`, down to the step size (one step at least)."""
        return max(mul((notional / price) // self.step_size, self.step_size), self.step_size)


@dataclass(frozen=True, slots=True)
class Trader:
    user_id: str
    key: KeyPair
    broker_id: int | None  # sent as X-Broker-Id on every signed request


@dataclass(frozen=True, slots=True)
class Cast:
    makers: tuple[Trader, ...]
    takers: tuple[Trader, ...]
    broker_names: Mapping[int, str]  # the active brokers the takers were given


def open_traders(connection: Connection, config: VenueConfig, now: datetime, *, actor: str) -> Cast:
    """Open the makers' and takers' accounts (kept if they exist) with a fresh key each, and give
    the takers the ids of the active brokers round-robin, every third taker none. `actor` is
    named on the audit trail for the users registered and the keys made."""
    active = [view for view in registry.list_brokers(connection, now) if view.status is BrokerStatus.ACTIVE]
    makers = tuple(Trader(user, create_user_key(connection, config, user, now, actor=actor), None) for user in MAKERS)
    takers: list[Trader] = []
    for index, user in enumerate(TAKERS):
        attributed = index % UNATTRIBUTED_EVERY != UNATTRIBUTED_EVERY - 1
        broker_id = None
        if attributed and active:
            broker_id = active[(index - index // UNATTRIBUTED_EVERY) % len(active)].broker_id
        takers.append(Trader(user, create_user_key(connection, config, user, now, actor=actor), broker_id))
    names = {view.broker_id: view.name for view in active}
    return Cast(makers, tuple(takers), names)


@dataclass
class LiveStats:
    orders: int = 0  # orders sent, maker quotes included
    rejected: int = 0  # refused by the venue (post-only would cross, funds short, ...)
    failures: int = 0  # the venue answered 5xx or 429
    taker_orders: dict[int | None, int] = field(default_factory=dict)
    filled: dict[int | None, int] = field(default_factory=dict)  # taker orders that traded, by broker id
    volume: dict[int | None, Decimal] = field(default_factory=dict)  # their quote volume, by broker id

    def record_taker(self, broker_id: int | None, executed_quote: Decimal) -> None:
        self.taker_orders[broker_id] = self.taker_orders.get(broker_id, 0) + 1
        if executed_quote > 0:
            self.filled[broker_id] = self.filled.get(broker_id, 0) + 1
        self.volume[broker_id] = add(self.volume.get(broker_id, ZERO), executed_quote)

    @property
    def total_filled(self) -> int:
        return sum(self.filled.values())


def _unreachable(url: str, error: Exception) -> VenueUnreachable:
    reason = " ".join(str(error).split()) or type(error).__name__
    return VenueUnreachable(f"cannot reach the venue at {url} ({reason}); is `bkr serve` running there? "
                            "(--url)")


def load_markets(http: httpx.Client, url: str) -> tuple[LiveMarket, ...]:
    """The venue's markets quoted in USDC, with their tick and step sizes."""
    try:
        answer = BackpackClient(url, http=http).public("/api/v1/markets")
    except httpx.TransportError as error:
        raise _unreachable(url, error) from None
    except (BackpackError, ValueError) as error:
        raise VenueUnreachable(f"{url} does not answer GET /api/v1/markets as `bkr serve` does ({error})") from None
    if not isinstance(answer, list):
        raise VenueUnreachable(f"{url} does not answer GET /api/v1/markets as `bkr serve` does")
    markets = tuple(LiveMarket(m["symbol"], m["baseSymbol"], D(m["filters"]["price"]["tickSize"]),
                               D(m["filters"]["quantity"]["stepSize"]))
                    for m in answer if m.get("quoteSymbol") == QUOTE_ASSET)
    if not markets:
        raise VenueUnreachable(f"the venue at {url} lists no market quoted in {QUOTE_ASSET}")
    return markets


class LiveSimulation:
    """One thread, one loop: each step is a maker replacing its quotes in one market or a taker
    sending one order; steps are paced so that orders go out at `rate` per second."""

    def __init__(self, url: str, cast: Cast, markets: Sequence[LiveMarket], *, rate: Decimal, seed: int,
                 http: httpx.Client | None = None, monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.url, self.cast, self.markets, self.rate = url, cast, tuple(markets), rate
        self.random = random.Random(seed)
        self.http = http or httpx.Client(base_url=url, timeout=30)
        self.clients = {trader.user_id: BackpackClient(url, trader.key.api_key, trader.key.secret,
                                                       broker_id=trader.broker_id, http=self.http)
                        for trader in (*cast.makers, *cast.takers)}
        self.mids: dict[str, Decimal] = {}
        self.stats = LiveStats()
        self._monotonic, self._sleep = monotonic, sleep
        self._failures_in_a_row = 0

    # --- the run ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Check that the venue knows our keys, seed each market's mid, and let every maker quote."""
        self._call(lambda: self.clients[self.cast.makers[0].user_id].signed("GET", "/api/v1/account"))
        public = BackpackClient(self.url, http=self.http)
        for market in self.markets:
            last = self._call(partial(public.public, "/api/v1/ticker", symbol=market.symbol)) or {}
            last_price = D(str(last.get("lastPrice") or "0"))
            reference = last_price if last_price > 0 else REFERENCE_PRICES.get(market.base, OTHER_REFERENCE_PRICE)
            self.mids[market.symbol] = market.price_below(reference)
        for market in self.markets:
            for maker in self.cast.makers:
                self.requote(maker, market)

    def run(self, duration: float | None, on_status: Callable[[LiveStats, float], None],
            status_every: float = 3.0) -> float:
        """Trade until `duration` seconds have passed (None: until Ctrl-C); returns the seconds run.
        Ctrl-C ends the run normally; the venue becoming unreachable raises `VenueUnreachable`."""
        began = self._monotonic()
        next_status = status_every
        try:
            self.start()
            # the makers' first quotes are set-up, not paced: takers have something to trade against at once
            paced_from, paced_orders = self._monotonic() - began, self.stats.orders
            while duration is None or self._monotonic() - began < duration:
                self.step()
                elapsed = self._monotonic() - began
                if elapsed >= next_status:
                    on_status(self.stats, elapsed)
                    next_status += status_every
                due = paced_from + float((self.stats.orders - paced_orders) / self.rate) - elapsed
                if due > 0:
                    self._sleep(min(due, max(0.0, duration - elapsed)) if duration is not None else due)
        except KeyboardInterrupt:
            pass
        return self._monotonic() - began

    def step(self) -> None:
        market = self.random.choice(self.markets)
        self._walk(market)
        if self.random.randrange(100) < 30:
            self.requote(self.random.choice(self.cast.makers), market)
        else:
            self.take(self.random.choice(self.cast.takers), market)

    def stop(self) -> None:
        """Take the makers' quotes off the book (best effort) and close the connection."""
        try:
            for maker in self.cast.makers:
                for market in self.markets:
                    self.clients[maker.user_id].cancel_all(market.symbol)
        except (httpx.HTTPError, BackpackError, KeyboardInterrupt):
            pass
        finally:
            self.http.close()

    # --- makers and takers -----------------------------------------------------------------------

    def _walk(self, market: LiveMarket) -> None:
        """Move the market's mid by up to 3 basis points either way (to the nearest tick: no drift)."""
        basis_points = Decimal(10_000 + self.random.randint(-3, 3))
        self.mids[market.symbol] = market.price_nearest(mul(self.mids[market.symbol], basis_points).scaleb(-4))

    def requote(self, maker: Trader, market: LiveMarket) -> None:
        client = self.clients[maker.user_id]
        mid = self.mids[market.symbol]
        orders: list[dict[str, Any]] = []
        for level in range(LEVELS):
            for side, sign in (("Bid", -1), ("Ask", 1)):
                distance = Decimal(5 + 5 * level + self.random.randint(0, 3))  # basis points from the mid
                away = mul(mid, Decimal(10_000) + sign * distance).scaleb(-4)
                price = market.price_below(away) if side == "Bid" else market.price_above(away)
                notional = Decimal(self.random.randint(2, 10) * 1_000)
                orders.append({"symbol": market.symbol, "side": side, "orderType": "Limit", "postOnly": True,
                               "timeInForce": "GTC", "price": str(price),
                               "quantity": str(market.quantity_for(notional, price))})
        self._call(lambda: client.cancel_all(market.symbol))
        self.stats.orders += len(orders)
        answers = self._call(lambda: client.orders(orders))
        if answers is None:
            return
        self.stats.rejected += sum(1 for answer in answers if answer.get("operation") == "Err")

    def take(self, taker: Trader, market: LiveMarket) -> None:
        client = self.clients[taker.user_id]
        mid = self.mids[market.symbol]
        side = self.random.choice(("Bid", "Ask"))
        quantity = str(market.quantity_for(Decimal(self.random.randint(5, 50) * 100), mid))
        order: dict[str, Any] = {"symbol": market.symbol, "side": side, "quantity": quantity}
        if self.random.randrange(2):
            order["orderType"] = "Market"
        else:  # an IOC limit through the first levels: what is left when they run out expires
            through = mul(mid, Decimal(10_000 + (15 if side == "Bid" else -15))).scaleb(-4)
            price = market.price_above(through) if side == "Bid" else market.price_below(through)
            order.update(orderType="Limit", timeInForce="IOC", price=str(price))
        self.stats.orders += 1
        answer = self._call(lambda: client.order(**order))
        if answer is not None:
            self.stats.record_taker(taker.broker_id, D(answer["executedQuoteQuantity"]))

    def _call(self, request: Callable[[], Any]) -> Any:
        """One request: a refusal is counted and skipped (None); an unreachable venue, an unknown
        key, or failure after failure stops the run."""
        try:
            answer = request()
        except httpx.TransportError as error:
            raise _unreachable(self.url, error) from None
        except BackpackError as error:
            if error.status == 401:
                raise VenueUnreachable(f"the venue at {self.url} refuses the keys made in --db ({error}); give "
                                       "`bkr simulate --live` the --db that `bkr serve` uses") from None
            if error.status < 500 and error.status != 429:
                self.stats.rejected += 1
                self._failures_in_a_row = 0
                return None
            self.stats.failures += 1
            self._failures_in_a_row += 1
            if self._failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
                raise VenueUnreachable(f"the venue at {self.url} failed {self._failures_in_a_row} requests in a "
                                       f"row; last: {error}") from None
            return None
        self._failures_in_a_row = 0
        return answer


def broker_label(broker_id: int | None, names: Mapping[int, str]) -> str:
    return "no broker" if broker_id is None else f"{broker_id} {names.get(broker_id, '')}".rstrip()


def brokers_in_order(cast: Cast) -> list[int | None]:
    """The takers' broker ids, each once, attributed ones first."""
    ids: Iterable[int | None] = dict.fromkeys(t.broker_id for t in cast.takers)
    return sorted(ids, key=lambda b: (b is None, b or 0))
