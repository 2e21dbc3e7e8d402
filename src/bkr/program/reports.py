"""What a broker sees of itself: where the month stands, its daily volume, its statements, its
users, and the orders that carried its id while it was not active.

Figures of an open month come from the close's own computation (`compute_statements`) over
the running aggregates, so that "if the month ended now" is the statement the close will
write, never a second calculation. Closed months are read from the stored statements. Money
is summed here, exactly: on SQLite the money columns are text, which SQL `SUM` would add as
floating point.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, select

from bkr.domain.config import TierBasis
from bkr.domain.errors import InvalidInput, NotFound
from bkr.domain.fill_audit import PricedPart, ZeroPayoutReason, zero_payout_reason
from bkr.domain.fills import Attribution, MarketType
from bkr.domain.money import ZERO, add, canonical, neg, sub, total
from bkr.domain.payout import statement_payout
from bkr.domain.periods import Month
from bkr.domain.statements import StatementLine, paying_tier
from bkr.domain.tiers import Tier
from bkr.program import overview
from bkr.program.close import (
    api_volume_of,
    compute_statements,
    issued_statement,
    tier_of_closed_month,
    user_lines,
)
from bkr.program.periods import closed_months
from bkr.program.registry import BrokerView, get_broker
from bkr.program.settings_versions import load_timeline
from bkr.store.tables import daily_volumes, fills, user_totals

# --- where this month stands -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerSummary:
    """A broker's month so far, priced as if the month ended now."""

    broker: BrokerView
    month: Month
    tier_basis: TierBasis
    spot_volume: Decimal
    futures_volume: Decimal
    tier: Tier  # the tier the month would be paid at, under the tier-basis policy
    fee_base: Decimal  # the month's own fills
    adjustment_fee_base: Decimal  # late fills of closed months paid in this one
    payout_exact: Decimal
    payout: Decimal
    volume_tier: Tier  # the tier this month's own volume reaches
    next_tier: Tier | None  # the tier above `volume_tier`; None at the top
    volume_to_next_tier: Decimal | None
    last_closed_month: Month | None
    last_closed_tier: Tier | None  # the tier the broker was paid at in `last_closed_month`

    @property
    def api_volume(self) -> Decimal:
        return total((self.spot_volume, self.futures_volume))

    def to_document(self) -> dict[str, Any]:
        return {
            "broker_id": self.broker.broker_id,
            "name": self.broker.name,
            "status": self.broker.status.value,
            "month": str(self.month),
            "tier_basis": self.tier_basis.value,
            "spot_volume": canonical(self.spot_volume),
            "futures_volume": canonical(self.futures_volume),
            "api_volume": canonical(self.api_volume),
            "tier": self.tier.name,
            "broker_rate": canonical(self.tier.rate),
            "fee_base": canonical(self.fee_base),
            "adjustment_fee_base": canonical(self.adjustment_fee_base),
            "payout_exact": canonical(self.payout_exact),
            "payout": format(self.payout, "f"),  # a multiple of the rounding quantum, as on a statement
            "volume_tier": self.volume_tier.name,
            "next_tier": None if self.next_tier is None else self.next_tier.name,
            "next_tier_rate": None if self.next_tier is None else canonical(self.next_tier.rate),
            "volume_to_next_tier": None if self.volume_to_next_tier is None else canonical(self.volume_to_next_tier),
            "last_closed_month": None if self.last_closed_month is None else str(self.last_closed_month),
            "last_closed_tier": None if self.last_closed_tier is None else self.last_closed_tier.name,
        }


