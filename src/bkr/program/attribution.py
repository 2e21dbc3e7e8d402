"""Attribution against the registry, and the running aggregates that closes read.

`RegistryView` loads, for a set of fills, what the rules need: each broker's status timeline,
each user's signup code, each code's rate timeline. `RegistryView.attribute` applies the domain's
`attribute` to one fill (`attribute_decided`, when whoever took the order already judged its
broker). `add_to_aggregates` is where counted fills become running totals, used by ingestion and
by `reevaluate` after a retroactive registry change; it keeps, in the same transaction, the
aggregates, their users-merged totals (`aggregate_totals`), each user's month (`user_totals`) and
the daily series. `rebuild_aggregates` recomputes all four for some (broker, period) pairs from the
stored fills. The set path (`bkr.program.set_import`) makes the same increments to the same four
tables from a `GROUP BY` over a staged block (`bkr.store.staging.add_counted`), and its
differential test holds the two to the same totals.
"""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, select, tuple_, update

from bkr.domain.fills import Attribution, attribute, retroactive_part
from bkr.domain.money import ZERO, add, canonical
from bkr.domain.payout import fee_base
from bkr.domain.periods import Month
from bkr.domain.registry import BrokerStatus, RateChange, RateTimeline, StatusChange, StatusTimeline
from bkr.program.periods import closed_months, paying_period
from bkr.store import lake
from bkr.store.bulk import (
    AGGREGATE_KEY,
    AGGREGATE_SUMS,
    DAILY_KEY,
    DAILY_SUMS,
    TOTALS_KEY,
    add_to_totals,
    add_to_user_totals,
    user_rows_of,
)
from bkr.store.partitions import ensure_fill_partitions
from bkr.store.tables import (
    aggregate_totals,
    aggregates,
    broker_status_changes,
    brokers,
    daily_volumes,
    fills,
    referral_rates,
    user_totals,
    users,
)

_NO_RATES = RateTimeline(())


# Built once: a batch of a few fills (the venue writes one per order) would otherwise spend more
# on building these statements than the database spends running them.
_ENROLLED = select(brokers.c.broker_id).where(brokers.c.broker_id.in_(bindparam("ids", expanding=True)))
_STATUS_CHANGES = (
    select(broker_status_changes.c.broker_id, broker_status_changes.c.status, broker_status_changes.c.effective_at)
    .where(broker_status_changes.c.broker_id.in_(bindparam("ids", expanding=True)))
    .order_by(broker_status_changes.c.broker_id, broker_status_changes.c.effective_at))
_USER_CODES = (select(users.c.user_id, users.c.referral_code)
               .where(users.c.user_id.in_(bindparam("ids", expanding=True))))
_RATES = (
    select(referral_rates.c.code, referral_rates.c.rate, referral_rates.c.effective_from)
    .where(referral_rates.c.code.in_(bindparam("codes", expanding=True)))
    .order_by(referral_rates.c.code, referral_rates.c.effective_from))


@dataclass(frozen=True, slots=True)
class RegistryView:
    timelines: dict[int, StatusTimeline]  # enrolled brokers only
    user_codes: dict[str, str | None]  # known users only
    rates: dict[str, RateTimeline]

    @classmethod
    def load(cls, connection: Connection, broker_ids: Iterable[int], user_ids: Iterable[str]) -> "RegistryView":
        broker_ids = sorted(set(broker_ids))
        user_ids = sorted(set(user_ids))
        timelines: dict[int, list[StatusChange]] = {}
        if broker_ids:
            enrolled = connection.execute(_ENROLLED, {"ids": broker_ids})
            timelines = {broker_id: [] for (broker_id,) in enrolled}
            for broker_id, status, effective_at in connection.execute(_STATUS_CHANGES, {"ids": broker_ids}):
                timelines[broker_id].append(StatusChange(BrokerStatus(status), effective_at))
        user_codes: dict[str, str | None] = {}
        for chunk in _chunks(user_ids, 20_000):
            user_codes.update(connection.execute(_USER_CODES, {"ids": list(chunk)}).all())
        codes = sorted({code for code in user_codes.values() if code is not None})
        rates: dict[str, list[RateChange]] = defaultdict(list)
        if codes:
            for code, rate, effective_from in connection.execute(_RATES, {"codes": codes}):
                rates[code].append(RateChange(rate, effective_from))
        return cls(
            timelines={broker_id: StatusTimeline(tuple(changes)) for broker_id, changes in timelines.items()},
            user_codes=user_codes,
            rates={code: RateTimeline(tuple(changes)) for code, changes in rates.items()},
        )

    def broker_active(self, broker_id: int, moment: datetime) -> bool | None:
        timeline = self.timelines.get(broker_id)
        return None if timeline is None else timeline.is_active_at(moment)

    def attribute(self, broker_id: int | None, fill_type: str, via_api: bool, user_id: str,
                  moment: datetime, self_trade: bool = False) -> tuple[Attribution, Decimal | None]:
        """A fill's attribution under this registry, and its affiliate rate when it counts."""
        active = None if broker_id is None else self.broker_active(broker_id, moment)
        return self.attribute_decided(broker_id, active, fill_type, via_api, user_id, moment, self_trade)

    def attribute_decided(self, broker_id: int | None, broker_active: bool | None, fill_type: str, via_api: bool,
                          user_id: str, moment: datetime,
                          self_trade: bool = False) -> tuple[Attribution, Decimal | None]:
        """`attribute` with the broker's standing at `moment` already decided by the caller (the
        venue decides it at order entry): only the user and the affiliate rate come from here."""
        rate = self.affiliate_rate(user_id, moment)
        attribution = attribute(broker_id, fill_type, via_api, broker_active, rate is not None, self_trade)
        return attribution, rate if attribution is Attribution.COUNTED else None

    def affiliate_rate(self, user_id: str, moment: datetime) -> Decimal | None:
        """The user's affiliate rate at `moment`: 0 without a code; None if the user is unknown."""
        if user_id not in self.user_codes:
            return None
        code = self.user_codes[user_id]
        return ZERO if code is None else self.rates.get(code, _NO_RATES).rate_at(moment)


