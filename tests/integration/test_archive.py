"""`bkr fills archive`: a closed, settled month's fills move to a Parquet file with their digest
recorded, and `bkr reconcile` proves the month from that file; on PostgreSQL fills live in one
partition per month."""

import json
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from alembic import command
from integration_support import (
    APRIL,
    BROKER,
    JUNE,
    MAY,
    NOW,
    add_broker,
    add_code,
    add_users,
    approve_all,
    close,
    correction,
    fill,
    import_rows,
    operator_key,
)
from sqlalchemy import Engine, func, select, text

from bkr.domain.errors import Conflict
from bkr.domain.money import canonical
from bkr.domain.periods import Month, parse_instant
from bkr.domain.registry import BrokerStatus
from bkr.program import audit, registry, settlement
from bkr.program.audit import AuditQuery
from bkr.program.importer import file_facts
from bkr.store import db
from bkr.store.partitions import fill_partitions
from bkr.store.tables import fill_archives, fill_keys, fills
from program_support import use_program

MAY_FILLS = [fill("f-1", fee="12.5"), fill("f-2", user="bob", fee="7.25", market="PERP"),
             fill("f-3", broker=2200, fee="-0.5", is_maker=True),
             fill("f-4", broker=2200, fee="0.000000000000000001", price="250", quantity="0.123456789012345678")]


def _settled_may(engine: Engine, tmp_path: Path, *, settle: bool = True) -> None:
    """May closed and paid (April, before it, too); a fill of June, still open."""
    add_broker(engine, 1400)
    add_broker(engine, 2200)
    add_code(engine, "AFF10", "0.10")
    add_users(engine, "alice")
    add_users(engine, "bob", code="AFF10")
    import_rows(engine, tmp_path / "may.csv", [
        *MAY_FILLS, fill("f-5", at="2024-04-30T23:00:00Z", fee="1"), fill("j-1", at="2024-06-02T00:00:00Z")])
    close(engine, APRIL)
    close(engine, MAY)
    if settle:
        approve_all(engine)
        settlement.settle_month(engine, APRIL, NOW)
        settlement.settle_month(engine, MAY, NOW)


def _archive(bkr, db_url: str, key: str, out: Path, month: str = "2024-05"):  # type: ignore[no-untyped-def]
    return bkr("fills", "archive", "--month", month, "--out", str(out), "--db", db_url, "--key", key, "--json")


def _reconcile(bkr, db_url: str, *extra: str) -> tuple[int, dict[str, Any], str]:  # type: ignore[no-untyped-def]
    result = bkr("reconcile", "--month", "2024-05", "--db", db_url, "--json", *extra)
    return result.code, json.loads(result.out) if result.out else {}, result.err


def _stored_rows(engine: Engine, month: Month) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(
            select(fills).where(fills.c.period == month).order_by(fills.c.fill_id))]


