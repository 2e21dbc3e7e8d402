"""The audit trail: entries appended in the change's transaction, read back by filter, refused
UPDATE and DELETE, and a hash chain that finds an entry edited or removed behind bkr's back."""

import json
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from integration_support import add_broker, add_users, fill, import_rows, operator_key
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from bkr.domain.audit import GENESIS
from bkr.domain.periods import Month
from bkr.program import audit
from bkr.store import db
from program_support import use_program

T0 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


def write_some(engine: Engine) -> None:
    with engine.begin() as connection:
        audit.record(connection, actor="alice", action="broker.status", subject="broker 1400", at=T0,
                     before={"status": "active"}, after={"status": "suspended", "effective_at": T0},
                     reason="KYC review")
        audit.record(connection, actor="bob", action="referral.rate", subject="code ALICE-CODE",
                     at=T0 + timedelta(minutes=1), before={"rate": Decimal("0.10")},
                     after={"rate": Decimal("0.125")})
    with engine.begin() as connection:
        audit.record(connection, actor="system", action="month.close", subject="2026-10",
                     at=T0 + timedelta(hours=1), after={"month": Month(2026, 10), "statements": 3})


def test_entries_are_stored_exactly_chained_and_read_back_by_actor_action_and_time(engine: Engine) -> None:
    write_some(engine)

    with engine.connect() as connection:
        everything = audit.entries(connection, audit.AuditQuery())
        by_actor = audit.entries(connection, audit.AuditQuery(actor="bob"))
        family = audit.entries(connection, audit.AuditQuery(action="broker"))
        later = audit.entries(connection, audit.AuditQuery(since=T0 + timedelta(seconds=30)))
        page = audit.entries(connection, audit.AuditQuery(after=1, limit=1))
        head, problems = audit.verify(connection)

    assert [(e.entry_id, e.actor, e.action) for e in everything] == [
        (1, "alice", "broker.status"), (2, "bob", "referral.rate"), (3, "system", "month.close")]
    assert everything[0].after == {"status": "suspended", "effective_at": "2026-11-02T09:30:00+00:00"}
    assert everything[0].reason == "KYC review"
    assert (everything[1].before, everything[1].after) == ({"rate": "0.1"}, {"rate": "0.125"})  # exact text
    assert everything[2].after == {"month": "2026-10", "statements": 3}
    assert [e.previous_hash for e in everything] == [GENESIS, everything[0].hash, everything[1].hash]
    assert [e.entry_id for e in by_actor] == [2]
    assert [e.entry_id for e in family] == [1]
    assert [e.entry_id for e in later] == [2, 3]
    assert [e.entry_id for e in page] == [2]
    assert (head.entries, head.hash, problems) == (3, everything[2].hash, [])


