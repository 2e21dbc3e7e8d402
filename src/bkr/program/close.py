"""Closing a month: tiers, payouts, one statement per broker, written once.

`close_month` is the only computation of a statement: `dry_run=True` runs it to the end and
rolls back, so the preview cannot drift from the real close. A closed month answers with the
statements it stored, byte for byte (`statements.document` is the statement's canonical JSON,
`bkr.domain.statement_document`). On PostgreSQL the month's period row is locked for
update, so concurrent closes (any number of replicas) produce one result, and ingestion,
which holds a shared lock on the periods it writes into, is routed to the next open month
once the close has committed (see `bkr.program.periods`).

A month is closed under the program version in force for it (`bkr.program.settings_versions`),
read from the database in the close's transaction; every statement names that version and
carries what it was computed with (the terms, the volume its tier was decided by, the tier of each
earlier month it has lines of). A late fill's adjustment line is priced at the tier its own month
was paid at, under that month's version.
"""

import gc
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, Select, bindparam, func, insert, select, update

from bkr.domain.config import ProgramConfig, TierBasis
from bkr.domain.errors import PeriodNotEnded, StatementNotIssued
from bkr.domain.fills import Attribution, MarketType
from bkr.domain.money import ZERO, total
from bkr.domain.operators import SYSTEM
from bkr.domain.periods import Month
from bkr.domain.program_versions import ProgramTimeline
from bkr.domain.statement_document import parse_statement, statement_json
from bkr.domain.statements import (
    AggregateLine,
    BrokerStatement,
    StatementLine,
    api_volumes,
    build_statement,
    carried_out,
    fill_months,
    paying_tier,
    price_lines,
)
from bkr.domain.tiers import Tier
from bkr.program import audit, webhooks
from bkr.program.close_order import check_closable, close_empty_months_before
from bkr.program.settings_versions import hold_timeline, load_timeline
from bkr.store.dialect import driver_batches, insert_ignoring, locked
from bkr.store.tables import aggregate_totals, aggregates, fills, periods, statements


@dataclass(frozen=True, slots=True)
class CloseResult:
    month: Month
    already_closed: bool
    dry_run: bool
    statements: tuple[BrokerStatement, ...]  # one per broker, by broker id: computed, or read back if closed
    awaiting_user_fills: int  # broker fills of the month that cannot be paid until their user is known
    # the month is in progress: the statements it would issue if it ended now (a dry run only)
    projection: bool = False

    def to_document(self, *, with_lines: bool = False) -> dict[str, Any]:
        return {
            "month": str(self.month),
            "already_closed": self.already_closed,
            "dry_run": self.dry_run,
            "projection": self.projection,
            "awaiting_user_fills": self.awaiting_user_fills,
            "statements": [s.to_document() if with_lines else s.to_document(with_lines=False)
                           | {"line_count": len(s.lines)} for s in self.statements],
        }


