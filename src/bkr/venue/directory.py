"""The broker directory: what the venue decides about an order's broker id, once per order.

An order names its broker in its body's `brokerId` (a JSON integer, as Backpack documents it) or,
when that is absent, in the request's `X-Broker-Id` header; both arrive as a `SentBrokerId`. When
an order carries both and they do not name the same broker, it is ambiguous: it belongs to no
broker (and the policy for ids that name no active broker decides whether it trades).

The decision (`BrokerDecision`) is what the order is stored with and what its fills carry into
the broker program, which takes it as it is: the broker's standing is judged here and nowhere
else. Every broker's status timeline is cached in the process and validated by the registry's
row counts, which order entry reads in the same statement as its lock (brokers and status changes
are only ever added, so a changed count is a change): a status change is seen at the next order,
with no round trip of its own. Ids that name no active broker, and the two ids of an ambiguous
order, are counted for operators (`count_problem`).
"""

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from bkr.domain.errors import InvalidInput
from bkr.domain.registry import (
    BROKER_ID_RANGE,
    BrokerId,
    BrokerStatus,
    StatusChange,
    StatusTimeline,
    as_broker_id,
)
from bkr.store.dialect import insert_for
from bkr.store.tables import broker_status_changes, brokers, venue_broker_id_conflicts, venue_broker_ids_seen

HTTP_WHITESPACE = " \t"  # what HTTP allows around a header's value; nothing else is trimmed
MAX_HEADER_KEPT = 64  # characters of a header value kept and counted; longer is not an id anyway
_ASCII_DIGITS = re.compile(r"[0-9]+")
HEADER = "X-Broker-Id"
BODY = "brokerId"


def _broker_id(text: str) -> BrokerId | None:
    """The id a header names: ASCII digits only (`str.isdigit` would also take `²`, `٣` or `１`,
    which no client sends as an id), within the registry's range."""
    if not _ASCII_DIGITS.fullmatch(text):
        return None
    try:
        return as_broker_id(int(text), HEADER)
    except InvalidInput:
        return None


@dataclass(frozen=True, slots=True)
class SentBrokerId:
    """A broker id as a request sent it: where (`X-Broker-Id` or the body's `brokerId`), the
    value as operators are shown it, and the broker id it is, if it is one at all."""

    source: str  # HEADER or BODY
    text: str  # at most MAX_HEADER_KEPT characters; a body's string is quoted, as JSON writes it
    broker_id: BrokerId | None  # None: not a broker id (malformed)

    @property
    def shown(self) -> str:
        """As a message names it: a malformed header's value quoted, as it may hold anything."""
        quoted = self.source == HEADER and self.broker_id is None
        return f"{self.source} {self.text!r}" if quoted else f"{self.source} {self.text}"


def header_broker_id(header: str | None) -> SentBrokerId | None:
    """The `X-Broker-Id` header's id (None: no header, or a blank one)."""
    if header is None or not header.strip(HTTP_WHITESPACE):
        return None
    text = header.strip(HTTP_WHITESPACE)[:MAX_HEADER_KEPT]
    return SentBrokerId(HEADER, text, _broker_id(text))


