"""A real venue for end-to-end tests: a migrated SQLite file set up through bkr's own command line
(brokers enrolled and activated, user and broker keys made), a `bkr serve` process on a free port
(optionally with a config file), and the broker API's figures read over HTTP with the broker's key.

The setup runs the command line in-process (`bkr.cli.run`): the same commands an operator types,
without paying the interpreter's start-up for each, with the keys of its first admin (`root`) and
of an operator (`olga`), who makes the registry's changes. Only the server is a separate process, so
every client request crosses a real socket to a real uvicorn.
"""

import contextlib
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select

from bkr import cli
from bkr.domain.signing import sign, signing_string
from bkr.store.tables import venue_broker_ids_seen
from serve_support import BkrServer, free_port

SUMMARY_INSTRUCTION = "brokerSummaryQuery"  # bkr.api.routers.broker.SUMMARY, spelled out as a client would


def run_bkr(*args: str) -> str:
    """One `bkr …` command, in-process; its standard output. A failure fails the test with stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.run(list(args))
    if code != 0:
        pytest.fail(f"bkr {' '.join(args)} exited {code}: {err.getvalue()}{out.getvalue()}")
    return out.getvalue()


@dataclass(frozen=True)
class Key:
    api_key: str
    secret: str


@dataclass
class VenueWorld:
    """One venue database (a SQLite file in `directory`, unless `db_url` names another, empty and
    migrated) and the servers started on it."""

    directory: Path
    db_url: str = ""
    servers: list[BkrServer] = field(default_factory=list)
    broker_keys: dict[int, Key] = field(default_factory=dict)
    admin_key: str = ""  # root's, the first admin's
    operator_key: str = ""  # olga's, an operator's: the registry's changes are hers

    def __post_init__(self) -> None:
        self.db_url = self.db_url or f"sqlite:///{self.directory / 'venue.db'}"
        run_bkr("db", "upgrade", "--db", self.db_url)
        self.admin_key = json.loads(run_bkr("operator", "add", "root", "--role", "admin", "--json",
                                            "--db", self.db_url))["token"]
        self.operator_key = json.loads(run_bkr("operator", "add", "olga", "--role", "operator", "--json",
                                               "--key", self.admin_key, "--db", self.db_url))["token"]

    def active_broker(self, broker_id: int) -> Key:
        """Enroll `broker_id`, activate it from now, and give it a key for bkr's broker API."""
        as_olga = ("--key", self.operator_key, "--db", self.db_url)
        run_bkr("broker", "add", "--id", str(broker_id), "--account", f"biz-{broker_id}", "--name",
                f"Broker {broker_id}", "--type", "exchange_aggregator", *as_olga)
        run_bkr("broker", "activate", str(broker_id), *as_olga)
        created = json.loads(run_bkr("broker", "key", "create", str(broker_id), "--json", *as_olga))
        self.broker_keys[broker_id] = Key(created["api_key"], created["secret"])
        return self.broker_keys[broker_id]

    def user(self, user_id: str) -> Key:
        """A trading user with an account holding the configured play money, and its API key."""
        created = json.loads(run_bkr("user", "key", "create", user_id, "--json", "--key", self.operator_key,
                                     "--db", self.db_url))
        assert created["user_id"] == user_id
        return Key(created["api_key"], created["secret"])

    def serve(self, config: str | None = None, *, wait: bool = True) -> BkrServer:
        """`bkr serve` on a free port over this database, with `config` (TOML text) as its --config.
        With `wait=False` the caller waits (`wait_until_it_answers`), so that servers start together."""
        port = free_port()
        args = [sys.executable, "-m", "bkr.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                "--db", self.db_url]
        if config is not None:
            config_file = self.directory / f"bkr-{port}.toml"
            config_file.write_text(config)
            args += ["--config", str(config_file)]
        log = self.directory / f"serve-{port}.log"
        with log.open("w") as sink:  # a file, not a pipe: a full pipe would block the server
            process = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT, text=True,
                                       cwd=self.directory)
        server = BkrServer(process, f"http://127.0.0.1:{port}", log)
        self.servers.append(server)
        if wait:
            server.wait_until_it_answers()
        return server

    def broker_summary(self, server: BkrServer, broker_id: int) -> dict[str, Any]:
        """GET /v1/broker/{id}/summary, signed with that broker's own key."""
        key = self.broker_keys[broker_id]
        stamp, window = int(time.time() * 1000), 5_000
        signature = sign(key.secret, signing_string(SUMMARY_INSTRUCTION, {}, stamp, window))
        response = httpx.get(f"{server.base}/v1/broker/{broker_id}/summary", timeout=30, headers={
            "X-API-Key": key.api_key, "X-Signature": signature, "X-Timestamp": str(stamp), "X-Window": str(window)})
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def broker_figures(self, server: BkrServer, broker_id: int) -> tuple[Decimal, Decimal]:
        """The broker's month-to-date API volume and fee base, exact."""
        found = self.broker_summary(server, broker_id)
        return Decimal(found["api_volume"]), Decimal(found["fee_base"])

    def broker_ids_seen(self) -> dict[str, dict[str, Any]]:
        """The venue_broker_ids_seen table, read straight from the database file."""
        engine = create_engine(self.db_url)
        try:
            with engine.connect() as connection:
                rows = connection.execute(select(venue_broker_ids_seen)).mappings().all()
        finally:
            engine.dispose()
        return {row["header"]: dict(row) for row in rows}


@contextlib.contextmanager
def venue_world(directory: Path, db_url: str = "") -> Iterator[VenueWorld]:
    """A fresh venue database in `directory` (or at `db_url`); every server started on it is
    stopped on exit."""
    world = VenueWorld(directory, db_url)
    try:
        yield world
    finally:
        for server in world.servers:
            server.stop()