@dataclass(frozen=True, slots=True)
class Counted:
    """What a counted fill adds to the running totals."""

    broker_id: int
    period: Month
    fill_month: Month
    day: str  # YYYY-MM-DD of the fill, UTC
    user_id: str
    market_type: str
    affiliate_rate: Decimal
    volume_usd: Decimal
    fee_usd: Decimal
    correction: bool = False
    fee_base_usd: Decimal | None = None  # a correction's change to its fill's fee base
    retroactive: bool = False  # bkr's correction after a retroactive registry change (`retroactive_id`)

    @property
    def base(self) -> Decimal:
        """What this adds to the fee base."""
        return fee_base(self.fee_usd) if self.fee_base_usd is None else self.fee_base_usd

    @property
    def kind(self) -> str:
        """"correction" for a correction paid after its fills' month: it reaches a later statement
        than the fill it corrects, which says so; "retroactive" for what a retroactive registry
        change moved; any other row joins its fill's line."""
        if self.retroactive:
            return "retroactive"
        return "correction" if self.correction and self.fill_month != self.period else "fill"


def add_to_aggregates(connection: Connection, counted: Iterable[Counted]) -> None:
    """Add counted fills to the running aggregates, their users-merged totals, the users' totals
    and the daily series, exactly.

    Each is summed here first, per key, then added in one upsert; the rows go in sorted so that
    concurrent writers lock them in the same order."""
    by_line: dict[tuple[Any, ...], list[Any]] = {}
    by_day: dict[tuple[Any, ...], list[Any]] = {}
    for item in counted:
        period = item.period
        base = item.base
        line = (item.broker_id, period, item.fill_month, item.user_id, item.market_type,
                canonical(item.affiliate_rate), item.kind)
        total_row = by_line.get(line)
        if total_row is None:
            by_line[line] = [1, item.volume_usd, item.fee_usd, base]
        else:
            total_row[0] += 1
            total_row[1] = add(total_row[1], item.volume_usd)
            total_row[2] = add(total_row[2], item.fee_usd)
            total_row[3] = add(total_row[3], base)
        day = (item.broker_id, period, item.day, item.market_type)
        day_row = by_day.get(day)
        if day_row is None:
            by_day[day] = [1, item.volume_usd, base]
        else:
            day_row[0] += 1
            day_row[1] = add(day_row[1], item.volume_usd)
            day_row[2] = add(day_row[2], base)
    add_sums(connection, by_line, by_day)


def add_sums(connection: Connection, by_line: dict[tuple[Any, ...], list[Any]],
             by_day: dict[tuple[Any, ...], list[Any]]) -> None:
    """Add sums already made per key to the running totals: `by_line` per (broker, period,
    fill_month, user_id, market_type, canonical affiliate rate, kind) of [fills, volume, fee, fee
    base], `by_day` per (broker, period, day, market_type) of [fills, volume, fee base]. The
    users-merged totals are derived here from the lines."""
    by_rate: dict[tuple[Any, ...], list[Any]] = {}
    for (broker, period, fill_month, _, market_type, rate, kind), sums in by_line.items():
        merged = (broker, period, fill_month, market_type, rate, kind)
        rate_row = by_rate.get(merged)
        if rate_row is None:
            by_rate[merged] = list(sums)
        else:
            rate_row[0] += sums[0]
            for index in (1, 2, 3):
                rate_row[index] = add(rate_row[index], sums[index])
    aggregate_rows = [(*key[:5], Decimal(key[5]), key[6], *sums) for key, sums in sorted(by_line.items())]
    add_to_totals(connection, "aggregates", AGGREGATE_KEY, AGGREGATE_SUMS, aggregate_rows)
    add_to_totals(connection, "aggregate_totals", TOTALS_KEY, AGGREGATE_SUMS,
                  [(*key[:4], Decimal(key[4]), key[5], *sums) for key, sums in sorted(by_rate.items())])
    add_to_totals(connection, "daily_volumes", DAILY_KEY, DAILY_SUMS,
                  [(*key, *sums) for key, sums in sorted(by_day.items())])
    add_to_user_totals(connection, user_rows_of(aggregate_rows))


