"""The registry's rules: broker ids, the text of names and ids, broker status timelines and
referral-rate timelines (effective-dated history)."""

import re
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import NewType

from bkr.domain.bounds import FRACTION, bounded
from bkr.domain.errors import Conflict, InvalidInput, NotFound
from bkr.domain.periods import Month

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


# Names, accounts, referral codes and user ids are printable text, whichever door they come in by
# (the API's schemas and the command line apply this one rule): at most MAX_TEXT_LENGTH characters,
# none of them a control character (C0, DEL, C1: NUL, which PostgreSQL cannot store; a newline or
# an escape that would forge lines or colours where the text is printed), a line or paragraph
# separator, or a bidirectional override or isolate (which make a name display as another). A
# lone surrogate (what a byte that is not UTF-8 becomes in a command's arguments) is refused too:
# no database can store it.
MAX_TEXT_LENGTH = 256
_REFUSED = r"\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
TEXT_PATTERN = rf"^[^{_REFUSED}]+$"
"""The rule as a regular expression (JSON Schema's, Python's and pydantic's dialects alike)."""
_REFUSED_CHARACTER = re.compile(rf"[{_REFUSED}\ud800-\udfff]")


def registry_text(value: str, field: str) -> str:
    """`value` as the registry keeps a name, an account, a referral code or a user id: without
    its leading and trailing spaces, and printable (see above); else `InvalidInput` naming `field`."""
    if len(value) > MAX_TEXT_LENGTH:
        raise InvalidInput(f"{field}: {len(value)} characters; at most {MAX_TEXT_LENGTH} are accepted", field=field)
    refused = _REFUSED_CHARACTER.search(value)
    if refused is not None:
        code = ord(refused.group())
        what = "a byte that is not UTF-8" if 0xD800 <= code <= 0xDFFF else "a control character"
        raise InvalidInput(f"{field}: {what} (U+{code:04X}) at character {refused.start() + 1}; names, accounts, "
                           "codes and ids are printable text", field=field)
    text = value.strip()
    if not text:
        raise InvalidInput(f"{field}: empty", field=field)
    return text


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


def closed_month_reached(effective_at: datetime, closed: Iterable[Month]) -> Month | None:
    """The latest closed month that a change effective at `effective_at` reaches (one whose end
    is after it), or None: a change that reaches none only decides fills not yet on a statement."""
    return max((month for month in closed if effective_at < month.end), default=None)


def check_rate(rate: Decimal) -> Decimal:
    if not 0 <= rate <= 1:
        raise InvalidInput(f"rate: must be a fraction in [0, 1], got {rate}")
    return bounded(rate, FRACTION, "rate")
