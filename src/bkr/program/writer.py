"""The idempotent write of one batch of fills, in one transaction.

Fills come in through two doors. `write_batch` takes the rows of a file or of a request body
(`RawRow`s), each parsed by `parse_fill`. `write_decided_fills` takes the typed fills of the
venue's order entry, which judged each fill's broker when its order came in: they are never
parsed, only held to the same bounds, and their broker is not judged again. From there both
doors share every step: `_admit` prices a fill and checks it is plausible, by the USD rates and
bounds of the program version in force for the fill's month (a fill that fails is rejected with
its reason), and `_store` is the one implementation of what follows:
deduplication, conflicts, the sides of trades (`bkr.program.trades`: a self-trade counts for
nobody, and a side counted before its trade was known to be one is taken back), attribution,
the fills' rows, corrections and the running aggregates.

Each fill ends as exactly one of: accepted (stored, and counted if it is broker volume),
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
from typing import Any, TypeVar

from sqlalchemy import Connection, Row, bindparam, select, update

from bkr.domain.bounds import AMOUNT, bounded
from bkr.domain.errors import InvalidInput
from bkr.domain.fills import (
    Attribution,
    Fill,
    MarketType,
    PricedFill,
    Side,
    check_plausible,
    parse_fill,
    price_in_usd,
)
from bkr.domain.money import MONEY, ZERO, add, canonical, sub, total
from bkr.domain.payout import fee_base
from bkr.domain.periods import Month
from bkr.domain.program_versions import ProgramTimeline
from bkr.domain.registry import BrokerId
from bkr.domain.trades import reversal_id
from bkr.ingest.readers import RawRow
from bkr.program import webhooks
from bkr.program.attribution import Counted, RegistryView, add_to_aggregates, rebuild_aggregates
from bkr.program.periods import lock_open_periods
from bkr.program.standing import History, histories
from bkr.program.trades import EarlierSide, match_trades
from bkr.store.bulk import claimed_keys, insert_new_fills
from bkr.store.dialect import insert_ignoring, locked
from bkr.store.tables import fill_conflicts, fill_rejections, fills

Received = TypeVar("Received", RawRow, Fill)  # what a door receives: a row, or a typed fill


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
    self_trades: int = 0  # accepted fills of self-trades (sides, and corrections of them): counted for nobody
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, results: Sequence[RowResult]) -> None:
        for result in results:
            if result.outcome is Outcome.ACCEPTED:
                self.accepted += 1
                self.counted += result.attribution is Attribution.COUNTED
                self.awaiting_user += result.attribution is Attribution.AWAITING_USER
                self.self_trades += result.attribution is Attribution.SELF_TRADE
            elif result.outcome is Outcome.DUPLICATE:
                self.duplicates += 1
            elif result.outcome is Outcome.CONFLICT:
                self.conflicts += 1
            else:
                self.rejected += 1
                field_name = (result.reason or "").split(":", 1)[0]
                self.reasons[field_name] = self.reasons.get(field_name, 0) + 1

    def merge(self, other: "Tally") -> None:
        for name in ("accepted", "duplicates", "conflicts", "rejected", "counted", "awaiting_user", "self_trades"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for reason, count in other.reasons.items():
            self.reasons[reason] = self.reasons.get(reason, 0) + count

    def counts(self) -> dict[str, int]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "conflicts": self.conflicts,
                "rejected": self.rejected}


@dataclass(frozen=True, slots=True)
class DecidedFill:
    """A fill whose broker was judged where its order was entered, at the fill's time.

    `broker_active` says whether `fill.broker_id` was an active broker then (None: the id is not
    an enrolled broker; it is not read when the fill has no broker id). The program takes that
    decision as it is and does not read the broker's status again; the user and the affiliate
    rate still come from the registry, as for every fill."""

    fill: Fill
    broker_active: bool | None


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A fill that passed validation and pricing, on its way into `_store`."""

    position: int  # its place in the caller's batch, where its result goes
    line: int | None
    priced: PricedFill
    key: str  # the fill's content key
    received: RawRow | None  # the row of a file or body; None for a typed fill
    decided: bool  # whether its broker's standing came with it (then `broker_active`) or the registry decides it
    broker_active: bool | None = None

    @property
    def raw(self) -> str:
        """What an operator is shown of it: the row as received; a typed fill has no text, only its id."""
        return self.received.raw if self.received is not None else self.priced.fill.fill_id

    @property
    def received_fill_id(self) -> str | None:
        """The fill_id as received (a rejection keeps what was sent, before `parse_fill` trimmed it)."""
        return _fill_id_of(self.received) if self.received is not None else self.priced.fill.fill_id