def body_broker_id(value: Any) -> SentBrokerId | None:
    """An order body's `brokerId` (None: absent or null). Backpack documents it as an unsigned
    16-bit JSON integer; anything else (a string, even of digits, a fraction, a boolean, a number
    outside the registry's range) is a malformed id, as a malformed header is."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value) if value.bit_length() <= 4 * MAX_HEADER_KEPT else f"a {value.bit_length()}-bit number"
        try:
            return SentBrokerId(BODY, text[:MAX_HEADER_KEPT], as_broker_id(value, BODY))
        except InvalidInput:
            return SentBrokerId(BODY, text[:MAX_HEADER_KEPT], None)
    if isinstance(value, str):
        text = '"' + value[:MAX_HEADER_KEPT - 2] + '"'
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    return SentBrokerId(BODY, text[:MAX_HEADER_KEPT], None)


@dataclass(frozen=True, slots=True)
class BrokerDecision:
    """An order's broker id, decided at the order's time."""

    broker_id: BrokerId | None  # what the order remembers and its fills carry
    active: bool | None  # whether `broker_id` was an active broker (None: not enrolled, or no id)
    problem: str | None  # why the order has no active broker though it named one, if it has none
    sent: SentBrokerId | None  # the id the decision is about (None: no id, or an ambiguous order)
    ambiguous: tuple[SentBrokerId, SentBrokerId] | None = None  # (header, body) when they differ

    @property
    def source(self) -> str:
        """What the order's client should change: the header, the body's field, or both."""
        if self.ambiguous is not None:
            return f"{HEADER} and {BODY}"
        return self.sent.source if self.sent is not None else HEADER


NO_BROKER = BrokerDecision(None, None, None, None)


class BrokerDirectory:
    """Every broker's status timeline, cached; `version` is the registry's row counts."""

    def __init__(self) -> None:
        self.version: tuple[int, int] | None = None
        self._timelines: dict[int, StatusTimeline] = {}

    def refresh(self, connection: Connection, version: tuple[int, int]) -> None:
        if version == self.version:
            return
        changes: dict[int, list[StatusChange]] = {int(b): [] for b in connection.execute(select(brokers.c.broker_id))
                                                  .scalars()}
        for broker_id, status, at in connection.execute(
                select(broker_status_changes.c.broker_id, broker_status_changes.c.status,
                       broker_status_changes.c.effective_at).order_by(broker_status_changes.c.effective_at)):
            changes.setdefault(int(broker_id), []).append(StatusChange(BrokerStatus(status), at))
        self._timelines = {b: StatusTimeline(tuple(c)) for b, c in changes.items()}
        self.version = version

    def decide(self, header: SentBrokerId | None, body: SentBrokerId | None, moment: datetime) -> BrokerDecision:
        """The decision for an order that arrived at `moment`: its body's id, else the header's.
        Both given, they must name the same broker, or the order is ambiguous."""
        if body is not None and header is not None and (body.broker_id is None or body.broker_id != header.broker_id):
            return BrokerDecision(None, None, f"{header.shown} and {body.shown} name different brokers; the order's "
                                              "broker is ambiguous", None, (header, body))
        sent = body if body is not None else header
        if sent is None:
            return NO_BROKER
        if sent.broker_id is None:
            spelled = " in the digits 0-9" if sent.source == HEADER else ", as a JSON integer"
            return BrokerDecision(None, None, f"{sent.shown} is not a broker id (a whole number {BROKER_ID_RANGE}"
                                              f"{spelled})", sent)
        broker_id = sent.broker_id
        timeline = self._timelines.get(broker_id)
        if timeline is None:
            return BrokerDecision(broker_id, None, f"{sent.source} {broker_id} is not an enrolled broker", sent)
        status = timeline.status_at(moment)
        if status is not BrokerStatus.ACTIVE:
            return BrokerDecision(broker_id, False, f"{sent.source} {broker_id}: the broker is {status.value}", sent)
        return BrokerDecision(broker_id, True, None, sent)

    def is_active(self, broker_id: int, moment: datetime) -> bool | None:
        """Whether a broker was active at `moment` (None: not enrolled). A resting order's
        fills are judged at their own time: its broker may have changed since it was placed."""
        timeline = self._timelines.get(broker_id)
        return None if timeline is None else timeline.is_active_at(moment)


def count_problem(connection: Connection, decision: BrokerDecision, rejected: bool, count: int,
                  now: datetime) -> None:
    """Count the orders whose broker id is not an active broker (by the id as sent), or is
    ambiguous (by its two values), for operators."""
    assert decision.problem is not None
    counts = {"orders": 0 if rejected else count, "rejected": count if rejected else 0,
              "first_seen_at": now, "last_seen_at": now}
    if decision.ambiguous is not None:
        header, body = decision.ambiguous
        table, keys = venue_broker_id_conflicts, {"header": header.text, "body": body.text}
        statement = insert_for(connection, table).values(**keys, **counts)
        changes: dict[str, Any] = {}
    else:
        assert decision.sent is not None
        table, keys = venue_broker_ids_seen, {"header": decision.sent.text}
        statement = insert_for(connection, table).values(**keys, reason=decision.problem, **counts)
        changes = {"reason": statement.excluded.reason}
    connection.execute(statement.on_conflict_do_update(index_elements=list(keys), set_={
        **changes, "last_seen_at": statement.excluded.last_seen_at,
        "orders": table.c.orders + statement.excluded.orders,
        "rejected": table.c.rejected + statement.excluded.rejected}))