def close_month(engine: Engine, month: Month, *, now: datetime, dry_run: bool = False,
                actor: str = SYSTEM) -> CloseResult:
    """`actor` is who closes: an authenticated operator's name, or `system` (the scheduler),
    recorded as the month's `closed_by` (see `settlement.barred_from_approving`)."""
    with _cyclic_gc_paused():
        return _close_month(engine, month, now=now, dry_run=dry_run, actor=actor)


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """A large month's close makes millions of tuples that form no cycles (two per line), and
    the cyclic collector, triggered by their number, walks them again and again as they pile
    up: half the close's time at two million lines. Reference counting frees them as ever; the
    collector resumes (process-wide, as it is paused) when the close ends."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _close_month(engine: Engine, month: Month, *, now: datetime, dry_run: bool, actor: str) -> CloseResult:
    current = Month.of(now)
    if month == current and dry_run:
        return _projection(engine, month)
    if month >= current:
        hint = "; preview it with a dry run" if month == current else ""
        raise PeriodNotEnded(f"{month} has not ended yet (it is {now:%Y-%m-%d %H:%M} UTC); "
                             f"a month is closed from the 1st of the next{hint}")
    with engine.connect() as connection, connection.begin() as transaction:
        program = hold_timeline(connection)  # before the period's lock, as a batch of fills takes them
        if not dry_run:
            insert_ignoring(connection, periods, [{"month": month}], ["month"])
        status = connection.execute(locked(select(periods.c.status).where(periods.c.month == month))).scalar()
        awaiting = _awaiting_user(connection, month)
        if status == "closed":
            return CloseResult(month, True, dry_run, tuple(issued_statements(connection, month)), awaiting)
        check_closable(connection, program.config_for(month), month)
        computed = tuple(compute_statements(connection, month, program=program))
        if dry_run:
            transaction.rollback()
            return CloseResult(month, False, True, computed, awaiting)
        if computed:
            connection.execute(insert(statements), [
                {"broker_id": s.broker_id, "month": month, "tier_level": s.tier_level,
                 "broker_rate": s.broker_rate, "api_volume": s.api_volume, "payout_exact": s.payout_exact,
                 "carried_in": s.carried_in, "payout": s.payout, "document": statement_json(s),
                 "created_at": now}
                for s in computed])
            for statement in computed:
                webhooks.statement_issued(connection, statement, now)
        close_empty_months_before(connection, month, now)
        connection.execute(update(periods).where(periods.c.month == month)
                           .values(status="closed", closed_at=now, closed_by=actor))
        audit.record(connection, actor=actor, action="month.close", subject=str(month), at=now,
                     after={"statements": len(computed), "total_payout": total(s.payout for s in computed)})
        return CloseResult(month, False, False, computed, awaiting)


def _projection(engine: Engine, month: Month) -> CloseResult:
    """The month in progress as the close would issue it if it ended now: the close's own
    computation over the running totals, read in one snapshot and writing nothing. Earlier months
    still open do not stop it (they stop the real close); their carries are not in it yet."""
    with engine.connect() as connection, connection.begin():
        computed = tuple(compute_statements(connection, month))
        return CloseResult(month, False, True, computed, _awaiting_user(connection, month), projection=True)


def compute_statements(connection: Connection, month: Month, broker_id: int | None = None, *,
                       per_user: bool = True, program: ProgramTimeline | None = None) -> list[BrokerStatement]:
    """The statements of `month` from its aggregates (regular lines, late-fill adjustments and
    corrections), each carrying in what the broker's previous statement left to recover, under
    the program version in force for `month` (`program`: the versions, read if not given). On an
    open month this is the projection "if the month ended now".

    `per_user=False` gives the same statements with the users' lines merged per (fill month,
    market type, affiliate rate): every total is identical, digit for digit (a line's payout is
    its fee base times a rate shared by the merged lines, and rounding happens once, on the
    total), at a cost that does not grow with the broker's users. For figures, not documents."""
    by_broker: dict[int, list[AggregateLine]] = defaultdict(list)
    source = _aggregate_lines(connection, month, broker_id) if per_user else _merged_lines(connection, month, broker_id)
    for line in source:
        by_broker[line.broker_id].append(line)
    owed = carries(connection, month, broker_id)
    for broker in owed:  # a broker still owing a shortfall gets a statement without volume, too
        by_broker.setdefault(broker, [])
    program = program or load_timeline(connection)
    version = program.in_force(month)
    config = version.config
    result = []
    for broker in sorted(by_broker):
        lines = by_broker[broker]
        tier, prior, previous = _pricing(connection, program, month, broker, lines)
        result.append(build_statement(config, broker, month, lines, tier, prior, owed.get(broker, ZERO),
                                      version=version.number, previous_volume=previous))
    return result


def _pricing(connection: Connection, program: ProgramTimeline, month: Month, broker_id: int,
             lines: Sequence[AggregateLine]) -> tuple[Tier, dict[Month, Tier], Decimal | None]:
    """The tier a broker's `month` is paid at, given all its lines of the month (per user or
    merged: the totals are the same), the tier of each earlier month its adjustments belong to,
    and, under the previous_month basis, the previous month's volume that tier was decided by."""
    config = program.config_for(month)
    own = total(api_volumes(lines))  # exact: the built-in sum rounds to 28 digits
    previous = (api_volume_of(connection, broker_id, month.previous())
                if config.tier_basis is TierBasis.PREVIOUS_MONTH else None)
    tier = paying_tier(config, month, own, ZERO if previous is None else previous)
    earlier = fill_months(lines)
    earlier.discard(month)  # the months of the adjustment lines
    prior = {m: tier_of_closed_month(connection, program.config_for(m), broker_id, m) for m in earlier}
    return tier, prior, previous


def user_lines(connection: Connection, month: Month, broker_id: int, user_ids: Sequence[str], *,
               program: ProgramTimeline | None = None) -> list[StatementLine]:
    """The lines of some users in a broker's statement of `month`, priced exactly as
    `compute_statements` prices them (at the tier of the broker's whole month, read from the
    merged totals), without reading the other users' lines: a page of a broker's users."""
    if not user_ids:
        return []
    program = program or load_timeline(connection)
    merged = _merged_lines(connection, month, broker_id)
    tier, prior, _ = _pricing(connection, program, month, broker_id, merged)
    # every fill month the broker's lines have: with the users, the aggregates' primary key finds them
    months = sorted({line.fill_month for line in merged})
    rows = connection.execute(_USERS_LINES, {"period": month, "broker_id": broker_id, "fill_months": months,
                                             "users": list(user_ids)})
    return price_lines(program.config_for(month), _lines_of(month, rows), tier, prior)


