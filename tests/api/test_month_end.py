"""The month end of a running service, on SQLite and PostgreSQL: fills arrive over HTTP, the
scheduler closes the month once its grace has passed, once, whatever the number of replicas,
and a fill arriving later is paid next month as a prior-period adjustment."""

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from api_support import Api, MovableClock
from fastapi.testclient import TestClient
from feed_support import fill, post_fills, register_users
from sqlalchemy import select

from bkr.api.app import create_app
from bkr.api.deps import Services
from bkr.api.scheduler import CloseScheduler
from bkr.domain.config import ProgramConfig
from bkr.domain.periods import Month
from bkr.program import schedule
from bkr.program.close import close_month, compute_statements
from bkr.program.periods import closed_months
from bkr.settings import ServiceSettings
from bkr.store import db
from bkr.store.tables import statements

SEPTEMBER, OCTOBER, NOVEMBER = Month(2026, 9), Month(2026, 10), Month(2026, 11)
GRACE = timedelta(minutes=30)
MIDNIGHT = datetime(2026, 11, 1, tzinfo=UTC)


def _services(api: Api) -> Services:
    return api.client.app.state.services  # type: ignore[attr-defined,no-any-return]


def _statement_rows(api: Api) -> list[tuple[Any, ...]]:
    with api.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(
            select(statements.c.broker_id, statements.c.month, statements.c.document, statements.c.created_at)
            .order_by(statements.c.broker_id, statements.c.month))]


# --- when a month is due (pure) ------------------------------------------------------------------

@pytest.mark.parametrize(("now", "due"), [
    (datetime(2026, 10, 31, 23, 59, 59, 999999, tzinfo=UTC), None),
    (MIDNIGHT, None),
    (MIDNIGHT + GRACE - timedelta(microseconds=1), None),
    (MIDNIGHT + GRACE, OCTOBER),
    (datetime(2026, 11, 20, tzinfo=UTC), OCTOBER),
    (datetime(2027, 1, 1, 0, 30, tzinfo=UTC), Month(2026, 12)),
])
def test_the_previous_month_is_due_once_the_grace_after_midnight_utc_has_passed(now: datetime,
                                                                                 due: Month | None) -> None:
    assert schedule.month_due(now, GRACE, {SEPTEMBER}) == due


def test_a_closed_month_is_not_due_and_an_open_one_is_whenever_its_grace_has_passed() -> None:
    assert schedule.month_due(MIDNIGHT + GRACE, GRACE, {SEPTEMBER, OCTOBER}) is None
    assert schedule.month_due(MIDNIGHT - timedelta(hours=1), GRACE, set()) == SEPTEMBER


# --- the month end of a running service ------------------------------------------------------------

def test_the_scheduler_closes_the_month_once_after_its_grace(api: Api, db_url: str) -> None:
    api.clock.set(datetime(2026, 10, 31, 22, 0, tzinfo=UTC))
    api.broker(1400)
    api.broker(2200)
    register_users(api.engine, ["alice", "bob"], api.clock())
    operator = api.operator_key("operator")
    october = [fill("f-1", price="50000", quantity="120", fee="100", at="2026-10-31T21:00:00Z"),  # 6M: BKR 1
               fill("f-2", user="bob", broker=2200, market="PERP", fee="0.5", at="2026-10-02T08:00:00Z")]
    assert post_fills(api.client, operator, october).json()["accepted"] == 2
    close_month(api.engine, SEPTEMBER, now=api.clock())  # the month before, closed already
    scheduler = CloseScheduler(_services(api))

    for moment in (datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC), MIDNIGHT, MIDNIGHT + GRACE - timedelta(seconds=1)):
        api.clock.set(moment)
        assert scheduler.tick() is None
    assert _statement_rows(api) == []

    api.clock.set(MIDNIGHT + GRACE)
    if db_url.startswith("postgresql"):  # two replicas whose ticks race: one close, one result
        replicas = [scheduler, CloseScheduler(_services(api))]
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(lambda replica: replica.tick(), replicas))
        closes = [result for result in results if result is not None and not result.already_closed]
    else:
        closes = [scheduler.tick()]
    assert len(closes) == 1 and closes[0] is not None and closes[0].month == OCTOBER
    closed = _statement_rows(api)
    assert [(row[0], row[1]) for row in closed] == [(1400, OCTOBER), (2200, OCTOBER)]

    api.clock.advance(timedelta(minutes=5))
    assert scheduler.tick() is None
    assert CloseScheduler(_services(api)).tick() is None  # another replica
    assert _statement_rows(api) == closed  # same rows, same bytes, created once

    late = post_fills(api.client, operator, [fill("f-late", fee="10", at="2026-10-31T23:58:00Z")]).json()
    assert late["accepted"] == 1
    assert _statement_rows(api) == closed
    with api.engine.connect() as connection:
        (november,) = compute_statements(connection, NOVEMBER, 1400)
    document = november.to_document()
    (line,) = document["lines"]
    assert (line["kind"], line["fill_month"], line["tier"]) == ("adjustment", "2026-10", "BKR 1")
    assert Decimal(document["adjustment_payout_exact"]) == Decimal("3")  # 10 × 30%, October's rate
    assert Decimal(document["api_volume"]) == 0  # a late fill does not count towards November's tier


def test_the_service_closes_the_month_in_the_background_and_survives_a_failing_tick(
        db_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[datetime] = []
    real = schedule.run_scheduled_close

    def flaky(*args: Any) -> Any:
        calls.append(args[2])
        if len(calls) == 1:
            raise RuntimeError("database went away")
        return real(*args)

    monkeypatch.setattr("bkr.api.scheduler.run_scheduled_close", flaky)
    logger = logging.getLogger("bkr.schedule")
    logger.addHandler(caplog.handler)
    engine = db.open_engine(db_url)
    app = create_app(engine, ProgramConfig(), ServiceSettings(schedule_interval_seconds=1),
                     clock=MovableClock(MIDNIGHT + timedelta(hours=2)), run_scheduler=True)
    try:
        with TestClient(app):
            scheduler = app.state.scheduler
            assert isinstance(scheduler, CloseScheduler)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                with engine.connect() as connection:
                    if closed_months(connection) == {OCTOBER}:
                        break
                time.sleep(0.05)
            else:
                pytest.fail("the scheduler did not close October")
    finally:
        logger.removeHandler(caplog.handler)
        engine.dispose()
    assert len(calls) >= 2
    assert "scheduled close failed" in caplog.text and "database went away" in caplog.text
    assert scheduler._thread is None  # stopped with the app
