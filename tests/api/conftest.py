"""Fixtures of the HTTP API tests: the app on each database, with a clock the test moves."""

from collections.abc import Iterator

import pytest
from api_support import Api, MovableClock
from fastapi.testclient import TestClient

from bkr.api.app import create_app
from bkr.domain.config import ProgramConfig
from bkr.settings import ServiceSettings
from bkr.store import db


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def api(db_url: str, clock: MovableClock) -> Iterator[Api]:
    """The API on an empty database (SQLite and PostgreSQL), driven in-process over ASGI."""
    engine = db.open_engine(db_url)
    app = create_app(engine, ProgramConfig(), ServiceSettings(max_batch=1_000, max_body_bytes=1 << 20), clock=clock)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(client, engine, clock)
    engine.dispose()
