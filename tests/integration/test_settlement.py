"""Settlement on both databases: statements go draft -> final -> paid, each is paid once through
the ledger whatever is retried, raced or killed, and the ledger balances."""

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
from integration_support import (
    MAY,
    NOW,
    add_broker,
    add_users,
    approve_all,
    close,
    fill,
    import_rows,
    operator_key,
)
from sqlalchemy import Engine, select, text, update
from sqlalchemy.exc import DBAPIError

from bkr.domain.config import DEFAULT_CONFIG, ProgramConfig
from bkr.domain.errors import Conflict, NotFound
from bkr.domain.money import D, total
from bkr.ledger import journal
from bkr.ledger.postings import REBATE_EXPENSE, Posting, PostingGroup, broker_account, broker_payable, payout
from bkr.program import settlement
from bkr.store.tables import ledger_entries, ledger_groups, statements
from program_support import use_program


def _month_with_brokers(engine: Engine, tmp_path: Path, brokers: int,
                        config: ProgramConfig | None = None) -> dict[int, Decimal]:
    """May 2024 closed with one fill per broker (fee 10 + id/100 USD), under `config` if given; the
    payouts by broker."""
    ids = list(range(1, brokers + 1))
    for broker_id in ids:
        add_broker(engine, broker_id)
    add_users(engine, "alice")
    rows = [fill(f"f-{b}", broker=b, fee=f"{10 + b / 100:.2f}") for b in ids]
    import_rows(engine, tmp_path / "may.csv", rows, config=config)
    return {b: Decimal(doc["payout"]) for b, doc in close(engine, MAY).items()}


def _ledger(engine: Engine) -> tuple[dict[str, int], dict[tuple[str, str], Decimal], list[str]]:
    """Ledger entries per group key (two per payout), balances, and unbalanced groups."""
    with engine.connect() as connection:
        keys: dict[str, int] = {}
        for key in connection.execute(select(ledger_groups.c.key).join(
                ledger_entries, ledger_entries.c.group_id == ledger_groups.c.group_id)).scalars():
            keys[key] = keys.get(key, 0) + 1
        return keys, journal.balances(connection), journal.unbalanced_groups(connection)


def _statuses(engine: Engine) -> dict[int, str]:
    with engine.connect() as connection:
        return dict(connection.execute(select(statements.c.broker_id, statements.c.status)).all())  # type: ignore[arg-type]


def test_final_statements_are_paid_once_and_the_ledger_says_so(engine: Engine, tmp_path: Path) -> None:
    payouts = _month_with_brokers(engine, tmp_path, 3)
    approve_all(engine)
    first = settlement.settle_month(engine, MAY, NOW)
    again = settlement.settle_month(engine, MAY, NOW)
    assert (first.paid, first.already_paid) == ([1, 2, 3], [])
    assert (again.paid, again.already_paid) == ([], [1, 2, 3])
    keys, balances, unbalanced = _ledger(engine)
    assert keys == {f"payout/{b}/2024-05": 2 for b in (1, 2, 3)} and unbalanced == []
    assert balances[(REBATE_EXPENSE, "USD")] == total(payouts.values())
    assert all(balances[(broker_payable(b), "USD")] == -payouts[b] for b in payouts)  # owed until transferred
    assert not any((broker_account(b), "USD") in balances for b in payouts)
    assert set(_statuses(engine).values()) == {"paid"}


def test_a_draft_waits_for_distinct_approvers(engine: Engine, tmp_path: Path) -> None:
    _month_with_brokers(engine, tmp_path, 2, replace(DEFAULT_CONFIG, review_days=0, approvals_required=2))
    with engine.begin() as connection:
        assert settlement.approve(connection, 1, MAY, "ops-1", NOW).status == "draft"
        assert settlement.approve(connection, 1, MAY, "ops-1", NOW).approvals == 1  # same person
        assert settlement.approve(connection, 1, MAY, "ops-2", NOW).status == "final"
        with pytest.raises(Conflict, match="already final"):
            settlement.approve(connection, 1, MAY, "ops-3", NOW)
    result = settlement.settle_month(engine, MAY, NOW)
    assert (result.paid, result.not_final) == ([1], [2])
    assert settlement.settle_month(engine, MAY, NOW.replace(year=NOW.year + 1)).not_final == [2]  # no window