class _Kept:
    """The rejections and conflicts of one batch, kept for operators and written at its end."""

    def __init__(self, source: str, now: datetime, import_id: int | None) -> None:
        self.source, self.now, self.import_id = source, now, import_id
        self.rejections: list[dict[str, Any]] = []
        self.conflicts: list[dict[str, Any]] = []

    def reject(self, line: int | None, fill_id: str | None, raw: str, reason: str) -> RowResult:
        fill_id = None if fill_id is None else _storable(fill_id)
        self.rejections.append({"import_id": self.import_id, "source": self.source, "line": line,
                                "fill_id": fill_id, "reason": reason, "raw": _storable(raw),
                                "row_key": _digest(raw, reason), "seen_at": self.now})
        return RowResult(line, fill_id, Outcome.REJECTED, reason)

    def conflict(self, candidate: _Candidate, existing: str | None, reason: str) -> RowResult:
        fill_id = candidate.priced.fill.fill_id
        self.conflicts.append({"import_id": self.import_id, "fill_id": fill_id, "existing_key": existing,
                               "incoming_key": candidate.key, "source": self.source, "line": candidate.line,
                               "raw": _storable(candidate.raw), "seen_at": self.now})
        return RowResult(candidate.line, fill_id, Outcome.CONFLICT, reason)

    def write(self, connection: Connection) -> None:
        insert_ignoring(connection, fill_rejections, self.rejections, ["row_key"])
        insert_ignoring(connection, fill_conflicts, self.conflicts, ["fill_id", "incoming_key"])


def write_batch(connection: Connection, rows: Sequence[RawRow], program: ProgramTimeline, *, source: str,
                now: datetime, import_id: int | None = None) -> list[RowResult]:
    """Validate, price, check for plausibility (against `now`), deduplicate and store one batch of
    rows, each fill under the version of `program` in force for its month. The caller owns the
    transaction. Whatever one row causes is that row's rejection."""
    kept = _Kept(source, now, import_id)
    results: list[RowResult | None] = [None] * len(rows)
    candidates: list[_Candidate] = []
    for position, row in enumerate(rows):
        admitted = _admit(_parsed, row, program, now)
        if isinstance(admitted, str):
            results[position] = kept.reject(row.line, _fill_id_of(row), row.raw, admitted)
            continue
        candidates.append(_Candidate(position, row.line, admitted, admitted.fill.content_key(), row, decided=False))
    _store(connection, candidates, results, kept)
    return [result for result in results if result is not None]


def write_decided_fills(connection: Connection, decided: Sequence[DecidedFill], program: ProgramTimeline, *,
                        source: str, now: datetime) -> list[RowResult]:
    """Check, price, deduplicate and store typed fills whose broker their order entry judged (the
    venue's), with the outcomes a file of the same fills would have: the same bounds, plausibility
    and rejections. A fill's `line` in its result is its place in `decided`, from 1. The caller
    owns the transaction."""
    kept = _Kept(source, now, None)
    results: list[RowResult | None] = [None] * len(decided)
    candidates: list[_Candidate] = []
    for position, item in enumerate(decided):
        admitted = _admit(_within_bounds, item.fill, program, now)
        if isinstance(admitted, str):
            results[position] = kept.reject(position + 1, item.fill.fill_id, item.fill.fill_id, admitted)
            continue
        candidates.append(_Candidate(position, position + 1, admitted, item.fill.content_key(), None, decided=True,
                                     broker_active=item.broker_active))
    _store(connection, candidates, results, kept)
    return [result for result in results if result is not None]


