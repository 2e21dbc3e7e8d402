"""What the venue changed between two points of its order-entry stream, as typed events for its
WebSocket streams: book levels, trades, order updates, positions, tickers and candles.

Every order-entry transaction, in whichever process it ran, advances `venue_state.sequence` and
stamps the orders it changed with it (`venue_orders.changed_at_sequence`); trades take ids in
order (`venue_state.last_trade_id`). So one read in one snapshot (`bkr.store.db.snapshot`) tells
a process exactly what every process matched since it last looked: the orders changed after the
sequence it saw and the fills after the trade id it saw, nothing twice and nothing missed. A
`StreamReader` keeps that cursor, and the depth of the markets someone watches (`LevelBook`, the
resting quantity at each price, kept per order so that applying a changed order twice is
harmless); `read` returns one `Window` of events. It never takes the order-entry lock.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, localcontext
from typing import Any

from sqlalchemy import Connection, Engine, select

from bkr.domain.clock import Clock
from bkr.domain.fills import Side
from bkr.domain.money import MONEY, ZERO
from bkr.store import db
from bkr.store.tables import venue_fills, venue_orders, venue_positions, venue_state
from bkr.venue.accounts import Position
from bkr.venue.book import OrderStatus
from bkr.venue.history import Ticker, ticker
from bkr.venue.klines import KlineInterval, interval_of, klines
from bkr.venue.markets import VenueConfig
from bkr.venue.orders import OPEN_STATUSES, OrderView, order_view

Level = tuple[Decimal, Decimal]  # price, quantity resting at it (0: the level is gone)


# --- the book's levels -------------------------------------------------------------------------------

class LevelBook:
    """One market's resting quantity per price, kept per order: a changed order replaces what it
    held, so applying the same state twice changes nothing."""

    def __init__(self) -> None:
        self._orders: dict[int, tuple[Side, Decimal, Decimal]] = {}
        self._levels: dict[Side, dict[Decimal, Decimal]] = {Side.BID: {}, Side.ASK: {}}

    def apply(self, order_id: int, side: Side, price: Decimal | None, remaining: Decimal, resting: bool) -> None:
        """The order as it now is: resting with `remaining` at `price`, or off the book."""
        with localcontext(MONEY):
            held = self._orders.pop(order_id, None)
            if held is not None:
                levels = self._levels[held[0]]
                left = levels[held[1]] - held[2]
                if left:
                    levels[held[1]] = left
                else:
                    del levels[held[1]]
            if resting and price is not None and remaining > 0:
                self._orders[order_id] = (side, price, remaining)
                levels = self._levels[side]
                levels[price] = levels.get(price, ZERO) + remaining

    def held(self, order_id: int) -> tuple[Side, Decimal] | None:
        """The side and price at which the order rests, if it does."""
        found = self._orders.get(order_id)
        return None if found is None else (found[0], found[1])

    def quantity(self, side: Side, price: Decimal) -> Decimal:
        return self._levels[side].get(price, ZERO)

    def best(self, side: Side) -> Level | None:
        levels = self._levels[side]
        if not levels:
            return None
        price = max(levels) if side is Side.BID else min(levels)
        return price, levels[price]

    def levels(self, side: Side) -> list[Level]:
        """Every level of one side, best first."""
        return sorted(self._levels[side].items(), reverse=side is Side.BID)


# --- events ------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DepthChange:
    """The levels of one market whose quantity changed, as they now are; `first_id`..`last_id` are
    the update ids this change covers (a market's changes chain: each starts after the last)."""

    symbol: str
    first_id: int
    last_id: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    best_bid: Level | None
    best_ask: Level | None
    top_changed: bool  # the best bid or ask (price or quantity) moved
    at: datetime


@dataclass(frozen=True, slots=True)
class Trade:
    symbol: str
    trade_id: int
    price: Decimal
    quantity: Decimal
    buyer_order_id: int
    seller_order_id: int
    buyer_is_maker: bool
    at: datetime


@dataclass(frozen=True, slots=True)
class StreamFill:
    """One user's side of a trade, as its order update tells it."""

    trade_id: int
    price: Decimal
    quantity: Decimal
    fee: Decimal
    fee_symbol: str
    is_maker: bool
    at: datetime


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """Backpack's order update: `kind` is orderAccepted, orderFill, orderCancelled or orderExpired;
    `status`, `executed` and `executed_quote` are the order's after this event."""

    kind: str
    order: OrderView
    status: OrderStatus
    executed: Decimal
    executed_quote: Decimal
    fill: StreamFill | None
    at: datetime


@dataclass(frozen=True, slots=True)
class PositionEvent:
    """Backpack's position update: `kind` is positionOpened, positionAdjusted or positionClosed, or
    None for a position as it stands (what a new subscription is sent first)."""

    kind: str | None
    user_id: str
    position: Position
    at: datetime


@dataclass(frozen=True, slots=True)
class Candle:
    symbol: str
    interval: str
    start: datetime
    end: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    trades: int


@dataclass
class Window:
    """What changed between the reader's previous read and this one (sequence `sequence`)."""

    sequence: int
    depth: list[DepthChange] = field(default_factory=list)
    trades: list[Trade] = field(default_factory=list)
    orders: list[OrderEvent] = field(default_factory=list)
    positions: list[PositionEvent] = field(default_factory=list)
    tickers: list[Ticker] = field(default_factory=list)
    candles: list[Candle] = field(default_factory=list)
    standing: list[PositionEvent] = field(default_factory=list)  # the open positions of the users asked for


@dataclass(frozen=True)
class Wants:
    """What the subscribers of a process watch: the reader keeps books and computes tickers and
    candles for these only."""

    books: frozenset[str] = frozenset()
    tickers: frozenset[str] = frozenset()
    candles: frozenset[tuple[str, str]] = frozenset()  # (interval, symbol)
    positions_of: frozenset[str] = frozenset()  # users whose open positions to list as they stand


# --- candles -----------------------------------------------------------------------------------------

INTERVALS: tuple[str, ...] = tuple(interval.value for interval in KlineInterval)


def candle(connection: Connection, symbol: str, interval: str, at: datetime) -> Candle | None:
    """The candle of `interval` holding `at`, as `GET /api/v1/klines` gives it (`bkr.venue.klines`),
    or None if it has no trades."""
    kind = KlineInterval(interval)
    start, end = interval_of(at, kind)
    found = klines(connection, symbol, kind, start, end)
    if not found:
        return None
    k = found[0]
    return Candle(symbol, interval, k.start, k.end, k.open, k.high, k.low, k.close, k.volume, k.quote_volume,
                  k.trades)


# --- the reader --------------------------------------------------------------------------------------

_STATE = select(venue_state.c.sequence, venue_state.c.last_trade_id).where(venue_state.c.id == 1)


class StreamReader:
    """One process's cursor on the venue's stream, and the books its subscribers watch. Not
    thread-safe: one poller calls it."""

    def __init__(self, engine: Engine, config: VenueConfig, clock: Clock) -> None:
        self.engine, self.config, self.clock = engine, config, clock
        self.sequence: int | None = None  # None until the first read sets the cursor
        self.last_trade_id = 0
        self.books: dict[str, LevelBook] = {}
        self._update_ids: dict[str, int] = {}  # the last update id each book's changes were given
        self._tops: dict[str, tuple[Level | None, Level | None]] = {}

    def read(self, wants: Wants) -> Window:
        """Everything since the previous read, in one snapshot. The first read only sets the cursor
        (and loads the books wanted): what happened before it is not an event."""
        try:
            return self._read(wants)
        except BaseException:  # the books may be half changed: they are loaded again next time
            self.books.clear()
            raise

    def _read(self, wants: Wants) -> Window:
        with db.snapshot(self.engine) as connection:
            row = connection.execute(_STATE).first()
            sequence, last_trade = (int(row.sequence), int(row.last_trade_id)) if row is not None else (0, 0)
            now = self.clock()
            window = Window(sequence)
            for symbol in [s for s in self.books if s not in wants.books]:
                del self.books[symbol]
            if self.sequence is not None and sequence != self.sequence:
                self._changes(connection, window, wants, self.sequence, self.last_trade_id, now)
            for symbol in sorted(wants.books - set(self.books)):
                self._load_book(connection, symbol, sequence)
            for user_id in sorted(wants.positions_of):
                window.standing += [PositionEvent(None, user_id, p, now) for p in _positions(connection, user_id)]
            self.sequence, self.last_trade_id = sequence, last_trade
            return window

    def _load_book(self, connection: Connection, symbol: str, sequence: int) -> None:
        book = self.books[symbol] = LevelBook()
        rows = connection.execute(
            select(venue_orders.c.order_id, venue_orders.c.side, venue_orders.c.price, venue_orders.c.remaining)
            .where(venue_orders.c.status.in_(OPEN_STATUSES) & (venue_orders.c.symbol == symbol)))
        for r in rows:
            book.apply(int(r.order_id), Side(r.side), r.price, r.remaining, True)
        self._update_ids[symbol] = sequence
        self._tops[symbol] = (book.best(Side.BID), book.best(Side.ASK))

    def _changes(self, connection: Connection, window: Window, wants: Wants, since: int, since_trade: int,
                 now: datetime) -> None:
        changed = [(order_view(r), r.remaining, int(r.sequence)) for r in connection.execute(
            select(venue_orders).where(venue_orders.c.changed_at_sequence > since)
            .order_by(venue_orders.c.order_id))]
        symbols = sorted({view.symbol for view, _, _ in changed})
        fills = list(connection.execute(
            select(venue_fills).where(venue_fills.c.symbol.in_(symbols) & (venue_fills.c.trade_id > since_trade))
            .order_by(venue_fills.c.trade_id, venue_fills.c.is_maker))) if symbols else []
        window.trades = _trades(fills)
        window.depth = self._depth(changed, window.sequence, window.trades, now)
        window.orders = order_events(changed, fills, since, now)
        window.positions = self._position_events(connection, fills, now)
        traded = {t.symbol for t in window.trades}
        for symbol in sorted(traded & wants.tickers):
            market = self.config.market(symbol)
            if market is not None:
                window.tickers.append(ticker(connection, market, now))
        for interval, symbol in sorted(wants.candles):
            if symbol in traded:
                found = candle(connection, symbol, interval, max(t.at for t in window.trades if t.symbol == symbol))
                if found is not None:
                    window.candles.append(found)

    def _depth(self, changed: Sequence[tuple[OrderView, Decimal, int]], sequence: int, trades: Sequence[Trade],
               now: datetime) -> list[DepthChange]:
        before: dict[str, dict[tuple[Side, Decimal], Decimal]] = {}
        for view, remaining, _ in changed:
            book = self.books.get(view.symbol)
            if book is None:
                continue
            touched = before.setdefault(view.symbol, {})
            held = book.held(view.order_id)
            for side, price in ([held] if held else []) + ([(view.side, view.price)] if view.price is not None else []):
                touched.setdefault((side, price), book.quantity(side, price))
            book.apply(view.order_id, view.side, view.price, remaining, view.status.value in OPEN_STATUSES)
        changes = []
        for symbol, touched in sorted(before.items()):
            book = self.books[symbol]
            moved = {key: book.quantity(*key) for key, was in touched.items() if book.quantity(*key) != was}
            top = (book.best(Side.BID), book.best(Side.ASK))
            top_changed = top != self._tops.get(symbol)
            self._tops[symbol] = top
            if not moved and not top_changed:
                continue
            at = max((t.at for t in trades if t.symbol == symbol), default=now)
            bids = tuple(sorted(((p, q) for (s, p), q in moved.items() if s is Side.BID), reverse=True))
            asks = tuple(sorted((p, q) for (s, p), q in moved.items() if s is Side.ASK))
            changes.append(DepthChange(symbol, self._update_ids[symbol] + 1, sequence, bids, asks, top[0], top[1],
                                       top_changed, at))
            self._update_ids[symbol] = sequence
        return changes

    def _position_events(self, connection: Connection, fills: Sequence[Any], now: datetime) -> list[PositionEvent]:
        moved: dict[tuple[str, str], Decimal] = {}
        at: dict[tuple[str, str], datetime] = {}
        with localcontext(MONEY):
            for f in fills:
                market = self.config.market(f.symbol)
                if market is None or not market.is_futures:
                    continue
                key = (f.user_id, f.symbol)
                moved[key] = moved.get(key, ZERO) + (f.quantity if f.side == Side.BID.value else -f.quantity)
                at[key] = f.ts
            events = []
            for (user_id, symbol), change in sorted(moved.items()):
                row = connection.execute(select(venue_positions).where(
                    (venue_positions.c.user_id == user_id) & (venue_positions.c.symbol == symbol))).first()
                position = Position(symbol, row.net_quantity, row.net_cost, row.realized_pnl) if row is not None \
                    else Position(symbol, ZERO, ZERO, ZERO)
                previous = position.net_quantity - change
                kind = ("positionClosed" if not position.net_quantity
                        else "positionOpened" if not previous else "positionAdjusted")
                events.append(PositionEvent(kind, user_id, position, at[(user_id, symbol)]))
        return events


def _positions(connection: Connection, user_id: str) -> list[Position]:
    rows = connection.execute(select(venue_positions).where(
        venue_positions.c.user_id == user_id).order_by(venue_positions.c.symbol))
    return [Position(r.symbol, r.net_quantity, r.net_cost, r.realized_pnl) for r in rows if r.net_quantity]


def _trades(fills: Iterable[Any]) -> list[Trade]:
    """One trade per trade id, from its two fills (the taker's names the side that crossed)."""
    sides: dict[int, dict[bool, Any]] = {}
    for f in fills:
        sides.setdefault(int(f.trade_id), {})[bool(f.is_maker)] = f
    trades = []
    for trade_id, pair in sorted(sides.items()):
        taker, maker = pair.get(False), pair.get(True)
        if taker is None or maker is None:
            continue
        buyer, seller = (taker, maker) if taker.side == Side.BID.value else (maker, taker)
        trades.append(Trade(taker.symbol, trade_id, taker.price, taker.quantity, int(buyer.order_id),
                            int(seller.order_id), buyer is maker, taker.ts))
    return trades


def order_events(changed: Sequence[tuple[OrderView, Decimal, int]], fills: Sequence[Any], since: int,
                 now: datetime) -> list[OrderEvent]:
    """The order updates of the orders changed after sequence `since`: accepted (if it was placed
    since), each fill since (with what the order had executed after it), and cancelled or expired
    (if it left the book without filling)."""
    by_order: dict[int, list[Any]] = {}
    for f in fills:
        by_order.setdefault(int(f.order_id), []).append(f)
    events: list[OrderEvent] = []
    with localcontext(MONEY):
        for view, _, placed_at in changed:
            own = by_order.get(view.order_id, [])
            executed = view.executed_quantity - sum((f.quantity for f in own), ZERO)
            executed_quote = view.executed_quote_quantity - sum((f.price * f.quantity for f in own), ZERO)
            if placed_at > since:
                events.append(OrderEvent("orderAccepted", view, OrderStatus.NEW, executed, executed_quote, None,
                                         view.created_at))
            for number, f in enumerate(own, 1):
                executed += f.quantity
                executed_quote += f.price * f.quantity
                last = number == len(own)
                done = (last and view.status is OrderStatus.FILLED) or (
                    view.quantity is not None and executed == view.quantity)
                events.append(OrderEvent(
                    "orderFill", view, OrderStatus.FILLED if done else OrderStatus.PARTIALLY_FILLED, executed,
                    executed_quote, StreamFill(int(f.trade_id), f.price, f.quantity, f.fee, f.fee_symbol,
                                               bool(f.is_maker), f.ts), f.ts))
            if view.status in (OrderStatus.CANCELLED, OrderStatus.EXPIRED):
                kind = "orderCancelled" if view.status is OrderStatus.CANCELLED else "orderExpired"
                events.append(OrderEvent(kind, view, view.status, executed, executed_quote, None, now))
    return events
