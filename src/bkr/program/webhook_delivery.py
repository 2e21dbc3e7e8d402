"""The deliverer: sends the outbox's due events to their brokers' endpoints, signed, and records
each attempt.

One round (`deliver_due`) claims a few due events in a short transaction — on PostgreSQL with
`FOR UPDATE SKIP LOCKED`, so that any number of processes deliver side by side and never claim one
event twice; SQLite has one writer at a time — by moving each one's next attempt a lease ahead
(`LEASE`, longer than the round's attempts can take) under a claim token of its own. It then sends
them, a few at a time and with no transaction open, and records the outcome in a second transaction that only the
holder of the claim may write: an answer in 2xx makes the event `delivered`, and a delivered event
is never sent again; anything else (another status, a refused connection, a timeout) schedules
the next attempt after `bkr.domain.webhooks.retry_delay`, until `GIVE_UP_AFTER` has passed since
the event was recorded, when it is `failed`.

Everything is in the database, so a deliverer that stops (or crashes) loses nothing: a claim
whose holder died lapses with its lease and the event is sent again. That is the one case in
which a receiver sees an event twice — sent, then the process died before it recorded the 2xx —
which is why events carry an id to deduplicate by.

`bkr serve` runs a deliverer in a thread; `bkr webhooks deliver` runs one on its own.
"""

import logging
import random
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
from sqlalchemy import Connection, Engine, insert, select, update

from bkr import __version__
from bkr.domain.clock import Clock
from bkr.domain.webhooks import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    EventStatus,
    gives_up,
    retry_delay,
    signature_header,
)
from bkr.store import db
from bkr.store.tables import webhook_deliveries, webhook_endpoints, webhook_events

log = logging.getLogger("bkr.webhooks")

TIMEOUT_SECONDS = 10.0  # one attempt: connect, send, and the receiver's answer
CLAIM_AT_ONCE = 20
SENDERS = 8  # attempts at once: an endpoint that hangs holds up one of them, not the round
# A claim's life: every attempt of a round, made SENDERS at a time, each at most TIMEOUT_SECONDS
# (with room to spare), so that no claim lapses while its holder is alive and sending.
LEASE = timedelta(seconds=60 + TIMEOUT_SECONDS * -(-CLAIM_AT_ONCE // SENDERS))
MAX_ERROR_CHARS = 500


@dataclass(frozen=True, slots=True)
class Answer:
    """What one attempt came to: the receiver's status, or why there was none."""

    status_code: int | None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


Sender = Callable[[str, dict[str, str], bytes], Answer]


def http_sender(timeout: float = TIMEOUT_SECONDS) -> Sender:
    """POST with httpx: no redirects followed (a receiver answers where it was registered)."""
    client = httpx.Client(timeout=timeout, follow_redirects=False)

    def send(url: str, headers: dict[str, str], body: bytes) -> Answer:
        try:
            response = client.post(url, content=body, headers=headers)
        except httpx.HTTPError as error:
            return Answer(None, f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS])
        return Answer(response.status_code)

    return send


@dataclass(frozen=True, slots=True)
class _Claimed:
    event_id: str
    broker_id: int
    body: str
    attempts: int
    created_at: datetime
    claim: str
    url: str | None  # None: the broker has no endpoint any more
    secret: str | None


@dataclass
class Round:
    """What one round did."""

    attempted: int = 0
    delivered: list[str] = field(default_factory=list)  # event ids
    retrying: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # given up
    cancelled: list[str] = field(default_factory=list)  # no endpoint any more
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def to_document(self) -> dict[str, object]:
        return {"attempted": self.attempted, "delivered": self.delivered, "retrying": self.retrying,
                "failed": self.failed, "cancelled": self.cancelled}


def _claim(engine: Engine, now: datetime, limit: int) -> list[_Claimed]:
    """Claim up to `limit` due events: their next attempt moves a lease ahead, under a new claim."""
    due = (select(webhook_events.c.event_id, webhook_events.c.broker_id, webhook_events.c.body,
                  webhook_events.c.attempts, webhook_events.c.created_at)
           .where((webhook_events.c.status == EventStatus.PENDING.value) & (webhook_events.c.next_attempt_at <= now))
           .order_by(webhook_events.c.next_attempt_at, webhook_events.c.seq).limit(limit))
    with db.snapshot(engine) as connection:  # an idle deliverer only reads: it never holds SQLite's write lock
        if connection.execute(due.limit(1)).first() is None:
            return []
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True, of=webhook_events)
        rows = connection.execute(due).all()
        if not rows:
            return []
        claim = secrets.token_hex(8)
        ids = [row.event_id for row in rows]
        connection.execute(update(webhook_events).where(webhook_events.c.event_id.in_(ids))
                           .values(claim=claim, next_attempt_at=now + LEASE))
        endpoints = {row.broker_id: row for row in connection.execute(
            select(webhook_endpoints).where(webhook_endpoints.c.broker_id.in_({row.broker_id for row in rows})))}
    claimed = []
    for row in rows:
        endpoint = endpoints.get(row.broker_id)
        claimed.append(_Claimed(row.event_id, row.broker_id, row.body, row.attempts, row.created_at, claim,
                                None if endpoint is None else endpoint.url,
                                None if endpoint is None else endpoint.secret))
    return claimed


