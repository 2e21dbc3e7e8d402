"""The idempotent write of one batch of fills, in one transaction.

Each row ends as exactly one of: accepted (stored, and counted if it is broker volume),
duplicate (the same fill is already stored: nothing changes), conflict (the same `fill_id`
with other content: kept for an operator, not applied) or rejected (with its reason). A
batch commits whole or not at all, so a crash loses nothing that was acknowledged and a
retry applies nothing twice: rows that made it in are duplicates the second time.
"""

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Row, select

from bkr.domain.errors import InvalidInput
from bkr.domain.fills import Attribution, Fill, PricedFill, parse_fill, price_in_usd
from bkr.domain.money import add, canonical, sub
from bkr.domain.payout import fee_base
from bkr.domain.periods import Month
from bkr.ingest.readers import RawRow
from bkr.program.attribution import Counted, RegistryView, add_to_aggregates
from bkr.program.periods import lock_open_periods
from bkr.store.bulk import insert_new_fills
from bkr.store.dialect import insert_ignoring, locked
from bkr.store.tables import fill_conflicts, fill_rejections, fills


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class RowResult:
    line: int | None
    fill_id: str | None
    outcome: Outcome
    reason: str | None = None
    attribution: Attribution | None = None


@dataclass
class Tally:
    accepted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    rejected: int = 0
    counted: int = 0  # accepted fills that are broker volume
    awaiting_user: int = 0  # accepted broker fills whose user bkr does not know yet
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, results: Sequence[RowResult]) -> None:
        for result in results:
            if result.outcome is Outcome.ACCEPTED:
                self.accepted += 1
                self.counted += result.attribution is Attribution.COUNTED
                self.awaiting_user += result.attribution is Attribution.AWAITING_USER
            elif result.outcome is Outcome.DUPLICATE:
                self.duplicates += 1
            elif result.outcome is Outcome.CONFLICT:
                self.conflicts += 1
            else:
                self.rejected += 1
                field_name = (result.reason or "").split(":", 1)[0]
                self.reasons[field_name] = self.reasons.get(field_name, 0) + 1

    def counts(self) -> dict[str, int]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "conflicts": self.conflicts,
                "rejected": self.rejected}


def write_batch(connection: Connection, rows: Sequence[RawRow], usd_rates: Mapping[str, Decimal], *,
                source: str, now: datetime, import_id: int | None = None) -> list[RowResult]:
    """Validate, price, deduplicate and store one batch. The caller owns the transaction."""
    results: list[RowResult | None] = [None] * len(rows)
    rejections: list[dict[str, Any]] = []
    candidates: dict[str, tuple[int, PricedFill, str]] = {}  # fill_id -> (row index, fill, content key)
    conflicts: list[dict[str, Any]] = []

    def reject(index: int, reason: str) -> None:
        row = rows[index]
        fill_id = _fill_id_of(row)
        fill_id = None if fill_id is None else _storable(fill_id)
        results[index] = RowResult(row.line, fill_id, Outcome.REJECTED, reason)
        rejections.append({"import_id": import_id, "source": source, "line": row.line, "fill_id": fill_id,
                           "reason": reason, "raw": _storable(row.raw), "row_key": _digest(row.raw, reason),
                           "seen_at": now})

    def not_new(index: int, fill_id: str, stored_key: str | None, key: str) -> None:
        """A fill_id already stored: the same fill again, or other content kept for an operator."""
        row = rows[index]
        if stored_key == key:
            results[index] = RowResult(row.line, fill_id, Outcome.DUPLICATE)
        else:
            results[index] = RowResult(row.line, fill_id, Outcome.CONFLICT, "fill_id already stored with other content")
            conflicts.append(_conflict_row(import_id, source, row, fill_id, stored_key, key, now))

    for index, row in enumerate(rows):
        try:
            if row.error is not None:
                raise InvalidInput(row.error)
            assert row.values is not None
            priced = price_in_usd(parse_fill(row.values), usd_rates)
        except InvalidInput as error:
            reject(index, str(error))
            continue
        key = priced.fill.content_key()
        earlier = candidates.get(priced.fill.fill_id)
        if earlier is None:
            candidates[priced.fill.fill_id] = (index, priced, key)
        elif earlier[2] == key:
            results[index] = RowResult(row.line, priced.fill.fill_id, Outcome.DUPLICATE)
        else:
            results[index] = RowResult(row.line, priced.fill.fill_id, Outcome.CONFLICT,
                                       "fill_id seen earlier in the same batch with other content")
            conflicts.append(_conflict_row(import_id, source, row, priced.fill.fill_id, earlier[2], key, now))

    corrections = {fill_id: c for fill_id, c in candidates.items() if c[1].fill.corrects is not None}
    candidates = {fill_id: c for fill_id, c in candidates.items() if fill_id not in corrections}
    if candidates:
        ordered = sorted(candidates.values(), key=lambda c: c[1].fill.fill_id)  # one lock order for every writer
        months = {fill_id: c[1].fill.month for fill_id, c in candidates.items()}
        targets = lock_open_periods(connection, set(months.values()))
        view = RegistryView.load(connection,
                                 (c[1].fill.broker_id for c in ordered if c[1].fill.broker_id is not None),
                                 (c[1].fill.user_id for c in ordered))
        records = []
        decided: dict[str, tuple[Attribution, Decimal | None]] = {}
        for _, priced, key in ordered:
            fill = priced.fill
            attribution, rate = view.attribute(fill.broker_id, fill.fill_type, fill.via_api, fill.user_id,
                                               fill.timestamp)
            decided[fill.fill_id] = (attribution, rate)
            records.append(_fill_record(priced, key, attribution, rate, months[fill.fill_id],
                                        str(targets[months[fill.fill_id]]), import_id))
        inserted = insert_new_fills(connection, records)
        stored: dict[str, str] = {}
        missing = [c[1].fill.fill_id for c in ordered if c[1].fill.fill_id not in inserted]
        if missing:
            stored = dict(connection.execute(
                select(fills.c.fill_id, fills.c.content_key).where(fills.c.fill_id.in_(missing))).all())
        counted: list[Counted] = []
        for index, priced, key in ordered:
            fill = priced.fill
            if fill.fill_id in inserted:
                attribution, rate = decided[fill.fill_id]
                results[index] = RowResult(rows[index].line, fill.fill_id, Outcome.ACCEPTED, attribution=attribution)
                if attribution is Attribution.COUNTED:
                    assert fill.broker_id is not None and rate is not None
                    month = months[fill.fill_id]
                    counted.append(Counted(fill.broker_id, targets[month], month, fill.timestamp.date().isoformat(),
                                           fill.user_id,
                                           fill.market_type.value, rate, priced.volume_usd, priced.fee_usd))
            else:
                not_new(index, fill.fill_id, stored.get(fill.fill_id), key)
        add_to_aggregates(connection, counted)
    if corrections:  # after the fills of the same batch, which they may correct
        _write_corrections(connection, rows, sorted(corrections.values()), results, reject, not_new,
                           import_id=import_id)

    insert_ignoring(connection, fill_rejections, rejections, ["row_key"])
    insert_ignoring(connection, fill_conflicts, conflicts, ["fill_id", "incoming_key"])
    return [result for result in results if result is not None]