def _admit(door_check: Callable[[Received], Fill], received: Received, program: ProgramTimeline,
           now: datetime) -> PricedFill | str:
    """What both doors do to a fill before storing it: check it as its door does (a row parsed,
    a typed fill bounded), price it in USD and check it is plausible, by the program version in
    force for its month. The priced fill, or the reason it is rejected."""
    try:
        fill = door_check(received)
        config = program.config_for(fill.month)
        priced = price_in_usd(fill, config.usd_rates)
        check_plausible(priced, now, config.plausibility)
        return priced
    except InvalidInput as error:
        return str(error)
    except ArithmeticError as error:  # bounded amounts cannot cause one; if one does, it is this fill's
        return f"record: its amounts cannot be computed exactly ({type(error).__name__})"


def _parsed(row: RawRow) -> Fill:
    if row.error is not None:
        raise InvalidInput(row.error)
    assert row.values is not None
    return parse_fill(row.values)


def _within_bounds(fill: Fill) -> Fill:
    """A typed fill's amounts, held to the bounds `parse_fill` holds a row's to, with the same
    reasons: every amount that enters the program is bounded, whichever door it came in by."""
    bounded(fill.price, AMOUNT, "price")
    bounded(fill.quantity, AMOUNT, "quantity")
    bounded(fill.fee, AMOUNT, "fee")
    return fill


def _store(connection: Connection, candidates: Sequence[_Candidate], results: list[RowResult | None],
           kept: _Kept) -> None:
    """Deduplicate, attribute and store validated fills, putting each one's result at its
    position in `results`, then write what the batch keeps for operators."""
    fresh: dict[str, _Candidate] = {}  # fill_id -> the first candidate of the batch with it
    for candidate in candidates:
        fill_id = candidate.priced.fill.fill_id
        earlier = fresh.get(fill_id)
        if earlier is None:
            fresh[fill_id] = candidate
        elif earlier.key == candidate.key:
            results[candidate.position] = RowResult(candidate.line, fill_id, Outcome.DUPLICATE)
        else:
            results[candidate.position] = kept.conflict(
                candidate, earlier.key, "fill_id seen earlier in the same batch with other content")
    corrections = [c for c in fresh.values() if c.priced.fill.corrects is not None]
    new_fills = [c for c in fresh.values() if c.priced.fill.corrects is None]
    if new_fills:
        _store_fills(connection, new_fills, results, kept)
    if corrections:  # after the fills of the same batch, which they may correct
        _store_corrections(connection, sorted(corrections, key=lambda c: c.position), results, kept)
    kept.write(connection)


def _not_new(candidate: _Candidate, stored_key: str | None, kept: _Kept) -> RowResult:
    """A fill_id already stored: the same fill again, or other content kept for an operator."""
    if stored_key == candidate.key:
        return RowResult(candidate.line, candidate.priced.fill.fill_id, Outcome.DUPLICATE)
    return kept.conflict(candidate, stored_key, "fill_id already stored with other content")


