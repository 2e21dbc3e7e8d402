"""The scheduled close: which month is due, and closing it.

On the 1st of each month (UTC), once a grace period has passed, the previous month is closed,
after any earlier month still open with fills in it (months close in order: `close_order`).
The grace lets the exchange's feed deliver the last fills of the month before its statements
are computed; a fill later still is paid next month as a prior-period adjustment. Any number
of service replicas may run the schedule: `close_month` is idempotent and, on PostgreSQL, locks
the month's period row, so concurrent closes produce one result.
"""

from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import Engine

from bkr.domain.periods import Month, as_utc
from bkr.program.close import CloseResult, close_month
from bkr.program.close_order import months_due
from bkr.program.periods import closed_months
from bkr.program.settings_versions import load_timeline


def month_due(now: datetime, grace: timedelta, closed: Collection[Month]) -> Month | None:
    """The previous month, once `now` is at least `grace` past 00:00 UTC on the 1st of this
    month and it is not closed yet; else None."""
    current = Month.of(now)
    if as_utc(now) < current.start + grace:
        return None
    previous = current.previous()
    return None if previous in closed else previous


def run_scheduled_close(engine: Engine, now: datetime, grace: timedelta) -> CloseResult | None:
    """Close the earliest month that is due, if one is: a month left open behind the previous one
    (its close failed, or the service was down) is caught up first, one month per run, in order.
    A replica that lost the race to close it gets the stored result back (`already_closed`). Each
    month is closed under the program version in force for it."""
    current = Month.of(now)
    if as_utc(now) < current.start + grace:
        return None
    with engine.connect() as connection:
        closed = closed_months(connection)
        due = [month for month in months_due(connection, load_timeline(connection).start, current)
               if month not in closed]
    if not due:
        return None
    return close_month(engine, due[0], now=now)
