"""`bkr reconcile`: a closed and settled month reconciles; each kind of break is named."""

import json
from pathlib import Path
from typing import Any

import pytest
from integration_support import (
    APRIL,
    MAY,
    NOW,
    add_broker,
    add_code,
    add_users,
    approve_all,
    close,
    fill,
    import_rows,
)
from sqlalchemy import Engine, func, select, update

from bkr.domain.money import D
from bkr.ledger import journal
from bkr.ledger.postings import payout
from bkr.program import registry, settlement
from bkr.store import db
from bkr.store.tables import aggregate_totals, aggregates, brokers, statements


def _settled_may(engine: Engine, tmp_path: Path) -> None:
    add_broker(engine, 1400)
    add_broker(engine, 2200)
    add_code(engine, "AFF10", "0.10")
    add_users(engine, "alice")
    add_users(engine, "bob", code="AFF10")
    import_rows(engine, tmp_path / "may.csv", [
        fill("f-1", fee="12.5"), fill("f-2", user="bob", fee="7.25", market="PERP"),
        fill("f-3", broker=2200, fee="-0.5", is_maker=True), fill("f-4", broker=2200, fee="3", price="250"),
        fill("f-5", at="2024-04-30T23:00:00Z", fee="1")])  # April: closed first, not in May's close
    close(engine, APRIL)
    close(engine, MAY)
    approve_all(engine)
    settlement.settle_month(engine, MAY, NOW)


def _reconcile(bkr, db_url: str) -> tuple[int, dict]:  # type: ignore[no-untyped-def,type-arg]
    result = bkr("reconcile", "--month", "2024-05", "--db", db_url, "--json")
    return result.code, json.loads(result.out)


def test_a_closed_and_settled_month_reconciles(db_url: str, engine: Engine, tmp_path: Path,
                                                bkr) -> None:  # type: ignore[no-untyped-def]
    _settled_may(engine, tmp_path)
    code, report = _reconcile(bkr, db_url)
    assert (code, report["clean"], report["statements"], report["fills"]) == (0, True, 2, 4)


def test_an_aggregate_that_drifted_from_its_fills_is_named(db_url: str, engine: Engine, tmp_path: Path,
                                                            bkr) -> None:  # type: ignore[no-untyped-def]
    _settled_may(engine, tmp_path)
    with engine.begin() as connection:
        connection.execute(update(aggregates).where(aggregates.c.user_id == "bob").values(volume_usd=D("100.01")))
    code, report = _reconcile(bkr, db_url)
    found = {(d["link"], d["subject"], d["expected"], d["found"]) for d in report["differences"]}
    assert code == 1
    assert ("fills -> aggregates", "broker 1400 volume_usd", "200", "200.01") in found
    assert ("aggregates -> lines", "broker 1400 volume_usd", "200.01", "200") in found
    assert ("aggregates -> merged totals", "broker 1400 volume_usd", "200.01", "200") in found


def test_a_carry_that_does_not_follow_the_previous_statement_is_named(db_url: str, engine: Engine, tmp_path: Path,
                                                                       bkr) -> None:  # type: ignore[no-untyped-def]
    _settled_may(engine, tmp_path)
    with engine.begin() as connection:
        connection.execute(update(statements).where(statements.c.broker_id == 2200).values(carried_in=D("-1.5")))
    code, report = _reconcile(bkr, db_url)
    assert code == 1
    assert [(d["link"], d["subject"], d["expected"], d["found"]) for d in report["differences"]] == [
        ("statements -> next statement", "broker 2200 carried_in (stored row)", "0", "-1.5")]


def test_merged_totals_that_drifted_from_the_aggregates_are_named(db_url: str, engine: Engine, tmp_path: Path,
                                                                  bkr) -> None:  # type: ignore[no-untyped-def]
    _settled_may(engine, tmp_path)
    with engine.begin() as connection:
        connection.execute(update(aggregate_totals).where(aggregate_totals.c.broker_id == 2200)
                           .values(fills=aggregate_totals.c.fills + 1))
    code, report = _reconcile(bkr, db_url)
    assert code == 1
    assert [(d["link"], d["subject"], d["expected"], d["found"]) for d in report["differences"]] == [
        ("aggregates -> merged totals", "broker 2200 fills", "2", "3")]


