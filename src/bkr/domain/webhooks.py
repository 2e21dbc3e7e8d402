"""Webhooks as a broker receives them: the events, their signature, and when a failed delivery
is tried again.

An event is one JSON object, `{"id", "type", "created", "broker_id", "data"}`, whose bytes are
fixed when it is recorded: every attempt sends the same body, so a receiver that deduplicates by
`id` sees one event however often it was sent. Amounts in `data` are decimal strings.

The signature follows Stripe's scheme: the header

    Bkr-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

signs the time of the attempt with the body, so a receiver that refuses a `t` more than
`REPLAY_TOLERANCE` away from its own clock refuses a recorded request replayed later.
`verify_signature` is the receiver's check (docs/brokers.md has the same in a few lines).

A failed attempt is retried after an exponential delay with jitter (`retry_delay`), until an
answer in 2xx, or until `GIVE_UP_AFTER` has passed since the event was recorded.
"""

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from bkr.domain.errors import InvalidInput, Unauthenticated

SIGNATURE_HEADER = "Bkr-Signature"
EVENT_ID_HEADER = "Bkr-Event-Id"
REPLAY_TOLERANCE = timedelta(minutes=5)
SECRET_PREFIX = "whsec_"
MAX_URL_LENGTH = 2048

FIRST_RETRY = timedelta(minutes=1)
LONGEST_RETRY = timedelta(hours=6)
GIVE_UP_AFTER = timedelta(days=3)


class EventType(StrEnum):
    TIER_REACHED = "tier_reached"  # the month-to-date API volume reached a tier's threshold
    STATEMENT_ISSUED = "statement_issued"  # a close wrote the month's statement (a draft)
    STATEMENT_FINAL = "statement_final"  # approved, or its review window lapsed
    PAYOUT_SENT = "payout_sent"  # the statement was paid


class EventStatus(StrEnum):
    PENDING = "pending"  # to be sent (again) at its next attempt time
    DELIVERED = "delivered"  # answered with 2xx: never sent again
    FAILED = "failed"  # no 2xx within GIVE_UP_AFTER: no more attempts
    CANCELLED = "cancelled"  # the endpoint was removed before it was delivered


def webhook_url(text: str) -> str:
    """A URL an endpoint may have: http or https, a host, at most `MAX_URL_LENGTH` characters,
    no credentials and no fragment (neither would reach the receiver as meant)."""
    url = text.strip()
    if not url:
        raise InvalidInput("url: empty", field="url")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidInput(f"url: longer than {MAX_URL_LENGTH} characters", field="url")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise InvalidInput("url: contains spaces or control characters", field="url")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number in range
    except ValueError as error:
        raise InvalidInput(f"url: {error}", field="url") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidInput(f"url: the scheme must be http or https, not {parts.scheme or '(none)'!r}", field="url")
    if not parts.hostname:
        raise InvalidInput("url: no host", field="url")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("url: credentials in a URL are refused; the signature authenticates bkr", field="url")
    if parts.fragment:
        raise InvalidInput("url: a fragment (#…) is never sent to a server", field="url")
    if port == 0:
        raise InvalidInput("url: port 0", field="url")
    return url


def event_body(event_id: str, event_type: EventType, created: datetime, broker_id: int,
               data: Mapping[str, Any]) -> str:
    """The event as it is sent, compact JSON with sorted keys: fixed once, sent as is."""
    return json.dumps({"id": event_id, "type": event_type.value, "created": int(created.timestamp()),
                       "broker_id": broker_id, "data": dict(data)},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def signature(secret: str, timestamp: int, body: str) -> str:
    """hex HMAC-SHA256 of `<timestamp>.<body>` under the endpoint's secret."""
    return hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: str) -> str:
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def verify_signature(secret: str, header: str | None, body: str, now: int,
                     tolerance: timedelta = REPLAY_TOLERANCE) -> int:
    """The receiver's check: the header's `t` within `tolerance` of `now` (unix seconds) and one
    of its `v1` signatures that of `t` and `body` under `secret`. Returns `t`; raises
    `Unauthenticated` saying what failed."""
    if not header:
        raise Unauthenticated(f"{SIGNATURE_HEADER} is missing", code="signature_missing")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise Unauthenticated(f"{SIGNATURE_HEADER} has no t=… or no v1=…", code="signature_malformed")
    if abs(now - timestamp) > tolerance.total_seconds():
        raise Unauthenticated(f"the signature's time is {now - timestamp} s from now; more than "
                              f"{int(tolerance.total_seconds())} s is refused as a replay", code="signature_expired")
    expected = signature(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise Unauthenticated("the signature does not match the body", code="signature_mismatch")
    return timestamp


def retry_delay(attempt: int, jitter: Callable[[], float]) -> timedelta:
    """How long after failed attempt number `attempt` (from 1) the next one is made: 1 min, 2,
    4, … doubling up to 6 hours, each scaled by a factor in [0.5, 1) from `jitter()` (a number in
    [0, 1)), so that the events of an endpoint that was down do not all come back at once."""
    if attempt < 1:
        raise ValueError(f"attempt numbers start at 1, not {attempt}")
    base: timedelta = min(FIRST_RETRY * (2 ** min(attempt - 1, 30)), LONGEST_RETRY)
    return base * (0.5 + 0.5 * min(max(jitter(), 0.0), 1.0 - 1e-9))


def gives_up(created: datetime, next_attempt: datetime) -> bool:
    """Whether an attempt at `next_attempt` would come too late for an event recorded at `created`."""
    return next_attempt - created > GIVE_UP_AFTER


def secret_hint(secret: str) -> str:
    """What is shown of a secret after it was given: enough to tell two apart."""
    return f"{secret[:len(SECRET_PREFIX) + 4]}…"
