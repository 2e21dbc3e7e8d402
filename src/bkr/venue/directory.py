"""The broker directory: what the venue decides about an order's `X-Broker-Id`, once per order.

The decision (`BrokerDecision`) is what the order is stored with and what its fills carry into
the broker program, which takes it as it is: the broker's standing is judged here and nowhere
else. Every broker's status timeline is cached in the process and validated by the registry's
row counts, which order entry reads in the same statement as its lock (brokers and status changes
are only ever added, so a changed count is a change): a status change is seen at the next order,
with no round trip of its own. Headers that name no active broker are counted for operators
(`count_header`).
"""

import re
from dataclasses import dataclass
from datetime import datetime

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
from bkr.store.tables import broker_status_changes, brokers, venue_broker_ids_seen

HTTP_WHITESPACE = " \t"  # what HTTP allows around a header's value; nothing else is trimmed
MAX_HEADER_KEPT = 64  # characters of a header value kept and counted; longer is not an id anyway
_ASCII_DIGITS = re.compile(r"[0-9]+")


def _broker_id(text: str) -> BrokerId | None:
    """The id a header names: ASCII digits only (`str.isdigit` would also take `²`, `٣` or `１`,
    which no client sends as an id), within the registry's range."""
    if not _ASCII_DIGITS.fullmatch(text):
        return None
    try:
        return as_broker_id(int(text), "X-Broker-Id")
    except InvalidInput:
        return None


@dataclass(frozen=True, slots=True)
class BrokerDecision:
    """An order's `X-Broker-Id`, decided at the order's time."""

    broker_id: BrokerId | None  # what the order remembers and its fills carry
    active: bool | None  # whether `broker_id` was an active broker (None: not enrolled, or no id)
    problem: str | None  # why the header is not an active broker, if it is not
    header: str | None


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

    def decide(self, header: str | None, moment: datetime) -> BrokerDecision:
        """The decision for an order that arrived at `moment` with this header."""
        if header is None or not header.strip(HTTP_WHITESPACE):
            return NO_BROKER
        text = header.strip(HTTP_WHITESPACE)[:MAX_HEADER_KEPT]
        broker_id = _broker_id(text)
        if broker_id is None:
            return BrokerDecision(None, None,
                                  f"X-Broker-Id {text!r} is not a broker id (a whole number {BROKER_ID_RANGE} "
                                  "in the digits 0-9)", text)
        timeline = self._timelines.get(broker_id)
        if timeline is None:
            return BrokerDecision(broker_id, None, f"X-Broker-Id {broker_id} is not an enrolled broker", text)
        status = timeline.status_at(moment)
        if status is not BrokerStatus.ACTIVE:
            return BrokerDecision(broker_id, False, f"X-Broker-Id {broker_id}: the broker is {status.value}", text)
        return BrokerDecision(broker_id, True, None, text)

    def is_active(self, broker_id: int, moment: datetime) -> bool | None:
        """Whether a broker was active at `moment` (None: not enrolled). A resting order's
        fills are judged at their own time: its broker may have changed since it was placed."""
        timeline = self._timelines.get(broker_id)
        return None if timeline is None else timeline.is_active_at(moment)


def count_header(connection: Connection, decision: BrokerDecision, rejected: bool, count: int,
                 now: datetime) -> None:
    """Count the orders whose X-Broker-Id is not an active broker, for operators."""
    assert decision.header is not None and decision.problem is not None
    statement = insert_for(connection, venue_broker_ids_seen).values(
        header=decision.header, reason=decision.problem, orders=0 if rejected else count,
        rejected=count if rejected else 0,
        first_seen_at=now, last_seen_at=now)
    connection.execute(statement.on_conflict_do_update(index_elements=["header"], set_={
        "reason": statement.excluded.reason, "last_seen_at": statement.excluded.last_seen_at,
        "orders": venue_broker_ids_seen.c.orders + statement.excluded.orders,
        "rejected": venue_broker_ids_seen.c.rejected + statement.excluded.rejected}))
