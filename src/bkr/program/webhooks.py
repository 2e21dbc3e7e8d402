"""A broker's webhook endpoint, and the events bkr records for it (the outbox).

`set_endpoint`, `rotate_secret` and `remove_endpoint` change a broker's endpoint in the caller's
transaction and append to the audit trail, naming `actor` (an operator, or `broker <id>` when the
broker did it through its API). A new endpoint, and a rotation, make a signing secret that the
caller shows once.

`enqueue` records one event, in the caller's transaction, for a broker that has an endpoint at
that moment (a broker without one gets none, and registering later does not replay the past).
Each event has a key that says what it is about (`tier_reached/1400/2026-11/BKR 1`), unique in the
outbox, so that whatever records it twice (a retried settlement, two ingest processes crossing
the same threshold) records it once. The use cases call the event's own function here
(`statement_issued`, `statement_final`, `payout_sent`, `note_tier_crossings`); the deliverer
(`bkr.program.webhook_delivery`) sends what is pending.

`tier_reached`: after a batch of fills is counted, `note_tier_crossings` reads the month-to-date
API volume of each (broker, month) the batch added to (the close's own figure: the month's own
lines in the running totals) and announces each tier that volume reaches and that was not
announced yet this month. When an endpoint is set, the tiers already reached in the open months
are marked as announced, so a new endpoint hears of crossings from then on, not of the past.
Two batches of one broker committed at the same moment may each miss a threshold their sum
crosses; the broker's next counted fill of the month announces it.
"""

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from bkr.domain.errors import InvalidInput, NotFound
from bkr.domain.money import canonical, round_down, total
from bkr.domain.periods import Month
from bkr.domain.statements import BrokerStatement
from bkr.domain.tiers import tier_name
from bkr.domain.webhooks import SECRET_PREFIX, EventStatus, EventType, event_body, secret_hint, webhook_url
from bkr.program import audit
from bkr.program.attribution import Counted
from bkr.program.periods import closed_months
from bkr.program.settings_versions import load_timeline, version_for
from bkr.store.dialect import insert_ignoring
from bkr.store.tables import (
    aggregate_totals,
    brokers,
    statements,
    webhook_deliveries,
    webhook_endpoints,
    webhook_events,
    webhook_tier_marks,
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    broker_id: int
    url: str
    created_at: datetime
    secret_created_at: datetime
    secret_hint: str

    def to_document(self) -> dict[str, Any]:
        return {"broker_id": self.broker_id, "url": self.url, "created_at": self.created_at.isoformat(),
                "secret_created_at": self.secret_created_at.isoformat(), "secret_hint": self.secret_hint}


@dataclass(frozen=True, slots=True)
class EndpointWithSecret:
    """An endpoint just made or rotated, with its secret: the only time the secret is given."""

    endpoint: Endpoint
    secret: str


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _broker_exists(connection: Connection, broker_id: int) -> None:
    if connection.execute(select(brokers.c.broker_id).where(brokers.c.broker_id == broker_id)).first() is None:
        raise NotFound(f"no broker with id {broker_id}")


def get_endpoint(connection: Connection, broker_id: int) -> Endpoint:
    row = connection.execute(select(webhook_endpoints).where(webhook_endpoints.c.broker_id == broker_id)).first()
    if row is None:
        _broker_exists(connection, broker_id)
        raise NotFound(f"broker {broker_id} has no webhook endpoint (bkr broker webhook set {broker_id} URL)",
                       code="no_webhook_endpoint")
    return Endpoint(row.broker_id, row.url, row.created_at, row.secret_created_at, secret_hint(row.secret))


def set_endpoint(connection: Connection, broker_id: int, url: str, now: datetime, *,
                 actor: str) -> EndpointWithSecret | Endpoint:
    """Register the broker's endpoint, or move it to another URL. A new endpoint gets a new
    secret (returned with it, to be shown once); a moved one keeps its secret (returned without:
    `rotate_secret` makes a new one). Events not yet delivered go to the new URL."""
    url = webhook_url(url)
    _broker_exists(connection, broker_id)
    existing = connection.execute(select(webhook_endpoints.c.url).where(
        webhook_endpoints.c.broker_id == broker_id)).first()
    if existing is not None:
        if existing.url != url:
            connection.execute(update(webhook_endpoints).where(webhook_endpoints.c.broker_id == broker_id)
                               .values(url=url))
            audit.record(connection, actor=actor, action="webhook.set", subject=f"broker {broker_id}", at=now,
                         before={"url": existing.url}, after={"url": url})
        return get_endpoint(connection, broker_id)
    secret = new_secret()
    connection.execute(insert(webhook_endpoints).values(broker_id=broker_id, url=url, secret=secret, created_at=now,
                                                        secret_created_at=now))
    _mark_tiers_reached(connection, broker_id, now)
    audit.record(connection, actor=actor, action="webhook.set", subject=f"broker {broker_id}", at=now,
                 after={"url": url, "secret": secret_hint(secret)})
    return EndpointWithSecret(get_endpoint(connection, broker_id), secret)


def rotate_secret(connection: Connection, broker_id: int, now: datetime, *, actor: str) -> EndpointWithSecret:
    """A new signing secret; the old one signs nothing from now on (attempts in flight excepted)."""
    before = get_endpoint(connection, broker_id)
    secret = new_secret()
    connection.execute(update(webhook_endpoints).where(webhook_endpoints.c.broker_id == broker_id)
                       .values(secret=secret, secret_created_at=now))
    audit.record(connection, actor=actor, action="webhook.rotate", subject=f"broker {broker_id}", at=now,
                 before={"secret": before.secret_hint}, after={"secret": secret_hint(secret)})
    return EndpointWithSecret(get_endpoint(connection, broker_id), secret)


def remove_endpoint(connection: Connection, broker_id: int, now: datetime, *, actor: str) -> int:
    """Remove the endpoint; its events not yet delivered are cancelled (the log keeps them).
    Returns how many were cancelled."""
    before = get_endpoint(connection, broker_id)
    cancelled = connection.execute(update(webhook_events).where(
        (webhook_events.c.broker_id == broker_id) & (webhook_events.c.status == EventStatus.PENDING.value))
        .values(status=EventStatus.CANCELLED.value, next_attempt_at=None, claim=None)).rowcount
    connection.execute(delete(webhook_endpoints).where(webhook_endpoints.c.broker_id == broker_id))
    audit.record(connection, actor=actor, action="webhook.remove", subject=f"broker {broker_id}", at=now,
                 before={"url": before.url}, after={"cancelled_events": cancelled})
    return int(cancelled)


# --- recording events ---------------------------------------------------------------------------

def new_event_id() -> str:
    return "evt_" + secrets.token_hex(12)


def enqueue(connection: Connection, broker_id: int, event_type: EventType, key: str, data: Mapping[str, Any],
            now: datetime) -> str | None:
    """Record an event for the broker's endpoint, in the caller's transaction: its id, or None
    when the broker has no endpoint or an event with this `key` was recorded before."""
    if connection.execute(select(webhook_endpoints.c.broker_id)
                          .where(webhook_endpoints.c.broker_id == broker_id)).first() is None:
        return None
    event_id = new_event_id()
    dedup_key = f"{event_type.value}/{broker_id}/{key}"
    insert_ignoring(connection, webhook_events, [{
        "event_id": event_id, "broker_id": broker_id, "type": event_type.value, "dedup_key": dedup_key,
        "body": event_body(event_id, event_type, now, broker_id, data), "created_at": now,
        "status": EventStatus.PENDING.value, "attempts": 0, "next_attempt_at": now}], ["dedup_key"])
    stored = connection.execute(select(webhook_events.c.event_id)
                                .where(webhook_events.c.dedup_key == dedup_key)).scalar()
    return event_id if stored == event_id else None


def statement_issued(connection: Connection, statement: BrokerStatement, now: datetime) -> None:
    """A close wrote `statement` (a draft)."""
    enqueue(connection, statement.broker_id, EventType.STATEMENT_ISSUED, str(statement.month), {
        "month": str(statement.month), "status": "draft", "tier": statement.tier_name,
        "broker_rate": canonical(statement.broker_rate), "api_volume": canonical(statement.api_volume),
        "payout_exact": canonical(statement.payout_exact), "payout": format(statement.payout, "f"),
        "currency": "USD"}, now)


def _payout_text(connection: Connection, month: Month, amount: Decimal) -> str:
    """A stored payout as its statement writes it: with its month's rounding quantum's decimals."""
    return format(round_down(amount, version_for(connection, month).config.rounding_quantum), "f")


def statement_final(connection: Connection, broker_id: int, month: Month, now: datetime, *, reason: str) -> None:
    """The statement of `month` became final: `reason` is `approved` or `review_lapsed`."""
    row = connection.execute(select(statements.c.payout, statements.c.tier_level).where(
        (statements.c.broker_id == broker_id) & (statements.c.month == month))).one()
    enqueue(connection, broker_id, EventType.STATEMENT_FINAL, str(month), {
        "month": str(month), "status": "final", "reason": reason, "tier": tier_name(row.tier_level),
        "payout": _payout_text(connection, month, row.payout), "currency": "USD"}, now)


def payout_sent(connection: Connection, broker_id: int, month: Month, amount: Decimal, reference: str | None,
                now: datetime) -> None:
    """The statement of `month` was paid: `amount` USD, under `reference` (None: nothing to transfer)."""
    enqueue(connection, broker_id, EventType.PAYOUT_SENT, str(month), {
        "month": str(month), "amount": _payout_text(connection, month, amount), "currency": "USD",
        "reference": reference}, now)


# --- tier_reached ---------------------------------------------------------------------------------

# Built once: the row path asks after every batch that counted something (the venue's, one order).
_LISTENING = select(webhook_endpoints.c.broker_id).where(
    webhook_endpoints.c.broker_id.in_(bindparam("ids", expanding=True)))
_OWN_VOLUME = select(aggregate_totals.c.volume_usd).where(
    (aggregate_totals.c.broker_id == bindparam("broker_id")) & (aggregate_totals.c.period == bindparam("month"))
    & (aggregate_totals.c.fill_month == bindparam("month")))
_MARKED = select(webhook_tier_marks.c.level).where(
    (webhook_tier_marks.c.broker_id == bindparam("broker_id")) & (webhook_tier_marks.c.month == bindparam("month")))


def _own_volume(connection: Connection, broker_id: int, month: Month) -> Decimal:
    """The month's API volume so far: its own fills' volume in the running totals (late fills of
    earlier months, paid in it, are not its volume), summed exactly (a few rows: one per market
    type and affiliate rate)."""
    return total(connection.execute(_OWN_VOLUME, {"broker_id": broker_id, "month": month}).scalars())


def note_tier_crossings(connection: Connection, touched: Iterable[tuple[int, Month]], now: datetime) -> None:
    """Announce the tiers reached by the month-to-date volume of each (broker, month) a batch of
    counted fills added to, once per tier and month, for the brokers with an endpoint."""
    pairs = sorted(set(touched))
    if not pairs:
        return
    listening = set(connection.execute(_LISTENING, {"ids": sorted({broker for broker, _ in pairs})}).scalars())
    pairs = [(broker, month) for broker, month in pairs if broker in listening]
    if not pairs:
        return
    program = load_timeline(connection)
    for broker_id, month in pairs:
        volume = _own_volume(connection, broker_id, month)
        schedule = program.config_for(month).schedule_for(month)
        reached = [tier for tier in schedule.tiers if tier.level > 0 and volume >= tier.min_volume]
        if not reached:
            continue
        marked = set(connection.execute(_MARKED, {"broker_id": broker_id, "month": month}).scalars())
        for tier in reached:
            if tier.level in marked:
                continue
            insert_ignoring(connection, webhook_tier_marks, [{"broker_id": broker_id, "month": month,
                                                              "level": tier.level, "marked_at": now}],
                            ["broker_id", "month", "level"])
            enqueue(connection, broker_id, EventType.TIER_REACHED, f"{month}/{tier.name}", {
                "month": str(month), "tier": tier.name, "threshold": canonical(tier.min_volume),
                "broker_rate": canonical(tier.rate), "api_volume": canonical(volume)}, now)


def note_counted(connection: Connection, counted: Iterable[Counted], now: datetime) -> None:
    """`note_tier_crossings` for the (broker, month) pairs a batch's counted fills added volume to
    (the row path's; the set path names its pairs itself)."""
    note_tier_crossings(connection, {(item.broker_id, item.period) for item in counted
                                     if item.fill_month == item.period and item.volume_usd > 0}, now)


def _mark_tiers_reached(connection: Connection, broker_id: int, now: datetime) -> None:
    """Mark as announced the tiers the broker has reached in the months still open up to now."""
    closed = closed_months(connection)
    months = [m for m in (Month.of(now).previous(), Month.of(now)) if m not in closed]
    program = None
    for month in months:
        volume = _own_volume(connection, broker_id, month)
        if not volume:
            continue
        program = program or load_timeline(connection)
        try:
            schedule = program.config_for(month).schedule_for(month)
        except InvalidInput:  # a month outside every version has no tiers to mark
            continue
        insert_ignoring(connection, webhook_tier_marks, [
            {"broker_id": broker_id, "month": month, "level": tier.level, "marked_at": now}
            for tier in schedule.tiers if tier.level > 0 and volume >= tier.min_volume],
            ["broker_id", "month", "level"])


# --- the log ----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    delivery_id: int
    event_id: str
    event_type: str
    broker_id: int
    attempt: int
    attempted_at: datetime
    url: str
    status_code: int | None
    error: str | None
    duration_ms: int
    event_status: str  # where the event stands now

    def to_document(self) -> dict[str, Any]:
        return {"delivery_id": self.delivery_id, "event_id": self.event_id, "event_type": self.event_type,
                "broker_id": self.broker_id, "attempt": self.attempt, "attempted_at": self.attempted_at.isoformat(),
                "url": self.url, "status_code": self.status_code, "error": self.error,
                "duration_ms": self.duration_ms, "event_status": self.event_status}


MAX_LOG_PAGE = 1000


def delivery_log(connection: Connection, *, broker_id: int | None = None, event_id: str | None = None,
                 before: int | None = None, limit: int = 100) -> list[DeliveryRecord]:
    """Delivery attempts, newest first; `before`: a delivery id, to page on (the page's last)."""
    query = (select(webhook_deliveries, webhook_events.c.type, webhook_events.c.status.label("event_status"))
             .join(webhook_events, webhook_events.c.event_id == webhook_deliveries.c.event_id)
             .order_by(webhook_deliveries.c.delivery_id.desc()).limit(min(max(limit, 1), MAX_LOG_PAGE)))
    if broker_id is not None:
        query = query.where(webhook_deliveries.c.broker_id == broker_id)
    if event_id is not None:
        query = query.where(webhook_deliveries.c.event_id == event_id)
    if before is not None:
        query = query.where(webhook_deliveries.c.delivery_id < before)
    return [DeliveryRecord(r.delivery_id, r.event_id, r.type, r.broker_id, r.attempt, r.attempted_at, r.url,
                           r.status_code, r.error, r.duration_ms, r.event_status) for r in connection.execute(query)]


@dataclass(frozen=True, slots=True)
class EventRecord:
    event_id: str
    broker_id: int
    event_type: str
    created_at: datetime
    status: str
    attempts: int
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    body: str

    def to_document(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "broker_id": self.broker_id, "type": self.event_type,
                "created_at": self.created_at.isoformat(), "status": self.status, "attempts": self.attempts,
                "next_attempt_at": None if self.next_attempt_at is None else self.next_attempt_at.isoformat(),
                "delivered_at": None if self.delivered_at is None else self.delivered_at.isoformat()}


def events(connection: Connection, *, broker_id: int | None = None, status: EventStatus | None = None,
           limit: int = 100) -> list[EventRecord]:
    """Recorded events, newest first."""
    query = select(webhook_events).order_by(webhook_events.c.seq.desc()).limit(min(max(limit, 1), MAX_LOG_PAGE))
    if broker_id is not None:
        query = query.where(webhook_events.c.broker_id == broker_id)
    if status is not None:
        query = query.where(webhook_events.c.status == status.value)
    return [EventRecord(r.event_id, r.broker_id, r.type, r.created_at, r.status, r.attempts, r.next_attempt_at,
                        r.delivered_at, r.body) for r in connection.execute(query)]