def broker_summary(connection: Connection, broker_id: int, now: datetime, *,
                   broker: BrokerView | None = None) -> BrokerSummary:
    """The current UTC month of one broker, from the projection of its statement, under the
    program version in force this month.

    `tier` follows the tier-basis policy (under `previous_month` it is what last month's
    volume earned); `next_tier` and `volume_to_next_tier` are about this month's own volume,
    which is what a broker can still change. `broker`: its registry entry at `now`, when the
    caller has read it already (in the same snapshot)."""
    broker = broker or get_broker(connection, broker_id, now)
    month = Month.of(now)
    program = load_timeline(connection)
    config = program.config_for(month)
    # merged lines: the same totals as the per-user projection, at a cost that does not grow with users
    projection = compute_statements(connection, month, broker_id, per_user=False, program=program)
    if projection:
        statement = projection[0]
        spot, futures = statement.spot_volume, statement.futures_volume
        tier = config.schedule_for(month).tiers[statement.tier_level]  # the schedule's tier it was priced at
        fee_base, adjustment_fee_base = statement.fee_base, statement.adjustment_fee_base
        payout_exact, payout = statement.payout_exact, statement.payout
    else:  # no counted fill yet: the statement the close would not even write
        previous = (api_volume_of(connection, broker_id, month.previous())
                    if config.tier_basis is TierBasis.PREVIOUS_MONTH else ZERO)
        spot = futures = fee_base = adjustment_fee_base = payout_exact = ZERO
        tier = paying_tier(config, month, ZERO, previous)
        payout = statement_payout(ZERO, config.rounding_quantum)
    schedule = config.schedule_for(month)
    api_volume = total((spot, futures))
    volume_tier = schedule.tier_for_volume(api_volume)
    upcoming = schedule.next_tier(volume_tier)
    closed = closed_months(connection)
    last_closed = max(closed) if closed else None
    return BrokerSummary(
        broker=broker, month=month, tier_basis=config.tier_basis, spot_volume=spot, futures_volume=futures,
        tier=tier, fee_base=fee_base, adjustment_fee_base=adjustment_fee_base, payout_exact=payout_exact,
        payout=payout, volume_tier=volume_tier, next_tier=upcoming,
        volume_to_next_tier=None if upcoming is None else sub(upcoming.min_volume, api_volume),
        last_closed_month=last_closed,
        last_closed_tier=(None if last_closed is None
                          else tier_of_closed_month(connection, program.config_for(last_closed), broker_id,
                                                    last_closed)),
    )


def requested_month(month: Month | None, now: datetime) -> Month:
    """The month a report is asked for: the current one by default; a month not begun is refused."""
    current = Month.of(now)
    if month is None:
        return current
    if month > current:
        raise InvalidInput(f"month: {month} has not begun (it is {current} now)", field="month")
    return month


# --- daily volume ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DailyVolume:
    day: date
    spot_volume: Decimal
    futures_volume: Decimal
    fills: int
    fee_base: Decimal

    @property
    def api_volume(self) -> Decimal:
        return add(self.spot_volume, self.futures_volume)

    def to_document(self) -> dict[str, Any]:
        return {"day": self.day.isoformat(), "spot_volume": canonical(self.spot_volume),
                "futures_volume": canonical(self.futures_volume), "api_volume": canonical(self.api_volume),
                "fills": self.fills, "fee_base": canonical(self.fee_base)}


@dataclass(frozen=True, slots=True)
class DailySeries:
    broker_id: int
    month: Month
    days: tuple[DailyVolume, ...]

    def to_document(self) -> dict[str, Any]:
        return {"broker_id": self.broker_id, "month": str(self.month),
                "spot_volume": canonical(total(d.spot_volume for d in self.days)),
                "futures_volume": canonical(total(d.futures_volume for d in self.days)),
                "api_volume": canonical(total(d.api_volume for d in self.days)),
                "fills": sum(d.fills for d in self.days),
                "fee_base": canonical(total(d.fee_base for d in self.days)),
                "days": [d.to_document() for d in self.days]}


_DAYS = (select(daily_volumes.c.day, daily_volumes.c.market_type, daily_volumes.c.fills, daily_volumes.c.volume_usd,
                daily_volumes.c.fee_base_usd)
         .where(and_(daily_volumes.c.broker_id == bindparam("broker_id"), daily_volumes.c.day >= bindparam("first"),
                     daily_volumes.c.day <= bindparam("last"))))


def daily_series(connection: Connection, broker_id: int, month: Month, now: datetime) -> DailySeries:
    """The broker's counted volume on each UTC day of `month`, up to today for the current month.

    Days are the fills' own days, whatever statement they are paid in: a fill of a closed month
    that arrived late shows on its day, though it is paid in a later month as an adjustment, and
    a correction counts on the day of the trade it corrects (a bust takes the trade off its day).
    For the current month the series therefore sums to the month-to-date API volume; for a
    closed month it can exceed the statement's API volume by such late fills."""
    first = month.start.date()
    last = (now.date() if month == Month.of(now) else (month.end - timedelta(days=1)).date())
    totals: dict[date, list[Any]] = {}  # day -> [spot volume, futures volume, fills, fee base]
    rows = connection.execute(_DAYS, {"broker_id": broker_id, "first": first.isoformat(), "last": last.isoformat()})
    for day_text, market_type, count, volume, base in rows:
        sums = totals.setdefault(date.fromisoformat(day_text), [ZERO, ZERO, 0, ZERO])
        slot = 1 if MarketType(market_type).is_futures else 0
        sums[slot] = add(sums[slot], volume)
        sums[2] += count
        sums[3] = add(sums[3], base)
    days = []
    for offset in range((last - first).days + 1):
        day = first + timedelta(days=offset)
        spot, futures, count, base = totals.get(day, (ZERO, ZERO, 0, ZERO))
        days.append(DailyVolume(day, spot, futures, count, base))
    return DailySeries(broker_id, month, tuple(days))


