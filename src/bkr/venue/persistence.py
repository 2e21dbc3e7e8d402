"""The venue's storage on the order-entry path: the stream's lock, the reads that rebuild a book,
and the write of one transaction at its end.

`write_entry` writes what an `Entry` collected — the orders placed, the changes to resting
orders, the venue's fills, balances, positions — then hands the same fills, typed, to the broker
program (`bkr.program.writer.write_decided_fills`) and advances the stream's state, all in the
caller's transaction. If the program refuses a fill the whole order is undone: a fill is in
both histories or in neither.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update

from bkr.domain.fills import Side
from bkr.domain.money import ZERO
from bkr.domain.program_versions import ProgramTimeline
from bkr.program.writer import Outcome, write_decided_fills
from bkr.store.dialect import insert_ignoring
from bkr.store.tables import (
    broker_status_changes,
    brokers,
    program_versions,
    venue_balances,
    venue_fills,
    venue_orders,
    venue_positions,
    venue_state,
)
from bkr.venue.book import RestingOrder, SelfTradePrevention
from bkr.venue.entry import Entry, PlacedOrder, VenueFill
from bkr.venue.errors import FillNotIngested
from bkr.venue.orders import OPEN_STATUSES, OrderView, order_view

FILL_SOURCE = "venue"  # the source the broker program records for the venue's fills

# The statements of the hot path, built once: building and keying a statement costs more than
# SQLite takes to run it.
_LOCK_STATE = select(
    venue_state.c.sequence, venue_state.c.last_order_id, venue_state.c.last_trade_id,
    select(func.count()).select_from(brokers).scalar_subquery().label("brokers"),
    select(func.count()).select_from(broker_status_changes).scalar_subquery().label("changes"),
    select(func.count()).select_from(program_versions).scalar_subquery().label("program_versions"),
).where(venue_state.c.id == 1).with_for_update(of=venue_state)
_UPDATE_ORDER = update(venue_orders).where(venue_orders.c.order_id == bindparam("id"))
_UPDATE_BALANCE = update(venue_balances).where(
    (venue_balances.c.user_id == bindparam("u")) & (venue_balances.c.asset == bindparam("a")))
_UPDATE_POSITION = update(venue_positions).where(
    (venue_positions.c.user_id == bindparam("u")) & (venue_positions.c.symbol == bindparam("s")))
_UPDATE_STATE = update(venue_state).where(venue_state.c.id == 1).values(
    sequence=bindparam("s"), last_order_id=bindparam("o"), last_trade_id=bindparam("t"))
_ORDERS_NOW = select(
    venue_orders.c.order_id, venue_orders.c.symbol, venue_orders.c.side, venue_orders.c.price,
    venue_orders.c.executed_quantity, venue_orders.c.executed_quote_quantity, venue_orders.c.expiry_reason,
).where(venue_orders.c.order_id.in_(bindparam("ids", expanding=True)))


@dataclass(frozen=True, slots=True)
class StreamState:
    """The stream's state as the lock found it, and the registry's version read with it."""

    sequence: int
    last_order_id: int
    last_trade_id: int
    registry_version: tuple[int, int]  # the counts of brokers and of status changes
    program_versions: int  # how many program versions are stored (append-only: a new one changes it)


def lock_stream(connection: Connection) -> StreamState:
    """Take the stream's lock (the one `venue_state` row; SQLite's BEGIN IMMEDIATE already
    holds the database) and read, in the same statement, the registry's row counts and the number
    of program versions."""
    row = connection.execute(_LOCK_STATE).first()
    if row is None:  # the first order ever
        insert_ignoring(connection, venue_state, [{"id": 1, "sequence": 0, "last_order_id": 0,
                                                    "last_trade_id": 0}], ["id"])
        row = connection.execute(_LOCK_STATE).one()
    return StreamState(row.sequence, row.last_order_id, row.last_trade_id, (row.brokers, row.changes),
                       row.program_versions)


def stored_sequence(connection: Connection) -> int:
    return int(connection.execute(select(venue_state.c.sequence)).scalar() or 0)


def symbols_changed_since(connection: Connection, sequence: int) -> set[str]:
    """The markets whose orders another process changed after `sequence`."""
    return set(connection.execute(select(venue_orders.c.symbol).where(venue_orders.c.changed_at_sequence > sequence)
                                  .distinct()).scalars())


def resting_orders(connection: Connection, symbols: Sequence[str]) -> Iterator[tuple[str, RestingOrder]]:
    """Every open order of these markets, in priority order, to rebuild their books from."""
    rows = connection.execute(
        select(venue_orders.c.order_id, venue_orders.c.user_id, venue_orders.c.symbol, venue_orders.c.side,
               venue_orders.c.price, venue_orders.c.remaining, venue_orders.c.sequence,
               venue_orders.c.self_trade_prevention)
        .where(venue_orders.c.status.in_(OPEN_STATUSES) & venue_orders.c.symbol.in_(list(symbols)))
        .order_by(venue_orders.c.sequence))
    for row in rows:
        yield row.symbol, RestingOrder(int(row.order_id), row.user_id, Side(row.side), row.price, row.remaining,
                                       int(row.sequence), SelfTradePrevention(row.self_trade_prevention))


def open_order_ids(connection: Connection, user_id: str, symbol: str, order_id: int | None = None,
                   client_id: int | None = None) -> list[int]:
    """A user's open orders in one market (those with this id or client id), newest first."""
    query = select(venue_orders.c.order_id).where(
        (venue_orders.c.user_id == user_id) & (venue_orders.c.symbol == symbol)
        & venue_orders.c.status.in_(OPEN_STATUSES))
    if order_id is not None:
        query = query.where(venue_orders.c.order_id == order_id)
    if client_id is not None:
        query = query.where(venue_orders.c.client_id == client_id)
    return [int(i) for i in connection.execute(query.order_by(venue_orders.c.order_id.desc())).scalars()]


