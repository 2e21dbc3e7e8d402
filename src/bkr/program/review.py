"""What an operator reviews after ingestion: rows rejected with their reason, conflicting fills
(a known `fill_id` with other content, never applied), how many broker fills wait for their
user to be registered, and how many fills are sides of self-trades (counted for nobody).

Pages are keyed on the row id (`after`), not on an offset, so that rows arriving while an
operator pages through are neither skipped nor shown twice.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, select

from bkr.domain.errors import InvalidInput
from bkr.domain.fills import Attribution
from bkr.store.tables import fill_conflicts, fill_rejections, fills

CONFLICT_REASON = "fill_id already stored with other content; this version was not applied"
MAX_ROW_ID = 2**31 - 1  # row ids are 32-bit integers in both databases


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
class ReviewCounts:
    rejected: int
    conflicts: int
    awaiting_user: int  # accepted broker fills that cannot be paid until their user is known
    self_trades: int  # fills that are one side of a trade of one user with itself: counted for nobody

    def to_document(self) -> dict[str, int]:
        return {"rejected": self.rejected, "conflicts": self.conflicts, "awaiting_user": self.awaiting_user,
                "self_trades": self.self_trades}


def _check_page(limit: int, after: int | None) -> None:
    if limit < 1:
        raise InvalidInput(f"limit: must be at least 1, got {limit}", field="limit")
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


def review_counts(connection: Connection) -> ReviewCounts:
    return ReviewCounts(
        rejected=connection.execute(select(func.count()).select_from(fill_rejections)).scalar_one(),
        conflicts=connection.execute(select(func.count()).select_from(fill_conflicts)).scalar_one(),
        awaiting_user=connection.execute(select(func.count()).select_from(fills).where(
            fills.c.attribution == Attribution.AWAITING_USER.value)).scalar_one(),
        self_trades=connection.execute(select(func.count()).select_from(fills).where(
            (fills.c.attribution == Attribution.SELF_TRADE.value) & fills.c.corrects.is_(None))).scalar_one(),
    )
