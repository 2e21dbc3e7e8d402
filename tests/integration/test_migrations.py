"""The migrations build exactly the schema the code declares, and run down and up again."""

from decimal import Decimal
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from integration_support import add_broker, add_users, fill, import_rows
from sqlalchemy import Engine, select

from bkr.store import db, partitions
from bkr.store.tables import aggregate_totals, metadata


def _differences(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False,
                                                               "include_name": partitions.declared_name})
        return list(compare_metadata(context, metadata))


def test_the_migrated_schema_equals_the_declared_tables(engine: Engine) -> None:
    assert db.current_revision(engine) == db.head_revision(engine)
    assert _differences(engine) == []


def test_migrations_go_down_to_nothing_and_up_again_to_the_same_schema(engine: Engine) -> None:
    config = db._alembic_config(engine)
    command.downgrade(config, "base")
    assert db.current_revision(engine) is None
    db.upgrade(engine)
    assert db.current_revision(engine) == db.head_revision(engine)
    assert _differences(engine) == []


def test_the_merged_totals_are_filled_from_the_aggregates_already_stored(engine: Engine, tmp_path: Path) -> None:
    """A database that had fills before `aggregate_totals` existed gets them summed on upgrade."""
    add_broker(engine)
    add_broker(engine, 2200)
    add_users(engine, "alice", "bob")
    import_rows(engine, tmp_path / "may.csv", [
        fill("f-1", fee="0.100000000000000001"), fill("f-2", user="bob", fee="2.5"),
        fill("f-3", user="bob", market="PERP", fee="-0.25", is_maker=True), fill("f-4", broker=2200, fee="7")])
    with engine.connect() as connection:
        before = connection.execute(select(aggregate_totals).order_by(*aggregate_totals.primary_key.columns)).all()
    command.downgrade(db._alembic_config(engine), "0008")
    db.upgrade(engine)
    with engine.connect() as connection:
        after = connection.execute(select(aggregate_totals).order_by(*aggregate_totals.primary_key.columns)).all()

    assert after == before
    assert [(r.broker_id, r.market_type, r.fills, r.fee_base_usd) for r in after] == [
        (1400, "PERP", 1, 0), (1400, "SPOT", 2, Decimal("2.600000000000000001")), (2200, "SPOT", 1, 7)]
