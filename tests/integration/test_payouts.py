"""Payouts on both databases: settling writes one instruction per paid statement beside its
payable posting, the wallet's acknowledgement moves it to the broker's account once, the treasury's
month list shows both, reconcile holds at each stage, and a settle killed mid-way and rerun leaves
one instruction and one posting per statement."""

import csv
import io
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
from integration_support import MAY, NOW, add_broker, add_users, approve_all, close, fill, import_rows, operator_key
from sqlalchemy import Engine, func, select

from bkr.domain.config import PayoutTarget, ProgramConfig
from bkr.domain.money import D, canonical, total
from bkr.ledger import journal
from bkr.ledger.postings import REBATE_EXPENSE, broker_account, broker_payable
from bkr.program import audit, payouts, settlement, treasury
from bkr.program.payouts import PayoutConflict
from bkr.program.reconcile import reconcile_month
from bkr.store.tables import ledger_entries, ledger_groups, payout_instructions, venue_balances, venue_transfers
from bkr.venue.markets import VenueConfig
from bkr.venue.payouts import VenueWallet
from program_support import use_program


def _settled_may(engine: Engine, tmp_path: Path, brokers: int = 2, *, config: ProgramConfig | None = None,
                 settle: bool = True, wallet: payouts.Wallet | None = None) -> dict[int, Decimal]:
    """May 2024 closed with one fill per broker (fee 10 + id/100 USD) and, but for broker 3's (no
    fee), a payout; approved and settled. The payouts by broker."""
    use_program(engine, config)
    for broker_id in range(1, brokers + 1):
        add_broker(engine, broker_id)
    add_users(engine, "alice")
    rows = [fill(f"f-{b}", broker=b, fee="0" if b == 3 else f"{10 + b / 100:.2f}") for b in range(1, brokers + 1)]
    import_rows(engine, tmp_path / "may.csv", rows)
    paid = {b: Decimal(doc["payout"]) for b, doc in close(engine, MAY).items()}
    approve_all(engine)
    if settle:
        settlement.settle_month(engine, MAY, NOW, actor="ops-1", wallet=wallet)
    return paid


def _instructions(engine: Engine) -> list[payouts.PayoutInstruction]:
    with engine.connect() as connection:
        return payouts.instructions(connection)


