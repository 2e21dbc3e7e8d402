"""Which months are closed, and where a fill is paid: its own month, or the next open one."""

from collections.abc import Iterable

from sqlalchemy import Connection, select

from bkr.domain.periods import Month
from bkr.store.dialect import insert_ignoring, locked
from bkr.store.tables import periods

_CLOSED = select(periods.c.month).where(periods.c.status == "closed")  # built once: every read asks


def closed_months(connection: Connection) -> set[Month]:
    return set(connection.execute(_CLOSED).scalars())


def paying_period(fill_month: Month, closed: set[Month]) -> Month:
    """The statement month a fill is paid in: its own month while open, else the next open month."""
    month = fill_month
    while month in closed:
        month = month.next()
    return month


def lock_open_periods(connection: Connection, fill_months: Iterable[Month]) -> dict[Month, Month]:
    """Map each fill month to the open period its fills go into, holding a shared lock on those
    periods until the transaction ends, so that a close cannot slip in between (a close takes
    the exclusive lock on its month and then sees these fills, or they see it closed)."""
    wanted = set(fill_months)
    while True:
        closed = closed_months(connection)
        targets = {month: paying_period(month, closed) for month in wanted}
        insert_ignoring(connection, periods, [{"month": m} for m in sorted(set(targets.values()))], ["month"])
        statuses: dict[str, str] = dict(connection.execute(locked(
            select(periods.c.month, periods.c.status)
            .where(periods.c.month.in_(sorted(set(targets.values()))))
            .order_by(periods.c.month), shared=True)).all())
        if all(status == "open" for status in statuses.values()):
            return targets
        # a close committed between our read and our lock: route again with the new state


def is_closed(connection: Connection, month: Month) -> bool:
    return month in closed_months(connection)
