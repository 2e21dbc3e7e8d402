"""Months close in order: an earlier month that holds fills closes first, empty ones close along,
the schedule catches up in order, and months of no program are refused."""

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from integration_support import (
    APRIL,
    JUNE,
    MAY,
    NOW,
    add_broker,
    add_users,
    close,
    correction,
    fill,
    import_rows,
    operator_key,
)
from sqlalchemy import Engine, select

from bkr.domain.config import ProgramConfig
from bkr.domain.errors import InvalidInput, MonthOutOfOrder
from bkr.domain.periods import Month
from bkr.program.close import close_month
from bkr.program.schedule import run_scheduled_close
from bkr.store.tables import periods
from program_support import use_program


def statuses(engine: Engine) -> dict[str, str]:
    with engine.connect() as connection:
        return {str(month): status for month, status in connection.execute(select(periods.c.month, periods.c.status))}


def test_a_month_behind_an_open_month_with_fills_is_refused_naming_it(engine: Engine, tmp_path: Path,
                                                                      db_url: str, bkr: Any) -> None:
    add_broker(engine)
    add_users(engine, "alice")
    import_rows(engine, tmp_path / "fills.csv", [fill("f-april", at="2024-04-10T00:00:00Z"), fill("f-may")])

    with pytest.raises(MonthOutOfOrder, match=r"^close 2024-04 first: it is still open and holds fills to pay"):
        close_month(engine, MAY, now=NOW)
    refused = bkr("close", "--month", "2024-05", "--db", db_url, "--key", operator_key(engine, "operator"))

    assert refused.code == 1
    assert refused.err.startswith("error: close 2024-04 first")
    assert statuses(engine) == {"2024-04": "open", "2024-05": "open"}  # the refusal wrote nothing
    close(engine, APRIL)
    assert close(engine, MAY)[1400]["api_volume"] == "100"


def test_a_shortfall_carried_past_empty_months_reaches_the_next_close_once(engine: Engine, tmp_path: Path) -> None:
    """April's bust takes May below zero; June holds nothing; July's close closes June along and
    recovers May's shortfall, and June can no longer be closed to recover it a second time."""
    add_broker(engine)
    add_users(engine, "alice")
    april_fill = fill("f-1", at="2024-04-10T00:00:00Z", fee="100")
    import_rows(engine, tmp_path / "april.csv", [april_fill])
    close(engine, APRIL)
    import_rows(engine, tmp_path / "may.csv", [correction(april_fill, "f-1-bust", quantity="-1", fee="-100"),
                                               fill("f-2", fee="10")])
    may = close(engine, MAY)[1400]
    assert (may["carried_out"], may["payout"]) == ("-18", "0.00")  # −100 × 20% + 10 × 20%
    import_rows(engine, tmp_path / "july.csv", [fill("f-3", at="2024-07-10T00:00:00Z", fee="200", price="1000")])
    july = close(engine, Month(2024, 7))[1400]

    assert (july["carried_in"], july["payout"]) == ("-18", "22.00")  # 200 × 20% − 18
    assert statuses(engine)["2024-06"] == "closed"
    assert close_month(engine, JUNE, now=NOW).already_closed


def test_the_schedule_catches_up_every_month_left_open_in_order(engine: Engine, tmp_path: Path) -> None:
    add_broker(engine)
    add_users(engine, "alice")
    import_rows(engine, tmp_path / "fills.csv", [fill("f-april", at="2024-04-10T00:00:00Z"), fill("f-may"),
                                                 fill("f-july", at="2024-07-10T00:00:00Z")])
    august = Month(2024, 8)
    after_grace = august.start + timedelta(hours=1)

    closed = [run_scheduled_close(engine, after_grace, timedelta(minutes=30)) for _ in range(4)]

    assert [None if r is None else str(r.month) for r in closed] == ["2024-04", "2024-05", "2024-07", None]
    assert statuses(engine) == {"2024-04": "closed", "2024-05": "closed", "2024-06": "closed",
                                "2024-07": "closed"}  # June, empty, closed along with July


@pytest.mark.parametrize(("config", "month", "reason"), [
    (ProgramConfig(start=Month(2024, 1)), Month(2023, 12), "month: 2023-12 is before the program's start (2024-01)"),
    (ProgramConfig(), Month(1999, 1), "month: 1999-01 is before the program's start (2000-01)"),
    (ProgramConfig(), Month(0, 1), "month: 0000-01 is before the program's start (2000-01)"),
])
def test_a_month_of_no_program_is_refused(engine: Engine, config: ProgramConfig, month: Month, reason: str) -> None:
    use_program(engine, config)
    with pytest.raises(InvalidInput) as raised:
        close_month(engine, month, now=NOW)
    assert str(raised.value) == reason
    assert statuses(engine) == {}
