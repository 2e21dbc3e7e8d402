"""Races on PostgreSQL, where bkr runs as many processes side by side: enrollment, closing, and
importing while a close runs. Each side has its own engine (its own connections); a barrier
starts them together."""

import threading
from collections.abc import Callable, Iterator
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import pytest
from integration_support import (
    JUNE,
    MAY,
    NOW,
    add_broker,
    add_users,
    close,
    fill,
    import_rows,
    write_csv,
)
from sqlalchemy import Engine, func, select

from bkr.domain.errors import AlreadyEnrolled
from bkr.domain.periods import Month
from bkr.program import registry
from bkr.program.close import CloseResult, close_month
from bkr.program.importer import import_file
from bkr.program.writer import RowResult, Tally
from bkr.store import db
from bkr.store.tables import enrollments, fills, statements
from program_support import use_program

pytestmark = pytest.mark.postgres


@pytest.fixture
def engines(pg_url: str) -> Iterator[tuple[Engine, Engine]]:
    """Two engines on one fresh PostgreSQL database, as two processes would have."""
    first, second = db.open_engine(pg_url), db.open_engine(pg_url)
    yield first, second
    first.dispose()
    second.dispose()


def run_together(*actions: Callable[[], Any]) -> list[Any]:
    """Start every action at once, each in its thread; return each one's result or exception."""
    barrier = threading.Barrier(len(actions))
    outcomes: list[Any] = [None] * len(actions)

    def run(index: int, action: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            outcomes[index] = action()
        except Exception as error:  # the race's loser: returned to the test, not lost in a thread
            outcomes[index] = error

    threads = [threading.Thread(target=run, args=(i, action)) for i, action in enumerate(actions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive(), "a racer is stuck (a deadlock?)"
    return outcomes


def test_of_two_concurrent_enrollments_of_one_account_exactly_one_wins(engines: tuple[Engine, Engine]) -> None:
    as_broker, as_affiliate = engines
    winners = []
    for round_number in range(20):
        account = f"acct-{round_number}"

        def enroll_broker(account: str = account, broker_id: int = 1000 + round_number) -> str:
            with as_broker.begin() as connection:
                registry.enroll_broker(connection, broker_id, account, "ccxt", "exchange_aggregator", NOW, actor="ops")
            return "broker"

        def enroll_affiliate(account: str = account.upper() if round_number % 2 else account) -> str:
            with as_affiliate.begin() as connection:  # every other round the same account in capitals
                registry.enroll_affiliate(connection, account, "Crypto Weekly", NOW, actor="ops")
            return "affiliate"

        outcomes = run_together(enroll_broker, enroll_affiliate)

        won = [o for o in outcomes if isinstance(o, str)]
        lost = [o for o in outcomes if not isinstance(o, str)]
        assert len(won) == 1 and len(lost) == 1, outcomes
        assert isinstance(lost[0], AlreadyEnrolled), repr(lost[0])
        assert f"already enrolled in the {won[0]} program" in str(lost[0])
        with as_broker.connect() as connection:
            assert connection.execute(select(enrollments.c.program).where(
                func.lower(enrollments.c.account_id) == account.lower())).scalars().all() == won
        winners.append(won[0])
    assert len(winners) == 20


def test_two_concurrent_closes_of_a_month_give_one_result(engines: tuple[Engine, Engine], tmp_path: Path) -> None:
    first, second = engines
    add_broker(first, 1400)
    add_broker(first, 2200)
    add_users(first, "alice", "bob")
    months = [Month(2024, m) for m in range(1, 6)]
    import_rows(first, tmp_path / "fills.csv", [
        fill(f"f-{month}-{broker}-{user}", at=f"{month}-10T00:00:00Z", broker=broker, user=user,
             price="1000000", quantity=str(month.month), fee="12.3456")
        for month in months for broker in (1400, 2200) for user in ("alice", "bob")])

    for month in months:
        outcomes: list[CloseResult] = run_together(
            lambda month=month: close_month(first, month, now=NOW),
            lambda month=month: close_month(second, month, now=NOW))

        assert all(isinstance(o, CloseResult) for o in outcomes), outcomes
        assert sorted(o.already_closed for o in outcomes) == [False, True]
        assert outcomes[0].statements == outcomes[1].statements
        assert [s.broker_id for s in outcomes[0].statements] == [1400, 2200]
    with first.connect() as connection:
        rows = connection.execute(select(statements.c.month, statements.c.broker_id, func.count())
                                  .group_by(statements.c.month, statements.c.broker_id)).all()
    assert sorted((month, broker, n) for month, broker, n in rows) == [
        (month, broker, 1) for month in months for broker in (1400, 2200)]


def test_a_fill_imported_while_its_month_closes_is_paid_exactly_once(engines: tuple[Engine, Engine],
                                                                     tmp_path: Path) -> None:
    importer, closer = engines
    use_program(importer)
    add_broker(importer)
    add_users(importer, "alice")
    rows = [fill(f"f-{n:04d}", at=f"2024-05-{1 + n % 31:02d}T12:00:00Z", price=f"{100 + n}.000000000000000001",
                 quantity="3", fee=f"0.{n:04d}") for n in range(600)]
    path = write_csv(tmp_path / "may.csv", rows)
    five_batches_in, close_started = threading.Event(), threading.Event()

    def keep_importing(tally: Tally, _results: list[RowResult]) -> None:
        if tally.accepted == 50:
            five_batches_in.set()
            assert close_started.wait(timeout=30)

    def import_may() -> Tally:
        return import_file(importer, path, clock=lambda: NOW, batch_size=10, on_batch=keep_importing, actor="ops")

    def close_may() -> CloseResult:
        assert five_batches_in.wait(timeout=30)
        close_started.set()
        return close_month(closer, MAY, now=NOW)

    tally, _ = run_together(import_may, close_may)
    assert isinstance(tally, Tally), tally
    assert tally.counted == 600

    may, june = close(importer, MAY)[1400], close(importer, JUNE)[1400]
    in_may = sum(line["fills"] for line in may["lines"])
    late = [line for line in june["lines"] if line["kind"] == "adjustment"]
    assert in_may >= 50 and late, (in_may, late)  # the close landed mid-import
    assert in_may + sum(line["fills"] for line in late) == 600  # none lost, none twice
    with localcontext() as context:
        context.prec = 100
        volume = sum((Decimal(r["price"]) * 3 for r in rows), Decimal(0))
        paid = sum((Decimal(line["volume_usd"]) for line in late), Decimal(may["api_volume"]))
    assert paid == volume
    with importer.connect() as connection:
        by_period = dict(connection.execute(select(fills.c.period, func.count()).group_by(fills.c.period)).all())
    assert by_period == {MAY: in_may, JUNE: 600 - in_may}