def _differences(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return [str(d) for d in reconcile_month(connection, MAY).differences]


def test_settling_writes_one_pending_instruction_per_payout_and_owes_it_as_payable(engine: Engine,
                                                                                    tmp_path: Path) -> None:
    paid = _settled_may(engine, tmp_path, 3)
    found = _instructions(engine)
    assert [(i.key, i.broker_id, i.month, i.account_id, i.amount, i.currency, i.state, i.reference)
            for i in found] == [(f"payout/{b}/2024-05", b, MAY, f"acct-{b}", paid[b], "USD", "pending", None)
                                for b in (1, 2)]  # broker 3 earned 0: settled without a transfer
    assert all(i.created_at == NOW for i in found)
    with engine.connect() as connection:
        balances = journal.balances(connection)
    assert balances[(broker_payable(1), "USD")] == -paid[1] and (broker_account(1), "USD") not in balances
    assert _differences(engine) == []
    settlement.settle_month(engine, MAY, NOW)  # again: nothing new
    assert _instructions(engine) == found


def test_an_acknowledgement_moves_the_payout_to_the_broker_once_and_is_on_the_audit_trail(
        engine: Engine, tmp_path: Path) -> None:
    paid = _settled_may(engine, tmp_path)
    with engine.begin() as connection:
        first = payouts.acknowledge_payout(connection, "payout/1/2024-05", "WIRE-001", "wallet-bot", NOW)
    with engine.begin() as connection:
        again = payouts.acknowledge_payout(connection, str(first.instruction.instruction_id), "WIRE-001", "other",
                                           NOW)
    assert not first.already_acknowledged and again.already_acknowledged
    assert again.instruction == first.instruction
    acknowledged = first.instruction
    assert (acknowledged.state, acknowledged.reference, acknowledged.acknowledged_by,
            acknowledged.acknowledged_at) == ("acknowledged", "WIRE-001", "wallet-bot", NOW)
    with engine.begin() as connection, pytest.raises(PayoutConflict, match="already acknowledged with reference"):
        payouts.acknowledge_payout(connection, "payout/1/2024-05", "WIRE-999", "wallet-bot", NOW)
    with engine.begin() as connection, pytest.raises(PayoutConflict, match="acknowledged payout payout/1/2024-05"):
        payouts.acknowledge_payout(connection, "payout/2/2024-05", "WIRE-001", "wallet-bot", NOW)
    with engine.connect() as connection:
        balances = journal.balances(connection)
        groups = connection.execute(select(ledger_groups.c.key).order_by(ledger_groups.c.key)).scalars().all()
        trail = audit.entries(connection, audit.AuditQuery(action="payout"))
    assert groups == ["payout/1/2024-05", "payout/1/2024-05/paid", "payout/2/2024-05"]
    assert balances[(broker_account(1), "USD")] == -paid[1] and balances[(broker_payable(1), "USD")] == 0
    assert balances[(broker_payable(2), "USD")] == -paid[2]
    assert balances[(REBATE_EXPENSE, "USD")] == total(paid.values())
    assert [(e.actor, e.action, e.subject, e.after["reference"] if e.after else None) for e in trail] == [
        ("wallet-bot", "payout.acknowledge", "payout/1/2024-05", "WIRE-001")]
    assert _differences(engine) == []  # one acknowledged, one pending: both stages reconcile


def test_reconcile_names_an_acknowledgement_the_ledger_does_not_show(engine: Engine, tmp_path: Path) -> None:
    _settled_may(engine, tmp_path)
    with engine.begin() as connection:  # acknowledged behind bkr's back: no hand-off posted
        connection.execute(payout_instructions.update().where(payout_instructions.c.broker_id == 2)
                           .values(state="acknowledged", reference="R", acknowledged_by="x", acknowledged_at=NOW))
    assert _differences(engine) == [
        f"instructions -> ledger: broker 2 transferred (instruction acknowledged): expected "
        f"{canonical(_instructions(engine)[1].amount)}, found 0"]


@pytest.mark.postgres
def test_one_reference_sent_for_two_payouts_at_once_acknowledges_one_of_them(pg_url: str, tmp_path: Path) -> None:
    from bkr.store import db

    engine = db.open_engine(pg_url)
    try:
        _settled_may(engine, tmp_path)
        first_acknowledged = threading.Event()
        outcomes: dict[str, str] = {}

        def acknowledge(key: str) -> None:
            try:
                with engine.begin() as connection:
                    payouts.acknowledge_payout(connection, key, "WIRE-SAME", "wallet", NOW)
                    if key.startswith("payout/1/"):  # hold it uncommitted while the other one checks
                        first_acknowledged.set()
                        time.sleep(0.5)
                outcomes[key] = "acknowledged"
            except PayoutConflict as refused:
                outcomes[key] = str(refused)

        first = threading.Thread(target=acknowledge, args=("payout/1/2024-05",))
        first.start()
        assert first_acknowledged.wait(30)
        acknowledge("payout/2/2024-05")  # sees no such reference yet, then meets the first's at the unique index
        first.join()
        assert outcomes["payout/1/2024-05"] == "acknowledged"
        assert "was just used to acknowledge another payout" in outcomes["payout/2/2024-05"]
        assert sorted(i.state for i in _instructions(engine)) == ["acknowledged", "pending"]
        assert _differences(engine) == []
    finally:
        engine.dispose()


def test_an_unknown_instruction_and_a_blank_reference_are_refused(engine: Engine, tmp_path: Path) -> None:
    _settled_may(engine, tmp_path, 1)
    with engine.begin() as connection, pytest.raises(Exception, match="no payout instruction 'payout/9/2024-05'"):
        payouts.acknowledge_payout(connection, "payout/9/2024-05", "R", "ops", NOW)
    with engine.begin() as connection, pytest.raises(Exception, match="reference: empty"):
        payouts.acknowledge_payout(connection, "payout/1/2024-05", "  ", "ops", NOW)
    assert _instructions(engine)[0].state == "pending"


def test_the_treasurys_month_list_shows_status_payout_and_instruction(engine: Engine, tmp_path: Path) -> None:
    paid = _settled_may(engine, tmp_path, 3)
    with engine.begin() as connection:
        payouts.acknowledge_payout(connection, "payout/2/2024-05", "WIRE-2", "ops", NOW)
        rows = treasury.month_statements(connection, MAY)
    assert [(r.broker_id, r.status, r.payout, r.instruction_key, r.instruction_state, r.reference) for r in rows] == [
        (1, "paid", paid[1], "payout/1/2024-05", "pending", None),
        (2, "paid", paid[2], "payout/2/2024-05", "acknowledged", "WIRE-2"),
        (3, "paid", D("0"), None, None, None)]
    lines = list(csv.DictReader(io.StringIO(treasury.rows_csv(rows))))
    assert [(line["broker_id"], line["instruction_state"], line["reference"]) for line in lines] == [
        ("1", "pending", ""), ("2", "acknowledged", "WIRE-2"), ("3", "", "")]
    document = json.loads(treasury.rows_json(MAY, rows))
    assert document["month"] == "2024-05" and [Decimal(s["payout"]) for s in document["statements"]] == [
        paid[1], paid[2], D("0")]


def test_the_command_line_lists_acknowledges_and_prints_the_month(db_url: str, engine: Engine, tmp_path: Path,
                                                                   bkr) -> None:  # type: ignore[no-untyped-def]
    paid = _settled_may(engine, tmp_path)
    listed = bkr("payouts", "list", "--month", "2024-05", "--state", "pending", "--json", "--db", db_url)
    assert listed.code == 0
    assert [(p["key"], p["amount"]) for p in json.loads(listed.out)["payouts"]] == [
        ("payout/1/2024-05", canonical(paid[1])), ("payout/2/2024-05", canonical(paid[2]))]
    refused = bkr("payouts", "ack", "payout/1/2024-05", "--reference", "W-1", "--db", db_url,
                  "--key", operator_key(engine, "viewer"))
    assert refused.code == 1 and "approver" in refused.err
    key = operator_key(engine, "approver", "treasurer")
    acked = bkr("payouts", "ack", "payout/1/2024-05", "--reference", "W-1", "--db", db_url, "--key", key, "--json")
    assert acked.code == 0 and json.loads(acked.out)["acknowledged_by"] == "treasurer"
    same = bkr("payouts", "ack", "payout/1/2024-05", "--reference", "W-1", "--db", db_url, "--key", key)
    assert same.code == 0 and "nothing changed" in same.err
    other = bkr("payouts", "ack", "payout/1/2024-05", "--reference", "W-2", "--db", db_url, "--key", key)
    assert other.code == 1 and "already acknowledged with reference 'W-1'" in other.err
    pending = bkr("payouts", "list", "--state", "pending", "--json", "--db", db_url)
    assert [p["key"] for p in json.loads(pending.out)["payouts"]] == ["payout/2/2024-05"]
    as_csv = bkr("statements", "--month", "2024-05", "--format", "csv", "--db", db_url)
    assert as_csv.code == 0
    assert [(r["broker_id"], r["status"], r["instruction_state"], r["reference"])
            for r in csv.DictReader(io.StringIO(as_csv.out))] == [("1", "paid", "acknowledged", "W-1"),
                                                                   ("2", "paid", "pending", "")]
    as_json = bkr("statements", "--month", "2024-05", "--format", "json", "--db", db_url)
    with engine.connect() as connection:
        assert as_json.out == treasury.rows_json(MAY, treasury.month_statements(connection, MAY))
    table = bkr("statements", "--month", "2024-05", "--db", db_url)
    assert table.code == 0 and "W-1" in table.out and "pending" in table.out
    assert bkr("statements", "--month", "2024-05", "--format", "xml", "--db", db_url).code == 1


def test_a_program_that_pays_to_the_venue_credits_the_broker_in_usdc_and_acknowledges_itself(
        engine: Engine, tmp_path: Path) -> None:
    wallet = VenueWallet(VenueConfig(starting_balances={"USDC": D("100")}))
    config = replace(ProgramConfig(), payout_target=PayoutTarget.VENUE)
    paid = _settled_may(engine, tmp_path, 2, config=config, settle=False)
    first = settlement.settle_month(engine, MAY, NOW, actor="ops-1", wallet=wallet)
    again = settlement.settle_month(engine, MAY, NOW, actor="ops-1", wallet=wallet)
    assert (first.transferred, again.transferred) == ([1, 2], [])
    found = _instructions(engine)
    assert [(i.state, i.acknowledged_by) for i in found] == [("acknowledged", "ops-1")] * 2
    with engine.connect() as connection:
        credited = dict(connection.execute(select(venue_balances.c.user_id, venue_balances.c.available)
                                           .where(venue_balances.c.asset == "USDC")).all())
        transfers = connection.execute(select(venue_transfers.c.reference, venue_transfers.c.idempotency_key,
                                              venue_transfers.c.amount).order_by(venue_transfers.c.transfer_id)).all()
    assert credited == {f"acct-{b}": D("100") + paid[b] for b in (1, 2)}  # opened with 100, then the payout
    assert [(t.reference, t.idempotency_key, t.amount) for t in transfers] == [
        (i.reference, i.key, i.amount) for i in found]
    assert _differences(engine) == []


def test_a_payout_a_crash_left_pending_reaches_the_venue_at_the_next_settle(engine: Engine, tmp_path: Path) -> None:
    config = replace(ProgramConfig(), payout_target=PayoutTarget.VENUE)
    paid = _settled_may(engine, tmp_path, 1, config=config)  # paid, then stopped before the transfer
    assert [i.state for i in _instructions(engine)] == ["pending"]
    wallet = VenueWallet(VenueConfig(starting_balances={}))
    rerun = settlement.settle_month(engine, MAY, NOW, actor="ops-2", wallet=wallet)
    assert (rerun.paid, rerun.already_paid, rerun.transferred) == ([], [1], [1])
    [instruction] = _instructions(engine)
    assert (instruction.state, instruction.acknowledged_by) == ("acknowledged", "ops-2")
    with engine.connect() as connection:
        assert connection.execute(select(venue_balances.c.available).where(
            venue_balances.c.user_id == "acct-1")).scalar_one() == paid[1]
    assert _differences(engine) == []


def test_a_program_that_pays_to_the_wallet_leaves_the_instructions_to_it(engine: Engine, tmp_path: Path) -> None:
    wallet = VenueWallet(VenueConfig())
    _settled_may(engine, tmp_path, 1, wallet=wallet)  # the default target: the exchange's wallet
    assert [i.state for i in _instructions(engine)] == ["pending"]
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(venue_transfers)).scalar_one() == 0


