"""Order entry: the venue's one linear command stream, where attribution happens.

Every order, batch or cancel is one database transaction that first locks the single
`venue_state` row, as Backpack feeds all order entry through one stream. Inside it the venue
decides the order's broker from `X-Broker-Id` (against a cached broker directory), checks and
reserves funds, matches on the in-memory book, settles balances and positions, writes the
orders and the venue's fills, and ingests the same fills into the broker program with
`write_batch`: a fill is in both histories or in neither.

Books live in memory, validated by `venue_state.sequence`: a process that finds the stored
sequence ahead of its own (another process traded) reloads the books that changed. The broker
directory is validated the same way, by the registry's row counts read in the same statement
as the lock, so neither costs a round trip of its own.
"""

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_DOWN, Context, Decimal, localcontext
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, select, update

from bkr.domain.clock import Clock
from bkr.domain.config import ProgramConfig, UnknownBrokerPolicy
from bkr.domain.errors import BkrError, NotFound
from bkr.domain.fills import Side
from bkr.domain.money import MONEY, ZERO, canonical
from bkr.domain.registry import BrokerStatus, StatusChange, StatusTimeline
from bkr.ingest.readers import RawRow
from bkr.program.writer import Outcome, write_batch
from bkr.store.dialect import insert_for, insert_ignoring
from bkr.store.tables import (
    broker_status_changes,
    brokers,
    venue_accounts,
    venue_balances,
    venue_broker_ids_seen,
    venue_fills,
    venue_orders,
    venue_positions,
    venue_state,
)
from bkr.venue.book import (
    BookError,
    Execution,
    OrderBook,
    OrderRequest,
    OrderStatus,
    OrderType,
    RestingOrder,
    SelfTradePrevention,
    TimeInForce,
)
from bkr.venue.errors import BrokerIdRejected, FillNotIngested, InsufficientFunds, InvalidMarket, InvalidOrder
from bkr.venue.markets import FeeRates, Market, VenueConfig

OPEN_STATUSES = (OrderStatus.NEW.value, OrderStatus.PARTIALLY_FILLED.value)

# The statements of the hot path, built once: building and keying a statement costs more than
# SQLite takes to run it.
_LOCK_STATE = select(
    venue_state.c.sequence, venue_state.c.last_order_id, venue_state.c.last_trade_id,
    select(func.count()).select_from(brokers).scalar_subquery().label("brokers"),
    select(func.count()).select_from(broker_status_changes).scalar_subquery().label("changes"),
).where(venue_state.c.id == 1).with_for_update(of=venue_state)
_ACCOUNTS = (
    select(venue_accounts.c.user_id, venue_accounts.c.fee_tier, venue_balances.c.asset, venue_balances.c.available,
           venue_balances.c.locked)
    .select_from(venue_accounts.outerjoin(venue_balances, (venue_balances.c.user_id == venue_accounts.c.user_id)
                                          & venue_balances.c.asset.in_(bindparam("assets", expanding=True))))
    .where(venue_accounts.c.user_id.in_(bindparam("users", expanding=True))))
_UPDATE_ORDER = update(venue_orders).where(venue_orders.c.order_id == bindparam("id"))
_UPDATE_BALANCE = update(venue_balances).where(
    (venue_balances.c.user_id == bindparam("u")) & (venue_balances.c.asset == bindparam("a")))
_UPDATE_STATE = update(venue_state).where(venue_state.c.id == 1).values(
    sequence=bindparam("s"), last_order_id=bindparam("o"), last_trade_id=bindparam("t"))
_MAKER_BROKERS = select(venue_orders.c.order_id, venue_orders.c.broker_id).where(
    venue_orders.c.order_id.in_(bindparam("ids", expanding=True)))
_ORDERS_NOW = select(
    venue_orders.c.order_id, venue_orders.c.symbol, venue_orders.c.side, venue_orders.c.price,
    venue_orders.c.executed_quantity, venue_orders.c.executed_quote_quantity, venue_orders.c.expiry_reason,
).where(venue_orders.c.order_id.in_(bindparam("ids", expanding=True)))
FILL_SOURCE = "venue"
_FLOOR = Context(prec=80, rounding=ROUND_DOWN)


@dataclass(frozen=True, slots=True)
class OrderInput:
    """One order as a client sent it, parsed (see `bkr.venue.orders.parse_order`)."""

    symbol: str
    side: Side
    order_type: OrderType
    price: Decimal | None = None
    quantity: Decimal | None = None
    quote_quantity: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    post_only: bool = False
    self_trade_prevention: SelfTradePrevention = SelfTradePrevention.REJECT_TAKER
    client_id: int | None = None