# What a correction must repeat of the fill it corrects: it restates the same trade.
_SAME_TRADE = ("order_id", "user_id", "symbol", "market_type", "side", "price", "fee_symbol", "is_maker",
               "timestamp", "broker_id", "via_api", "fill_type")
_ORIGINAL = select(fills.c.fill_id, fills.c.order_id, fills.c.user_id, fills.c.symbol, fills.c.market_type,
                   fills.c.side, fills.c.price, fills.c.fee_symbol, fills.c.is_maker, fills.c.ts.label("timestamp"),
                   fills.c.broker_id, fills.c.via_api, fills.c.fill_type, fills.c.quantity, fills.c.fee_usd,
                   fills.c.attribution, fills.c.affiliate_rate, fills.c.fill_month, fills.c.period, fills.c.corrects)


def _write_corrections(connection: Connection, rows: Sequence[RawRow],
                       corrections: Sequence[tuple[int, PricedFill, str]], results: list[RowResult | None],
                       reject: Callable[[int, str], None], not_new: Callable[[int, str, str | None, str], None],
                       *, import_id: int | None) -> None:
    """Store the corrections of one batch, in the order they came (each builds on the last).

    A correction already stored is a duplicate (or a conflict), exactly like a fill; a new one
    takes the attribution and rate of the fill it corrects and is paid in that fill's period if
    still open, else in the next open one: the paid statement stays as it was, and the next
    one shows the difference. The corrected fills are locked first, so that concurrent
    corrections of one fill apply one after the other, each on top of the last, and a
    correction sent twice at once is stored once."""
    targets = sorted({c[1].fill.corrects for c in corrections if c[1].fill.corrects is not None})
    originals = {r.fill_id: r for r in connection.execute(
        locked(_ORIGINAL.where(fills.c.fill_id.in_(targets)).order_by(fills.c.fill_id)))}
    ids = [c[1].fill.fill_id for c in corrections]
    stored = dict(connection.execute(
        select(fills.c.fill_id, fills.c.content_key).where(fills.c.fill_id.in_(ids))).all())
    new = []
    for index, priced, key in corrections:
        if priced.fill.fill_id in stored:
            not_new(index, priced.fill.fill_id, stored[priced.fill.fill_id], key)
        else:
            new.append((index, priced, key))
    if not new:
        return
    # each corrected fill as it stands: its quantity and fee with every stored correction applied
    state: dict[str, tuple[Decimal, Decimal]] = {fill_id: (r.quantity, r.fee_usd) for fill_id, r in originals.items()}
    for earlier in connection.execute(select(fills.c.corrects, fills.c.quantity, fills.c.fee_usd)
                                      .where(fills.c.corrects.in_(sorted(originals)))):
        quantity, fee = state[earlier.corrects]
        state[earlier.corrects] = (add(quantity, earlier.quantity), add(fee, earlier.fee_usd))
    periods = lock_open_periods(connection, {Month.parse(r.period) for r in originals.values()})
    records: list[dict[str, Any]] = []
    accepted: list[tuple[int, PricedFill, Attribution, Counted | None]] = []
    for index, priced, key in sorted(new):
        fill = priced.fill
        original = originals.get(fill.corrects or "")
        reason = _correction_problem(fill, original, state)
        if reason is not None:
            reject(index, reason)
            continue
        assert original is not None
        quantity, fee = state[original.fill_id]
        after = (add(quantity, fill.quantity), add(fee, priced.fee_usd))
        state[original.fill_id] = after
        base_change = sub(fee_base(after[1]), fee_base(fee))
        period = periods[Month.parse(original.period)]
        attribution = Attribution(original.attribution)
        records.append(_fill_record(priced, key, attribution, original.affiliate_rate, fill.month, str(period),
                                    import_id) | {"corrects": original.fill_id, "fee_base_usd": base_change})
        counted = None
        if attribution is Attribution.COUNTED:
            assert fill.broker_id is not None
            counted = Counted(fill.broker_id, period, Month.parse(original.fill_month),
                              fill.timestamp.date().isoformat(), fill.user_id, fill.market_type.value,
                              original.affiliate_rate, priced.volume_usd, priced.fee_usd, True, base_change)
        accepted.append((index, priced, attribution, counted))
    inserted = insert_new_fills(connection, records)
    counted_now = []
    for index, priced, attribution, counted in accepted:
        # none are stored yet (checked above, under the locks), so every one goes in
        assert priced.fill.fill_id in inserted
        results[index] = RowResult(rows[index].line, priced.fill.fill_id, Outcome.ACCEPTED, attribution=attribution)
        if counted is not None:
            counted_now.append(counted)
    add_to_aggregates(connection, counted_now)


