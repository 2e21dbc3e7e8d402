"""Effective-dated history: broker status timelines and referral-rate timelines."""

from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import NewType

from bkr.domain.bounds import FRACTION, bounded
from bkr.domain.errors import Conflict, InvalidInput, NotFound

BrokerId = NewType("BrokerId", int)
"""The number a broker's orders carry as `X-Broker-Id`: an unsigned 16-bit integer other than 0, as
on Backpack (ccxt sends 1400, Hummingbot 2200). Made by `as_broker_id`, which checks the range."""

MIN_BROKER_ID = 1
MAX_BROKER_ID = 65535
BROKER_ID_RANGE = f"{MIN_BROKER_ID}..{MAX_BROKER_ID}"


def as_broker_id(number: int, where: str = "broker_id") -> BrokerId:
    """`number` as a broker id; outside the range it is `InvalidInput` naming `where`."""
    if not MIN_BROKER_ID <= number <= MAX_BROKER_ID:
        raise InvalidInput(f"{where}: {number} is outside {BROKER_ID_RANGE}")
    return BrokerId(number)


class BrokerType(StrEnum):
    EXCHANGE_AGGREGATOR = "exchange_aggregator"
    TRADING_TERMINAL = "trading_terminal"
    TRADING_BOT = "trading_bot"
    ALGORITHMIC_TRADING_PLATFORM = "algorithmic_trading_platform"
    SOCIAL_TRADING_PLATFORM = "social_trading_platform"
    ASSET_MANAGER = "asset_manager"
    ORDER_EXECUTION_SERVICE = "order_execution_service"
    OTHER = "other"


class BrokerStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"


_ALLOWED: dict[BrokerStatus, frozenset[BrokerStatus]] = {
    BrokerStatus.PENDING: frozenset({BrokerStatus.ACTIVE, BrokerStatus.TERMINATED}),
    BrokerStatus.ACTIVE: frozenset({BrokerStatus.SUSPENDED, BrokerStatus.TERMINATED}),
    BrokerStatus.SUSPENDED: frozenset({BrokerStatus.ACTIVE, BrokerStatus.TERMINATED}),
    BrokerStatus.TERMINATED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class StatusChange:
    status: BrokerStatus
    effective_at: datetime


def _effective_at(change: StatusChange) -> datetime:
    return change.effective_at


@dataclass(frozen=True, slots=True)
class StatusTimeline:
    """A broker's status over time; `pending` before its first change."""

    changes: tuple[StatusChange, ...]  # ascending by effective_at

    def status_at(self, moment: datetime) -> BrokerStatus:
        index = bisect_right(self.changes, moment, key=_effective_at)
        return self.changes[index - 1].status if index else BrokerStatus.PENDING

    def is_active_at(self, moment: datetime) -> bool:
        return self.status_at(moment) is BrokerStatus.ACTIVE

    def with_change(self, change: StatusChange) -> "StatusTimeline":
        """The timeline with one more change, checked against the allowed transitions.

        A change may be inserted into the past (history can be loaded), as long as the whole
        sequence stays a valid walk pending → active ⇄ suspended → terminated.
        """
        if any(c.effective_at == change.effective_at for c in self.changes):
            raise Conflict(f"a status change at {change.effective_at.isoformat()} is already recorded")
        ordered = sorted((*self.changes, change), key=lambda c: c.effective_at)
        current = BrokerStatus.PENDING
        for step in ordered:
            if step.status not in _ALLOWED[current]:
                raise Conflict(
                    f"cannot go from {current} to {step.status} at {step.effective_at.isoformat()}")
            current = step.status
        return StatusTimeline(tuple(ordered))

    def without_change(self, effective_at: datetime) -> "StatusTimeline":
        """The timeline with the change at `effective_at` taken out, checked as `with_change`
        checks: cancelling an activation that a scheduled suspension follows is refused."""
        remaining = tuple(c for c in self.changes if c.effective_at != effective_at)
        if len(remaining) == len(self.changes):
            raise NotFound(f"no status change at {effective_at.isoformat()}")
        current = BrokerStatus.PENDING
        for step in remaining:
            if step.status not in _ALLOWED[current]:
                raise Conflict(f"cancelling it would leave {current} followed by {step.status} at "
                               f"{step.effective_at.isoformat()}; cancel that change first")
            current = step.status
        return StatusTimeline(remaining)


@dataclass(frozen=True, slots=True)
class RateChange:
    rate: Decimal
    effective_from: datetime


def _effective_from(change: RateChange) -> datetime:
    return change.effective_from


@dataclass(frozen=True, slots=True)
class RateTimeline:
    """A referral code's affiliate rebate rate over time; 0 before the first rate."""

    changes: tuple[RateChange, ...]  # ascending by effective_from

    def rate_at(self, moment: datetime) -> Decimal:
        index = bisect_right(self.changes, moment, key=_effective_from)
        return self.changes[index - 1].rate if index else Decimal(0)


def check_rate(rate: Decimal) -> Decimal:
    if not 0 <= rate <= 1:
        raise InvalidInput(f"rate: must be a fraction in [0, 1], got {rate}")
    return bounded(rate, FRACTION, "rate")