@dataclass(frozen=True, slots=True)
class OrderView:
    order_id: int
    user_id: str
    symbol: str
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    post_only: bool
    self_trade_prevention: SelfTradePrevention
    price: Decimal | None
    quantity: Decimal | None
    quote_quantity: Decimal | None
    executed_quantity: Decimal
    executed_quote_quantity: Decimal
    status: OrderStatus
    expiry_reason: str | None
    client_id: int | None
    broker_id: int | None
    created_at: datetime


def order_view(row: Any) -> OrderView:
    return OrderView(int(row.order_id), row.user_id, row.symbol, Side(row.side), OrderType(row.order_type),
                     TimeInForce(row.time_in_force), bool(row.post_only),
                     SelfTradePrevention(row.self_trade_prevention), row.price, row.quantity, row.quote_quantity,
                     row.executed_quantity, row.executed_quote_quantity, OrderStatus(row.status), row.expiry_reason,
                     row.client_id, row.broker_id, row.created_at)


# --- the broker directory -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BrokerDecision:
    broker_id: int | None  # what the order remembers and its fills carry
    problem: str | None  # why the header is not an active broker, if it is not
    header: str | None


class BrokerDirectory:
    """Every broker's status timeline, cached; `version` is the registry's row counts, which
    only grow (brokers and status changes are never deleted), so a changed count is a change."""

    def __init__(self) -> None:
        self.version: tuple[int, int] | None = None
        self._timelines: dict[int, StatusTimeline] = {}

    def refresh(self, connection: Connection, version: tuple[int, int]) -> None:
        if version == self.version:
            return
        changes: dict[int, list[StatusChange]] = {int(b): [] for b in connection.execute(select(brokers.c.broker_id))
                                                  .scalars()}
        for broker_id, status, at in connection.execute(
                select(broker_status_changes.c.broker_id, broker_status_changes.c.status,
                       broker_status_changes.c.effective_at).order_by(broker_status_changes.c.effective_at)):
            changes.setdefault(int(broker_id), []).append(StatusChange(BrokerStatus(status), at))
        self._timelines = {b: StatusTimeline(tuple(c)) for b, c in changes.items()}
        self.version = version

    def decide(self, header: str | None, moment: datetime) -> BrokerDecision:
        if header is None or not header.strip():
            return BrokerDecision(None, None, None)
        text = header.strip()[:64]
        if not text.isdigit() or not 1 <= int(text) <= 65535:
            return BrokerDecision(None, f"X-Broker-Id {text!r} is not a broker id (a whole number 1..65535)", text)
        broker_id = int(text)
        timeline = self._timelines.get(broker_id)
        if timeline is None:
            return BrokerDecision(broker_id, f"X-Broker-Id {broker_id} is not an enrolled broker", text)
        status = timeline.status_at(moment)
        if status is not BrokerStatus.ACTIVE:
            return BrokerDecision(broker_id, f"X-Broker-Id {broker_id}: the broker is {status.value}", text)
        return BrokerDecision(broker_id, None, text)


# --- one transaction of order entry ---------------------------------------------------------------

