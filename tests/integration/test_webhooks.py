"""Signed webhooks on both databases, delivered to a real HTTP receiver on a local port.

The receiver is refused (no server on its port), then answers 500, then 200: each event reaches
it once with a 2xx, signed so that the verification helper of docs/brokers.md accepts it, and a
delivered event is never sent again. The deliverer's clock is the test's, so backoff costs no
time. Events come from the use cases that make them: fills counted on the row and the set path
(`tier_reached`), a close, an approval, a lapsed review and a settlement.
"""

import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from integration_support import (
    BROKER,
    MAY,
    NOW,
    add_broker,
    add_users,
    approve_all,
    close,
    fill,
    import_rows,
    operator_key,
)
from sqlalchemy import Engine, func, select

from bkr.api.app import create_app
from bkr.domain.config import ProgramConfig
from bkr.domain.errors import InvalidInput, NotFound, Unauthenticated
from bkr.domain.webhooks import EventStatus, retry_delay, verify_signature, webhook_url
from bkr.program import audit, payouts, settlement, webhooks
from bkr.program.webhook_delivery import _claim, deliver_all_due, http_sender
from bkr.settings import ServiceSettings
from bkr.store import db
from bkr.store.tables import webhook_deliveries, webhook_events
from program_support import use_program

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "brokers.md"


def doc_verifier() -> Callable[..., bool]:
    """The guide's `verify_bkr_signature`, taken from its ```python block as a broker copies it."""
    for block in re.findall(r"^```python\n(.*?)^```$", GUIDE.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL):
        if "def verify_bkr_signature" in block:
            definition = block.split("\n# --- example")[0]
            namespace: dict[str, Any] = {}
            exec(definition, namespace)
            return namespace["verify_bkr_signature"]  # type: ignore[no-any-return]
    raise AssertionError("docs/brokers.md has no verify_bkr_signature")


@dataclass
class Receiver:
    """A broker's endpoint: a real HTTP server, answering `status` to each POST."""

    port: int
    status: int = 500
    received: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bkr-hooks"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body, receiver.status))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def accepted(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body, status in self.received if 200 <= status < 300]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with socket.socket() as probe:  # a free port, with nothing listening on it yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    found = Receiver(port)
    yield found
    found.stop()


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def no_jitter() -> float:
    return 0.0


def register(engine: Engine, url: str) -> str:
    with engine.begin() as connection:
        made = webhooks.set_endpoint(connection, BROKER, url, NOW, actor="ops")
    assert isinstance(made, webhooks.EndpointWithSecret)
    return made.secret


