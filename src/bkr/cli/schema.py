"""`bkr db`: the database schema (Alembic migrations)."""

import typer

from bkr.cli.common import DbOption, err
from bkr.store import db

db_app = typer.Typer(no_args_is_help=True, help="Database schema.")


@db_app.command("upgrade")
def db_upgrade(db_url: DbOption = db.DEFAULT_URL) -> None:
    """Create the schema or bring it to the latest migration."""
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    err.print(f"schema at {db.current_revision(engine)}")