def _correction_problem(fill: Fill, original: Row[Any] | None,
                        state: Mapping[str, tuple[Decimal, Decimal]]) -> str | None:
    """Why a correction cannot apply to the fill it names, or None."""
    if original is None:
        return f"corrects: no fill {fill.corrects!r} is stored; send a fill before its corrections"
    if original.corrects is not None:
        return f"corrects: {fill.corrects!r} is itself a correction (of {original.corrects!r}); correct that fill"
    for name in _SAME_TRADE:
        mine, theirs = getattr(fill, name), getattr(original, name)
        if isinstance(mine, StrEnum):
            mine = mine.value
        if mine != theirs:
            return (f"corrects: {name} differs from fill {original.fill_id!r}'s "
                    f"({_shown(mine)} here, {_shown(theirs)} there)")
    quantity, _ = state[original.fill_id]
    if add(quantity, fill.quantity) < 0:
        return (f"quantity: would take fill {original.fill_id!r} below zero "
                f"(it stands at {canonical(quantity)}; this changes it by {canonical(fill.quantity)})")
    return None


def _shown(value: object) -> str:
    if isinstance(value, Decimal):
        return canonical(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return repr(value)


def _fill_record(priced: PricedFill, key: str, attribution: Attribution, rate: Decimal | None, month: Month,
                 period: str, import_id: int | None) -> dict[str, Any]:
    fill = priced.fill
    return {
        "fill_id": fill.fill_id, "order_id": fill.order_id, "user_id": fill.user_id, "symbol": fill.symbol,
        "market_type": fill.market_type.value, "side": fill.side.value, "price": fill.price,
        "quantity": fill.quantity, "fee": fill.fee, "fee_symbol": fill.fee_symbol, "is_maker": fill.is_maker,
        "ts": fill.timestamp, "broker_id": fill.broker_id, "via_api": fill.via_api, "fill_type": fill.fill_type,
        "volume_usd": priced.volume_usd, "fee_usd": priced.fee_usd, "content_key": key,
        "attribution": attribution.value, "affiliate_rate": rate, "fill_month": str(month),
        "period": period, "import_id": import_id, "corrects": None, "fee_base_usd": None,
    }


def _conflict_row(import_id: int | None, source: str, row: RawRow, fill_id: str, existing: str | None,
                  incoming: str, now: datetime) -> dict[str, Any]:
    return {"import_id": import_id, "fill_id": fill_id, "existing_key": existing, "incoming_key": incoming,
            "source": source, "line": row.line, "raw": _storable(row.raw), "seen_at": now}


def _fill_id_of(row: RawRow) -> str | None:
    value = row.values.get("fill_id") if row.values else None
    return None if value is None else str(value)


def _storable(text: str) -> str:
    """Text as kept for an operator: a NUL (which PostgreSQL cannot store) written visibly."""
    return text.replace("\x00", "\\u0000")


def _digest(*parts: str) -> str:
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()