def test_a_draft_becomes_final_after_its_review_window(engine: Engine, tmp_path: Path) -> None:
    _month_with_brokers(engine, tmp_path, 2, replace(DEFAULT_CONFIG, review_days=3))
    with engine.begin() as connection:
        assert settlement.approve(connection, 1, MAY, "ops-1", NOW).status == "final"
    assert settlement.settle_month(engine, MAY, NOW).not_final == [2]  # closed at NOW: still in review
    later = settlement.settle_month(engine, MAY, NOW.replace(day=NOW.day + 3))
    assert (later.paid, later.already_paid) == ([2], [1])


def test_a_reused_key_with_other_amounts_is_an_error_and_the_same_one_is_a_no_op(engine: Engine) -> None:
    with engine.begin() as connection:
        first = journal.post(connection, payout(7, "2024-05", D("12.34")), NOW)
        same = journal.post(connection, payout(7, "2024-05", D("12.34")), NOW)
        with pytest.raises(journal.KeyReused, match="payout/7/2024-05"):
            journal.post(connection, payout(7, "2024-05", D("12.35")), NOW)
    assert (first.created, same.created, same.group_id) == (True, False, first.group_id)


def test_a_correction_is_a_reversing_group_linked_to_what_it_corrects(engine: Engine) -> None:
    original = payout(7, "2024-05", D("50"))
    with engine.begin() as connection:
        journal.post(connection, original, NOW)
        journal.post(connection, original.reversal("correction/7/2024-05"), NOW)
        balances = journal.balances(connection)
        assert journal.group(connection, "correction/7/2024-05").reverses == original.key
    assert balances[(broker_payable(7), "USD")] == 0 and balances[(REBATE_EXPENSE, "USD")] == 0


def test_the_database_refuses_to_edit_or_delete_ledger_entries(engine: Engine) -> None:
    with engine.begin() as connection:
        journal.post(connection, payout(7, "2024-05", D("50")), NOW)
    for statement in (update(ledger_entries).values(amount=D("0.01")), ledger_entries.delete(),
                      ledger_groups.delete()):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
            connection.execute(statement)
    keys, balances, _ = _ledger(engine)
    assert keys == {"payout/7/2024-05": 2} and balances[(REBATE_EXPENSE, "USD")] == D("50")


def test_an_unbalanced_group_never_reaches_the_ledger() -> None:
    with pytest.raises(Exception, match="does not balance in USD"):
        PostingGroup("k", "payout", (Posting("a", "USD", D("1")), Posting("b", "USD", D("-0.99"))))