def carries(connection: Connection, month: Month, broker_id: int | None = None) -> dict[int, Decimal]:
    """What each broker's latest statement before `month` left to recover, for the brokers whose
    latest statement carried a shortfall out (one query for every broker)."""
    rows = (connection.execute(_CARRIES, {"month": month}) if broker_id is None
            else connection.execute(_CARRIES_OF, {"month": month, "broker_id": broker_id}))
    owed = {row.broker_id: carried_out(row.payout_exact, row.carried_in) for row in rows}
    return {broker: amount for broker, amount in owed.items() if amount < 0}


def _carries_query(one_broker: bool) -> Select[Any]:
    latest = select(statements.c.broker_id, func.max(statements.c.month).label("month")).where(
        statements.c.month < bindparam("month")).group_by(statements.c.broker_id)
    if one_broker:
        latest = latest.where(statements.c.broker_id == bindparam("broker_id"))
    last = latest.subquery()
    return (select(statements.c.broker_id, statements.c.payout_exact, statements.c.carried_in)
            .join(last, (statements.c.broker_id == last.c.broker_id) & (statements.c.month == last.c.month)))


# Built once: the broker reads run these on every request, and building a statement costs more
# than SQLite takes to run it.
_CARRIES = _carries_query(one_broker=False)
_CARRIES_OF = _carries_query(one_broker=True)
_MERGED = select(aggregate_totals).where(aggregate_totals.c.period == bindparam("period"))
_MERGED_OF = _MERGED.where(aggregate_totals.c.broker_id == bindparam("broker_id"))
_STATEMENT_FIGURES = (select(statements.c.api_volume, statements.c.tier_level)
                      .where((statements.c.broker_id == bindparam("broker_id"))
                             & (statements.c.month == bindparam("month"))))


_LINE_COLUMNS = (aggregates.c.broker_id, aggregates.c.fill_month, aggregates.c.user_id, aggregates.c.market_type,
                 aggregates.c.affiliate_rate, aggregates.c.fills, aggregates.c.volume_usd, aggregates.c.fee_usd,
                 aggregates.c.fee_base_usd, aggregates.c.kind)
# some users' lines; with the fill months, the aggregates' primary key finds them without a scan
_USERS_LINES = select(*_LINE_COLUMNS).where(
    (aggregates.c.broker_id == bindparam("broker_id")) & (aggregates.c.period == bindparam("period"))
    & aggregates.c.fill_month.in_(bindparam("fill_months", expanding=True))
    & aggregates.c.user_id.in_(bindparam("users", expanding=True)))


def _aggregate_lines(connection: Connection, period: Month, broker_id: int | None = None) -> list[AggregateLine]:
    """The period's aggregate lines, one per user and market type: two million in a large month.
    They are read with the driver (SQLAlchemy's processing of each value costs more than the
    query), months, market types and rates looked up in dicts (a month has few of each), and the
    amounts made `Decimal` once: NUMERIC arrives as one on PostgreSQL; on SQLite the text is
    bkr's canonical form (`bkr.store.types.Money`), which `Decimal` reads exactly."""
    query = f"SELECT {_LINE_SQL} FROM {aggregates.name} WHERE period = ?"
    parameters: list[Any] = [str(period)]
    if broker_id is not None:
        query += " AND broker_id = ?"
        parameters.append(broker_id)
    # In the order of the statement's lines within a kind and fill month (`sort_lines`), so that
    # sorting them costs one pass: by code point, as Python compares text (SQLite's own
    # collation; PostgreSQL's "C"). Sorting two million lines in Python costs more than here.
    text_order = ' COLLATE "C"' if connection.dialect.name == "postgresql" else ""
    query += f" ORDER BY broker_id, user_id{text_order}, market_type{text_order}, affiliate_rate"
    amount = Decimal if connection.dialect.name == "sqlite" else _as_read
    months = {str(period): period}  # regular lines get the period itself: compared by identity
    rates: dict[Any, Decimal] = {}
    make = tuple.__new__
    lines: list[AggregateLine] = []
    for rows in driver_batches(connection, query, parameters):
        for broker, fill_month, user, market, rate, count, volume, fee, base, kind in rows:
            month = months.get(fill_month)
            if month is None:
                month = months[fill_month] = Month.parse(fill_month)
            affiliate_rate = rates.get(rate)
            if affiliate_rate is None:
                affiliate_rate = rates[rate] = amount(rate)
            # AggregateLine(...) field by field, without the keyword-binding of its constructor
            lines.append(make(AggregateLine, (broker, period, month, user, _MARKET_TYPES[market], affiliate_rate,
                                              count, amount(volume), amount(fee), amount(base), kind == "correction",
                                              kind == "retroactive")))
    return lines