def _store_fills(connection: Connection, candidates: Sequence[_Candidate], results: list[RowResult | None],
                 kept: _Kept) -> None:
    """Store new fills (not corrections): matched with the other sides of their trades,
    attributed, in the period that pays them, and added to the aggregates if they count."""
    trades = match_trades(connection, [c.priced.fill for c in sorted(candidates, key=lambda c: c.position)])
    for candidate in candidates:
        reason = trades.rejected.get(candidate.priced.fill.fill_id)
        if reason is not None:
            results[candidate.position] = kept.reject(candidate.line, candidate.received_fill_id, candidate.raw,
                                                      reason)
    ordered = sorted((c for c in candidates if c.priced.fill.fill_id not in trades.rejected),
                     key=lambda c: c.priced.fill.fill_id)  # one lock order for every writer
    months = {c.priced.fill.fill_id: c.priced.fill.month for c in ordered}
    targets = lock_open_periods(connection, set(months.values()) | trades.periods)
    view = RegistryView.load(connection,
                             (c.priced.fill.broker_id for c in ordered
                              if c.priced.fill.broker_id is not None and not c.decided),
                             (c.priced.fill.user_id for c in ordered))
    records = []
    attributed: dict[str, tuple[Attribution, Decimal | None]] = {}
    for candidate in ordered:
        fill = candidate.priced.fill
        self_trade = fill.fill_id in trades.self_trades
        if candidate.decided:
            attribution, rate = view.attribute_decided(fill.broker_id, candidate.broker_active, fill.fill_type,
                                                       fill.via_api, fill.user_id, fill.timestamp, self_trade)
        else:
            attribution, rate = view.attribute(fill.broker_id, fill.fill_type, fill.via_api, fill.user_id,
                                               fill.timestamp, self_trade)
        attributed[fill.fill_id] = (attribution, rate)
        records.append(_fill_record(candidate.priced, candidate.key, attribution, rate, months[fill.fill_id],
                                    targets[months[fill.fill_id]], kept.import_id))
    inserted = insert_new_fills(connection, records)
    stored: dict[str, str] = {}
    missing = [c.priced.fill.fill_id for c in ordered if c.priced.fill.fill_id not in inserted]
    if missing:
        stored = claimed_keys(connection, missing)
    counted: list[Counted] = []
    for candidate in ordered:
        priced = candidate.priced
        fill = priced.fill
        if fill.fill_id in inserted:
            attribution, rate = attributed[fill.fill_id]
            results[candidate.position] = RowResult(candidate.line, fill.fill_id, Outcome.ACCEPTED,
                                                    attribution=attribution)
            if attribution is Attribution.COUNTED:
                assert fill.broker_id is not None and rate is not None
                month = months[fill.fill_id]
                counted.append(Counted(fill.broker_id, targets[month], month, fill.timestamp.date().isoformat(),
                                       fill.user_id, fill.market_type.value, rate, priced.volume_usd, priced.fee_usd))
        else:
            results[candidate.position] = _not_new(candidate, stored.get(fill.fill_id), kept)
    add_to_aggregates(connection, counted)
    webhooks.note_counted(connection, counted, kept.now)
    _uncount(connection, [side for side in trades.earlier if side.partner in inserted], targets, kept.import_id)


def _uncount(connection: Connection, earlier: Sequence[EarlierSide], targets: Mapping[Month, Month],
             import_id: int | None) -> None:
    """Take back what the earlier sides of this batch's self-trades counted. A side that was not
    counted, or whose period is still open, becomes `self_trade` with its corrections, and the
    aggregates of the periods they were counted in are rebuilt without them. A side already on
    an issued statement stays as that statement paid it: a correction of it (its reversal), paid
    in the next open period as corrections are, takes back what it and its corrections counted."""
    if not earlier:
        return
    flips: list[dict[str, Any]] = []
    touched: set[tuple[int, Month]] = set()
    reversals: list[dict[str, Any]] = []
    counted: list[Counted] = []
    history = histories(connection, sorted(side.fill.fill_id for side in earlier))
    for side in earlier:
        fill = side.fill
        still_open = targets[fill.period] == fill.period
        standing = history[fill.fill_id].standing(fill)
        if still_open or (fill.attribution != Attribution.COUNTED.value and standing is None):
            flips += [{"key": fill_id, "attribution": Attribution.SELF_TRADE.value, "affiliate_rate": None}
                      for fill_id in (fill.fill_id, *(c.fill_id for c in side.corrections))]
            if fill.attribution == Attribution.COUNTED.value:
                touched.update((fill.broker_id, period) for period in side.periods)
            continue
        if standing is None:  # paid, then taken back by a retroactive change: nothing counts to take back
            continue
        reversal = _reversal(side, history[fill.fill_id], targets[fill.period], import_id)
        if reversal is not None:
            reversals.append(reversal[0])
            counted.append(reversal[1])
    if flips:
        connection.execute(update(fills).where(fills.c.fill_id == bindparam("key"))
                           .values(attribution=bindparam("attribution"), affiliate_rate=bindparam("affiliate_rate")),
                           flips)
    rebuild_aggregates(connection, touched)
    inserted = insert_new_fills(connection, reversals)
    assert len(inserted) == len(reversals)  # their ids were checked free, under the trades' locks
    add_to_aggregates(connection, counted)


