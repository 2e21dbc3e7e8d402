"""Engines and schema readiness for SQLite (the embedded default) and PostgreSQL."""

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from importlib.resources import files
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

from bkr.domain.errors import StoreNotReady
from bkr.domain.fills import fee_exceeds_share
from bkr.domain.money import MONEY, canonical
from bkr.store.types import ordered_key

DEFAULT_URL = "sqlite:///bkr.db"
SQLITE_BUSY_TIMEOUT_MS = 60_000  # how long a SQLite writer waits for another to finish


def _dec_add(left: str | None, right: str | None) -> str | None:
    if left is None or right is None:
        return left if right is None else right
    return canonical(MONEY.add(Decimal(left), Decimal(right)))


def _dec_mul(left: str, right: str) -> str:
    return canonical(MONEY.multiply(Decimal(left), Decimal(right)))


def _fee_exceeds(fee: str, share: str, notional: str) -> int:
    """`fee_exceeds_share` of canonical texts, for SQL over staged fills (PostgreSQL compares NUMERICs)."""
    return int(fee_exceeds_share(Decimal(fee), Decimal(share), Decimal(notional)))


def user_rank_key(fee_base: Decimal, adjustment_fee_base: Decimal) -> Decimal:
    """A user's `user_totals.rank_key`: minus its fee base of both kinds, so that ascending order
    is largest fee base first."""
    return MONEY.minus(MONEY.add(fee_base, adjustment_fee_base))


def _dec_rank_key(fee_base: str, adjustment_fee_base: str) -> str:
    """SQL `dec_rank_key(fee base, adjustment fee base)`: `user_rank_key` as SQLite stores it."""
    return ordered_key(user_rank_key(Decimal(fee_base), Decimal(adjustment_fee_base)))


class _DecSum:
    """SQL aggregate `dec_sum(text)`: the exact sum of canonical decimal texts (SQLite's SUM
    would add them as floats)."""

    def __init__(self) -> None:
        self.total: Decimal | None = None

    def step(self, value: str | None) -> None:
        if value is not None:  # the context's own add: no context switch per row
            self.total = Decimal(value) if self.total is None else MONEY.add(self.total, Decimal(value))

    def finalize(self) -> str | None:
        return None if self.total is None else canonical(self.total)


def _on_sqlite_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # bkr issues BEGIN itself, see _on_sqlite_begin
    dbapi_connection.create_function("dec_add", 2, _dec_add, deterministic=True)
    dbapi_connection.create_aggregate("dec_sum", 1, _DecSum)  # type: ignore[arg-type]
    dbapi_connection.create_function("dec_mul", 2, _dec_mul, deterministic=True)
    dbapi_connection.create_function("fee_exceeds", 3, _fee_exceeds, deterministic=True)
    dbapi_connection.create_function("dec_rank_key", 2, _dec_rank_key, deterministic=True)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _on_sqlite_begin(connection: Any) -> None:
    # Take the write lock up front: two writers then queue instead of failing mid-transaction.
    # A snapshot (below) only reads: a deferred BEGIN, which in WAL mode never waits for writers.
    read_only = connection.get_execution_options().get("bkr_snapshot", False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


@contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction that sees the database as of one moment and does not hold writers
    up, for long reads that must add up (a reconciliation): REPEATABLE READ READ ONLY on
    PostgreSQL, a deferred transaction on SQLite (a WAL reader keeps its snapshot to the end)."""
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection = connection.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        else:
            connection = connection.execution_options(bkr_snapshot=True)
        with connection.begin():
            yield connection


@contextmanager
def write_if_free(engine: Engine) -> Iterator[Connection]:
    """A write transaction that does not wait for other writers, for a write that may be skipped
    (a key's last use): on SQLite, if another connection holds the write lock, it raises
    `OperationalError` at once instead of waiting. On PostgreSQL it is an ordinary transaction
    (writers only wait there for the rows they share)."""
    with engine.connect() as connection:
        if engine.dialect.name != "sqlite":
            with connection.begin():
                yield connection
            return
        raw = connection.connection.driver_connection
        assert raw is not None
        raw.execute("PRAGMA busy_timeout=0")  # on the driver: no transaction begins for it
        try:
            with connection.begin():
                yield connection
        finally:
            raw.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 60})
        event.listen(engine, "connect", _on_sqlite_connect)
        event.listen(engine, "begin", _on_sqlite_begin)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_pre_ping=True)
    raise StoreNotReady(f"unsupported database URL {url!r}: use sqlite:///FILE or postgresql+psycopg://…")


def _alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("bkr.store") / "migrations"))
    config.attributes["engine"] = engine
    return config


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the schema to the latest migration."""
    command.upgrade(_alembic_config(engine), "head")


def open_engine(url: str, *, create: bool = True) -> Engine:
    """An engine whose schema is current. An empty database is migrated (so `bkr` works with
    nothing to set up); one behind the code is refused with the command that fixes it."""
    engine = make_engine(url)
    current = current_revision(engine)
    if current == head_revision(engine):
        return engine
    if current is None and create:
        upgrade(engine)
        return engine
    raise StoreNotReady(f"database schema is at {current or 'nothing'}, code needs {head_revision(engine)}: "
                        "run `bkr db upgrade`")


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    return Path(parsed.database) if parsed.get_backend_name() == "sqlite" and parsed.database else None
