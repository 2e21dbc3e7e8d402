"""A month computed by Spark from the lake leaves the store bkr's own import of the same fills leaves.

The differential test of `bkr.lake`: hypothesis makes months of every kind of record (those of
`test_set_import`: plain fills in every shape, repeats, conflicts, corrections, sides of trades,
fills already stored, late fills, unknown users, a suspension and a rate change mid-month, and
records to reject for every reason), written as one Parquet file in a lake directory. One
database takes it by `bkr lake aggregate`, another, set up alike, by `bkr fills import`; the
aggregates, their users-merged totals, the users' totals, the daily series, the rejections and
conflicts kept, the tallies and the month's statements must come out the same, byte for byte. On
SQLite and PostgreSQL. One Spark session (`local[2]`) serves the whole module.
"""

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from integration_support import JUNE, MAY, clock, close, fill, write_parquet
from sqlalchemy import Engine, select
from test_set_import import _text, records, set_up, write_records

pyspark = pytest.importorskip("pyspark")

from pyspark.sql import SparkSession  # noqa: E402

from bkr.domain.errors import InvalidInput  # noqa: E402
from bkr.lake.job import session  # noqa: E402
from bkr.lake.load import LakeRun, aggregate_month  # noqa: E402
from bkr.lake.reconcile import reconcile_lake_month  # noqa: E402
from bkr.program.importer import import_file  # noqa: E402
from bkr.program.writer import Tally  # noqa: E402
from bkr.store import db  # noqa: E402
from bkr.store.tables import (  # noqa: E402
    aggregate_totals,
    aggregates,
    daily_volumes,
    fill_conflicts,
    fill_rejections,
    fills,
    lake_runs,
    statements,
    user_totals,
)

TOTALS = (aggregates, aggregate_totals, user_totals, daily_volumes)
KEPT = {fill_rejections: ("rejection_id", "import_id"), fill_conflicts: ("conflict_id", "import_id")}


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    spark = session("local[2]", "bkr lake tests")
    yield spark
    spark.stop()


def state(engine: Engine) -> dict[str, Any]:
    """What the two paths must leave alike: the totals, what was kept for operators, the
    statements' documents; and the fills the store holds (the lake path stores only those the row
    path decided: each must be in the other store as it is here)."""
    found: dict[str, Any] = {}
    with engine.connect() as connection:
        for table in TOTALS:
            found[table.name] = sorted((tuple(row) for row in connection.execute(select(table))), key=repr)
        for table, left_out in KEPT.items():
            columns = [c for c in table.columns if c.name not in left_out]
            found[table.name] = sorted((tuple(row) for row in connection.execute(select(*columns))), key=repr)
        found["statements"] = [tuple(row) for row in connection.execute(
            select(statements.c.broker_id, statements.c.month, statements.c.document).order_by(statements.c.broker_id))]
        columns = [c for c in fills.columns if c.name != "import_id"]
        found["fills"] = {tuple(row) for row in connection.execute(select(*columns))}
    return found


def by_lake(url: str, spark: SparkSession, lake: Path, tmp_path: Path, *,
            closing: bool = False) -> tuple[LakeRun, dict[str, Any]]:
    """The lake path into a database set up by `set_up`: what it leaves, and (`closing`) the
    statements of May's close under "closed"."""
    engine = db.open_engine(url)
    try:
        set_up(engine, tmp_path)
        run = aggregate_month(engine, spark, month=MAY, uri=str(lake), work=tmp_path / "work", clock=clock,
                              actor="ops")
        found = state(engine)
        if closing:
            found["closed"] = close(engine, MAY)
            found["statements"] = state(engine)["statements"]
        return run, found
    finally:
        engine.dispose()


def by_import(url: str, files: list[Path], tmp_path: Path, *, closing: bool = False) -> tuple[Tally, dict[str, Any]]:
    """bkr's own import of `files` into a database set up alike, and the same figures."""
    engine = db.open_engine(url)
    try:
        set_up(engine, tmp_path)
        tally = Tally()
        for path in files:
            tally.merge(import_file(engine, path, clock=clock, actor="ops"))
        found = state(engine)
        if closing:
            found["closed"] = close(engine, MAY)
            found["statements"] = state(engine)["statements"]
        return tally, found
    finally:
        engine.dispose()