def _reversal(side: EarlierSide, history: History, period: Month,
              import_id: int | None) -> tuple[dict[str, Any], Counted] | None:
    """The correction that takes back what a side paid on an issued statement counted, with its
    corrections, at the rate it stands at (a retroactive change may have moved it), or None if
    they add up to nothing."""
    rate = history.standing(side.fill)
    assert rate is not None  # a side that counts for nobody is not reversed, only marked
    return standing_correction(side.fill, history.corrections, reversal_id(side.fill.fill_id), taken_back=True,
                               rate=rate, period=period, import_id=import_id)


def standing_correction(fill: Row[Any], corrections: Sequence[Row[Any]], fill_id: str, *, taken_back: bool,
                        rate: Decimal, period: Month, import_id: int | None,
                        retroactive: bool = False) -> tuple[dict[str, Any], Counted] | None:
    """A correction bkr writes of a fill paid on an issued statement, named `fill_id`: its whole
    standing (the fill with its corrections, at the amounts in USD they were counted at), negated
    if `taken_back`, counted at `rate` in `period`; its record and what it adds to the
    aggregates, or None if the standing adds up to nothing (busted already)."""
    rows = (fill, *corrections)
    quantity, fee = total(r.quantity for r in rows), total(r.fee for r in rows)
    volume, fee_usd = total(r.volume_usd for r in rows), total(r.fee_usd for r in rows)
    base = sub(fee_base(fee_usd), fee_base(ZERO))
    if not any((quantity, fee, volume, fee_usd, base)):
        return None
    signed = MONEY.minus if taken_back else MONEY.plus
    correction = Fill(fill_id=fill_id, order_id=fill.order_id, user_id=fill.user_id,
                      symbol=fill.symbol, market_type=MarketType(fill.market_type), side=Side(fill.side),
                      price=fill.price, quantity=signed(quantity), fee=signed(fee),
                      fee_symbol=fill.fee_symbol, is_maker=fill.is_maker, timestamp=fill.ts,
                      broker_id=BrokerId(fill.broker_id), via_api=fill.via_api, fill_type=fill.fill_type,
                      corrects=fill.fill_id, trade_id=fill.trade_id)
    priced = PricedFill(correction, signed(volume), signed(fee_usd))
    base_change = signed(base)
    record = (_fill_record(priced, correction.content_key(), Attribution.COUNTED, rate, fill.fill_month, period,
                           import_id)
              | {"corrects": fill.fill_id, "fee_base_usd": base_change})
    return record, Counted(fill.broker_id, period, fill.fill_month, fill.ts.date().isoformat(), fill.user_id,
                           fill.market_type, rate, priced.volume_usd, priced.fee_usd, True, base_change,
                           retroactive)


# What a correction must repeat of the fill it corrects: it restates the same trade.
_SAME_TRADE = ("order_id", "user_id", "symbol", "market_type", "side", "price", "fee_symbol", "is_maker",
               "timestamp", "broker_id", "via_api", "fill_type", "trade_id")
_ORIGINAL = select(fills.c.fill_id, fills.c.order_id, fills.c.user_id, fills.c.symbol, fills.c.market_type,
                   fills.c.side, fills.c.price, fills.c.fee_symbol, fills.c.is_maker, fills.c.ts.label("timestamp"),
                   fills.c.broker_id, fills.c.via_api, fills.c.fill_type, fills.c.trade_id, fills.c.quantity,
                   fills.c.fee_usd, fills.c.attribution, fills.c.affiliate_rate, fills.c.fill_month, fills.c.period,
                   fills.c.corrects)