@dataclass
class _Entry:
    """What one transaction changes, kept until its end and written at once."""

    connection: Connection
    config: VenueConfig
    now: datetime
    sequence: int
    last_order_id: int
    last_trade_id: int
    balances: dict[tuple[str, str], list[Decimal]] = field(default_factory=dict)  # [available, locked]
    stored_balances: set[tuple[str, str]] = field(default_factory=set)
    tiers: dict[str, int] = field(default_factory=dict)
    new_orders: list[dict[str, Any]] = field(default_factory=list)
    order_changes: dict[int, dict[str, Any]] = field(default_factory=dict)
    fills: list[dict[str, Any]] = field(default_factory=list)
    program_rows: list[RawRow] = field(default_factory=list)
    positions: dict[tuple[str, str], list[Decimal]] = field(default_factory=dict)  # [net qty, net cost, realized]
    stored_positions: set[tuple[str, str]] = field(default_factory=set)
    touched_books: set[str] = field(default_factory=set)

    def next_order_id(self) -> int:
        self.last_order_id += 1
        return self.last_order_id

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence

    def next_trade_id(self) -> int:
        self.last_trade_id += 1
        return self.last_trade_id

    def balance(self, user_id: str, asset: str) -> list[Decimal]:
        key = (user_id, asset)
        entry = self.balances.get(key)
        if entry is None:
            row = self.connection.execute(select(venue_balances.c.available, venue_balances.c.locked).where(
                (venue_balances.c.user_id == user_id) & (venue_balances.c.asset == asset))).first()
            if row is not None:
                self.stored_balances.add(key)
            entry = self.balances[key] = [row.available, row.locked] if row is not None else [ZERO, ZERO]
        return entry

    def prefetch(self, user_ids: Sequence[str], assets: Sequence[str]) -> None:
        """Read the fee tiers and balances an order will touch in one statement, not one each."""
        users = sorted({u for u in user_ids if u not in self.tiers or any((u, a) not in self.balances for a in assets)})
        if not users:
            return
        for row in self.connection.execute(_ACCOUNTS, {"users": users, "assets": list(assets)}):
            self.tiers[row.user_id] = int(row.fee_tier)
            key = (row.user_id, row.asset)
            if row.asset is not None and key not in self.balances:
                self.balances[key] = [row.available, row.locked]
                self.stored_balances.add(key)
        for user_id in users:
            for asset in assets:
                self.balances.setdefault((user_id, asset), [ZERO, ZERO])

    def move(self, user_id: str, asset: str, available: Decimal = ZERO, held: Decimal = ZERO) -> None:
        entry = self.balance(user_id, asset)
        entry[0] += available
        entry[1] += held

    def fee_tier(self, user_id: str) -> int:
        tier = self.tiers.get(user_id)
        if tier is None:
            tier = self.connection.execute(select(venue_accounts.c.fee_tier)
                                           .where(venue_accounts.c.user_id == user_id)).scalar()
            if tier is None:
                raise NotFound(f"user {user_id} has no trading account", code="RESOURCE_NOT_FOUND")
            self.tiers[user_id] = tier = int(tier)
        return tier

    def position(self, user_id: str, symbol: str) -> list[Decimal]:
        key = (user_id, symbol)
        entry = self.positions.get(key)
        if entry is None:
            row = self.connection.execute(select(venue_positions).where(
                (venue_positions.c.user_id == user_id) & (venue_positions.c.symbol == symbol))).first()
            if row is not None:
                self.stored_positions.add(key)
            entry = self.positions[key] = ([row.net_quantity, row.net_cost, row.realized_pnl] if row is not None
                                           else [ZERO, ZERO, ZERO])
        return entry


