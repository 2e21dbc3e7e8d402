"""The program's configuration: one frozen object, built once at the edge and passed in."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType

from bkr.domain.errors import InvalidInput
from bkr.domain.money import CENT, D
from bkr.domain.payout import DEFAULT_CAP
from bkr.domain.periods import Month
from bkr.domain.tiers import SEED_SCHEDULE, TierSchedule, schedule_in_force


class TierBasis(StrEnum):
    SAME_MONTH = "same_month"  # month M is paid at the tier of M's own volume
    PREVIOUS_MONTH = "previous_month"  # month M is paid at the tier M-1's volume earned


class UnknownBrokerPolicy(StrEnum):
    IGNORE = "ignore"
    REJECT = "reject"


DEFAULT_USD_RATES: Mapping[str, Decimal] = MappingProxyType({"USDC": D(1), "USDT": D(1), "USD": D(1)})


@dataclass(frozen=True)
class ProgramConfig:
    schedules: tuple[TierSchedule, ...] = (SEED_SCHEDULE,)
    cap: Decimal = DEFAULT_CAP
    tier_basis: TierBasis = TierBasis.SAME_MONTH
    unknown_broker_policy: UnknownBrokerPolicy = UnknownBrokerPolicy.IGNORE
    rounding_quantum: Decimal = CENT
    usd_rates: Mapping[str, Decimal] = field(default_factory=lambda: DEFAULT_USD_RATES)
    # A draft statement becomes final after this many days, or earlier with this many approvals by
    # distinct operators (0 days: approvals only). Only a final statement is paid.
    review_days: int = 3
    approvals_required: int = 1

    def __post_init__(self) -> None:
        if self.review_days < 0 or self.approvals_required < 1:
            raise InvalidInput("program: review_days must be 0 or more and approvals_required 1 or more")

    def schedule_for(self, month: Month) -> TierSchedule:
        return schedule_in_force(self.schedules, month)


DEFAULT_CONFIG = ProgramConfig()
