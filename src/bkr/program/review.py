"""What an operator reviews after ingestion: rows rejected with their reason, conflicting fills
(a known `fill_id` with other content, never applied), the users bkr does not know yet whose
broker fills wait for them to be registered, and how many fills are sides of self-trades
(counted for nobody).

Pages are keyed on the row id (`after`), not on an offset, so that rows arriving while an
operator pages through are neither skipped nor shown twice.
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, func, select

from bkr.domain.errors import InvalidInput
from bkr.domain.fills import Attribution
from bkr.domain.periods import Month
from bkr.store.dialect import exact_sum
from bkr.store.tables import fill_conflicts, fill_rejections, fills

CONFLICT_REASON = "fill_id already stored with other content; this version was not applied"
MAX_ROW_ID = 2**31 - 1  # row ids are 32-bit integers in both databases
MAX_PAGE = 100_000  # rows in one page: a page is read whole


@dataclass(frozen=True, slots=True)
class RejectedRow:
    row_id: int
    source: str
    line: int | None
    fill_id: str | None
    reason: str
    raw: str
    seen_at: datetime


@dataclass(frozen=True, slots=True)
class ConflictRow:
    row_id: int
    source: str
    line: int | None
    fill_id: str
    raw: str
    seen_at: datetime

    @property
    def reason(self) -> str:
        return CONFLICT_REASON


@dataclass(frozen=True, slots=True)
class AwaitingUser:
    """A user id that broker fills carry but the registry does not know: what registering it
    (with its referral code) would make payable."""

    user_id: str
    fills: int
    volume_usd: Decimal
    fee_usd: Decimal
    brokers: tuple[int, ...]  # the brokers whose orders these are
    first_month: Month
    last_seen: datetime  # the latest of its fills' times


@dataclass(frozen=True, slots=True)
class ReviewCounts:
    rejected: int
    conflicts: int
    awaiting_user: int  # accepted broker fills that cannot be paid until their user is known
    self_trades: int  # fills that are one side of a trade of one user with itself: counted for nobody

    def to_document(self) -> dict[str, int]:
        return {"rejected": self.rejected, "conflicts": self.conflicts, "awaiting_user": self.awaiting_user,
                "self_trades": self.self_trades}


def _check_page(limit: int, after: int | None) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit: {limit} is outside 1..{MAX_PAGE}", field="limit")
    if after is not None and not 0 <= after <= MAX_ROW_ID:
        raise InvalidInput(f"after: a row id in 0..{MAX_ROW_ID}, got {after}", field="after")


def rejected_rows(connection: Connection, *, limit: int = 50, after: int | None = None) -> list[RejectedRow]:
    """Rejected rows in the order they were seen, from just after row id `after`."""
    _check_page(limit, after)
    t = fill_rejections.c
    query = select(t.rejection_id, t.source, t.line, t.fill_id, t.reason, t.raw, t.seen_at)
    if after is not None:
        query = query.where(t.rejection_id > after)
    rows = connection.execute(query.order_by(t.rejection_id).limit(limit))
    return [RejectedRow(*row) for row in rows]


def conflict_rows(connection: Connection, *, limit: int = 50, after: int | None = None) -> list[ConflictRow]:
    """Conflicting fills in the order they were seen, from just after row id `after`."""
    _check_page(limit, after)
    t = fill_conflicts.c
    query = select(t.conflict_id, t.source, t.line, t.fill_id, t.raw, t.seen_at)
    if after is not None:
        query = query.where(t.conflict_id > after)
    rows = connection.execute(query.order_by(t.conflict_id).limit(limit))
    return [ConflictRow(*row) for row in rows]


def awaiting_users(connection: Connection, *, limit: int = 50, after: str | None = None) -> list[AwaitingUser]:
    """The unknown users that broker fills wait for, by user id, from just after `after`; summed
    exactly by the database over the fills of each user on the page."""
    if limit < 1:
        raise InvalidInput(f"limit: must be at least 1, got {limit}", field="limit")
    waiting = fills.c.attribution == Attribution.AWAITING_USER.value
    query = (select(fills.c.user_id, func.count(), exact_sum(connection, fills.c.volume_usd),
                    exact_sum(connection, fills.c.fee_usd), func.min(fills.c.fill_month), func.max(fills.c.ts))
             .where(waiting).group_by(fills.c.user_id).order_by(fills.c.user_id).limit(limit))
    if after is not None:
        query = query.where(fills.c.user_id > after)
    rows = connection.execute(query).all()
    brokers: dict[str, set[int]] = {row[0]: set() for row in rows}
    if rows:
        pairs = connection.execute(select(fills.c.user_id, fills.c.broker_id).distinct()
                                   .where(waiting & fills.c.user_id.in_(list(brokers))))
        for user_id, broker_id in pairs:
            brokers[user_id].add(int(broker_id))
    return [AwaitingUser(user_id, count, Decimal(volume), Decimal(fee), tuple(sorted(brokers[user_id])),
                         first, last)
            for user_id, count, volume, fee, first, last in rows]


def review_counts(connection: Connection) -> ReviewCounts:
    return ReviewCounts(
        rejected=connection.execute(select(func.count()).select_from(fill_rejections)).scalar_one(),
        conflicts=connection.execute(select(func.count()).select_from(fill_conflicts)).scalar_one(),
        awaiting_user=connection.execute(select(func.count()).select_from(fills).where(
            fills.c.attribution == Attribution.AWAITING_USER.value)).scalar_one(),
        self_trades=connection.execute(select(func.count()).select_from(fills).where(
            (fills.c.attribution == Attribution.SELF_TRADE.value) & fills.c.corrects.is_(None))).scalar_one(),
    )
