"""What an operator looks up beside the registry's own use cases: one user, one referral code
with its owner, a broker's statements, the months seen with their statement totals, and whether
any fill is stored at all.

Totals are summed here, exactly, rather than with SQL `SUM`: SQLite keeps money as text and
would sum it as floating point.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, select

from bkr.domain.errors import NotFound
from bkr.domain.money import total
from bkr.domain.periods import Month
from bkr.domain.registry import RateTimeline
from bkr.program.registry import rate_timeline
from bkr.store.tables import fills, periods, referral_codes, statements, users


@dataclass(frozen=True, slots=True)
class UserView:
    user_id: str
    referral_code: str | None
    affiliate_account_id: str | None  # the owner of the referral code
    registered_at: datetime


@dataclass(frozen=True, slots=True)
class ReferralCodeView:
    code: str
    affiliate_account_id: str
    created_at: datetime
    timeline: RateTimeline


@dataclass(frozen=True, slots=True)
class StatementSummary:
    broker_id: int
    month: Month
    tier_level: int
    broker_rate: Decimal
    api_volume: Decimal
    payout_exact: Decimal
    payout: Decimal
    status: str


@dataclass(frozen=True, slots=True)
class PeriodSummary:
    month: Month
    status: str  # open | closed
    closed_at: datetime | None
    statements: tuple[StatementSummary, ...]
    closed_by: str | None = None  # an operator's name, `system`, or None (not recorded)

    @property
    def statement_count(self) -> int:
        return len(self.statements)

    @property
    def total_payout(self) -> Decimal:
        return total(s.payout for s in self.statements)

    @property
    def total_payout_exact(self) -> Decimal:
        return total(s.payout_exact for s in self.statements)

    @property
    def total_api_volume(self) -> Decimal:
        return total(s.api_volume for s in self.statements)


def get_user(connection: Connection, user_id: str) -> UserView:
    row = connection.execute(
        select(users.c.user_id, users.c.referral_code, referral_codes.c.affiliate_account_id, users.c.created_at)
        .select_from(users.outerjoin(referral_codes, users.c.referral_code == referral_codes.c.code))
        .where(users.c.user_id == user_id)).first()
    if row is None:
        raise NotFound(f"no user {user_id}")
    return UserView(*row)


def get_referral_code(connection: Connection, code: str) -> ReferralCodeView:
    row = connection.execute(select(referral_codes.c.affiliate_account_id, referral_codes.c.created_at)
                             .where(referral_codes.c.code == code)).first()
    if row is None:
        raise NotFound(f"no referral code {code}")
    return ReferralCodeView(code, row.affiliate_account_id, row.created_at, rate_timeline(connection, code))


_STATEMENT_COLUMNS = (statements.c.broker_id, statements.c.month, statements.c.tier_level, statements.c.broker_rate,
                      statements.c.api_volume, statements.c.payout_exact, statements.c.payout, statements.c.status)


def _summary(row: tuple[int, Month, int, Decimal, Decimal, Decimal, Decimal, str]) -> StatementSummary:
    return StatementSummary(*row)


def broker_statements(connection: Connection, broker_id: int) -> list[StatementSummary]:
    """A broker's issued statements, oldest month first."""
    rows = connection.execute(select(*_STATEMENT_COLUMNS).where(statements.c.broker_id == broker_id)
                              .order_by(statements.c.month))
    return [_summary(tuple(row)) for row in rows]


def list_periods(connection: Connection) -> list[PeriodSummary]:
    """Every month bkr has seen (fills written into it, or a close), newest first."""
    return _periods(connection, None)


def get_period(connection: Connection, month: Month) -> PeriodSummary:
    found = _periods(connection, month)
    if not found:
        raise NotFound(f"{month}: no fills and no close recorded for this month", field="month")
    return found[0]


def _periods(connection: Connection, month: Month | None) -> list[PeriodSummary]:
    period_query = (select(periods.c.month, periods.c.status, periods.c.closed_at, periods.c.closed_by)
                    .order_by(periods.c.month.desc()))
    statement_query = select(*_STATEMENT_COLUMNS).order_by(statements.c.broker_id)
    if month is not None:
        period_query = period_query.where(periods.c.month == month)
        statement_query = statement_query.where(statements.c.month == month)
    by_month: dict[Month, list[StatementSummary]] = defaultdict(list)
    for row in connection.execute(statement_query):
        by_month[row.month].append(_summary(tuple(row)))
    return [PeriodSummary(period, status, closed_at, tuple(by_month.get(period, ())), closed_by)
            for period, status, closed_at, closed_by in connection.execute(period_query)]


def has_fills(connection: Connection) -> bool:
    """Whether any fill is stored: `bkr demo` loads its months only into a database without any."""
    return connection.execute(select(fills.c.fill_id).limit(1)).first() is not None
