"""Alembic environment: migrations run on the engine bkr hands over (see `bkr.store.db.upgrade`)."""

from alembic import context

from bkr.store.partitions import declared_name
from bkr.store.tables import metadata

engine = context.config.attributes["engine"]

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                      compare_type=True, include_name=declared_name)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