class Venue:
    """The venue of one process: its books and broker directory, and the use cases that change
    them. Safe to share between threads; any number of processes may run one on the same
    database."""

    def __init__(self, engine: Engine, program: ProgramConfig, config: VenueConfig, clock: Clock) -> None:
        self.engine = engine
        self.program = program
        self.config = config
        self.clock = clock
        self._lock = threading.Lock()
        self._books: dict[str, OrderBook] | None = None
        self._sequence = -1
        self.directory = BrokerDirectory()

    # -- the stream ------------------------------------------------------------------------------

    @contextmanager
    def _entry(self) -> Iterator[_Entry]:
        """One order-entry transaction: the stream's lock, the books caught up, and on a failure
        after a book changed, the books dropped (they are rebuilt from the database next time).
        A refusal before any book changed (funds, a bad price, an unknown order) keeps them."""
        with self._lock:
            entry: _Entry | None = None
            try:
                with self.engine.begin() as connection, localcontext(MONEY):
                    state = self._lock_state(connection)
                    self._catch_up(connection, state.sequence)
                    self.directory.refresh(connection, (state.brokers, state.changes))
                    entry = _Entry(connection, self.config, self.clock(), state.sequence, state.last_order_id,
                                   state.last_trade_id)
                    yield entry
                    self._write(entry, state.sequence)
                self._sequence = entry.sequence
            except BaseException:
                if entry is None or entry.touched_books:
                    self._books = None
                    self._sequence = -1
                raise

    @staticmethod
    def _lock_state(connection: Connection) -> Any:
        """Take the stream's lock (the one `venue_state` row; SQLite's BEGIN IMMEDIATE already
        holds the database) and read, in the same statement, the registry's row counts."""
        row = connection.execute(_LOCK_STATE).first()
        if row is None:  # the first order ever
            insert_ignoring(connection, venue_state, [{"id": 1, "sequence": 0, "last_order_id": 0,
                                                        "last_trade_id": 0}], ["id"])
            row = connection.execute(_LOCK_STATE).one()
        return row

    def _catch_up(self, connection: Connection, stored: int) -> None:
        if self._books is not None and stored == self._sequence:
            return
        if self._books is None:
            self._books = {m.symbol: self._new_book(m) for m in self.config.markets}
            symbols = [m.symbol for m in self.config.markets]
        else:
            symbols = sorted(set(connection.execute(
                select(venue_orders.c.symbol).where(venue_orders.c.changed_at_sequence > self._sequence)
                .distinct()).scalars()) & set(self._books))
            for symbol in symbols:
                self._books[symbol] = self._new_book(self.config.market(symbol))  # type: ignore[arg-type]
        if symbols:
            rows = connection.execute(
                select(venue_orders.c.order_id, venue_orders.c.user_id, venue_orders.c.symbol, venue_orders.c.side,
                       venue_orders.c.price, venue_orders.c.remaining, venue_orders.c.sequence,
                       venue_orders.c.self_trade_prevention)
                .where(venue_orders.c.status.in_(OPEN_STATUSES) & venue_orders.c.symbol.in_(symbols))
                .order_by(venue_orders.c.sequence))
            for row in rows:
                self._books[row.symbol].rest(RestingOrder(
                    int(row.order_id), row.user_id, Side(row.side), row.price, row.remaining, int(row.sequence),
                    SelfTradePrevention(row.self_trade_prevention)))
        self._sequence = stored

    @staticmethod
    def _new_book(market: Market) -> OrderBook:
        return OrderBook(market.symbol, tick_size=market.tick_size, step_size=market.step_size)

    def book(self, symbol: str) -> OrderBook:
        assert self._books is not None
        return self._books[symbol]

    # -- use cases -------------------------------------------------------------------------------

    def execute(self, user_id: str, orders: Sequence[OrderInput], broker_header: str | None, *,
                batch: bool = False) -> list[OrderView | BkrError]:
        """Execute one order (or a batch, each with its own outcome) for `user_id`, attributed
        by `broker_header`. A single order's error is raised; a batch's are returned in place."""
        rejected: BrokerIdRejected | None = None
        results: list[OrderView | BkrError] = []
        with self._entry() as entry:
            decision = self.directory.decide(broker_header, entry.now)
            if decision.problem is not None:
                reject = self.program.unknown_broker_policy is UnknownBrokerPolicy.REJECT
                _count_header(entry.connection, decision, reject, len(orders), entry.now)
                if reject:
                    rejected = BrokerIdRejected(
                        f"{decision.problem}; this exchange rejects orders whose X-Broker-Id is not an active "
                        f"broker (send no X-Broker-Id to trade unattributed)", field="X-Broker-Id")
            if rejected is None:
                for order in orders:
                    try:
                        results.append(self._execute_one(entry, user_id, order, decision.broker_id))
                    except BkrError as error:
                        if not batch:
                            raise
                        results.append(error)
        if rejected is not None:
            raise rejected
        return results

    def cancel(self, user_id: str, symbol: str, order_id: int | None, client_id: int | None) -> OrderView:
        with self._entry() as entry:
            market = self._market(symbol)
            query = select(venue_orders.c.order_id).where(
                (venue_orders.c.user_id == user_id) & (venue_orders.c.symbol == market.symbol)
                & venue_orders.c.status.in_(OPEN_STATUSES))
            if order_id is not None:
                query = query.where(venue_orders.c.order_id == order_id)
            if client_id is not None:
                query = query.where(venue_orders.c.client_id == client_id)
            found = entry.connection.execute(query.order_by(venue_orders.c.order_id.desc())).scalar()
            if found is None:
                raise NotFound("Order not found", code="RESOURCE_NOT_FOUND")
            self._cancel_resting(entry, market, int(found))
        return self._views([int(found)])[0]

    def cancel_all(self, user_id: str, symbol: str) -> list[OrderView]:
        with self._entry() as entry:
            market = self._market(symbol)
            ids = [int(i) for i in entry.connection.execute(select(venue_orders.c.order_id).where(
                (venue_orders.c.user_id == user_id) & (venue_orders.c.symbol == market.symbol)
                & venue_orders.c.status.in_(OPEN_STATUSES)).order_by(venue_orders.c.order_id)).scalars()]
            for order_id in ids:
                self._cancel_resting(entry, market, order_id)
        return self._views(ids)

    def depth(self, symbol: str, limit: int | None) -> tuple[list[tuple[Decimal, Decimal]],
                                                             list[tuple[Decimal, Decimal]], int]:
        """The book's levels (bids best first, asks best first) and its sequence (Backpack's
        `lastUpdateId`)."""
        market = self._market(symbol)
        with self._lock:
            try:
                with self.engine.connect() as connection:
                    stored = connection.execute(select(venue_state.c.sequence)).scalar() or 0
                    self._catch_up(connection, int(stored))
            except BaseException:
                self._books = None
                raise
            bids, asks = self.book(market.symbol).depth(limit)
            return bids, asks, self._sequence

    # -- inside the stream -----------------------------------------------------------------------

    def _market(self, symbol: str) -> Market:
        market = self.config.market(symbol)
        if market is None:
            raise InvalidMarket(f"Invalid market: {symbol!r}", field="symbol")
        return market

    def _execute_one(self, entry: _Entry, user_id: str, order: OrderInput, broker_id: int | None) -> OrderView:
        market = self._market(order.symbol)
        book = self.book(market.symbol)
        entry.prefetch([user_id], [market.base, market.quote])
        fees = self.config.fees(entry.fee_tier(user_id))
        asset, reserve = self._reservation(entry, book, market, user_id, order)
        if asset is not None and entry.balance(user_id, asset)[0] < reserve:
            raise InsufficientFunds(f"Insufficient funds: {canonical(reserve)} {asset} needed, "
                                    f"{canonical(entry.balance(user_id, asset)[0])} available")
        order_id = entry.next_order_id()
        request = OrderRequest(order_id, user_id, order.side, order.order_type, order.price, order.quantity,
                               order.quote_quantity, order.time_in_force, order.post_only,
                               order.self_trade_prevention, entry.next_sequence())
        untouched = market.symbol not in entry.touched_books
        entry.touched_books.add(market.symbol)  # from here a failure must drop the books
        try:
            execution = book.submit(request)
        except BookError as error:  # the book validates before it changes anything
            if untouched:
                entry.touched_books.discard(market.symbol)
            raise InvalidOrder(str(error)) from None
        if order.post_only and not execution.matches and execution.resting is None:
            if untouched:  # refused without touching the book
                entry.touched_books.discard(market.symbol)
            raise InvalidOrder("Order would immediately match and take")
        if asset is not None:
            entry.move(user_id, asset, -reserve, reserve)
        self._settle(entry, market, fees, user_id, order, order_id, broker_id, execution)
        for maker in execution.cancelled_makers:
            self._release(entry, market, maker, OrderStatus.CANCELLED, "SelfTradePrevention")
        spent = execution.executed_quote_quantity if order.side is Side.BID else execution.executed_quantity
        held = ZERO
        if execution.resting is not None and not market.is_futures:
            held = (execution.resting.remaining * execution.resting.price if order.side is Side.BID
                    else execution.resting.remaining)
        if asset is not None:
            entry.move(user_id, asset, reserve - spent - held, -(reserve - held))
        row = {
            "order_id": order_id, "user_id": user_id, "symbol": market.symbol, "side": order.side.value,
            "order_type": order.order_type.value, "time_in_force": order.time_in_force.value,
            "post_only": order.post_only, "self_trade_prevention": order.self_trade_prevention.value,
            "price": order.price, "quantity": order.quantity, "quote_quantity": order.quote_quantity,
            "executed_quantity": execution.executed_quantity,
            "executed_quote_quantity": execution.executed_quote_quantity,
            "remaining": execution.resting.remaining if execution.resting is not None else ZERO,
            "locked": held, "status": execution.status.value,
            "expiry_reason": _expiry_reason(execution), "client_id": order.client_id, "broker_id": broker_id,
            "sequence": request.sequence, "created_at": entry.now,
        }
        entry.new_orders.append(row)
        return order_view(_Row(row))

    def _reservation(self, entry: _Entry, book: OrderBook, market: Market, user_id: str,
                     order: OrderInput) -> tuple[str | None, Decimal]:
        """The asset and amount an order holds while it lives: the quote a bid may spend, the
        base an ask may sell. A perpetual holds nothing but needs its initial margin free."""
        if order.order_type is OrderType.LIMIT:
            if order.price is None or order.quantity is None:
                raise InvalidOrder("A limit order needs a price and a quantity")
            notional = order.price * order.quantity
            base_needed = order.quantity
        else:
            notional, base_needed = _walk(book, order)
        if market.is_futures:
            margin = notional * self.config.initial_margin
            free = entry.balance(user_id, market.quote)[0]
            if free < margin:
                raise InsufficientFunds(f"Insufficient margin: {canonical(margin)} {market.quote} needed, "
                                        f"{canonical(free)} available")
            return None, ZERO
        if order.side is Side.BID:
            return market.quote, notional
        return market.base, base_needed

    def _settle(self, entry: _Entry, market: Market, fees: FeeRates, user_id: str, order: OrderInput,
                order_id: int, broker_id: int | None, execution: Execution) -> None:
        maker_brokers = _maker_brokers(entry, [m.maker_order_id for m in execution.matches])
        entry.prefetch([m.maker_user_id for m in execution.matches], [market.base, market.quote])
        for match in execution.matches:
            trade_id = entry.next_trade_id()
            maker_fees = self.config.fees(entry.fee_tier(match.maker_user_id))
            maker_side = Side.ASK if match.taker_side is Side.BID else Side.BID
            self._fill(entry, market, trade_id, order_id, user_id, match.taker_side, match.price, match.quantity,
                       fees.rate(market, False), False, order.client_id, broker_id)
            self._fill(entry, market, trade_id, match.maker_order_id, match.maker_user_id, maker_side, match.price,
                       match.quantity, maker_fees.rate(market, True), True, None,
                       maker_brokers.get(match.maker_order_id))
            change = entry.order_changes.setdefault(match.maker_order_id, {"filled": ZERO, "filled_quote": ZERO})
            change["filled"] += match.quantity
            change["filled_quote"] += match.price * match.quantity
            resting = self.book(market.symbol).get(match.maker_order_id)
            change["remaining"] = resting.remaining if resting is not None else ZERO
            change["status"] = (OrderStatus.PARTIALLY_FILLED if resting is not None else OrderStatus.FILLED).value

    def _fill(self, entry: _Entry, market: Market, trade_id: int, order_id: int, user_id: str, side: Side,
              price: Decimal, quantity: Decimal, rate: Decimal, is_maker: bool, client_id: int | None,
              broker_id: int | None) -> None:
        """One side of a trade: the user's balances (a maker's come out of what its resting order
        held; a taker's out of its reservation, when the order is written), the venue's fill, and
        the same fill for the broker program."""
        notional = price * quantity
        if market.is_futures:
            fee, fee_symbol = notional * rate, market.quote
            entry.move(user_id, market.quote, -fee)
            _position(entry, user_id, market, side, quantity, notional)
        elif side is Side.BID:
            fee, fee_symbol = quantity * rate, market.base  # a buyer pays in what it receives
            entry.move(user_id, market.base, quantity - fee)
            if is_maker:  # a resting bid held price × quantity of quote
                entry.move(user_id, market.quote, ZERO, -notional)
        else:
            fee, fee_symbol = notional * rate, market.quote
            entry.move(user_id, market.quote, notional - fee)
            if is_maker:
                entry.move(user_id, market.base, ZERO, -quantity)
        fill_id = f"venue-{trade_id}-{'maker' if is_maker else 'taker'}"
        entry.fills.append({"fill_id": fill_id, "trade_id": trade_id, "order_id": order_id, "user_id": user_id,
                            "symbol": market.symbol, "side": side.value, "price": price, "quantity": quantity,
                            "fee": fee, "fee_symbol": fee_symbol, "is_maker": is_maker, "client_id": client_id,
                            "ts": entry.now})
        values = {"fill_id": fill_id, "order_id": str(order_id), "user_id": user_id, "symbol": market.symbol,
                  "market_type": market.market_type.value, "side": side.value, "price": canonical(price),
                  "quantity": canonical(quantity), "fee": canonical(fee), "fee_symbol": fee_symbol,
                  "is_maker": is_maker, "timestamp": entry.now.isoformat(), "broker_id": broker_id,
                  "via_api": True, "fill_type": "User"}
        entry.program_rows.append(RawRow(len(entry.program_rows) + 1, values, fill_id))

    def _cancel_resting(self, entry: _Entry, market: Market, order_id: int) -> None:
        resting = self.book(market.symbol).cancel(order_id)
        if resting is None:  # not on the book any more: it left it earlier in this transaction
            return
        entry.touched_books.add(market.symbol)
        self._release(entry, market, resting, OrderStatus.CANCELLED, None)

    @staticmethod
    def _release(entry: _Entry, market: Market, resting: RestingOrder, status: OrderStatus,
                 reason: str | None) -> None:
        """An order leaves the book: what it still holds (price × remaining of quote for a bid,
        the remaining base for an ask) goes back to its user."""
        if not market.is_futures:
            bid = resting.side is Side.BID
            held = resting.remaining * resting.price if bid else resting.remaining
            entry.move(resting.user_id, market.quote if bid else market.base, held, -held)
        change = entry.order_changes.setdefault(resting.order_id, {"filled": ZERO, "filled_quote": ZERO})
        change.update(remaining=ZERO, status=status.value, expiry_reason=reason)

    def _views(self, order_ids: Sequence[int]) -> list[OrderView]:
        if not order_ids:
            return []
        with self.engine.connect() as connection:
            rows = {int(r.order_id): r for r in connection.execute(
                select(venue_orders).where(venue_orders.c.order_id.in_(list(order_ids))))}
        return [order_view(rows[i]) for i in order_ids]

    # -- writing it down -------------------------------------------------------------------------

    def _write(self, entry: _Entry, previous: int) -> None:
        connection = entry.connection
        if entry.sequence == previous and not entry.order_changes and not entry.new_orders:
            return
        changed_at = entry.sequence = max(entry.sequence, previous + 1)
        for row in entry.new_orders:
            row["changed_at_sequence"] = changed_at
        if entry.new_orders:
            connection.execute(venue_orders.insert(), entry.new_orders)
        if entry.order_changes:
            current = {int(r.order_id): r for r in connection.execute(
                _ORDERS_NOW, {"ids": sorted(entry.order_changes)})}
            updates = []
            for order_id, change in sorted(entry.order_changes.items()):
                stored = current.get(order_id)
                if stored is None:
                    continue
                remaining = change["remaining"]
                market = entry.config.market(stored.symbol)
                if market is None or market.is_futures:
                    held = ZERO
                else:  # a resting order holds exactly what its remainder may cost
                    held = remaining * stored.price if stored.side == Side.BID.value else remaining
                updates.append({
                    "id": order_id, "executed_quantity": stored.executed_quantity + change["filled"],
                    "executed_quote_quantity": stored.executed_quote_quantity + change["filled_quote"],
                    "remaining": remaining, "status": change["status"], "changed_at_sequence": changed_at,
                    "locked": held, "expiry_reason": change.get("expiry_reason", stored.expiry_reason)})
            if updates:
                connection.execute(_UPDATE_ORDER, updates)
        if entry.fills:
            connection.execute(venue_fills.insert(), entry.fills)
        self._write_balances(entry)
        self._write_positions(entry)
        if entry.program_rows:
            results = write_batch(connection, entry.program_rows, self.program.usd_rates, source=FILL_SOURCE,
                                  now=entry.now)
            refused = [r for r in results if r.outcome is not Outcome.ACCEPTED]
            if refused:  # the whole order is undone: a fill is in both histories or in neither
                raise FillNotIngested(f"the broker program refused fill {refused[0].fill_id}: {refused[0].reason}; "
                                      f"the order was not executed (check the exchange's configuration)")
        connection.execute(_UPDATE_STATE, {"s": changed_at, "o": entry.last_order_id, "t": entry.last_trade_id})

    @staticmethod
    def _write_balances(entry: _Entry) -> None:
        changed, new = [], []
        for (user_id, asset), (available, held) in sorted(entry.balances.items()):
            if (user_id, asset) in entry.stored_balances:
                changed.append({"u": user_id, "a": asset, "available": available, "locked": held})
            elif available or held:
                new.append({"user_id": user_id, "asset": asset, "available": available, "locked": held})
        if changed:  # one executemany; unchanged rows are rewritten with what they hold
            entry.connection.execute(_UPDATE_BALANCE, changed)
        if new:
            entry.connection.execute(venue_balances.insert(), new)

    @staticmethod
    def _write_positions(entry: _Entry) -> None:
        for (user_id, symbol), (net, cost, realized) in sorted(entry.positions.items()):
            values = {"net_quantity": net, "net_cost": cost, "realized_pnl": realized}
            if (user_id, symbol) in entry.stored_positions:
                entry.connection.execute(update(venue_positions).where(
                    (venue_positions.c.user_id == user_id) & (venue_positions.c.symbol == symbol)).values(**values))
            else:
                entry.connection.execute(venue_positions.insert().values(user_id=user_id, symbol=symbol, **values))


