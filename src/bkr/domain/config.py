"""The program's configuration: one frozen object, built once at the edge and passed in."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType

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

    def schedule_for(self, month: Month) -> TierSchedule:
        return schedule_in_force(self.schedules, month)


DEFAULT_CONFIG = ProgramConfig()
