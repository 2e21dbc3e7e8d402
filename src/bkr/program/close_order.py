"""Months close in order: which earlier month must close first, and which close along with a later one.

A statement takes what the broker's previous statement left to recover (its carry), and a late
fill of a closed month is paid in the next open month. Both assume that no open month is left
behind a closed one: closing November before an October that holds fills would let both take
September's carry, or leave October's fills paid after November's statements. So a month closes
only once every earlier month of the program that holds fills to pay is closed, and the earlier
months that hold nothing (no aggregates: nothing to pay in them) are closed along with it, so no
open month is ever left behind a closed one; a broker still owing then carries its shortfall to
the month that closes.
"""

from datetime import datetime

from sqlalchemy import Connection, exists, func, select, update

from bkr.domain.config import ProgramConfig
from bkr.domain.errors import InvalidInput, MonthOutOfOrder
from bkr.domain.periods import Month
from bkr.store.dialect import insert_ignoring, locked
from bkr.store.tables import aggregate_totals, periods


def check_closable(connection: Connection, config: ProgramConfig, month: Month) -> None:
    """Refuse a month of no program (before its start, or outside every tier schedule of `config`,
    the program version in force for it), or one behind an earlier open month that holds fills.
    The earlier open months are locked first, so that a fill written into one of them now either
    is seen here or waits for this close (and is then routed past it)."""
    if month < config.first_month:
        raise InvalidInput(f"month: {month} is before the program's start ({config.first_month})", field="month")
    config.schedule_for(month)  # refuses a month no tier schedule covers
    connection.execute(locked(select(periods.c.month).where(
        (periods.c.status != "closed") & (periods.c.month < month)).order_by(periods.c.month))).all()
    earlier = first_open_month_with_fills(connection, config.first_month, month)
    if earlier is not None:
        raise MonthOutOfOrder(f"close {earlier} first: it is still open and holds fills to pay; months close in "
                              f"order, so that carries and late fills reach the right statement", field="month")


def first_open_month_with_fills(connection: Connection, first: Month, before: Month) -> Month | None:
    """The earliest open month in [first, before) with aggregates (fills to pay), or None."""
    holds_fills = exists().where(aggregate_totals.c.period == periods.c.month)
    return connection.execute(select(periods.c.month).where(
        (periods.c.status != "closed") & (periods.c.month >= first) & (periods.c.month < before)
        & holds_fills).order_by(periods.c.month).limit(1)).scalar()


def close_empty_months_before(connection: Connection, month: Month, now: datetime) -> None:
    """Close the months before `month` that nothing is paid in (`check_closable` made sure, under
    the same lock): the open ones, and those since the program's first recorded month that have
    no row yet. No month is then left open behind a closed one, where a late fill or a carry
    could still land after a later statement was issued."""
    earliest = connection.execute(select(func.min(periods.c.month))).scalar()
    if earliest is not None:
        missing = []
        gap = earliest
        while gap < month:
            missing.append({"month": gap, "status": "closed", "closed_at": now})
            gap = gap.next()
        insert_ignoring(connection, periods, missing, ["month"])
    connection.execute(update(periods).where((periods.c.status != "closed") & (periods.c.month < month))
                       .values(status="closed", closed_at=now))


def months_due(connection: Connection, program_start: Month, current: Month) -> list[Month]:
    """What the schedule closes, in order: every open month since the program's start before
    `current` that holds fills, then the month before `current` (closed even when empty, so the
    next month's late fills have a closed month behind them)."""
    due: list[Month] = []
    start = program_start
    previous = current.previous()
    while (earlier := first_open_month_with_fills(connection, start, previous)) is not None:
        due.append(earlier)
        start = earlier.next()
    if previous >= program_start:
        due.append(previous)
    return due