def _as_archived(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as the archive writes it: money as canonical text, months as YYYY-MM."""
    return {name: canonical(value) if isinstance(value, Decimal) else str(value) if isinstance(value, Month)
            else value for name, value in row.items()}


def test_an_archived_month_leaves_the_database_and_reconciles_from_its_file(
        db_url: str, engine: Engine, tmp_path: Path, bkr) -> None:  # type: ignore[no-untyped-def]
    _settled_may(engine, tmp_path)
    before = _stored_rows(engine, MAY)
    out = tmp_path / "archive" / "2024-05.parquet"
    out.parent.mkdir()

    result = _archive(bkr, db_url, operator_key(engine, "operator", "olga"), out)

    assert result.code == 0, result.err
    report = json.loads(result.out)
    facts = file_facts(out)
    assert (report["rows"], report["counted_fills"], report["sha256"], report["bytes"]) == (
        4, 4, facts.sha256, facts.size)
    assert report["volume_usd"] == "330.8641972530864195"  # 100 + 100 + 100 + 250 × 0.123456789012345678
    assert [_as_archived(row) for row in pq.read_table(out).to_pylist()] == [_as_archived(r) for r in before]
    assert _stored_rows(engine, MAY) == []
    assert [r["fill_id"] for r in _stored_rows(engine, JUNE)] == ["j-1"]
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(fill_keys)).scalar_one() == 6  # ids stay claimed
        (recorded,) = connection.execute(select(fill_archives)).all()
        (entry,) = audit.entries(connection, AuditQuery(action="fills.archive"))
        if connection.dialect.name == "postgresql":
            assert MAY not in fill_partitions(connection)  # the month's partition is dropped whole
    assert (recorded.month, recorded.path, recorded.sha256, recorded.rows, recorded.archived_by) == (
        MAY, str(out), facts.sha256, 4, "olga")
    assert (entry.actor, entry.subject, entry.after) == ("olga", "2024-05", {
        "file": str(out), "sha256": facts.sha256, "bytes": facts.size, "rows": 4, "counted_fills": 4,
        "volume_usd": "330.8641972530864195", "fee_base_usd": "19.750000000000000001"})

    code, reconciled, _ = _reconcile(bkr, db_url)
    assert (code, reconciled["clean"], reconciled["fills"], reconciled["archive"]) == (0, True, 4, str(out))


def test_reconcile_reads_an_archive_moved_elsewhere_and_refuses_a_tampered_one(
        db_url: str, engine: Engine, tmp_path: Path, bkr) -> None:  # type: ignore[no-untyped-def]
    _settled_may(engine, tmp_path)
    out = tmp_path / "2024-05.parquet"
    assert _archive(bkr, db_url, operator_key(engine, "operator"), out).code == 0
    recorded = file_facts(out).sha256
    moved = out.rename(tmp_path / "cold-storage.parquet")

    code, _, error = _reconcile(bkr, db_url)
    assert code == 1
    assert f"the archive of 2024-05 is not at {out}: point to it with --archive FILE" in error
    code, reconciled, _ = _reconcile(bkr, db_url, "--archive", str(moved))
    assert (code, reconciled["clean"], reconciled["archive"]) == (0, True, str(moved))

    # a fee raised in the file: it would reconcile against nothing, since the digest no longer matches
    table = pq.read_table(moved)
    fees = table.column("fee_usd").to_pylist()
    fees[0] = "99"
    pq.write_table(table.set_column(table.schema.get_field_index("fee_usd"), "fee_usd",
                                    pa.array(fees, pa.string())), moved)
    code, _, error = _reconcile(bkr, db_url, "--archive", str(moved))
    assert code == 1
    assert f"is not the archive of 2024-05: its SHA-256 is {file_facts(moved).sha256}" in error
    assert f"the archive recorded {recorded}" in error


def test_an_open_unsettled_archived_or_waiting_month_and_an_existing_file_are_refused(
        db_url: str, engine: Engine, tmp_path: Path, bkr) -> None:  # type: ignore[no-untyped-def]
    _settled_may(engine, tmp_path, settle=False)
    key = operator_key(engine, "operator")
    out = tmp_path / "out.parquet"

    def refused(month: str = "2024-05", to: Path = out) -> str:
        result = _archive(bkr, db_url, key, to, month)
        assert result.code == 1
        return result.err

    assert "2024-06 is not closed: only a closed, settled month is archived" in refused("2024-06")
    assert "2024-05 is not settled: 2 statement(s) not paid (broker 1400 draft, broker 2200 draft)" in refused()
    approve_all(engine)
    settlement.settle_month(engine, MAY, NOW)
    out.write_bytes(b"keep me")
    assert f"{out} exists: an archive is written only to a new file" in refused()
    assert out.read_bytes() == b"keep me"
    no_key = bkr("fills", "archive", "--month", "2024-05", "--out", str(tmp_path / "x.parquet"), "--db", db_url)
    assert no_key.code == 1 and "needs an operator key with the operator role" in no_key.err
    assert len(_stored_rows(engine, MAY)) == 4  # nothing was archived
    assert _archive(bkr, db_url, key, tmp_path / "first.parquet").code == 0
    assert "2024-05 is archived already: 4 fills to" in refused(to=tmp_path / "second.parquet")
    assert not (tmp_path / "second.parquet").exists()


def test_a_month_with_fills_waiting_for_their_user_is_not_archived(
        db_url: str, engine: Engine, tmp_path: Path, bkr) -> None:  # type: ignore[no-untyped-def]
    add_broker(engine)
    import_rows(engine, tmp_path / "may.csv", [fill("f-1", user="carol")])  # carol is not registered
    close(engine, APRIL)
    close(engine, MAY)
    result = _archive(bkr, db_url, operator_key(engine, "operator"), tmp_path / "may.parquet")
    assert result.code == 1
    assert "1 fill(s) of 2024-05 wait for their user" in result.err
    assert not (tmp_path / "may.parquet").exists()


def test_after_an_archive_late_fills_go_to_the_open_month_and_archived_fills_stay_known(
        db_url: str, engine: Engine, tmp_path: Path, bkr) -> None:  # type: ignore[no-untyped-def]
    _settled_may(engine, tmp_path)
    assert _archive(bkr, db_url, operator_key(engine, "operator"), tmp_path / "may.parquet").code == 0

    tally = import_rows(engine, tmp_path / "late.csv", [
        MAY_FILLS[0],  # sent again: still a duplicate
        {**MAY_FILLS[1], "fee": "8"},  # the same id with other content: still a conflict
        fill("f-6", at="2024-05-20T00:00:00Z"),  # a late fill of May: paid in June
        correction(MAY_FILLS[0], "f-1-fix", quantity="-0.5", fee="-1")])
    assert tally.counts() == {"accepted": 1, "duplicates": 1, "conflicts": 1, "rejected": 1}
    with engine.connect() as connection:
        late = connection.execute(select(fills.c.fill_month, fills.c.period).where(fills.c.fill_id == "f-6")).one()
        (reason,) = connection.execute(text("SELECT reason FROM fill_rejections")).scalars()
    assert (late.fill_month, late.period) == (MAY, JUNE)
    assert reason.startswith("corrects: fill 'f-1' was archived with its month (bkr fills archive)")
    june = close(engine, JUNE)[BROKER]
    assert sorted((line["fill_month"], line["fills"]) for line in june["lines"]) == [("2024-05", 1), ("2024-06", 1)]


def test_a_retroactive_change_reaching_an_archived_month_is_refused(
        db_url: str, engine: Engine, tmp_path: Path, bkr) -> None:  # type: ignore[no-untyped-def]
    _settled_may(engine, tmp_path)
    assert _archive(bkr, db_url, operator_key(engine, "operator"), tmp_path / "may.parquet").code == 0
    with pytest.raises(Conflict, match="reaches 2024-05, whose fills are archived"), engine.begin() as connection:
        registry.change_broker_status(connection, BROKER, BrokerStatus.SUSPENDED,
                                      parse_instant("2024-05-15T00:00:00Z"), NOW, actor="ops",
                                      is_retroactive=True, reason="terms breached")


def test_the_migration_moves_fills_into_month_partitions_and_back(db_url: str, engine: Engine,
                                                                  tmp_path: Path) -> None:
    add_broker(engine)
    add_users(engine, "alice")
    import_rows(engine, tmp_path / "fills.csv", [fill("m-1"), fill("m-2", fee="0.000000000000000001"),
                                                 fill("j-1", at="2024-06-03T10:00:00Z")])
    before = _stored_rows(engine, MAY) + _stored_rows(engine, JUNE)
    config = db._alembic_config(engine)

    command.downgrade(config, "0015")
    assert _stored_rows(engine, MAY) + _stored_rows(engine, JUNE) == before
    db.upgrade(engine)

    assert _stored_rows(engine, MAY) + _stored_rows(engine, JUNE) == before
    with engine.connect() as connection:
        assert sorted(connection.execute(select(fill_keys.c.fill_id)).scalars()) == ["j-1", "m-1", "m-2"]
        if connection.dialect.name == "postgresql":
            placed = dict(connection.execute(text("SELECT fill_id, tableoid::regclass::text FROM fills")).all())
            assert placed == {"m-1": "fills_2024_05", "m-2": "fills_2024_05", "j-1": "fills_2024_06"}
    tally = import_rows(engine, tmp_path / "again.csv", [fill("m-1"), fill("j-2", at="2024-06-04T00:00:00Z")])
    assert (tally.accepted, tally.duplicates) == (1, 1)


def test_the_migration_does_not_go_down_past_an_archived_month(db_url: str, engine: Engine, tmp_path: Path,
                                                               bkr) -> None:  # type: ignore[no-untyped-def]
    _settled_may(engine, tmp_path)
    assert _archive(bkr, db_url, operator_key(engine, "operator"), tmp_path / "may.parquet").code == 0
    try:
        command.downgrade(db._alembic_config(engine), "0017")  # the migrations after it go down, archive or not
        with pytest.raises(RuntimeError, match="months 2024-05 are archived"):
            command.downgrade(db._alembic_config(engine), "0015")
        assert db.current_revision(engine) == "0017"
    finally:
        db.upgrade(engine)  # the test process's database serves the tests after this one


@pytest.mark.postgres
def test_fills_land_in_their_months_partition_made_on_demand_also_by_concurrent_writers(
        pg_url: str, tmp_path: Path) -> None:
    engine = db.open_engine(pg_url)
    try:
        month = Month(2024, 9)
        with engine.begin() as connection:  # a partition left by an earlier test on this database goes
            if month in fill_partitions(connection):
                connection.execute(text("DROP TABLE fills_2024_09"))
        add_broker(engine)
        add_users(engine, "alice")
        use_program(engine)
        barrier = threading.Barrier(2)
        failures: list[BaseException] = []

        def write(name: str) -> None:
            try:
                barrier.wait()
                import_rows(engine, tmp_path / f"{name}.csv", [
                    fill(f"{name}-1", at="2024-09-01T00:00:00Z"), fill("shared", at="2024-09-02T00:00:00Z"),
                    fill(f"{name}-2", at="2024-05-05T00:00:00Z")])
            except BaseException as error:
                failures.append(error)

        threads = [threading.Thread(target=write, args=(name,)) for name in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert failures == []
        with engine.connect() as connection:
            placed = dict(connection.execute(text("SELECT fill_id, tableoid::regclass::text FROM fills")).all())
            keys = connection.execute(select(func.count()).select_from(fill_keys)).scalar_one()
        assert placed == {"a-1": "fills_2024_09", "b-1": "fills_2024_09", "shared": "fills_2024_09",
                          "a-2": "fills_2024_05", "b-2": "fills_2024_05"}
        assert keys == 5
    finally:
        engine.dispose()
