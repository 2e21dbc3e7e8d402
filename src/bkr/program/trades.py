"""The two sides of one trade, matched as fills are stored (the rules: `bkr.domain.trades`).

`match_trades` runs in the writer's transaction before a batch's new fills are attributed. It
locks the trades the batch names, so that two batches holding the two sides of one trade are
matched whichever commits first, reads their sides already stored (locked too: a registry change
cannot re-judge them meanwhile), and goes through the batch's new sides in order: a side its
trade cannot have is rejected with the reason, and a trade whose two sides belong to one user is
a self-trade. Of a side stored earlier it reads what un-counting it takes: its amounts, its
corrections and the periods they are paid in. The writer then stores the new sides as
`self_trade` and un-counts the earlier ones (`bkr.program.writer`).
"""

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Row, bindparam, select

from bkr.domain.fills import Attribution, Fill, Side
from bkr.domain.periods import Month
from bkr.domain.trades import TradeKey, TradeSide, is_self_trade, reversal_id, side_of, side_problem, trade_key
from bkr.store.dialect import lock_keys, locked
from bkr.store.tables import fill_keys, fills

_CHUNK = 10_000  # ids per IN list: within SQLite's and PostgreSQL's limits on parameters

_SIDES = locked(
    select(fills.c.fill_id, fills.c.order_id, fills.c.user_id, fills.c.symbol, fills.c.market_type, fills.c.side,
           fills.c.price, fills.c.quantity, fills.c.fee, fills.c.fee_symbol, fills.c.is_maker, fills.c.ts,
           fills.c.broker_id, fills.c.via_api, fills.c.fill_type, fills.c.trade_id, fills.c.volume_usd,
           fills.c.fee_usd, fills.c.attribution, fills.c.affiliate_rate, fills.c.fill_month, fills.c.period)
    .where(fills.c.trade_id.in_(bindparam("ids", expanding=True)) & fills.c.corrects.is_(None))
    .order_by(fills.c.fill_id))
# ids claimed by a fill, also one whose month was archived
_STORED = select(fill_keys.c.fill_id).where(fill_keys.c.fill_id.in_(bindparam("ids", expanding=True)))
_CORRECTIONS = (
    select(fills.c.fill_id, fills.c.corrects, fills.c.quantity, fills.c.fee, fills.c.volume_usd, fills.c.fee_usd,
           fills.c.fee_base_usd, fills.c.period)
    .where(fills.c.corrects.in_(bindparam("ids", expanding=True))).order_by(fills.c.fill_id))


@dataclass(frozen=True, slots=True)
class EarlierSide:
    """A side stored before its trade was known to be a self-trade: the fill as stored, its
    corrections, and the side of this batch that completed the trade."""

    fill: Row[Any]
    corrections: tuple[Row[Any], ...]
    partner: str

    @property
    def periods(self) -> set[Month]:
        return {self.fill.period} | {c.period for c in self.corrections}


@dataclass
class TradeMatch:
    rejected: dict[str, str] = field(default_factory=dict)  # a new side's fill_id -> why its trade cannot have it
    self_trades: set[str] = field(default_factory=set)  # new sides of self-trades
    earlier: list[EarlierSide] = field(default_factory=list)

    @property
    def periods(self) -> set[Month]:
        """The periods the earlier sides are paid in, which un-counting them touches."""
        return {month for side in self.earlier for month in side.periods}


def match_trades(connection: Connection, incoming: Sequence[Fill]) -> TradeMatch:
    """Match the new fills of a batch (in the batch's order) with the sides of their trades."""
    keyed = [(key, fill) for fill in incoming if (key := trade_key(fill)) is not None]
    match = TradeMatch()
    if not keyed:
        return match
    keys = {key for key, _ in keyed}
    lock_keys(connection, (_lock_key(key) for key in keys))
    stored: dict[str, Row[Any]] = {}
    sides: dict[TradeKey, list[TradeSide]] = {key: [] for key in keys}
    for chunk in _chunks(sorted({trade_id for _, trade_id in keys})):
        for row in connection.execute(_SIDES, {"ids": chunk}):
            key = (row.symbol, row.trade_id)
            if key in sides:
                stored[row.fill_id] = row
                sides[key].append(TradeSide(row.fill_id, row.user_id, Side(row.side)))
    # a fill stored already is a duplicate or a conflict (the writer says which), not a new side
    known = _stored_ids(connection, [fill.fill_id for _, fill in keyed])
    grown: list[TradeKey] = []
    for key, fill in keyed:
        if fill.fill_id in known:
            continue
        problem = side_problem(key, sides[key], side_of(fill))
        if problem is not None:
            match.rejected[fill.fill_id] = problem
            continue
        sides[key].append(side_of(fill))
        grown.append(key)
    earlier: list[tuple[Row[Any], str]] = []
    for key in dict.fromkeys(grown):
        trade = sides[key]
        if not is_self_trade(trade):
            continue
        first, second = trade
        for side, other in ((first, second), (second, first)):
            if side.fill_id in stored:
                earlier.append((stored[side.fill_id], other.fill_id))
            else:
                match.self_trades.add(side.fill_id)
    _refuse_taken_reversals(connection, match, earlier, {fill.fill_id for fill in incoming})
    corrections: dict[str, list[Row[Any]]] = {row.fill_id: [] for row, _ in earlier}
    for chunk in _chunks(sorted(corrections)):
        for row in connection.execute(_CORRECTIONS, {"ids": chunk}):
            corrections[row.corrects].append(row)
    match.earlier = [EarlierSide(row, tuple(corrections[row.fill_id]), partner) for row, partner in earlier]
    return match


def _refuse_taken_reversals(connection: Connection, match: TradeMatch, earlier: list[tuple[Row[Any], str]],
                            batch_ids: set[str]) -> None:
    """A counted earlier side may need a reversal (if its statement was issued). Should another
    fill hold the reversal's id, the side that completes the trade is refused: its trade cannot
    be undone honestly, and an operator must look."""
    wanted = {reversal_id(row.fill_id): row for row, _ in earlier if row.attribution == Attribution.COUNTED.value}
    taken = (set(wanted) & batch_ids) | _stored_ids(connection, sorted(wanted))
    for name in sorted(taken):
        row = wanted[name]
        partner = next(p for r, p in earlier if r.fill_id == row.fill_id)
        match.rejected[partner] = (f"trade_id: makes fill {row.fill_id!r} one side of a self-trade, but the fill_id "
                                   f"{name!r} its reversal needs is taken by another fill")
        match.self_trades.discard(partner)
        earlier[:] = [(r, p) for r, p in earlier if r.fill_id != row.fill_id]


def _stored_ids(connection: Connection, ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(ids):
        found.update(connection.execute(_STORED, {"ids": chunk}).scalars())
    return found


def _lock_key(key: TradeKey) -> int:
    digest = hashlib.blake2b("\x1f".join(("trade", *key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _chunks(items: Sequence[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield list(items[start:start + _CHUNK])