def _held(connection: Connection, claimed: _Claimed) -> bool:
    """Whether the claim is still this round's (its lease may have lapsed and been taken over)."""
    return connection.execute(select(webhook_events.c.event_id).where(
        (webhook_events.c.event_id == claimed.event_id) & (webhook_events.c.claim == claimed.claim)
        & (webhook_events.c.status == EventStatus.PENDING.value))).first() is not None


def _record(engine: Engine, claimed: _Claimed, url: str, answer: Answer, attempted_at: datetime, duration_ms: int,
            now: datetime, jitter: Callable[[], float], result: Round) -> None:
    attempt = claimed.attempts + 1
    with engine.begin() as connection:
        if not _held(connection, claimed):
            log.warning("event %s: the claim lapsed during its attempt; its outcome is left to its new holder",
                        claimed.event_id)
            return
        connection.execute(insert(webhook_deliveries).values(
            event_id=claimed.event_id, broker_id=claimed.broker_id, attempt=attempt, attempted_at=attempted_at,
            url=url, status_code=answer.status_code, error=answer.error, duration_ms=duration_ms))
        mine = webhook_events.c.event_id == claimed.event_id
        if answer.delivered:
            connection.execute(update(webhook_events).where(mine).values(
                status=EventStatus.DELIVERED.value, attempts=attempt, delivered_at=now, next_attempt_at=None,
                claim=None))
            result.delivered.append(claimed.event_id)
            return
        following = now + retry_delay(attempt, jitter)
        if gives_up(claimed.created_at, following):
            connection.execute(update(webhook_events).where(mine).values(
                status=EventStatus.FAILED.value, attempts=attempt, next_attempt_at=None, claim=None))
            result.failed.append(claimed.event_id)
            return
        connection.execute(update(webhook_events).where(mine).values(
            attempts=attempt, next_attempt_at=following, claim=None))
        result.retrying.append(claimed.event_id)


def _cancel(engine: Engine, claimed: _Claimed, result: Round) -> None:
    with engine.begin() as connection:
        if _held(connection, claimed):
            connection.execute(update(webhook_events).where(webhook_events.c.event_id == claimed.event_id)
                               .values(status=EventStatus.CANCELLED.value, next_attempt_at=None, claim=None))
            result.cancelled.append(claimed.event_id)


def _attempt(engine: Engine, clock: Clock, sender: Sender, claimed: _Claimed, jitter: Callable[[], float],
             result: Round) -> None:
    """Sign and send one claimed event, then record what came of it."""
    if claimed.url is None or claimed.secret is None:
        _cancel(engine, claimed, result)
        return
    attempted_at = clock()
    headers = {"Content-Type": "application/json", "User-Agent": f"bkr-webhooks/{__version__}",
               EVENT_ID_HEADER: claimed.event_id,
               SIGNATURE_HEADER: signature_header(claimed.secret, int(attempted_at.timestamp()), claimed.body)}
    started = time.perf_counter()
    answer = sender(claimed.url, headers, claimed.body.encode())
    duration_ms = int((time.perf_counter() - started) * 1000)
    with result.lock:
        result.attempted += 1
    _record(engine, claimed, claimed.url, answer, attempted_at, duration_ms, clock(), jitter, result)


def deliver_due(engine: Engine, clock: Clock, sender: Sender, *, jitter: Callable[[], float] = random.random,
                limit: int = CLAIM_AT_ONCE) -> Round:
    """Send the events due at `clock()` (up to `limit`), `SENDERS` at a time, and record each."""
    result = Round()
    claimed = _claim(engine, clock(), limit)
    if len(claimed) == 1:  # the usual case: no thread for it
        _attempt(engine, clock, sender, claimed[0], jitter, result)
    elif claimed:
        with ThreadPoolExecutor(max_workers=SENDERS, thread_name_prefix="bkr-webhook") as pool:
            for done in [pool.submit(_attempt, engine, clock, sender, item, jitter, result) for item in claimed]:
                done.result()  # an error (the database away) ends the round; the claims lapse and are retried
    return result


def deliver_all_due(engine: Engine, clock: Clock, sender: Sender, *,
                    jitter: Callable[[], float] = random.random) -> Round:
    """Rounds until nothing is due: the events due now, each attempted once (a failed one is
    next due later than now)."""
    total = Round()
    while True:
        done = deliver_due(engine, clock, sender, jitter=jitter)
        if not done.attempted and not done.cancelled:
            return total
        total.attempted += done.attempted
        for name in ("delivered", "retrying", "failed", "cancelled"):
            getattr(total, name).extend(getattr(done, name))


class Deliverer:
    """A deliverer in a daemon thread, every `interval` seconds (as `bkr serve` runs it)."""

    def __init__(self, engine: Engine, clock: Clock, interval: float, sender: Sender | None = None) -> None:
        self.engine, self.clock, self.interval = engine, clock, interval
        self.sender = sender or http_sender()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> Round:
        return deliver_all_due(self.engine, self.clock, self.sender)

    def run(self) -> None:
        """Deliver until `stop()`; a failure (a database away) is logged and tried again."""
        while not self._stopping.is_set():
            try:
                done = self.tick()
                if done.attempted:
                    log.info("webhooks: %d attempted, %d delivered, %d to retry, %d given up", done.attempted,
                             len(done.delivered), len(done.retrying), len(done.failed))
            except Exception:
                log.exception("webhook delivery failed; retrying in %s s", self.interval)
            self._stopping.wait(self.interval)

    def start(self) -> None:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self.run, name="bkr-webhooks", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
