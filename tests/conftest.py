"""Shared fixtures: a fresh database per test, on SQLite and on the real PostgreSQL server
that `make test` starts (its URL in BKR_TEST_PG_URL). Storage tests take `db_url` and run on both."""

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import (
    ROUND_HALF_UP,
    Context,
    DivisionByZero,
    FloatOperation,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
    Underflow,
)
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from bkr import cli
from bkr.store import db

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def _pg_admin_url() -> str:
    url = os.environ.get("BKR_TEST_PG_URL")
    if not url:
        pytest.fail("BKR_TEST_PG_URL is not set: run the suite with `make test`, which starts PostgreSQL")
    return url


def _psycopg_dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url)
    if database:
        parsed = parsed.set(database=database)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "bkr.db"
    engine = db.make_engine(f"sqlite:///{path}")
    db.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def pg_template(worker_id: str) -> Iterator[str]:
    """A migrated database, named for this test process: several test runs can share one server."""
    admin = _pg_admin_url()
    name = f"bkr_template_{worker_id}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_psycopg_dsn(admin), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    engine = db.make_engine(make_url(admin).set(database=name).render_as_string(hide_password=False))
    db.upgrade(engine)
    engine.dispose()
    yield name
    with psycopg.connect(_psycopg_dsn(admin), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_database(pg_template: str) -> Iterator[str]:
    """This test process's working database, copied once from the template. Tests get it emptied
    rather than a new copy each: `CREATE DATABASE` costs a checkpoint, about a second on a busy
    machine, which made database creation most of the storage tests' run time."""
    admin = _pg_admin_url()
    name = f"bkr_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_psycopg_dsn(admin), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(_psycopg_dsn(admin), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _emptied(url: str) -> str:
    """The database at `url` with every table empty and every sequence restarted, as migrated.
    Emptying also ends every session a previous test left behind (a killed `bkr`, an open pool)."""
    with psycopg.connect(_psycopg_dsn(url), autocommit=True) as connection:
        connection.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        tables = ", ".join(f'"{name}"' for (name,) in connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"))
        connection.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    return url


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, migrated database: a SQLite file, or this test process's PostgreSQL database."""
    if request.param == "sqlite":
        path = tmp_path / "bkr.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    return _emptied(request.getfixturevalue("pg_database"))


@pytest.fixture
def fresh_db_url(request: pytest.FixtureRequest, db_url: str, tmp_path: Path) -> Callable[[], str]:
    """Another empty, migrated database on `db_url`'s backend each time it is called, for a test
    that runs many independent cases (a property test's examples): a new SQLite file, or this
    test process's PostgreSQL database emptied again."""
    if not db_url.startswith("sqlite"):
        return lambda: _emptied(db_url)
    template = request.getfixturevalue("sqlite_template")

    def new_sqlite() -> str:
        path = tmp_path / f"bkr-{uuid.uuid4().hex[:12]}.db"
        shutil.copy(template, path)
        return f"sqlite:///{path}"

    return new_sqlite


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = db.open_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """An empty PostgreSQL database, for tests that are about PostgreSQL only (races, locks)."""
    return _emptied(pg_database)


@pytest.fixture
def hostile_decimal_context() -> Context:
    """A thread's decimal context as a library loaded in the same process may leave it: ccxt sets
    ROUND_HALF_UP and traps Underflow on it; here also a low precision and traps on every rounding
    and on mixing floats in. Money code that used the thread's context would round, and raise."""
    return Context(prec=16, rounding=ROUND_HALF_UP, traps=[InvalidOperation, DivisionByZero, Overflow, Underflow,
                                                           Inexact, Rounded, FloatOperation])


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def bkr(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run the `bkr` command line in-process: bkr("close", "--month", "2026-10", "--db", url)."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = cli.run(list(args))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run



def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first, so that xdist spreads the rest around them instead of waiting at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: the rest keep their order
