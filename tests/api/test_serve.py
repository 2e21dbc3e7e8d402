"""`bkr serve` as an operator runs it: a real process on a free port, reached over HTTP; and the
settings it refuses before it binds a port (exit status 1, one line on stderr)."""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from feed_support import fill

from serve_support import BkrServer, free_port, start_bkr_serve

pytestmark = pytest.mark.slow


def _bkr(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bkr.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[object]:
    servers: list[BkrServer] = []

    def start(db_url: str, *args: str) -> BkrServer:
        server = start_bkr_serve(db_url, tmp_path, *args)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def _operator_key(db_url: str) -> dict[str, str]:
    """The first admin's key (added without a key, as on a new database)."""
    created = _bkr("operator", "add", "root", "--role", "admin", "--json", "--db", db_url)
    assert created.returncode == 0, created.stderr
    return {"Authorization": f"Bearer {json.loads(created.stdout)['token']}"}


def _recent(minutes: int) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat()


def test_bkr_serve_ingests_fills_posted_over_http(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db_url = f"sqlite:///{tmp_path / 'bkr.db'}"
    server = serve(db_url)
    headers = _operator_key(db_url)
    batch = [fill("f-1", at=_recent(3)), fill("f-2", at=_recent(2), market="PERP"),
             fill("f-3", at=_recent(1), price="abc")]

    with httpx.Client(base_url=server.base, timeout=30) as client:
        first = client.post("/v1/fills", json=batch, headers=headers)
        retried = client.post("/v1/fills", json=batch, headers=headers)
        streamed = client.post("/v1/fills", content=json.dumps(fill("f-4", at=_recent(1))) + "\n",
                               headers={**headers, "Content-Type": "application/x-ndjson"})
        refused = client.post("/v1/fills", json=batch)

    def counts(response: httpx.Response) -> tuple[int, int, int]:
        assert response.status_code == 200, response.text
        return response.json()["accepted"], response.json()["duplicates"], response.json()["rejected"]

    assert counts(first) == (2, 0, 1)
    assert counts(retried) == (0, 2, 1)
    assert counts(streamed) == (1, 0, 0)
    assert refused.status_code == 401
    review = _bkr("fills", "rejected", "--json", "--db", db_url)
    assert json.loads(review.stdout)["counts"]["rejected"] == 1  # the retry's rejection is the same one


def test_bkr_serve_with_two_workers_answers(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db_url = f"sqlite:///{tmp_path / 'bkr.db'}"
    _bkr("db", "upgrade", "--db", db_url)
    headers = _operator_key(db_url)
    server = serve(db_url, "--workers", "2")

    answer = httpx.post(f"{server.base}/v1/fills", json=[fill("f-1", at=_recent(1))], headers=headers, timeout=30)

    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 1


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--port", "0"], {}, "service.port: 0 is not a TCP port"),
    ([], {"BKR_WORKERS": "two"}, "BKR_WORKERS: 'two' is not a whole number"),
    ([], {"BKR_WORKERS": "0"}, "service.workers: must be at least 1"),
    (["--config", "{bad}"], {}, "config: "),
    (["--config", "{unknown}"], {}, "unknown setting(s) service.colour"),
], ids=["port-0", "workers-not-a-number", "workers-0", "config-not-toml", "config-unknown-setting"])
def test_bkr_serve_refuses_bad_settings_before_it_starts(tmp_path: Path, args: list[str], env: dict[str, str],
                                                         message: str) -> None:
    (tmp_path / "bad.toml").write_text("[service\nport = 8000\n")
    (tmp_path / "unknown.toml").write_text('[service]\ncolour = "blue"\n')
    args = [arg.format(bad=tmp_path / "bad.toml", unknown=tmp_path / "unknown.toml") for arg in args]
    database = tmp_path / "bkr.db"

    result = _bkr("serve", "--port", str(free_port()), *args, "--db", f"sqlite:///{database}",
                  env={"BKR_HOST": "127.0.0.1", **env}, timeout=120)

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and message in result.stderr
    assert not database.exists()  # refused before it touched anything, let alone bound a port