class _Row:
    """Attribute access over a dict, to build an OrderView from a row about to be written."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)


def _expiry_reason(execution: Execution) -> str | None:
    if execution.status is not OrderStatus.EXPIRED:
        return None
    reason = execution.reason or ""
    if "self-trade" in reason:
        return "SelfTradePrevention"
    if "FOK" in reason:
        return "FillOrKill"
    if "liquidity" in reason:
        return "InsufficientLiquidity"
    return "ImmediateOrCancel"


def _walk(book: OrderBook, order: OrderInput) -> tuple[Decimal, Decimal]:
    """What a market order would spend, at most: (quote notional, base quantity), walking the
    opposite side of the book as it is now, a few levels at a time."""
    if order.quantity is None and order.quote_quantity is None:
        raise InvalidOrder("A market order needs a quantity or a quoteQuantity")
    notional = base = ZERO
    quantity_left, quote_left = order.quantity, order.quote_quantity
    seen, limit = 0, 16
    while True:
        bids, asks = book.depth(limit)
        levels = (asks if order.side is Side.BID else bids)[seen:]
        for price, size in levels:
            if quantity_left is not None:
                take = min(quantity_left, size)
                quantity_left -= take
            else:
                assert quote_left is not None
                fits = _FLOOR.divide(quote_left, price).quantize(book.step_size, rounding=ROUND_DOWN, context=_FLOOR)
                take = min(size, fits)
                quote_left -= take * price
            notional += take * price
            base += take
            if take < size or quantity_left == 0:  # the order ends inside this level
                return _spend(order, notional), base
        if len(levels) + seen < limit:  # the whole side was walked
            return _spend(order, notional), base
        seen, limit = limit, limit * 4


def _spend(order: OrderInput, notional: Decimal) -> Decimal:
    """A bid by quote quantity holds all of it (what it does not spend comes back)."""
    if order.side is Side.BID and order.quote_quantity is not None:
        return max(notional, order.quote_quantity)
    return notional


def _position(entry: _Entry, user_id: str, market: Market, side: Side, quantity: Decimal,
              notional: Decimal) -> None:
    """A perpetual fill moves the position; closing it (back to zero, or through zero) realizes
    its PnL in the quote asset, exactly: no average price is ever divided out."""
    state = entry.position(user_id, market.symbol)
    signed = quantity if side is Side.BID else -quantity
    cost = notional if side is Side.BID else -notional
    net, net_cost = state[0], state[1]
    after = net + signed
    if net and (after == 0 or (net > 0) != (after > 0)):
        closing = abs(net)  # the part of this fill that brings the position to zero
        closing_cost = cost * closing / quantity if closing != quantity else cost
        pnl = -(net_cost + closing_cost)
        entry.move(user_id, market.quote, pnl)
        state[2] += pnl
        state[0], state[1] = after, cost - closing_cost
    else:
        state[0], state[1] = after, net_cost + cost


def _maker_brokers(entry: _Entry, order_ids: Sequence[int]) -> dict[int, int | None]:
    """The broker each resting order was sent with: its fills carry it too."""
    if not order_ids:
        return {}
    found: dict[int, int | None] = {row["order_id"]: row["broker_id"] for row in entry.new_orders}
    wanted = sorted(set(order_ids) - set(found))
    if wanted:
        found.update({int(o): b for o, b in entry.connection.execute(_MAKER_BROKERS, {"ids": wanted})})
    return found


def _count_header(connection: Connection, decision: BrokerDecision, rejected: bool, count: int,
                  now: datetime) -> None:
    """Count the orders whose X-Broker-Id is not an active broker, for operators."""
    assert decision.header is not None and decision.problem is not None
    statement = insert_for(connection, venue_broker_ids_seen).values(
        header=decision.header, reason=decision.problem, orders=0 if rejected else count,
        rejected=count if rejected else 0,
        first_seen_at=now, last_seen_at=now)
    connection.execute(statement.on_conflict_do_update(index_elements=["header"], set_={
        "reason": statement.excluded.reason, "last_seen_at": statement.excluded.last_seen_at,
        "orders": venue_broker_ids_seen.c.orders + statement.excluded.orders,
        "rejected": venue_broker_ids_seen.c.rejected + statement.excluded.rejected}))