def reevaluate(connection: Connection, condition: Any) -> int:
    """Re-apply the rules to the stored fills matching `condition`, after the registry changed
    (a status or rate recorded with an effective time in the past, a user who arrived late).

    Only fills not yet on a statement move: those paid in an open period, and fills that were
    waiting for their user (never counted, so they go to the first open period). Corrections are
    not judged on their own: they follow the fill they correct. A side of a self-trade stays one:
    no registry change makes it count. Aggregates of every (broker,
    period) touched are rebuilt from the fills. Returns the number of fills whose attribution,
    rate or period changed.
    """
    closed = closed_months(connection)
    open_or_waiting = (fills.c.attribution == Attribution.AWAITING_USER.value) | (
        fills.c.period.not_in(sorted(closed)) if closed else fills.c.period.is_not(None))
    rows = connection.execute(
        select(fills.c.fill_id, fills.c.user_id, fills.c.broker_id, fills.c.ts, fills.c.via_api,
               fills.c.fill_type, fills.c.attribution, fills.c.affiliate_rate, fills.c.fill_month, fills.c.period)
        .where(and_(condition, open_or_waiting, fills.c.corrects.is_(None),
                    fills.c.attribution != Attribution.SELF_TRADE.value))).all()
    if not rows:
        return 0
    view = RegistryView.load(connection, (r.broker_id for r in rows if r.broker_id is not None),
                             (r.user_id for r in rows))
    changes: list[dict[str, Any]] = []
    touched: set[tuple[int, Month]] = set()
    for row in rows:
        attribution, rate = view.attribute(row.broker_id, row.fill_type, row.via_api, row.user_id, row.ts)
        period = row.period
        if row.attribution == Attribution.AWAITING_USER.value:
            period = paying_period(row.fill_month, closed)
        if (attribution.value, rate, period) != (row.attribution, row.affiliate_rate, row.period):
            changes.append({"key": row.fill_id, "attribution": attribution.value, "affiliate_rate": rate,
                            "period": period})
            if row.broker_id is not None:
                touched.update({(row.broker_id, row.period), (row.broker_id, period)})
    changes += _follow_corrected(connection, changes, touched)
    if changes:
        ensure_fill_partitions(connection, {change["period"] for change in changes})  # a fill may move to a new month
        connection.execute(
            update(fills).where(fills.c.fill_id == bindparam("key"))
            .values(attribution=bindparam("attribution"), affiliate_rate=bindparam("affiliate_rate"),
                    period=bindparam("period")),
            changes)
        rebuild_aggregates(connection, touched)
    return len(changes)


def _follow_corrected(connection: Connection, changes: Sequence[dict[str, Any]],
                      touched: set[tuple[int, Month]]) -> list[dict[str, Any]]:
    """The changes that make the corrections of changed fills agree with them again: a correction
    always has its fill's attribution, rate and (while that is open) period."""
    follow: list[dict[str, Any]] = []
    by_fill = {change["key"]: change for change in changes}
    for chunk in _chunks(sorted(by_fill), 20_000):
        for row in connection.execute(
                select(fills.c.fill_id, fills.c.corrects, fills.c.broker_id, fills.c.attribution,
                       fills.c.affiliate_rate, fills.c.period).where(fills.c.corrects.in_(list(chunk)))):
            fill = by_fill[row.corrects]
            if (fill["attribution"], fill["affiliate_rate"], fill["period"]) != (
                    row.attribution, row.affiliate_rate, row.period):
                follow.append(fill | {"key": row.fill_id})
                if row.broker_id is not None:
                    touched.update({(row.broker_id, row.period), (row.broker_id, fill["period"])})
    return follow


def rebuild_aggregates(connection: Connection, pairs: Sequence[tuple[int, Month]] | set[tuple[int, Month]]) -> None:
    """Recompute the aggregates of some (broker, period) pairs from the stored fills (and, for a
    lake-fed month, what its Spark job found, `bkr.store.lake`)."""
    for broker_id, period in sorted(pairs):
        for table in (aggregates, aggregate_totals, user_totals, daily_volumes):
            connection.execute(delete(table).where(and_(table.c.broker_id == broker_id, table.c.period == period)))
        rows = connection.execute(
            select(fills.c.fill_id, fills.c.user_id, fills.c.market_type, fills.c.affiliate_rate, fills.c.fill_month,
                   fills.c.ts, fills.c.volume_usd, fills.c.fee_usd, fills.c.corrects, fills.c.fee_base_usd)
            .where(tuple_(fills.c.broker_id, fills.c.period) == (broker_id, period))
            .where(fills.c.attribution == Attribution.COUNTED.value))
        add_to_aggregates(connection, (
            Counted(broker_id, period, r.fill_month, r.ts.date().isoformat(), r.user_id,
                    r.market_type, r.affiliate_rate, r.volume_usd, r.fee_usd, r.corrects is not None,
                    r.fee_base_usd, retroactive_part(r.fill_id, r.corrects) is not None) for r in rows))
        lines, days = lake.period_sums(connection, broker_id, period)  # a lake month's fills are not stored
        if lines:
            add_sums(connection, lines, days)


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
