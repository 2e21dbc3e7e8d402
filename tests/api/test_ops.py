"""Operations: liveness, readiness, metrics, request ids, JSON logs and the answer to a crash."""

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from api_support import Api, MovableClock
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from bkr.api import observability
from bkr.api.app import create_app
from bkr.api.deps import ViewerDep
from bkr.domain.config import ProgramConfig
from bkr.settings import ServiceSettings
from bkr.store import db


def _client(engine: Engine, clock: MovableClock) -> tuple[FastAPI, TestClient]:
    app = create_app(engine, ProgramConfig(), ServiceSettings(), clock=clock)
    return app, TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def probe(api: Api) -> Iterator[TestClient]:
    """The API with routes of its own, which the product does not have: one with a path
    parameter, one an operator key opens, one that reads a JSON body, and one that crashes."""
    app, client = _client(api.engine, api.clock)

    @app.get("/probe/{item_id}")
    def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @app.get("/probe-operator")
    def operator(key: ViewerDep) -> dict[str, str]:
        return {"key_id": key.key_id}

    @app.post("/probe-body")
    def body(payload: dict[str, int]) -> dict[str, int]:
        return payload

    @app.get("/probe-crash")
    def crash() -> None:
        raise RuntimeError("secret detail of the crash")

    with client:
        yield client


def _requests_counted(client: TestClient, route: str, status: str = "200") -> float:
    text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        if family.name == "bkr_requests":
            for sample in family.samples:
                if sample.name == "bkr_requests_total" and sample.labels == {
                        "method": "GET", "route": route, "status": status}:
                    return sample.value
    return 0.0


# --- liveness and readiness ----------------------------------------------------------------------

def test_healthz_answers_without_credentials(api: Api) -> None:
    response = api.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_names_the_backend_and_the_head_revision(api: Api) -> None:
    response = api.client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "database": api.engine.dialect.name,
                               "revision": db.head_revision(api.engine)}


def test_readyz_is_503_on_a_database_behind_its_migrations(tmp_path: Path, sqlite_template: Path,
                                                           clock: MovableClock) -> None:
    path = tmp_path / "behind.db"
    shutil.copy(sqlite_template, path)
    engine = db.make_engine(f"sqlite:///{path}")
    config = Config()
    config.set_main_option("script_location", str(files("bkr.store") / "migrations"))
    config.attributes["engine"] = engine
    command.downgrade(config, "-1")
    behind = db.current_revision(engine)
    _, client = _client(engine, clock)

    response = client.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "store_not_ready"
    assert f"at {behind}" in body["message"] and "bkr db upgrade" in body["message"]
    assert client.get("/healthz").status_code == 200  # alive all the same: only not ready
    engine.dispose()


def test_readyz_is_503_on_an_empty_database(tmp_path: Path, clock: MovableClock) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    _, client = _client(engine, clock)

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["code"] == "store_not_ready"
    assert "at nothing" in response.json()["message"]
    engine.dispose()


def test_readyz_is_503_when_the_database_does_not_answer(clock: MovableClock) -> None:
    engine = db.make_engine("postgresql+psycopg://bkr@127.0.0.1:1/bkr?connect_timeout=2")
    _, client = _client(engine, clock)

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["code"] == "database_unavailable"
    assert response.json()["message"].startswith("database: ")
    assert client.get("/healthz").status_code == 200
    engine.dispose()


# --- metrics -------------------------------------------------------------------------------------

def test_metrics_count_requests_by_route_template(probe: TestClient) -> None:
    before = _requests_counted(probe, "/probe/{item_id}")

    for item_id in (1, 2, 3):
        assert probe.get(f"/probe/{item_id}").status_code == 200

    assert _requests_counted(probe, "/probe/{item_id}") == before + 3
    response = probe.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    assert 'route="/probe/1"' not in response.text  # the template, never the raw path
    assert "bkr_request_seconds_bucket" in response.text


def test_metrics_put_every_unknown_path_under_one_label(probe: TestClient) -> None:
    before = _requests_counted(probe, observability.UNMATCHED_ROUTE, "404")

    probe.get("/no/such/path/123")
    probe.get("/another/unknown")

    assert _requests_counted(probe, observability.UNMATCHED_ROUTE, "404") == before + 2
    assert "/no/such/path" not in probe.get("/metrics").text