def orders_by_id(connection: Connection, order_ids: Sequence[int]) -> list[OrderView]:
    """These orders as stored, in the order asked."""
    if not order_ids:
        return []
    rows = {int(r.order_id): r for r in connection.execute(
        select(venue_orders).where(venue_orders.c.order_id.in_(list(order_ids))))}
    return [order_view(rows[i]) for i in order_ids]


def write_entry(entry: Entry, previous: int, program: ProgramTimeline) -> None:
    """Write what one transaction changed, hand its fills to the broker program and advance the
    stream past `previous` (the sequence the lock found)."""
    if entry.sequence == previous and not entry.order_changes and not entry.placed:
        return
    changed_at = entry.sequence = max(entry.sequence, previous + 1)
    connection = entry.connection
    if entry.placed:
        connection.execute(venue_orders.insert(), [_order_row(p, changed_at) for p in entry.placed])
    _write_order_changes(entry, changed_at)
    if entry.fills:
        connection.execute(venue_fills.insert(), [_fill_row(f) for f in entry.fills])
    _write_balances(entry)
    _write_positions(entry)
    if entry.fills:
        _hand_to_program(connection, entry.fills, program, entry.now)
    connection.execute(_UPDATE_STATE, {"s": changed_at, "o": entry.last_order_id, "t": entry.last_trade_id})


def _hand_to_program(connection: Connection, fills: Sequence[VenueFill], program: ProgramTimeline,
                     now: datetime) -> None:
    results = write_decided_fills(connection, [f.for_program() for f in fills], program, source=FILL_SOURCE, now=now)
    refused = [r for r in results if r.outcome is not Outcome.ACCEPTED]
    if refused:  # the whole order is undone: a fill is in both histories or in neither
        raise FillNotIngested(f"the broker program refused fill {refused[0].fill_id}: {refused[0].reason}; "
                              f"the order was not executed (check the exchange's configuration)")


def _order_row(placed: PlacedOrder, changed_at: int) -> dict[str, Any]:
    view = placed.view
    return {
        "order_id": view.order_id, "user_id": view.user_id, "symbol": view.symbol, "side": view.side.value,
        "order_type": view.order_type.value, "time_in_force": view.time_in_force.value,
        "post_only": view.post_only, "self_trade_prevention": view.self_trade_prevention.value,
        "price": view.price, "quantity": view.quantity, "quote_quantity": view.quote_quantity,
        "executed_quantity": view.executed_quantity, "executed_quote_quantity": view.executed_quote_quantity,
        "remaining": placed.remaining, "locked": placed.locked, "status": view.status.value,
        "expiry_reason": view.expiry_reason, "client_id": view.client_id, "broker_id": view.broker_id,
        "sequence": placed.sequence, "created_at": view.created_at, "changed_at_sequence": changed_at,
    }


def _fill_row(fill: VenueFill) -> dict[str, Any]:
    return {"fill_id": fill.fill_id, "trade_id": fill.trade_id, "order_id": fill.order_id, "user_id": fill.user_id,
            "symbol": fill.market.symbol, "side": fill.side.value, "price": fill.price, "quantity": fill.quantity,
            "fee": fill.fee, "fee_symbol": fill.fee_symbol, "is_maker": fill.is_maker, "client_id": fill.client_id,
            "ts": fill.at}


def _write_order_changes(entry: Entry, changed_at: int) -> None:
    if not entry.order_changes:
        return
    current = {int(r.order_id): r for r in entry.connection.execute(_ORDERS_NOW, {"ids": sorted(entry.order_changes)})}
    updates = []
    for order_id, change in sorted(entry.order_changes.items()):
        stored = current.get(order_id)
        if stored is None:
            continue
        market = entry.config.market(stored.symbol)
        if market is None or market.is_futures:
            held = ZERO
        else:  # a resting order holds exactly what its remainder may cost
            held = change.remaining * stored.price if stored.side == Side.BID.value else change.remaining
        updates.append({
            "id": order_id, "executed_quantity": stored.executed_quantity + change.filled,
            "executed_quote_quantity": stored.executed_quote_quantity + change.filled_quote,
            "remaining": change.remaining, "status": change.status.value, "changed_at_sequence": changed_at,
            "locked": held, "expiry_reason": change.expiry_reason if change.left_book else stored.expiry_reason})
    if updates:
        entry.connection.execute(_UPDATE_ORDER, updates)


def _write_balances(entry: Entry) -> None:
    changed, new = [], []
    for (user_id, asset), balance in sorted(entry.balances.items()):
        if (user_id, asset) in entry.stored_balances:
            changed.append({"u": user_id, "a": asset, "available": balance.available, "locked": balance.locked})
        elif balance.available or balance.locked:
            new.append({"user_id": user_id, "asset": asset, "available": balance.available,
                        "locked": balance.locked})
    if changed:  # one executemany; unchanged rows are rewritten with what they hold
        entry.connection.execute(_UPDATE_BALANCE, changed)
    if new:
        entry.connection.execute(venue_balances.insert(), new)


def _write_positions(entry: Entry) -> None:
    for (user_id, symbol), position in sorted(entry.positions.items()):
        values = {"net_quantity": position.net_quantity, "net_cost": position.net_cost,
                  "realized_pnl": position.realized_pnl}
        if (user_id, symbol) in entry.stored_positions:
            entry.connection.execute(_UPDATE_POSITION, {"u": user_id, "s": symbol, **values})
        else:
            entry.connection.execute(venue_positions.insert().values(user_id=user_id, symbol=symbol, **values))
