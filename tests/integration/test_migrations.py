"""The migrations build exactly the schema the code declares, and run down and up again."""

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine

from bkr.store import db
from bkr.store.tables import metadata


def _differences(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
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