# --- statements ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatementEntry:
    month: Month
    tier: Tier
    api_volume: Decimal
    payout_exact: Decimal
    payout: Decimal
    status: str

    def to_document(self) -> dict[str, Any]:
        return {"month": str(self.month), "tier": self.tier.name, "broker_rate": canonical(self.tier.rate),
                "api_volume": canonical(self.api_volume), "payout_exact": canonical(self.payout_exact),
                "payout": format(self.payout, "f"), "status": self.status}


def broker_statements(connection: Connection, broker_id: int) -> list[StatementEntry]:
    """A broker's issued statements, newest month first."""
    entries = []
    program = load_timeline(connection)
    for stored in reversed(overview.broker_statements(connection, broker_id)):
        schedule_tier = program.config_for(stored.month).schedule_for(stored.month).tiers[stored.tier_level]
        tier = Tier(stored.tier_level, schedule_tier.min_volume, stored.broker_rate)  # the rate it was paid at
        entries.append(StatementEntry(stored.month, tier, stored.api_volume, stored.payout_exact, stored.payout,
                                      stored.status))
    return entries


# --- users ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserFigures:
    """One user's part of a broker's month. Volumes, fee and fee base are of the month's own
    fills; `adjustment_fee_base` is of late fills of earlier months paid in this one;
    `payout_exact` is the user's contribution to the statement's exact payout (both kinds).
    `affiliate_rates` are the rates of the user's lines (one, unless the user's referral rate
    changed, or a late fill's month had another); `zero_payout_reason` says why a user whose
    lines pay 0 together is paid nothing (`bkr.domain.fill_audit.zero_payout_reason`)."""

    user_id: str
    spot_volume: Decimal
    futures_volume: Decimal
    fee: Decimal
    fee_base: Decimal
    adjustment_fee_base: Decimal
    payout_exact: Decimal
    affiliate_rates: tuple[Decimal, ...] = ()
    zero_payout_reason: ZeroPayoutReason | None = None

    def to_document(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "spot_volume": canonical(self.spot_volume),
                "futures_volume": canonical(self.futures_volume), "fee": canonical(self.fee),
                "fee_base": canonical(self.fee_base), "adjustment_fee_base": canonical(self.adjustment_fee_base),
                "payout_exact": canonical(self.payout_exact),
                "affiliate_rates": [canonical(rate) for rate in self.affiliate_rates],
                "zero_payout_reason": None if self.zero_payout_reason is None else self.zero_payout_reason.value}


@dataclass(frozen=True, slots=True)
class UserBreakdown:
    broker_id: int
    month: Month
    source: str  # "statement" (a closed month) or "projection" (an open one)
    total: int  # users in the month, before paging
    limit: int
    offset: int
    users: tuple[UserFigures, ...]

    def to_document(self) -> dict[str, Any]:
        return {"broker_id": self.broker_id, "month": str(self.month), "source": self.source, "total": self.total,
                "limit": self.limit, "offset": self.offset, "users": [u.to_document() for u in self.users]}


