"""The scheduled close: which month is due, and closing it.

On the 1st of each month (UTC), once a grace period has passed, the previous month is closed.
The grace lets the exchange's feed deliver the last fills of the month before its statements
are computed; a fill later still is paid next month as a prior-period adjustment. Any number
of service replicas may run the schedule: `close_month` is idempotent and, on PostgreSQL, locks
the month's period row, so concurrent closes produce one result.
"""

from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import Engine

from bkr.domain.config import ProgramConfig
from bkr.domain.periods import Month, as_utc
from bkr.program.close import CloseResult, close_month
from bkr.program.periods import closed_months


def month_due(now: datetime, grace: timedelta, closed: Collection[Month]) -> Month | None:
    """The previous month, once `now` is at least `grace` past 00:00 UTC on the 1st of this
    month and it is not closed yet; else None."""
    current = Month.of(now)
    if as_utc(now) < current.start + grace:
        return None
    previous = current.previous()
    return None if previous in closed else previous


def run_scheduled_close(engine: Engine, config: ProgramConfig, now: datetime, grace: timedelta) -> CloseResult | None:
    """Close the month that is due, if one is. A replica that lost the race to close it gets the
    stored result back (`already_closed`)."""
    with engine.connect() as connection:
        closed = closed_months(connection)
    month = month_due(now, grace, closed)
    if month is None:
        return None
    return close_month(engine, config, month, now=now)