def _store_corrections(connection: Connection, corrections: Sequence[_Candidate], results: list[RowResult | None],
                       kept: _Kept) -> None:
    """Store the corrections of one batch, in the order they came (each builds on the last).

    A correction already stored is a duplicate (or a conflict), exactly like a fill; a new one
    takes the attribution and rate of the fill it corrects and is paid in that fill's period if
    still open, else in the next open one: the paid statement stays as it was, and the next
    one shows the difference. The corrected fills are locked first, so that concurrent
    corrections of one fill apply one after the other, each on top of the last, and a
    correction sent twice at once is stored once. A correction of a side of a self-trade counts
    for nobody, like its fill: also when that fill was paid before its trade was known to be one,
    and its reversal (`bkr.domain.trades.reversal_id`) took back what it counted."""
    targets = sorted({c.priced.fill.corrects for c in corrections if c.priced.fill.corrects is not None})
    originals = {r.fill_id: r for r in connection.execute(
        locked(_ORIGINAL.where(fills.c.fill_id.in_(targets)).order_by(fills.c.fill_id)))}
    stored = claimed_keys(connection, [c.priced.fill.fill_id for c in corrections])
    archived = set(claimed_keys(connection, [fill_id for fill_id in targets if fill_id not in originals]))
    new = []
    for candidate in corrections:
        if candidate.priced.fill.fill_id in stored:
            results[candidate.position] = _not_new(candidate, stored[candidate.priced.fill.fill_id], kept)
        else:
            new.append(candidate)
    if not new:
        return
    # each corrected fill as it stands: its quantity and fee with every stored correction applied
    # (a self-trade reversal and retroactive corrections move what the fill counted, not the trade:
    # they are no part of its quantity and fee, but they decide its standing)
    history = histories(connection, sorted(originals))
    state: dict[str, tuple[Decimal, Decimal]] = {
        fill_id: (total([r.quantity, *(c.quantity for c in history[fill_id].corrections)]),
                  total([r.fee_usd, *(c.fee_usd for c in history[fill_id].corrections)]))
        for fill_id, r in originals.items()}
    moved = _moved_attributions(connection, originals, history)
    periods = lock_open_periods(connection, {r.period for r in originals.values()})
    records: list[dict[str, Any]] = []
    accepted: list[tuple[_Candidate, Attribution, Counted | None]] = []
    for candidate in new:
        priced = candidate.priced
        fill = priced.fill
        original = originals.get(fill.corrects or "")
        reason = _correction_problem(fill, original, state, archived)
        if reason is not None:
            results[candidate.position] = kept.reject(candidate.line, candidate.received_fill_id, candidate.raw,
                                                      reason)
            continue
        assert original is not None
        quantity, fee = state[original.fill_id]
        after = (add(quantity, fill.quantity), add(fee, priced.fee_usd))
        state[original.fill_id] = after
        base_change = sub(fee_base(after[1]), fee_base(fee))
        period = periods[original.period]
        attribution, rate = moved.get(original.fill_id, (Attribution(original.attribution), original.affiliate_rate))
        rate = rate if attribution is Attribution.COUNTED else None
        records.append(_fill_record(priced, candidate.key, attribution, rate, fill.month, period, kept.import_id)
                       | {"corrects": original.fill_id, "fee_base_usd": base_change})
        counted = None
        if attribution is Attribution.COUNTED:
            assert fill.broker_id is not None
            counted = Counted(fill.broker_id, period, original.fill_month,
                              fill.timestamp.date().isoformat(), fill.user_id, fill.market_type.value,
                              original.affiliate_rate, priced.volume_usd, priced.fee_usd, True, base_change)
        accepted.append((candidate, attribution, counted))
    inserted = insert_new_fills(connection, records)
    counted_now = []
    for candidate, attribution, counted in accepted:
        # none are stored yet (checked above, under the locks), so every one goes in
        assert candidate.priced.fill.fill_id in inserted
        results[candidate.position] = RowResult(candidate.line, candidate.priced.fill.fill_id, Outcome.ACCEPTED,
                                                attribution=attribution)
        if counted is not None:
            counted_now.append(counted)
    add_to_aggregates(connection, counted_now)
    webhooks.note_counted(connection, counted_now, kept.now)