def big_fill(fill_id: str, volume_millions: int, **kw: Any) -> dict[str, Any]:
    """A fill of `volume_millions` million USD of volume (price 100), fee 0.01%."""
    quantity = volume_millions * 10_000
    return fill(fill_id, price="100", quantity=str(quantity), fee=str(quantity // 100), **kw)


def events_of(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [json.loads(body) for body in connection.execute(
            select(webhook_events.c.body).order_by(webhook_events.c.seq)).scalars()]


def test_each_event_reaches_a_receiver_that_was_down_once_signed_and_never_again(
        engine: Engine, receiver: Receiver, tmp_path: Path) -> None:
    add_broker(engine)
    add_users(engine, "alice")
    use_program(engine)
    secret = register(engine, receiver.url)
    import_rows(engine, tmp_path / "a.csv", [big_fill("f1", 3)])  # the set path: 3M, BKR 0
    import_rows(engine, tmp_path / "b.ndjson", [big_fill("f2", 2)])  # the row path: 5M, BKR 1 reached
    import_rows(engine, tmp_path / "c.csv", [big_fill("f3", 6)])  # the set path: 11M, BKR 2 reached
    import_rows(engine, tmp_path / "d.ndjson", [big_fill("f4", 1)])  # no new tier
    close(engine, MAY)
    approve_all(engine)
    settlement.settle_month(engine, MAY, NOW)
    settlement.settle_month(engine, MAY, NOW)  # a second run pays nothing, announces nothing
    assert [e["type"] for e in events_of(engine)][-1] == "statement_final"  # handed to the wallet, not yet sent
    key = f"payout/{BROKER}/2024-05"
    for _ in range(2):  # the wallet acknowledges its transfer; a repeated acknowledgement announces nothing
        with engine.begin() as connection:
            payouts.acknowledge_payout(connection, key, "wire-7781", actor="treasury", now=NOW)
    recorded = events_of(engine)
    assert [(e["type"], e["data"].get("tier")) for e in recorded] == [
        ("tier_reached", "BKR 1"), ("tier_reached", "BKR 2"), ("statement_issued", "BKR 2"),
        ("statement_final", "BKR 2"), ("payout_sent", None)]
    assert recorded[0]["data"] == {"month": "2024-05", "tier": "BKR 1", "threshold": "5000000", "broker_rate": "0.3",
                                   "api_volume": "5000000"}
    payout = recorded[2]["data"]["payout"]
    assert recorded[4]["data"] == {"month": "2024-05", "amount": payout, "currency": "USD", "reference": "wire-7781"}
    assert len({e["id"] for e in recorded}) == 5

    clock, send = Clock(NOW), http_sender(timeout=5)
    first = deliver_all_due(engine, clock, send, jitter=no_jitter)  # nothing listens: refused
    assert (first.attempted, sorted(first.retrying)) == (5, sorted(e["id"] for e in recorded))
    assert deliver_all_due(engine, clock, send, jitter=no_jitter).attempted == 0  # none due before its backoff
    receiver.start()  # up, but failing
    clock.advance(seconds=retry_delay(1, no_jitter).total_seconds())
    assert sorted(deliver_all_due(engine, clock, send, jitter=no_jitter).retrying) == sorted(e["id"] for e in recorded)
    receiver.status = 200
    clock.advance(seconds=retry_delay(2, no_jitter).total_seconds())
    third = deliver_all_due(engine, clock, send, jitter=no_jitter)
    assert sorted(third.delivered) == sorted(e["id"] for e in recorded)
    clock.advance(days=4)
    assert deliver_all_due(engine, clock, send, jitter=no_jitter).attempted == 0  # delivered: never again

    accepted = receiver.accepted()
    assert sorted(e["id"] for e in accepted) == sorted(e["id"] for e in recorded)  # each once
    verify = doc_verifier()
    for headers, body, _ in receiver.received:
        t = int(headers["bkr-signature"].split(",")[0].removeprefix("t="))
        assert verify(secret, headers["bkr-signature"], body, now=t + 299)
        assert verify_signature(secret, headers["bkr-signature"], body.decode(), t) == t
        assert not verify(secret, headers["bkr-signature"], body.replace(b'"month"', b'"Month"'), now=t)
        assert not verify(secret, headers["bkr-signature"], body, now=t + 301)  # replayed too late
        assert not verify("whsec_another", headers["bkr-signature"], body, now=t)
        assert headers["bkr-event-id"] == json.loads(body)["id"]
        with pytest.raises(Unauthenticated, match="replay"):
            verify_signature(secret, headers["bkr-signature"], body.decode(), t + 301)
    assert len(receiver.received) == 10  # 5 answered 500, 5 answered 200 (the refused ones never arrived)

    with engine.connect() as connection:
        log = webhooks.delivery_log(connection, broker_id=BROKER)
        assert len(log) == 15
        assert {record.event_status for record in log} == {"delivered"}
        by_attempt = {a: [r for r in log if r.attempt == a] for a in (1, 2, 3)}
        assert all(r.status_code is None and "ConnectError" in (r.error or "") for r in by_attempt[1])
        assert all(r.status_code == 500 for r in by_attempt[2])
        assert all(r.status_code == 200 and r.error is None for r in by_attempt[3])
        page = webhooks.delivery_log(connection, broker_id=BROKER, limit=4)
        assert webhooks.delivery_log(connection, broker_id=BROKER, before=page[-1].delivery_id, limit=100) == log[4:]


def test_a_broker_without_an_endpoint_gets_no_events_and_a_new_one_hears_only_of_new_tiers(
        engine: Engine, tmp_path: Path) -> None:
    add_broker(engine)
    add_users(engine, "alice")
    import_rows(engine, tmp_path / "a.csv", [big_fill("f1", 6, at="2025-01-10T00:00:00Z")])  # BKR 1 this month
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(webhook_events)).scalar_one() == 0
    register(engine, "https://broker.example/hooks")  # at NOW, in January 2025: BKR 1 is already reached
    import_rows(engine, tmp_path / "b.ndjson", [big_fill("f2", 1, at="2025-01-11T00:00:00Z")])
    assert events_of(engine) == []
    import_rows(engine, tmp_path / "c.ndjson", [big_fill("f3", 4, at="2025-01-12T00:00:00Z")])  # 11M: BKR 2
    assert [e["data"]["tier"] for e in events_of(engine)] == ["BKR 2"]


def test_a_tier_is_announced_once_a_month_even_if_corrections_take_the_volume_below_and_back(
        engine: Engine, tmp_path: Path) -> None:
    add_broker(engine)
    add_users(engine, "alice")
    use_program(engine)
    register(engine, "https://broker.example/hooks")
    import_rows(engine, tmp_path / "a.ndjson", [big_fill("f1", 5)])
    half = {**big_fill("f1", 5), "fill_id": "f1-c", "corrects": "f1", "quantity": "-25000", "fee": "-250"}
    import_rows(engine, tmp_path / "b.ndjson", [half])
    import_rows(engine, tmp_path / "c.ndjson", [big_fill("f2", 3)])
    assert [e["data"]["tier"] for e in events_of(engine)] == ["BKR 1"]
    june = big_fill("f3", 5, at="2024-06-03T00:00:00Z")
    import_rows(engine, tmp_path / "d.csv", [june])
    assert [(e["data"]["month"], e["data"]["tier"]) for e in events_of(engine)] == [("2024-05", "BKR 1"),
                                                                                  ("2024-06", "BKR 1")]


def test_a_review_that_lapses_makes_statements_final_with_their_event(engine: Engine, tmp_path: Path) -> None:
    add_broker(engine)
    add_users(engine, "alice")
    use_program(engine, ProgramConfig(review_days=3))
    register(engine, "https://broker.example/hooks")
    import_rows(engine, tmp_path / "a.csv", [fill("f1")])
    close(engine, MAY)
    settlement.settle_month(engine, MAY, NOW + timedelta(days=4))
    assert [(e["type"], e["data"].get("reason")) for e in events_of(engine)] == [
        ("statement_issued", None), ("statement_final", "review_lapsed")]
    with engine.begin() as connection:
        payouts.acknowledge_payout(connection, f"payout/{BROKER}/2024-05", "wire-1", actor="treasury",
                                   now=NOW + timedelta(days=5))
    assert [e["type"] for e in events_of(engine)][-1] == "payout_sent"


def test_the_outbox_survives_a_new_engine_and_a_claim_whose_holder_died(db_url: str, receiver: Receiver,
                                                                        tmp_path: Path) -> None:
    first = db.open_engine(db_url)
    add_broker(first)
    add_users(first, "alice")
    use_program(first)
    register(first, receiver.url)
    import_rows(first, tmp_path / "a.csv", [fill("f1")])
    close(first, MAY)
    clock = Clock(NOW)
    assert deliver_all_due(first, clock, http_sender(timeout=5), jitter=no_jitter).retrying  # refused
    clock.advance(minutes=1)
    assert len(_claim(first, clock(), 10)) == 1  # claimed, then the process "dies" before sending
    first.dispose()

    receiver.status = 200
    receiver.start()
    second = db.open_engine(db_url)
    try:
        assert deliver_all_due(second, clock, http_sender(timeout=5)).attempted == 0  # the claim holds
    finally:
        second.dispose()
    # a new process, on the real clock: long after the dead claim's lease
    done = subprocess.run([sys.executable, "-m", "bkr.cli", "webhooks", "deliver", "--once", "--json", "--db", db_url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["delivered"]) == 1
    assert [e["type"] for e in receiver.accepted()] == ["statement_issued"]
    again = subprocess.run([sys.executable, "-m", "bkr.cli", "webhooks", "deliver", "--once", "--json", "--db", db_url],
                           capture_output=True, text=True, timeout=120)
    assert json.loads(again.stdout)["attempted"] == 0
    third = db.open_engine(db_url)
    try:
        with third.connect() as connection:
            assert [(r.attempt, r.status_code) for r in webhooks.delivery_log(connection)] == [(2, 200), (1, None)]
    finally:
        third.dispose()


def test_deliverers_side_by_side_send_each_event_once(engine: Engine, receiver: Receiver, tmp_path: Path) -> None:
    add_broker(engine)
    add_users(engine, "alice")
    use_program(engine)
    register(engine, receiver.url)
    import_rows(engine, tmp_path / "a.csv", [fill(f"f{i}", at=f"2024-05-{i:02d}T00:00:00Z") for i in range(1, 5)])
    close(engine, MAY)
    approve_all(engine)
    settlement.settle_month(engine, MAY, NOW)
    with engine.begin() as connection:
        payouts.acknowledge_payout(connection, f"payout/{BROKER}/2024-05", "wire-2", actor="treasury", now=NOW)
    receiver.status = 200
    receiver.start()
    clock = Clock(NOW)
    threads = [threading.Thread(target=deliver_all_due, args=(engine, clock, http_sender(timeout=5)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(e["type"] for e in receiver.accepted()) == ["payout_sent", "statement_final", "statement_issued"]
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(webhook_deliveries)).scalar_one() == 3


def test_an_endpoint_is_set_moved_rotated_and_removed_with_its_pending_events_cancelled(
        engine: Engine, tmp_path: Path) -> None:
    add_broker(engine)
    add_users(engine, "alice")
    use_program(engine)
    secret = register(engine, "https://broker.example/hooks")
    assert secret.startswith("whsec_") and len(secret) > 40
    with engine.begin() as connection:
        moved = webhooks.set_endpoint(connection, BROKER, "https://broker.example/v2", NOW, actor="ops")
        assert not isinstance(moved, webhooks.EndpointWithSecret)  # the secret stays: not shown again
        assert moved.url == "https://broker.example/v2" and moved.secret_hint == secret[:10] + "…"
        rotated = webhooks.rotate_secret(connection, BROKER, NOW, actor="ops")
        assert rotated.secret != secret
    import_rows(engine, tmp_path / "a.csv", [fill("f1")])
    close(engine, MAY)
    with engine.begin() as connection:
        assert webhooks.remove_endpoint(connection, BROKER, NOW, actor="ops") == 1
        assert [e.status for e in webhooks.events(connection)] == [EventStatus.CANCELLED.value]
        with pytest.raises(NotFound, match="no webhook endpoint"):
            webhooks.get_endpoint(connection, BROKER)
        with pytest.raises(NotFound, match="no broker"):
            webhooks.set_endpoint(connection, 9, "https://x.example", NOW, actor="ops")


@pytest.mark.parametrize("url", ["ftp://x.example/", "https://", "https://user:pw@x.example/", "x.example",
                                 "https://x.example/#frag", "https://x.example:99999/", "https://x.example/ a",
                                 "https://x.example/" + "a" * 2100])
def test_an_endpoint_url_must_be_http_or_https_and_bounded(url: str) -> None:
    with pytest.raises(InvalidInput):
        webhook_url(url)


def test_the_commands_register_rotate_deliver_and_log_as_an_operator(engine: Engine, db_url: str, bkr: Any,
                                                                     receiver: Receiver, tmp_path: Path) -> None:
    add_broker(engine)
    add_users(engine, "alice")
    use_program(engine)
    key = operator_key(engine, "operator", "olga")
    refused = bkr("broker", "webhook", "set", str(BROKER), receiver.url, "--db", db_url)
    assert refused.code == 1 and "operator key" in refused.err
    assert bkr("broker", "webhook", "set", str(BROKER), "ftp://x", "--key", key, "--db", db_url).code == 1
    made = bkr("broker", "webhook", "set", str(BROKER), receiver.url, "--key", key, "--json", "--db", db_url)
    assert made.code == 0, made.err
    secret = json.loads(made.out)["secret"]
    shown = json.loads(bkr("broker", "webhook", "show", str(BROKER), "--json", "--db", db_url).out)
    assert shown["url"] == receiver.url and secret not in json.dumps(shown)
    rotated = bkr("broker", "webhook", "rotate", str(BROKER), "--key", key, "--json", "--db", db_url)
    new_secret = json.loads(rotated.out)["secret"]
    assert new_secret != secret
    with engine.connect() as connection:
        entries = audit.entries(connection, audit.AuditQuery(actor="olga", action="webhook"))
    assert [e.action for e in entries] == ["webhook.set", "webhook.rotate"]

    import_rows(engine, tmp_path / "a.csv", [fill("f1")])
    close(engine, MAY)
    receiver.status = 204
    receiver.start()
    delivered = bkr("webhooks", "deliver", "--once", "--json", "--db", db_url)
    assert delivered.code == 0, delivered.err
    assert len(json.loads(delivered.out)["delivered"]) == 1
    (headers, body, _), = receiver.received
    assert doc_verifier()(new_secret, headers["bkr-signature"], body)  # signed now, with the new secret
    log = json.loads(bkr("webhooks", "log", "--broker", str(BROKER), "--json", "--db", db_url).out)
    assert [(d["event_type"], d["attempt"], d["status_code"]) for d in log["deliveries"]] == [
        ("statement_issued", 1, 204)]
    listed = json.loads(bkr("webhooks", "events", "--status", "delivered", "--json", "--db", db_url).out)
    assert [e["type"] for e in listed["events"]] == ["statement_issued"]
    removed = bkr("broker", "webhook", "remove", str(BROKER), "--key", key, "--db", db_url)
    assert removed.code == 0 and "0 undelivered" in removed.err


def test_bkr_serve_delivers_in_a_thread_of_its_own(engine: Engine, receiver: Receiver) -> None:
    add_broker(engine)
    use_program(engine)
    secret = register(engine, receiver.url)
    receiver.status = 200
    receiver.start()
    with engine.begin() as connection:
        webhooks.payout_sent(connection, BROKER, MAY, Decimal("10"), None, datetime.now(UTC))
    settings = ServiceSettings(scheduled_close=False, webhook_interval_seconds=1)
    with TestClient(create_app(engine, None, settings, run_scheduler=True)):
        deadline = time.monotonic() + 20
        while not receiver.accepted() and time.monotonic() < deadline:
            time.sleep(0.05)
    (headers, body, _), = receiver.received
    assert json.loads(body)["data"] == {"month": "2024-05", "amount": "10.00", "currency": "USD", "reference": None}
    assert doc_verifier()(secret, headers["bkr-signature"], body)  # signed at the real time: within the window
