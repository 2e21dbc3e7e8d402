"""The venue's read side: a user's orders and fills, a market's trades and its 24-hour ticker,
read from the database (the order-entry stream is never taken for a read)."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, select

from bkr.domain.errors import NotFound
from bkr.domain.money import ZERO
from bkr.store.tables import venue_broker_id_conflicts, venue_broker_ids_seen, venue_fills, venue_orders
from bkr.venue.markets import Market
from bkr.venue.orders import OPEN_STATUSES, OrderView, order_view

MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class FillView:
    trade_id: int
    order_id: int
    symbol: str
    side: str
    price: Decimal
    quantity: Decimal
    fee: Decimal
    fee_symbol: str
    is_maker: bool
    client_id: int | None
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class Ticker:
    symbol: str
    first_price: Decimal | None
    last_price: Decimal | None
    high: Decimal | None
    low: Decimal | None
    volume: Decimal
    quote_volume: Decimal
    trades: int


@dataclass(frozen=True, slots=True)
class BrokerIdSeen:
    header: str  # the broker id as sent, in X-Broker-Id or in an order's brokerId
    reason: str  # why it is not an active broker (the latest reason seen)
    orders: int  # orders that traded with it, unattributed (policy `ignore`)
    rejected: int  # orders refused for it (policy `reject`)
    first_seen_at: datetime
    last_seen_at: datetime


def broker_ids_seen(connection: Connection) -> list[BrokerIdSeen]:
    """The X-Broker-Id values orders carried that were not an active broker, most orders first:
    the integrations an operator should call."""
    rows = connection.execute(select(venue_broker_ids_seen).order_by(
        (venue_broker_ids_seen.c.orders + venue_broker_ids_seen.c.rejected).desc(), venue_broker_ids_seen.c.header))
    return [BrokerIdSeen(r.header, r.reason, int(r.orders), int(r.rejected), r.first_seen_at, r.last_seen_at)
            for r in rows]


@dataclass(frozen=True, slots=True)
class BrokerIdConflict:
    header: str  # X-Broker-Id as sent
    body: str  # the order's brokerId as sent (a string quoted, as JSON writes it)
    orders: int  # orders that traded, counted for nobody (policy `ignore`)
    rejected: int  # orders refused (policy `reject`)
    first_seen_at: datetime
    last_seen_at: datetime


def broker_id_conflicts(connection: Connection) -> list[BrokerIdConflict]:
    """The orders whose X-Broker-Id and brokerId named different brokers, by their two values,
    most orders first."""
    table = venue_broker_id_conflicts
    rows = connection.execute(select(table).order_by((table.c.orders + table.c.rejected).desc(), table.c.header,
                                                     table.c.body))
    return [BrokerIdConflict(r.header, r.body, int(r.orders), int(r.rejected), r.first_seen_at, r.last_seen_at)
            for r in rows]


def open_orders(connection: Connection, user_id: str, symbols: Sequence[str] | None = None) -> list[OrderView]:
    query = select(venue_orders).where((venue_orders.c.user_id == user_id) & venue_orders.c.status.in_(OPEN_STATUSES))
    if symbols is not None:
        query = query.where(venue_orders.c.symbol.in_(list(symbols)))
    return [order_view(row) for row in connection.execute(query.order_by(venue_orders.c.order_id))]


def open_order(connection: Connection, user_id: str, symbol: str, order_id: int | None,
               client_id: int | None) -> OrderView:
    """An order resting on the book (Backpack's GET /order answers nothing else)."""
    query = select(venue_orders).where((venue_orders.c.user_id == user_id) & (venue_orders.c.symbol == symbol)
                                       & venue_orders.c.status.in_(OPEN_STATUSES))
    if order_id is not None:
        query = query.where(venue_orders.c.order_id == order_id)
    if client_id is not None:
        query = query.where(venue_orders.c.client_id == client_id)
    row = connection.execute(query.order_by(venue_orders.c.order_id.desc())).first()
    if row is None:
        raise NotFound("Order not found", code="RESOURCE_NOT_FOUND")
    return order_view(row)


def order_history(connection: Connection, user_id: str, *, symbols: Sequence[str] | None, order_id: int | None,
                  limit: int, offset: int, ascending: bool) -> list[OrderView]:
    query = select(venue_orders).where(venue_orders.c.user_id == user_id)
    if symbols is not None:
        query = query.where(venue_orders.c.symbol.in_(list(symbols)))
    if order_id is not None:
        query = query.where(venue_orders.c.order_id == order_id)
    order = venue_orders.c.order_id.asc() if ascending else venue_orders.c.order_id.desc()
    rows = connection.execute(query.order_by(order).limit(min(limit, MAX_PAGE)).offset(offset))
    return [order_view(row) for row in rows]


def fill_history(connection: Connection, user_id: str, *, symbols: Sequence[str] | None, order_id: int | None,
                 since: datetime | None, until: datetime | None, limit: int, offset: int,
                 ascending: bool) -> list[FillView]:
    query = select(venue_fills).where(venue_fills.c.user_id == user_id)
    if symbols is not None:
        query = query.where(venue_fills.c.symbol.in_(list(symbols)))
    if order_id is not None:
        query = query.where(venue_fills.c.order_id == order_id)
    if since is not None:
        query = query.where(venue_fills.c.ts >= since)
    if until is not None:
        query = query.where(venue_fills.c.ts <= until)
    keys = (venue_fills.c.ts, venue_fills.c.trade_id)
    query = query.order_by(*(k.asc() if ascending else k.desc() for k in keys))
    rows = connection.execute(query.limit(min(limit, MAX_PAGE)).offset(offset))
    return [_fill(row) for row in rows]


def _fill(row: Any) -> FillView:
    return FillView(int(row.trade_id), int(row.order_id), row.symbol, row.side, row.price, row.quantity, row.fee,
                    row.fee_symbol, bool(row.is_maker), row.client_id, row.ts)


def recent_trades(connection: Connection, symbol: str, limit: int, offset: int = 0) -> list[FillView]:
    """A market's latest trades, newest first, as the taker's side of each."""
    rows = connection.execute(
        select(venue_fills).where((venue_fills.c.symbol == symbol) & venue_fills.c.is_maker.is_(False))
        .order_by(venue_fills.c.trade_id.desc()).limit(min(limit, MAX_PAGE)).offset(offset))
    return [_fill(row) for row in rows]


def ticker(connection: Connection, market: Market, now: datetime, window: timedelta = timedelta(days=1)) -> Ticker:
    rows = connection.execute(
        select(venue_fills.c.price, venue_fills.c.quantity)
        .where((venue_fills.c.symbol == market.symbol) & venue_fills.c.is_maker.is_(False)
               & (venue_fills.c.ts >= now - window))
        .order_by(venue_fills.c.trade_id)).all()
    if not rows:
        last = connection.execute(select(venue_fills.c.price).where(venue_fills.c.symbol == market.symbol)
                                  .order_by(venue_fills.c.trade_id.desc()).limit(1)).scalar()
        return Ticker(market.symbol, last, last, last, last, ZERO, ZERO, 0)
    prices = [row.price for row in rows]
    volume = sum((row.quantity for row in rows), ZERO)
    quote = sum((row.price * row.quantity for row in rows), ZERO)
    return Ticker(market.symbol, prices[0], prices[-1], max(prices), min(prices), volume, quote, len(rows))