def _lines_of(period: Month, rows: Iterable[Any]) -> list[AggregateLine]:
    """Rows of `_LINE_COLUMNS` as lines. A large broker has tens of thousands: rows are unpacked
    as tuples, and market types looked up in a dict (months are interned)."""
    return [AggregateLine(broker, period, fill_month, user, _MARKET_TYPES[market], rate, fills, volume,
                          fee, base, kind == "correction", kind == "retroactive")
            for broker, fill_month, user, market, rate, fills, volume, fee, base, kind in rows]


_LINE_SQL = ("broker_id, fill_month, user_id, market_type, affiliate_rate, fills, volume_usd, fee_usd, "
             "fee_base_usd, kind")
_MARKET_TYPES = {market.value: market for market in MarketType}


def _as_read(value: Decimal) -> Decimal:
    return value


def _merged_lines(connection: Connection, period: Month, broker_id: int | None) -> list[AggregateLine]:
    """The period's aggregate lines with users merged (user_id "*"): the running totals kept
    beside the aggregates, a few rows per broker."""
    rows = (connection.execute(_MERGED, {"period": period}) if broker_id is None
            else connection.execute(_MERGED_OF, {"period": period, "broker_id": broker_id}))
    return [AggregateLine(r.broker_id, period, r.fill_month, "*", _MARKET_TYPES[r.market_type],
                          r.affiliate_rate, r.fills, r.volume_usd, r.fee_usd, r.fee_base_usd, r.kind == "correction",
                          r.kind == "retroactive")
            for r in rows]


def api_volume_of(connection: Connection, broker_id: int, month: Month) -> Decimal:
    """A broker's API volume in a month: from its statement if closed, else the running aggregates."""
    stored = connection.execute(_STATEMENT_FIGURES, {"broker_id": broker_id, "month": month}).first()
    if stored is not None:
        return stored.api_volume  # type: ignore[no-any-return]
    return total(api_volumes(_merged_lines(connection, month, broker_id)))


def tier_of_closed_month(connection: Connection, config: ProgramConfig, broker_id: int, month: Month) -> Tier:
    """The tier a closed month was paid at; a broker without a statement that month was at the base
    tier. `config`: the program version in force for `month`."""
    stored = connection.execute(_STATEMENT_FIGURES, {"broker_id": broker_id, "month": month}).first()
    schedule = config.schedule_for(month)
    return schedule.tiers[stored.tier_level] if stored is not None else schedule.tiers[0]


def _awaiting_user(connection: Connection, month: Month) -> int:
    return connection.execute(select(func.count()).select_from(fills).where(
        (fills.c.attribution == Attribution.AWAITING_USER.value) & (fills.c.fill_month == month))).scalar_one()


def issued_statements(connection: Connection, month: Month) -> list[BrokerStatement]:
    """The statements a closed month issued, read back from their stored documents, by broker id."""
    rows = connection.execute(select(statements.c.document).where(statements.c.month == month)
                              .order_by(statements.c.broker_id)).scalars()
    return [parse_statement(text) for text in rows]


def issued_statement(connection: Connection, broker_id: int, month: Month) -> BrokerStatement:
    """One broker's statement of a closed month, read back from its stored document."""
    return parse_statement(stored_statement(connection, broker_id, month))


def stored_statement(connection: Connection, broker_id: int, month: Month) -> str:
    """The canonical JSON of one stored statement, as stored: what is signed and served."""
    text = connection.execute(select(statements.c.document).where(
        (statements.c.broker_id == broker_id) & (statements.c.month == month))).scalar()
    if text is None:
        # months close in order: a month with no period of its own before a closed one is closed too
        closed = connection.execute(select(func.count()).select_from(periods).where(
            (periods.c.status == "closed") & (periods.c.month >= month))).scalar_one() > 0
        hint = "" if closed else f" ({month} is open: its statements are issued when it closes)"
        raise StatementNotIssued(f"no statement for broker {broker_id} in {month}{hint}", month_open=not closed)
    return text  # type: ignore[no-any-return]
