"""The broker directory: what the venue decides about an order's `X-Broker-Id`, once per order.

The decision (`BrokerDecision`) is what the order is stored with and what its fills carry into
the broker program, which takes it as it is: the broker's standing is judged here and nowhere
else. Every broker's status timeline is cached in the process and validated by the registry's
row counts, which order entry reads in the same statement as its lock (brokers and status changes
are only ever added, so a changed count is a change): a status change is seen at the next order,
with no round trip of its own. Headers that name no active broker are counted for operators
(`count_header`).
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select

from bkr.domain.registry import (
    BROKER_ID_RANGE,
    MAX_BROKER_ID,
    MIN_BROKER_ID,
    BrokerId,
    BrokerStatus,
    StatusChange,
    StatusTimeline,
)
from bkr.store.dialect import insert_for
from bkr.store.tables import broker_status_changes, brokers, venue_broker_ids_seen


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
        if header is None or not header.strip():
            return NO_BROKER
        text = header.strip()[:64]
        if not text.isdigit() or not MIN_BROKER_ID <= int(text) <= MAX_BROKER_ID:
            return BrokerDecision(None, None,
                                  f"X-Broker-Id {text!r} is not a broker id (a whole number {BROKER_ID_RANGE})", text)
        broker_id = BrokerId(int(text))
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