def test_the_database_refuses_to_update_or_delete_an_entry(engine: Engine) -> None:
    write_some(engine)
    for statement in ("UPDATE audit_entries SET actor = 'mallory' WHERE entry_id = 1",
                      "DELETE FROM audit_entries WHERE entry_id = 3"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
            connection.execute(text(statement))
    with engine.connect() as connection:
        assert audit.verify(connection)[1] == []


def _behind_bkrs_back(engine: Engine, statement: str) -> None:
    """What someone with the database's owner rights can do: lift the guard, change, restore it."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("ALTER TABLE audit_entries DISABLE TRIGGER audit_entries_append_only"))
            connection.execute(text(statement))
            connection.execute(text("ALTER TABLE audit_entries ENABLE TRIGGER audit_entries_append_only"))
        else:
            triggers = connection.execute(text(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_entries'")).all()
            for name, _ in triggers:
                connection.execute(text(f"DROP TRIGGER {name}"))
            connection.execute(text(statement))
            for _, sql in triggers:
                connection.execute(text(sql))


def test_verify_reports_an_entry_edited_in_the_database(engine: Engine, db_url: str, bkr: Any) -> None:
    write_some(engine)
    assert bkr("audit", "verify", "--db", db_url).code == 0

    _behind_bkrs_back(engine, """UPDATE audit_entries SET after = '{"rate":"0.5"}' WHERE entry_id = 2""")

    result = bkr("audit", "verify", "--db", db_url)
    assert result.code == 1
    assert result.err == "error: entry 2: edited: its content does not give its stored hash\n"
    assert result.out.startswith("FAILED: 3 entries, head ")
    checked = json.loads(bkr("audit", "verify", "--db", db_url, "--json").out)
    assert (checked["ok"], checked["entries"]) == (False, 3)


def test_verify_reports_an_entry_removed_from_the_middle(engine: Engine, db_url: str, bkr: Any) -> None:
    write_some(engine)

    _behind_bkrs_back(engine, "DELETE FROM audit_entries WHERE entry_id = 2")

    checked = json.loads(bkr("audit", "verify", "--db", db_url, "--json").out)
    assert checked["ok"] is False
    assert checked["problems"][0] == "entry 3: entry 2 removed: ids jump from 1 to 3"
    assert checked["problems"][1].startswith("entry 3: does not follow the entry before it")


def test_bkr_audit_lists_entries_filtered_as_json_and_as_a_table(engine: Engine, db_url: str, bkr: Any) -> None:
    write_some(engine)

    listed = json.loads(bkr("audit", "--actor", "alice", "--db", db_url, "--json").out)
    assert [(e["id"], e["action"], e["subject"], e["reason"]) for e in listed["entries"]] == [
        (1, "broker.status", "broker 1400", "KYC review")]
    assert listed["entries"][0]["at"] == "2026-11-02T09:30:00.000000Z"
    paged = json.loads(bkr("audit", "--limit", "2", "--db", db_url, "--json").out)
    assert ([e["id"] for e in paged["entries"]], paged["next_after"]) == ([1, 2], 2)
    table = bkr("audit", "--since", "2026-11-02T10:00:00Z", "--db", db_url)
    assert table.code == 0 and "month.close" in table.out and "broker.status" not in table.out
    bad = bkr("audit", "--since", "yesterday", "--db", db_url)
    assert bad.code == 1 and bad.err.startswith("error: ") and bad.err.count("\n") == 1


@pytest.mark.postgres
def test_concurrent_appends_on_postgresql_make_one_chain(pg_url: str) -> None:
    """Four writers at once (SQLite has one writer, so appends cannot interleave there)."""
    engine = db.open_engine(pg_url)
    barrier = threading.Barrier(4)

    def append(worker: int) -> None:
        barrier.wait()
        for step in range(10):
            with engine.begin() as connection:
                audit.record(connection, actor=f"op-{worker}", action="test.append", subject=str(step), at=T0)

    threads = [threading.Thread(target=append, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    with engine.connect() as connection:
        head, problems = audit.verify(connection)
    engine.dispose()
    assert (head.entries, problems) == (40, [])


def test_a_month_from_its_settings_to_its_payment_is_on_the_trail_by_whom(engine: Engine, db_url: str, bkr: Any,
                                                                           tmp_path: Path) -> None:
    use_program(engine)
    add_broker(engine)
    add_users(engine, "alice-user")
    import_rows(engine, tmp_path / "may.csv", [fill("f-1", user="alice-user", fee="10")])
    olga, carol = operator_key(engine, "operator", "olga"), operator_key(engine, "operator", "carol")
    alice, bob = operator_key(engine, "approver", "alice"), operator_key(engine, "approver", "bob")
    terms = tmp_path / "four-eyes.toml"
    terms.write_text("[program]\nreview_days = 0\napprovals_required = 2\n")
    common = ("--month", "2024-05", "--db", db_url)

    assert bkr("program", "apply", str(terms), "--from", "2024-05", "--reason", "four eyes", "--db", db_url,
               "--key", olga).code == 0
    assert bkr("close", *common, "--key", carol).code == 0
    assert bkr("approve", *common, "--key", alice).code == 0
    assert bkr("approve", *common, "--key", alice).code == 0  # again: nothing new on the trail
    assert bkr("approve", *common, "--key", bob).code == 0
    assert bkr("settle", *common, "--key", alice).code == 0

    with engine.connect() as connection:
        trail = [(e.actor, e.action, e.subject) for e in audit.entries(connection, audit.AuditQuery())]
        head, problems = audit.verify(connection)
        settled = audit.entries(connection, audit.AuditQuery(action="statement.settle"))

    def first_key(name: str, token: str) -> list[tuple[str, str, str]]:
        """An operator added without a key: by itself, then its first key (its id is the token's second part)."""
        return [(name, "operator.add", f"operator {name}"),
                (name, "key.create", f"key {token.removeprefix('bkr_op_').split('_')[0]}")]

    assert trail == [
        ("system", "program.import", "program version 1"),
        ("ops", "broker.add", "broker 1400"), ("ops", "broker.status", "broker 1400"),
        ("ops", "user.add", "user alice-user"), ("ops", "fills.import", "import 1"),
        *first_key("olga", olga), *first_key("carol", carol), *first_key("alice", alice), *first_key("bob", bob),
        ("olga", "program.apply", "program version 2"),
        ("carol", "month.close", "2024-05"),
        ("alice", "statement.approve", "broker 1400 2024-05"),
        ("bob", "statement.approve", "broker 1400 2024-05"),
        ("alice", "statement.settle", "broker 1400 2024-05"),
    ]
    assert settled[0].after is not None and settled[0].after["payout"] == "2"  # 10 × 20%, exact
    assert (head.entries, problems) == (len(trail), [])
