"""Shared fixtures: a fresh database per test, on SQLite and on the real PostgreSQL server
that `make test` starts (its URL in BKR_TEST_PG_URL). Storage tests take `db_url` and run on both."""

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
def pg_template(worker_id: str) -> str:
    """A migrated database that each test's database is copied from."""
    admin = _pg_admin_url()
    name = f"bkr_template_{worker_id}"
    with psycopg.connect(_psycopg_dsn(admin), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')
    engine = db.make_engine(make_url(admin).set(database=name).render_as_string(hide_password=False))
    db.upgrade(engine)
    engine.dispose()
    return name


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path / "bkr.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    with _fresh_pg_database(request.getfixturevalue("pg_template")) as url:
        yield url


@contextmanager
def _fresh_pg_database(template: str) -> Iterator[str]:
    admin = _pg_admin_url()
    name = f"bkr_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_psycopg_dsn(admin), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_psycopg_dsn(admin), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = db.open_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh PostgreSQL database, for tests that are about PostgreSQL only (races, locks)."""
    with _fresh_pg_database(request.getfixturevalue("pg_template")) as url:
        yield url


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