EDITS = [  # (what is changed in broker 2200's stored statement, the differences reconcile reports)
    ({"payout": "0.70"}, [("lines -> totals", "broker 2200 payout", "0.6", "0.7")]),  # one digit changed
    ({"carried_out": "-1"}, [("lines -> totals", "broker 2200 carried_out", "0", "-1")]),
    # the line: worked out again, it pays 0.6, and so do the totals, which are right as they stand
    ({"line payout_exact": "0.7"}, [
        ("lines -> totals", "broker 2200 line 1 (alice SPOT 2024-05 regular) payout_exact", "0.6", "0.7")]),
    ({"line effective_rate": "0.3"}, [  # BKR 0's rate is 0.2: the rate is wrong, the payouts are not
        ("lines -> totals", "broker 2200 line 1 (alice SPOT 2024-05 regular) effective_rate", "0.2", "0.3")]),
    ({"tier": "BKR 1"}, [  # a tier its volume does not reach
        ("lines -> totals", "broker 2200 tier", "BKR 0", "BKR 1")]),
]


@pytest.mark.parametrize(("edit", "named"), EDITS, ids=[next(iter(edit)) for edit, _ in EDITS])
def test_a_statement_edited_after_the_close_is_named(db_url: str, engine: Engine, tmp_path: Path, bkr,  # type: ignore[no-untyped-def]
                                                      edit: dict[str, str], named: list[tuple[str, ...]]) -> None:
    """The statement's own arithmetic is `check`, the one `bkr statement verify` runs."""
    _settled_may(engine, tmp_path)
    _edit_statement(engine, edit)
    code, report = _reconcile(bkr, db_url)
    assert code == 1
    assert [(d["link"], d["subject"], d["expected"], d["found"]) for d in report["differences"]] == named


def test_a_stored_statement_that_no_longer_reads_is_named_not_a_crash(db_url: str, engine: Engine, tmp_path: Path,
                                                                      bkr) -> None:  # type: ignore[no-untyped-def]
    _settled_may(engine, tmp_path)
    _edit_statement(engine, {"payout": 0.6})  # a JSON number: not an exact decimal
    code, report = _reconcile(bkr, db_url)
    found = [(d["link"], d["subject"], d["found"]) for d in report["differences"]]
    assert code == 1
    assert ("stored statement", "broker 2200 payout", "missing or not a decimal string (0.6)") in found
    assert ("aggregates -> lines", "broker 2200 fills", "0") in found  # its lines cannot be counted


def _edit_statement(engine: Engine, edit: dict[str, Any]) -> None:
    with engine.begin() as connection:
        text = connection.execute(statements.select().where(statements.c.broker_id == 2200)).one().document
        document = json.loads(text)
        for name, value in edit.items():
            if name.startswith("line "):
                document["lines"][0][name.removeprefix("line ")] = value
            else:
                document[name] = value
        connection.execute(update(statements).where(statements.c.broker_id == 2200)
                           .values(document=json.dumps(document)))


def test_a_payout_without_a_paid_statement_and_a_paid_statement_without_one_are_named(
        db_url: str, engine: Engine, tmp_path: Path, bkr) -> None:  # type: ignore[no-untyped-def]
    add_broker(engine, 1400)
    add_broker(engine, 2200)
    add_users(engine, "alice")
    import_rows(engine, tmp_path / "may.csv", [fill("f-1", fee="10"), fill("f-2", broker=2200, fee="10")])
    close(engine, MAY)
    with engine.begin() as connection:
        journal.post(connection, payout(1400, "2024-05", D("2")), NOW)  # paid outside bkr's settle
        connection.execute(update(statements).where(statements.c.broker_id == 2200).values(status="paid"))
    code, report = _reconcile(bkr, db_url)
    assert code == 1
    assert [(d["link"], d["subject"]) for d in report["differences"]] == [
        ("statements -> ledger", "broker 1400"), ("statements -> ledger", "broker 2200 payout key"),
        ("statements -> ledger", "broker 2200 owed to the broker"),
        ("statements -> ledger", "broker 2200 rebate expense"),
        ("statements -> instructions", "broker 2200 payout instruction")]


def test_an_open_month_is_refused(db_url: str, bkr) -> None:  # type: ignore[no-untyped-def]
    result = bkr("reconcile", "--month", "2024-05", "--db", db_url)
    assert result.code == 1 and "not closed" in result.err


def test_a_snapshot_reads_one_moment_and_lets_writers_commit_meanwhile(engine: Engine) -> None:
    """Reconcile reads in a snapshot: a fill import or a close may commit while it runs (on
    SQLite a writer does not wait for it), and it goes on seeing the state it started from."""
    add_broker(engine, 1400)
    with db.snapshot(engine) as reading:
        before = reading.execute(select(func.count()).select_from(brokers)).scalar_one()
        with engine.begin() as writing:  # would wait out the busy timeout if the snapshot held the write lock
            registry.enroll_broker(writing, 2200, "acct-2200", "Broker 2200", "trading_bot", NOW, actor="ops")
        during = reading.execute(select(func.count()).select_from(brokers)).scalar_one()
    with engine.connect() as connection:
        after = connection.execute(select(func.count()).select_from(brokers)).scalar_one()

    assert (before, during, after) == (1, 1, 2)
