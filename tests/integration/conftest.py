"""Fixtures of the integration tests, on top of the suite's (tests/conftest.py).

Two overrides, both about PostgreSQL:

- The template database is named per test process, so that several test runs can share one
  PostgreSQL server (the suite-wide fixture names it by xdist worker only, and two concurrent
  runs then drop each other's template).
- A test's PostgreSQL database is one database per test process, emptied before each test,
  instead of a new copy of the template: `CREATE DATABASE` costs a checkpoint (about a second on
  a busy machine), which made database creation most of this directory's run time. Emptying
  also ends every session a previous test left behind (a killed `bkr`, an undisposed pool).
"""

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from bkr.store import db

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def _admin_url() -> str:
    url = os.environ.get("BKR_TEST_PG_URL")
    if not url:
        pytest.fail("BKR_TEST_PG_URL is not set: run the suite with `make test`, which starts PostgreSQL")
    return url


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_template(worker_id: str) -> Iterator[str]:
    """A migrated database, named for this test process."""
    admin = _admin_url()
    name = f"bkr_template_{worker_id}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_dsn(admin), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    engine = db.make_engine(make_url(admin).set(database=name).render_as_string(hide_password=False))
    db.upgrade(engine)
    engine.dispose()
    yield name
    with psycopg.connect(_dsn(admin), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_database(pg_template: str) -> Iterator[str]:
    """This test process's working database, copied once from the template."""
    admin = _admin_url()
    name = f"bkr_it_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_dsn(admin), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(_dsn(admin), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _emptied(url: str) -> str:
    """The database at `url` with every table empty and every sequence restarted, as migrated."""
    with psycopg.connect(_dsn(url), autocommit=True) as connection:
        connection.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        tables = ", ".join(f'"{name}"' for (name,) in connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"))
        connection.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    return url


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, migrated database: a SQLite file, or this process's PostgreSQL database."""
    if request.param == "sqlite":
        path = tmp_path / "bkr.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    return _emptied(request.getfixturevalue("pg_database"))


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """An empty PostgreSQL database, for tests that are about PostgreSQL only (races, locks)."""
    return _emptied(pg_database)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes tens of seconds; run first, so that xdist spreads the rest "
                                       "around it instead of waiting for it at the end")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: the rest keep their order