def _moved_attributions(connection: Connection, originals: Mapping[str, Row[Any]],
                        history: Mapping[str, History]) -> dict[str, tuple[Attribution, Decimal | None]]:
    """The attribution and rate a correction takes of a fill that no longer stands as stored: a
    side of a self-trade reversed after its statement counts for nobody; a fill a retroactive
    change moved stands as its latest retroactive correction left it (counted at its rate, or,
    taken back, as the registry now judges it)."""
    moved: dict[str, tuple[Attribution, Decimal | None]] = {}
    judged = [r for fill_id, r in originals.items() if history[fill_id].latest_entry and not history[fill_id].reversed]
    view = RegistryView.load(connection, (r.broker_id for r in judged if r.broker_id is not None),
                             (r.user_id for r in judged)) if judged else None
    for fill_id, original in originals.items():
        if history[fill_id].reversed:
            moved[fill_id] = (Attribution.SELF_TRADE, None)
        elif history[fill_id].latest_entry:
            rate = history[fill_id].latest_rate
            assert view is not None
            moved[fill_id] = ((Attribution.COUNTED, rate) if rate is not None else
                              (view.attribute(original.broker_id, original.fill_type, original.via_api,
                                              original.user_id, original.timestamp)[0], None))
    return moved


def _correction_problem(fill: Fill, original: Row[Any] | None, state: Mapping[str, tuple[Decimal, Decimal]],
                        archived: set[str]) -> str | None:
    """Why a correction cannot apply to the fill it names, or None. `archived`: fill ids that were
    stored and whose rows went to an archive with their month (`bkr.program.archive`)."""
    if original is None and fill.corrects in archived:
        return (f"corrects: fill {fill.corrects!r} was archived with its month (bkr fills archive): its stored "
                "standing is no longer at hand, so a correction of it cannot be applied here")
    if original is None:
        return f"corrects: no fill {fill.corrects!r} is stored; send a fill before its corrections"
    if original.corrects is not None:
        return f"corrects: {fill.corrects!r} is itself a correction (of {original.corrects!r}); correct that fill"
    if fill.fill_id == reversal_id(original.fill_id):
        return (f"fill_id: {fill.fill_id!r} is the name bkr gives the reversal of a self-trade's side; "
                "give the correction another fill_id")
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
                 period: Month, import_id: int | None) -> dict[str, Any]:
    fill = priced.fill
    return {
        "fill_id": fill.fill_id, "order_id": fill.order_id, "user_id": fill.user_id, "symbol": fill.symbol,
        "market_type": fill.market_type.value, "side": fill.side.value, "price": fill.price,
        "quantity": fill.quantity, "fee": fill.fee, "fee_symbol": fill.fee_symbol, "is_maker": fill.is_maker,
        "ts": fill.timestamp, "broker_id": fill.broker_id, "via_api": fill.via_api, "fill_type": fill.fill_type,
        "volume_usd": priced.volume_usd, "fee_usd": priced.fee_usd, "content_key": key,
        "attribution": attribution.value, "affiliate_rate": rate, "fill_month": month,
        "period": period, "import_id": import_id, "corrects": None, "fee_base_usd": None, "trade_id": fill.trade_id,
    }


def _fill_id_of(row: RawRow) -> str | None:
    value = row.values.get("fill_id") if row.values else None
    return None if value is None else str(value)


def _storable(text: str) -> str:
    """Text as kept for an operator: a NUL (which PostgreSQL cannot store) written visibly."""
    return text.replace("\x00", "\\u0000")


def _digest(*parts: str) -> str:
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()