def user_breakdown(connection: Connection, broker_id: int, month: Month, *, limit: int,
                   offset: int) -> UserBreakdown:
    """Per-user figures of a month, largest fee base first: from the stored statement of a closed
    month (none if the broker had no statement), from the projection of an open one."""
    program = load_timeline(connection)
    cap = program.config_for(month).cap
    if month in closed_months(connection):
        try:
            statement = issued_statement(connection, broker_id, month)
        except NotFound:  # no volume that month: no statement
            lines: tuple[StatementLine, ...] = ()
        else:
            lines = statement.lines
            cap = statement.program.cap if statement.program is not None else cap  # the cap it was priced with
        figures = sorted(_users_of(lines, cap),
                         key=lambda u: (neg(add(u.fee_base, u.adjustment_fee_base)), u.user_id))
        return UserBreakdown(broker_id, month, "statement", len(figures), limit, offset,
                             tuple(figures[offset:offset + limit]))
    # an open month: the page of users, sorted by the database from their running totals, and the
    # payout of those users' lines as the projection prices them (the same lines, the same tier)
    where = {"broker_id": broker_id, "period": month}
    count = connection.execute(_USER_COUNT, where).scalar_one()
    page = connection.execute(_USER_PAGE, where | {"limit": limit, "offset": offset}).all()
    by_user: dict[str, list[StatementLine]] = {}
    for line in user_lines(connection, month, broker_id, [row.user_id for row in page], program=program):
        by_user.setdefault(line.user_id, []).append(line)
    page_figures = tuple(UserFigures(row.user_id, row.spot_volume_usd, row.futures_volume_usd, row.fee_usd,
                                     row.fee_base_usd, row.adjustment_fee_base_usd,
                                     total(line.payout_exact for line in by_user.get(row.user_id, ())),
                                     *_rates_and_reason(by_user.get(row.user_id, ()), cap))
                         for row in page)
    return UserBreakdown(broker_id, month, "projection", count, limit, offset, page_figures)


_USER_WHERE = and_(user_totals.c.broker_id == bindparam("broker_id"), user_totals.c.period == bindparam("period"))
_USER_COUNT = select(func.count()).select_from(user_totals).where(_USER_WHERE)
_USER_PAGE = (select(user_totals.c.user_id, user_totals.c.spot_volume_usd, user_totals.c.futures_volume_usd,
                     user_totals.c.fee_usd, user_totals.c.fee_base_usd, user_totals.c.adjustment_fee_base_usd)
              .where(_USER_WHERE).order_by(user_totals.c.rank_key, user_totals.c.user_id)
              .limit(bindparam("limit")).offset(bindparam("offset")))


def _users_of(lines: Iterable[StatementLine], cap: Decimal) -> list[UserFigures]:
    """A statement's lines summed per user."""
    # user -> [spot, futures, fee, fee base, adjustment fee base, payout exact]
    by_user: dict[str, list[Decimal]] = {}
    lines_of: dict[str, list[StatementLine]] = {}
    for line in lines:
        sums = by_user.setdefault(line.user_id, [ZERO] * 6)
        lines_of.setdefault(line.user_id, []).append(line)
        if line.is_adjustment:
            sums[4] = add(sums[4], line.fee_base)
        else:
            slot = 1 if line.market_type.is_futures else 0
            sums[slot] = add(sums[slot], line.volume_usd)
            sums[2] = add(sums[2], line.fee_usd)
            sums[3] = add(sums[3], line.fee_base)
        sums[5] = add(sums[5], line.payout_exact)
    figures = []
    for user, (spot, futures, fee, base, adjustment_base, payout) in by_user.items():
        rates, reason = _rates_and_reason(lines_of[user], cap)
        figures.append(UserFigures(user, spot, futures, fee, base, adjustment_base, payout, rates, reason))
    return figures


def _rates_and_reason(lines: Iterable[StatementLine],
                      cap: Decimal) -> tuple[tuple[Decimal, ...], ZeroPayoutReason | None]:
    """The affiliate rates of a user's lines, ascending, and why they pay 0 together if they do."""
    lines = list(lines)
    if not lines:
        return (), None
    rates = tuple(sorted(set(line.affiliate_rate for line in lines)))
    reason = zero_payout_reason((PricedPart(line.fee_base, line.affiliate_rate, line.effective_rate,
                                            line.payout_exact) for line in lines), cap)
    return rates, reason


# --- orders while inactive ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InactiveOrders:
    """Orders that named the broker while it was not active (pending, suspended, terminated):
    they traded, but earn the broker nothing."""

    broker_id: int
    month: Month
    orders: int
    fills: int

    def to_document(self) -> dict[str, Any]:
        return {"broker_id": self.broker_id, "month": str(self.month), "orders": self.orders, "fills": self.fills}


def inactive_orders(connection: Connection, broker_id: int, month: Month) -> InactiveOrders:
    """Fills of `month` (by the fill's own month) that carried the broker's id while it was not active."""
    orders, count = connection.execute(
        select(func.count(func.distinct(fills.c.order_id)), func.count())
        .where(and_(fills.c.broker_id == broker_id, fills.c.attribution == Attribution.BROKER_INACTIVE.value,
                    fills.c.fill_month == month, fills.c.corrects.is_(None)))).one()
    return InactiveOrders(broker_id, month, orders, count)
