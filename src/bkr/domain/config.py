"""The program's configuration: one frozen object, built once at the edge and passed in."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType

from bkr.domain.errors import InvalidInput
from bkr.domain.fills import Plausibility
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


class PayoutTarget(StrEnum):
    WALLET = "wallet"  # the exchange's wallet system takes the payout instructions and acknowledges them
    VENUE = "venue"  # the sandbox: bkr credits the broker's account on its venue and acknowledges itself


WHOLE_NOTIONAL = D(1)
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
    # The first month of the program: no fill before it is accepted, no month before it closed.
    # None: the month the earliest tier schedule takes effect.
    start: Month | None = None
    # How far ahead of bkr's clock a fill's time may be, and how large its fee (or rebate) may be
    # beside its notional: a fee above the trade itself is no exchange's.
    future_tolerance: timedelta = timedelta(minutes=5)
    max_fee_share: Decimal = WHOLE_NOTIONAL
    # Where a settled statement's payout goes: instructions for the exchange's wallet system, or
    # (a sandbox) straight to the broker's account on bkr's own venue, in USDC.
    payout_target: PayoutTarget = PayoutTarget.WALLET

    def __post_init__(self) -> None:
        if self.review_days < 0 or self.approvals_required < 1:
            raise InvalidInput("program: review_days must be 0 or more and approvals_required 1 or more")
        if self.future_tolerance < timedelta(0) or not 0 < self.max_fee_share <= 1:
            raise InvalidInput("program: future_tolerance_seconds must be 0 or more and max_fee_share in (0, 1]")

    @property
    def first_month(self) -> Month:
        return self.start if self.start is not None else min(s.effective_from for s in self.schedules)

    @property
    def plausibility(self) -> Plausibility:
        return Plausibility(self.first_month.start, self.future_tolerance, self.max_fee_share)

    def schedule_for(self, month: Month) -> TierSchedule:
        return schedule_in_force(self.schedules, month)


DEFAULT_CONFIG = ProgramConfig()