def assert_same(lake_run: LakeRun, lake_state: dict[str, Any], tally: Tally, own_state: dict[str, Any]) -> None:
    assert lake_run.tally == tally
    for name in (*(t.name for t in TOTALS), *(t.name for t in KEPT), "statements"):
        assert lake_state[name] == own_state[name], name
    assert lake_state["fills"] <= own_state["fills"]


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=records())
def test_the_lake_path_leaves_the_totals_rejections_and_statements_of_bkrs_own_import(
        rows: list[dict[str, str]], spark: SparkSession, tmp_path: Path, fresh_db_url: Callable[[], str]) -> None:
    lake = tmp_path / f"lake-{uuid.uuid4().hex[:8]}"
    lake.mkdir()
    path = write_records(lake / "month.parquet", rows)

    lake_run, lake_state = by_lake(fresh_db_url(), spark, lake, tmp_path, closing=True)
    tally, own_state = by_import(fresh_db_url(), [path], tmp_path, closing=True)  # (one database at a time)

    assert_same(lake_run, lake_state, tally, own_state)
    assert lake_state["closed"] == own_state["closed"]


def plain_month(count: int, *, prefix: str = "p") -> list[dict[str, Any]]:
    """Ordinary typed fills of May (decimals, booleans, UTC times), as an exchange's lake holds them."""
    users = ("alice", "bob", "carol", "dave-unknown")
    days = ("2024-05-01T00:00:00Z", "2024-05-11T23:59:59.999999Z", "2024-05-16T08:00:00.5Z", "2024-05-31T23:59:59Z")
    brokers = (1400, 2200, 3300, None)
    return [fill(f"{prefix}{n}", at=days[n % 4], user=users[n % 4], fee=("0.1", "-0.01", "0.25")[n % 3],
                 price=("100", "100.5", "2.000001", "12345678901")[n % 4], broker=brokers[n % 3])
            for n in range(count)]


def test_typed_parquet_files_in_day_partitions_are_decided_in_the_lake_and_equal_bkrs_import(
        spark: SparkSession, tmp_path: Path, fresh_db_url: Callable[[], str]) -> None:
    rows = plain_month(400)
    lake = tmp_path / "lake"
    parts = []
    for index, day in enumerate(("day=2024-05-01", "day=2024-05-11", "day=2024-05-16", "day=2024-05-31")):
        (lake / day).mkdir(parents=True)
        parts.append(write_parquet(lake / day / "part-0.parquet", rows[index::4]))

    lake_run, lake_state = by_lake(fresh_db_url(), spark, lake, tmp_path)
    tally, own_state = by_import(fresh_db_url(), parts, tmp_path)

    assert lake_run.files == 4
    # the fourth user is unknown: bkr keeps those fills aside, every other one is decided in the lake
    assert lake_run.tally.awaiting_user > 0
    assert lake_run.decided_in_lake == 400 - lake_run.tally.awaiting_user
    assert_same(lake_run, lake_state, tally, own_state)


def test_a_rerun_on_an_open_month_replaces_its_lake_results(spark: SparkSession, tmp_path: Path,
                                                            fresh_db_url: Callable[[], str]) -> None:
    lake = tmp_path / "lake"
    lake.mkdir()
    write_parquet(lake / "a.parquet", plain_month(60))
    url = fresh_db_url()
    engine = db.open_engine(url)
    try:
        set_up(engine, tmp_path)
        first = aggregate_month(engine, spark, month=MAY, uri=str(lake), work=tmp_path / "w", clock=clock, actor="ops")
        once = state(engine)
        again = aggregate_month(engine, spark, month=MAY, uri=str(lake), work=tmp_path / "w", clock=clock, actor="ops")
        assert state(engine)[aggregates.name] == once[aggregates.name]
        # the fills bkr kept aside (their user unknown) are stored: found again, they are duplicates
        assert (first.tally.accepted, again.tally.duplicates) == (60, first.tally.awaiting_user)

        write_parquet(lake / "b.parquet", plain_month(8, prefix="q"))
        aggregate_month(engine, spark, month=MAY, uri=str(lake), work=tmp_path / "w", clock=clock, actor="ops")
        both = state(engine)
    finally:
        engine.dispose()
    _, own = by_import(fresh_db_url(), [lake / "a.parquet", lake / "b.parquet"], tmp_path)
    for table in TOTALS:
        assert both[table.name] == own[table.name], table.name


