"""What the lake's fills of a month have added to the running totals (`lake_lines`, `lake_days`).

A run of the lake's Spark job (`bkr.lake`) adds to the running totals only the difference
between what it found and what earlier runs of the month added: these tables hold that, per
period it was paid in. `rebuild_aggregates` (which recomputes a broker's period from the stored
fills) adds them back, since a lake month's counted fills are not stored.
"""

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, and_, delete, insert, select

from bkr.domain.money import add, canonical
from bkr.domain.periods import Month
from bkr.store.tables import lake_days, lake_lines, lake_runs

LineKey = tuple[int, str, str, str]  # broker, user, market type, canonical affiliate rate
DayKey = tuple[int, str, str]  # broker, day, market type


def month_lines(connection: Connection, month: Month) -> tuple[dict[LineKey, list[Any]], dict[DayKey, list[Any]]]:
    """What the lake's fills of `month` added so far, over every period: ([fills, volume, fee, fee
    base] per line, [fills, volume, fee base] per day)."""
    lines: dict[LineKey, list[Any]] = {}
    for row in connection.execute(select(lake_lines).where(lake_lines.c.month == month)):
        _add(lines, (row.broker_id, row.user_id, row.market_type, canonical(row.affiliate_rate)),
             [row.fills, row.volume_usd, row.fee_usd, row.fee_base_usd])
    days: dict[DayKey, list[Any]] = {}
    for row in connection.execute(select(lake_days).where(lake_days.c.month == month)):
        _add(days, (row.broker_id, row.day, row.market_type), [row.fills, row.volume_usd, row.fee_base_usd])
    return lines, days


def add_to_period(connection: Connection, month: Month, period: Month, lines: Mapping[LineKey, list[Any]],
                  days: Mapping[DayKey, list[Any]]) -> None:
    """Record that the lake's fills of `month` added `lines` and `days` to `period`."""
    kept_lines: dict[LineKey, list[Any]] = {}
    for row in connection.execute(select(lake_lines).where(
            and_(lake_lines.c.month == month, lake_lines.c.period == period))):
        kept_lines[(row.broker_id, row.user_id, row.market_type, canonical(row.affiliate_rate))] = [
            row.fills, row.volume_usd, row.fee_usd, row.fee_base_usd]
    kept_days: dict[DayKey, list[Any]] = {}
    for row in connection.execute(select(lake_days).where(
            and_(lake_days.c.month == month, lake_days.c.period == period))):
        kept_days[(row.broker_id, row.day, row.market_type)] = [row.fills, row.volume_usd, row.fee_base_usd]
    for key, sums in lines.items():
        _add(kept_lines, key, sums)
    for day, sums in days.items():
        _add(kept_days, day, sums)
    connection.execute(delete(lake_lines).where(and_(lake_lines.c.month == month, lake_lines.c.period == period)))
    connection.execute(delete(lake_days).where(and_(lake_days.c.month == month, lake_days.c.period == period)))
    rows = [{"month": month, "period": period, "broker_id": b, "user_id": u, "market_type": m,
             "affiliate_rate": Decimal(r), "fills": s[0], "volume_usd": s[1], "fee_usd": s[2], "fee_base_usd": s[3]}
            for (b, u, m, r), s in sorted(kept_lines.items()) if s[0]]
    if rows:
        connection.execute(insert(lake_lines), rows)
    day_rows = [{"month": month, "period": period, "broker_id": b, "day": d, "market_type": m, "fills": s[0],
                 "volume_usd": s[1], "fee_base_usd": s[2]} for (b, d, m), s in sorted(kept_days.items()) if s[0]]
    if day_rows:
        connection.execute(insert(lake_days), day_rows)


def period_sums(connection: Connection, broker_id: int, period: Month,
                ) -> tuple[dict[tuple[Any, ...], list[Any]], dict[tuple[Any, ...], list[Any]]]:
    """What the lake added to one broker's period, keyed as `bkr.program.attribution.add_sums` takes it."""
    by_line: dict[tuple[Any, ...], list[Any]] = {}
    for row in connection.execute(select(lake_lines).where(
            and_(lake_lines.c.broker_id == broker_id, lake_lines.c.period == period))):
        _add(by_line, (broker_id, period, row.month, row.user_id, row.market_type, canonical(row.affiliate_rate),
                       "fill"), [row.fills, row.volume_usd, row.fee_usd, row.fee_base_usd])
    by_day: dict[tuple[Any, ...], list[Any]] = {}
    for row in connection.execute(select(lake_days).where(
            and_(lake_days.c.broker_id == broker_id, lake_days.c.period == period))):
        _add(by_day, (broker_id, period, row.day, row.market_type), [row.fills, row.volume_usd, row.fee_base_usd])
    return by_line, by_day


def _add(into: dict[Any, list[Any]], key: Any, sums: list[Any]) -> None:
    kept = into.get(key)
    if kept is None:
        into[key] = list(sums)
    else:
        into[key] = [kept[0] + sums[0], *(add(a, b) for a, b in zip(kept[1:], sums[1:], strict=True))]


def lake_fed(connection: Connection, month: Month) -> bool:
    """Whether `month`'s fills are in the exchange's lake (a run of the job over it was loaded)."""
    return connection.execute(select(lake_runs.c.run_id).where(lake_runs.c.month == month).limit(1)).first() is not None