def test_metrics_sum_every_worker_process_in_multiprocess_mode(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    # Two processes count requests as workers do, each with the directory set before it starts.
    worker = ("from bkr.api import observability as o; "
              "o.REQUESTS.labels('GET', '/healthz', '200').inc({})")
    for count in (2, 5):
        subprocess.run([sys.executable, "-c", worker.format(count)], check=True,
                       env={**os.environ, observability.MULTIPROC_ENV: str(tmp_path)})
    monkeypatch.setenv(observability.MULTIPROC_ENV, str(tmp_path))

    text = observability.metrics_text().decode()

    assert 'bkr_requests_total{method="GET",route="/healthz",status="200"} 7.0' in text


# --- request ids ---------------------------------------------------------------------------------

def test_a_sane_request_id_is_echoed(api: Api) -> None:
    response = api.client.get("/healthz", headers={"X-Request-ID": "client-42.retry_1"})
    assert response.headers["X-Request-ID"] == "client-42.retry_1"


@pytest.mark.parametrize("sent", [None, "has spaces", "x" * 65, "semi;colon", ""])
def test_a_request_id_is_made_when_none_or_an_insane_one_is_sent(api: Api, sent: str | None) -> None:
    response = api.client.get("/healthz", headers={"X-Request-ID": sent} if sent is not None else {})
    made = response.headers["X-Request-ID"]
    assert made != sent
    assert re.fullmatch(r"[0-9a-f]{32}", made)


def test_error_bodies_carry_the_request_id(api: Api) -> None:
    response = api.client.get("/no/such/path", headers={"X-Request-ID": "trace-7"})
    assert response.status_code == 404
    assert response.json()["request_id"] == "trace-7"
    assert response.headers["X-Request-ID"] == "trace-7"


# --- logs ----------------------------------------------------------------------------------------

def _access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    formatter = observability.JsonFormatter()
    return [json.loads(formatter.format(record)) for record in caplog.records if record.name == "bkr.access"]


def test_each_request_is_one_json_access_line(probe: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bkr.access")

    probe.get("/probe/9", headers={"X-Request-ID": "line-1"})

    (line,) = [entry for entry in _access_lines(caplog) if entry["request_id"] == "line-1"]
    assert line["level"] == "info"
    assert line["method"] == "GET"
    assert line["route"] == "/probe/{item_id}"
    assert line["path"] == "/probe/9"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(line["ts"]))
    assert "broker_id" not in line and "operator_key_id" not in line


def test_the_access_line_names_the_operator_key(api: Api, probe: TestClient,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bkr.access")
    headers = api.operator_key("viewer")

    key_id = probe.get("/probe-operator", headers={**headers, "X-Request-ID": "op-1"}).json()["key_id"]

    (line,) = [entry for entry in _access_lines(caplog) if entry["request_id"] == "op-1"]
    assert line["operator_key_id"] == key_id


def test_configure_logging_writes_bkr_logs_as_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    loggers = [logging.getLogger(name) for name in ("bkr", "uvicorn", "uvicorn.error")]
    saved = [(logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    try:
        observability.configure_logging(logging.INFO)
        observability.configure_logging(logging.INFO)  # again: still one line per record
        logging.getLogger("bkr.access").info("hello", extra={"status": 200})
        logging.getLogger("bkr.access").debug("below the level")
    finally:
        for logger, (handlers, level, propagate) in zip(loggers, saved, strict=True):
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate

    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) | {"ts": None} == {"ts": None, "level": "info", "logger": "bkr.access",
                                                    "message": "hello", "status": 200}


# --- errors --------------------------------------------------------------------------------------

def test_a_body_that_is_not_even_text_is_a_422_like_any_malformed_json(probe: TestClient) -> None:
    response = probe.post("/probe-body", content=b"\xff\xfe{", headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_input"
    assert response.json()["field"] == "body"


# --- an unhandled error --------------------------------------------------------------------------

def test_a_crash_is_a_json_500_with_the_request_id_and_nothing_more(probe: TestClient,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bkr")

    response = probe.get("/probe-crash", headers={"X-Request-ID": "crash-1"})

    assert response.status_code == 500
    body = response.json()
    assert body["code"] == "internal"
    assert body["request_id"] == "crash-1"
    assert response.headers["X-Request-ID"] == "crash-1"
    assert "secret detail" not in response.text and "RuntimeError" not in response.text
    formatter = observability.JsonFormatter()
    errors = [json.loads(formatter.format(r)) for r in caplog.records if r.name == "bkr.api"]
    (logged,) = [entry for entry in errors if entry.get("request_id") == "crash-1"]
    assert logged["level"] == "error"
    assert "RuntimeError: secret detail of the crash" in str(logged["exception"])
    (line,) = [entry for entry in _access_lines(caplog) if entry["request_id"] == "crash-1"]
    assert line["status"] == 500