def test_fills_reaching_the_lake_after_the_close_are_adjustments_of_the_next_open_month(
        spark: SparkSession, tmp_path: Path, fresh_db_url: Callable[[], str]) -> None:
    lake = tmp_path / "lake"
    lake.mkdir()
    write_parquet(lake / "a.parquet", plain_month(40))
    url = fresh_db_url()
    engine = db.open_engine(url)
    try:
        set_up(engine, tmp_path)
        aggregate_month(engine, spark, month=MAY, uri=str(lake), work=tmp_path / "w", clock=clock, actor="ops")
        close(engine, MAY)
        write_parquet(lake / "late.parquet", plain_month(8, prefix="late"))
        with engine.connect() as connection:  # the lake holds more than was loaded: the recount says so
            before = reconcile_lake_month(connection, spark, MAY)
        late = aggregate_month(engine, spark, month=MAY, uri=str(lake), work=tmp_path / "w", clock=clock,
                               actor="ops")
        with engine.connect() as connection:
            after = reconcile_lake_month(connection, spark, MAY)
        lake_state = state(engine)
        (lake / "late.parquet").unlink()
        with pytest.raises(InvalidInput, match="closed"):
            aggregate_month(engine, spark, month=MAY, uri=str(lake), work=tmp_path / "w", clock=clock, actor="ops")
        with engine.connect() as connection:
            runs = connection.execute(select(lake_runs.c.month, lake_runs.c.period)).all()
    finally:
        engine.dispose()

    assert late.period == JUNE
    assert {d.link for d in before.differences} == {"lake files -> last run", "lake fills -> lake lines"}
    assert after.clean, after.differences
    assert after.fills == before.fills > 0  # May's counted fills: those of its statements (the late ones are June's)
    assert [tuple(r) for r in runs] == [(MAY, MAY), (MAY, JUNE)]
    own_engine = db.open_engine(fresh_db_url())
    try:
        set_up(own_engine, tmp_path)
        import_file(own_engine, lake / "a.parquet", clock=clock, actor="ops")
        close(own_engine, MAY)
        write_parquet(tmp_path / "late.parquet", plain_month(8, prefix="late"))
        import_file(own_engine, tmp_path / "late.parquet", clock=clock, actor="ops")
        own_state = state(own_engine)
    finally:
        own_engine.dispose()
    for table in TOTALS:
        assert lake_state[table.name] == own_state[table.name], table.name
    assert lake_state["statements"] == own_state["statements"]


def test_text_records_read_from_a_typed_file_are_the_ones_the_row_path_reads(
        spark: SparkSession, tmp_path: Path, fresh_db_url: Callable[[], str]) -> None:
    """Records of every kind in text columns, in two files: a repeat across files is a conflict."""
    first = [{name: _text(value) for name, value in fill(f"x{n}", fee="0.1").items()} for n in range(5)]
    second = [first[0] | {"fee": "0.2"}, first[1]]
    lake = tmp_path / "lake"
    lake.mkdir()
    paths = [write_records(lake / "1.parquet", first), write_records(lake / "2.parquet", second)]

    lake_run, lake_state = by_lake(fresh_db_url(), spark, lake, tmp_path)
    tally, own_state = by_import(fresh_db_url(), paths, tmp_path)

    assert (lake_run.tally.accepted, lake_run.tally.conflicts, lake_run.tally.duplicates) == (5, 1, 1)
    assert_same(lake_run, lake_state, tally, own_state)