@pytest.mark.slow
def test_a_settle_killed_mid_way_and_rerun_leaves_one_instruction_and_one_posting_per_statement(
        db_url: str, engine: Engine, tmp_path: Path) -> None:
    brokers = 120
    paid = _settled_may(engine, tmp_path, brokers, settle=False)
    command = [sys.executable, "-m", "bkr.cli", "settle", "--month", "2024-05", "--db", db_url,
               "--key", operator_key(engine, "approver")]

    def instructed() -> int:
        if db_url.startswith("sqlite:///"):  # a plain reader: bkr's SQLite sessions queue for the write lock
            with closing(sqlite3.connect(f"file:{db_url[len('sqlite:///'):]}?mode=ro", uri=True)) as reader:
                return int(reader.execute("SELECT count(*) FROM payout_instructions").fetchone()[0])
        with engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(payout_instructions)).scalar_one())

    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while instructed() < 20:
        assert process.poll() is None, "the settle finished before it could be killed"
        assert time.monotonic() < deadline, "no statement settled within a minute"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    killed_at = instructed()
    assert 20 <= killed_at < brokers - 1  # mid-way: some statements settled, some not

    finished = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    assert finished.returncode == 0, finished.stderr
    with engine.connect() as connection:
        keys = connection.execute(select(ledger_groups.c.key, func.count()).join(
            ledger_entries, ledger_entries.c.group_id == ledger_groups.c.group_id).group_by(ledger_groups.c.key)).all()
        per_statement = connection.execute(select(payout_instructions.c.broker_id, func.count())
                                           .group_by(payout_instructions.c.broker_id)).all()
    earning = {b for b, amount in paid.items() if amount > 0}
    assert {key: n for key, n in keys} == {f"payout/{b}/2024-05": 2 for b in earning}  # one posting each, whole
    assert dict(per_statement) == dict.fromkeys(earning, 1)  # one instruction each
    assert [i.amount for i in _instructions(engine)] == [paid[b] for b in sorted(earning)]
    assert _differences(engine) == []
