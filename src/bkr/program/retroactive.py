"""What a retroactive registry change does to the fills issued statements paid.

A closed month's statements are never edited. When a status or rate change recorded as
retroactive (`bkr.program.registry`) changes how one of their fills stands (counted or not, at
which affiliate rate), bkr writes corrections of that fill into the next open month, named after
the change's audit entry (`bkr.domain.fills.retroactive_id`): `-out` takes back the fill's whole
standing (with its corrections) at the rate it was paid at, `-in` pays it at the rate the change
gives it. Both are counted, on lines of kind `retroactive` priced at the tier of the fill's
month, so reconcile, statements and the ledger see them as any correction.

A fill's standing is then the one its latest retroactive rows give (an `-in` row: counted at its
rate; only an `-out` row: not counted), else the fill's own attribution and rate: a second
retroactive change starts from what the first one left, and a correction that arrives later
follows it (`bkr.program.writer`).
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Row, select

from bkr.domain.errors import Conflict
from bkr.domain.fills import Attribution, retroactive_id
from bkr.domain.periods import Month
from bkr.program.attribution import Counted, RegistryView, add_to_aggregates
from bkr.program.fill_archives import archived_months
from bkr.program.periods import closed_months, lock_open_periods
from bkr.program.standing import FILL_COLUMNS, History, histories
from bkr.program.writer import standing_correction
from bkr.store.bulk import insert_new_fills
from bkr.store.dialect import locked
from bkr.store.tables import fills


@dataclass(frozen=True, slots=True)
class Adjusted:
    fills: int  # fills of closed months whose standing changed
    periods: frozenset[Month]  # the open months their corrections are paid in


def adjust_closed(connection: Connection, condition: Any, since: datetime, entry_id: int) -> Adjusted:
    """Re-apply the registry, as it now stands, to the fills of closed months matching
    `condition` from `since` on (the change's effective time: it decides no earlier fill), and
    write the retroactive corrections of audit entry `entry_id` for each fill whose standing
    changes. The fills are locked first, as a correction of them locks them."""
    closed = sorted(closed_months(connection))
    if not closed:
        return Adjusted(0, frozenset())
    # a fill from `since` on is paid in its own month or a later one: an archived month from
    # `since`'s on may hold fills this change re-judges, and they are no longer at hand
    reached = sorted(month for month in archived_months(connection) if month >= Month.of(since))
    if reached:
        raise Conflict(f"the change reaches {', '.join(map(str, reached))}, whose fills are archived "
                       "(bkr fills archive): they cannot be judged again, so the change is not recorded",
                       code="month_archived")
    rows = connection.execute(locked(
        select(*FILL_COLUMNS).where(
            condition & (fills.c.ts >= since) & fills.c.period.in_(closed) & fills.c.corrects.is_(None)
            & fills.c.attribution.not_in([Attribution.SELF_TRADE.value, Attribution.AWAITING_USER.value]))
        .order_by(fills.c.fill_id))).all()
    if not rows:
        return Adjusted(0, frozenset())
    view = RegistryView.load(connection, (r.broker_id for r in rows if r.broker_id is not None),
                             (r.user_id for r in rows))
    history = histories(connection, [r.fill_id for r in rows])
    changed: list[tuple[Row[Any], Decimal | None, Decimal | None]] = []
    for row in rows:
        old = history[row.fill_id].standing(row)
        attribution, rate = view.attribute(row.broker_id, row.fill_type, row.via_api, row.user_id, row.ts)
        new = rate if attribution is Attribution.COUNTED else None
        if old != new and not history[row.fill_id].reversed:
            changed.append((row, old, new))
    if not changed:
        return Adjusted(0, frozenset())
    targets = lock_open_periods(connection, {row.fill_month for row, _, _ in changed})
    records, counted = _corrections(changed, history, targets, entry_id)
    inserted = insert_new_fills(connection, records)
    taken = sorted({record["fill_id"] for record in records} - inserted)
    if taken:
        raise Conflict(f"fill_id {taken[0]!r}, which bkr's retroactive correction of fill "
                       f"{taken[0].partition('#')[0]!r} needs, is taken by another fill: the change is not recorded; "
                       "an operator must look", code="retroactive_id_taken")
    add_to_aggregates(connection, counted)
    return Adjusted(len(changed), frozenset(targets[row.fill_month] for row, _, _ in changed))


def _corrections(changed: Iterable[tuple[Row[Any], Decimal | None, Decimal | None]],
                 history: dict[str, History], targets: dict[Month, Month],
                 entry_id: int) -> tuple[list[dict[str, Any]], list[Counted]]:
    records: list[dict[str, Any]] = []
    counted: list[Counted] = []
    for row, old, new in changed:
        period = targets[row.fill_month]
        corrections = history[row.fill_id].corrections
        for taken_back, rate in ((True, old), (False, new)):
            if rate is None:
                continue
            made = standing_correction(row, corrections, retroactive_id(row.fill_id, entry_id, taken_back=taken_back),
                                       taken_back=taken_back, rate=rate, period=period, import_id=None,
                                       retroactive=True)
            if made is not None:
                records.append(made[0])
                counted.append(made[1])
    return records, counted