@pytest.mark.postgres
def test_concurrent_settles_pay_each_statement_once(pg_url: str, tmp_path: Path) -> None:
    from bkr.store import db

    engine = db.open_engine(pg_url)
    try:
        payouts = _month_with_brokers(engine, tmp_path, 20)
        approve_all(engine)
        results: list[settlement.SettleResult] = []
        threads = [threading.Thread(target=lambda: results.append(
            settlement.settle_month(engine, MAY, NOW))) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(b for r in results for b in r.paid) == sorted(payouts)  # each paid by exactly one settler
        keys, balances, unbalanced = _ledger(engine)
        assert set(keys.values()) == {2} and len(keys) == 20 and unbalanced == []
        assert balances[(REBATE_EXPENSE, "USD")] == total(payouts.values())
    finally:
        engine.dispose()


@pytest.mark.slow
def test_a_settle_killed_at_any_point_and_rerun_pays_each_statement_once(db_url: str, engine: Engine,
                                                                          tmp_path: Path) -> None:
    payouts = _month_with_brokers(engine, tmp_path, 150)
    approve_all(engine)
    command = [sys.executable, "-m", "bkr.cli", "settle", "--month", "2024-05", "--db", db_url,
               "--key", operator_key(engine, "approver")]
    def paid_count() -> int:
        if db_url.startswith("sqlite:///"):  # a plain reader: bkr's SQLite sessions queue for the write lock
            with closing(sqlite3.connect(f"file:{db_url[len('sqlite:///'):]}?mode=ro", uri=True)) as reader:
                return int(reader.execute("SELECT count(*) FROM statements WHERE status = 'paid'").fetchone()[0])
        return sum(status == "paid" for status in _statuses(engine).values())

    kills, partial = 0, False
    for target in (None, 10, 60, 110):  # once during start-up, then right after the 10th, 60th, 110th payment
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            if target is None or paid_count() >= target:
                break
            time.sleep(0.005)
        if target is None:
            time.sleep(0.3)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        keys, _, unbalanced = _ledger(engine)
        assert set(keys.values()) <= {2} and unbalanced == []  # never twice, never half a group
        paid = {b for b, s in _statuses(engine).items() if s == "paid"}
        assert paid == {int(k.split("/")[1]) for k in keys}  # paid exactly when posted
        partial = partial or 0 < len(paid) < 150
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert kills >= 1 and partial  # at least one kill landed between two payments
    keys, balances, unbalanced = _ledger(engine)
    assert len(keys) == 150 and set(keys.values()) == {2} and unbalanced == []
    assert balances[(REBATE_EXPENSE, "USD")] == total(payouts.values())
    assert set(_statuses(engine).values()) == {"paid"}
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM ledger_entries")).scalar_one() == 300


def test_approving_a_month_approves_its_drafts_once_each_and_then_nothing(engine: Engine, tmp_path: Path) -> None:
    _month_with_brokers(engine, tmp_path, 3)
    with engine.begin() as connection:
        one = settlement.approve_month(connection, MAY, "ops-1", NOW, broker_id=2)
        assert settlement.draft_broker_ids(connection, MAY) == [1, 3]
        rest = settlement.approve_month(connection, MAY, "ops-1", NOW)
        again = settlement.approve_month(connection, MAY, "ops-2", NOW)
    assert [(a.broker_id, a.status) for a in one] == [(2, settlement.FINAL)]
    assert [(a.broker_id, a.status) for a in rest] == [(1, settlement.FINAL), (3, settlement.FINAL)]
    assert again == []
    with engine.begin() as connection, pytest.raises(Conflict, match="already final"):
        settlement.approve_month(connection, MAY, "ops-2", NOW, broker_id=2)


def test_the_command_line_approves_with_four_eyes_and_settles(db_url: str, engine: Engine, tmp_path: Path,
                                                               bkr) -> None:  # type: ignore[no-untyped-def]
    use_program(engine)
    config = tmp_path / "four-eyes.toml"
    config.write_text("[program]\nreview_days = 0\napprovals_required = 2\n")
    olga = operator_key(engine, "operator", "olga")
    applied = bkr("program", "apply", str(config), "--from", "2024-05", "--reason", "four eyes", "--db", db_url,
                  "--key", olga)
    assert applied.code == 0 and "program version 2 applies from 2024-05" in applied.err
    payouts = _month_with_brokers(engine, tmp_path, 2)
    alice, bob = operator_key(engine, "approver", "alice"), operator_key(engine, "approver", "bob")
    common = ("--month", "2024-05", "--db", db_url)  # no --config: the month's version says two approvals
    first = bkr("approve", *common, "--key", alice)
    assert first.code == 0 and "approved by alice; 0 now final" in first.err
    assert json.loads(bkr("settle", *common, "--json", "--key", alice).out)["not_final"] == [1, 2]
    second = bkr("approve", *common, "--key", bob)
    assert second.code == 0 and "2 now final" in second.err
    settled = bkr("settle", *common, "--json", "--key", bob)
    assert settled.code == 0 and json.loads(settled.out)["paid"] == [1, 2]
    _, balances, _ = _ledger(engine)
    assert balances[(REBATE_EXPENSE, "USD")] == total(payouts.values())


def test_settling_a_month_not_closed_is_refused_and_a_closed_empty_month_pays_nothing(engine: Engine) -> None:
    with pytest.raises(NotFound, match="not closed"):
        settlement.settle_month(engine, MAY, NOW)
    close(engine, MAY)  # no fills: no statements
    assert settlement.settle_month(engine, MAY, NOW).to_document() == {
        "month": "2024-05", "paid": [], "already_paid": [], "not_final": [], "transferred": []}
