"""The tier schedule: monthly API volume thresholds and the broker rebate rate of each tier.

The schedule is configuration, versioned by the month it takes effect, so that a change of
program terms never reprices a month that was closed under the old ones.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from bkr.domain.errors import InvalidInput
from bkr.domain.money import D
from bkr.domain.periods import Month


@dataclass(frozen=True, slots=True)
class Tier:
    level: int
    min_volume: Decimal
    rate: Decimal

    @property
    def name(self) -> str:
        return tier_name(self.level)


_TIER_NAME = re.compile(r"^BKR (0|[1-9][0-9]{0,2})$")


def tier_name(level: int) -> str:
    """How a tier is named on statements and in the API: `BKR 3`."""
    return f"BKR {level}"


def tier_level(name: str) -> int | None:
    """The level a tier name stands for (`BKR 3` -> 3); None for a text that is not a tier name."""
    match = _TIER_NAME.match(name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True, slots=True)
class TierSchedule:
    """Tiers in ascending order of threshold; the first starts at 0."""

    effective_from: Month
    tiers: tuple[Tier, ...]

    def __post_init__(self) -> None:
        if not self.tiers or self.tiers[0].min_volume != 0:
            raise InvalidInput("a tier schedule must start with a tier at volume 0")
        for lower, upper in zip(self.tiers, self.tiers[1:], strict=False):
            if upper.min_volume <= lower.min_volume:
                raise InvalidInput("tier thresholds must increase")
            if upper.level != lower.level + 1:
                raise InvalidInput("tier levels must count up by one")
        for tier in self.tiers:
            if not 0 <= tier.rate <= 1:
                raise InvalidInput(f"tier rate out of [0, 1]: {tier.rate}")

    def tier_for_volume(self, volume: Decimal) -> Tier:
        """The highest tier whose threshold the volume reaches (a threshold is reached at equality)."""
        reached = self.tiers[0]
        for tier in self.tiers:
            if volume >= tier.min_volume:
                reached = tier
            else:
                break
        return reached

    def next_tier(self, tier: Tier) -> Tier | None:
        index = self.tiers.index(tier)
        return self.tiers[index + 1] if index + 1 < len(self.tiers) else None


def schedule_in_force(schedules: Sequence[TierSchedule], month: Month) -> TierSchedule:
    """The latest schedule that took effect on or before `month`."""
    in_force = [s for s in schedules if s.effective_from <= month]
    if not in_force:
        raise InvalidInput(f"no tier schedule is in force for {month}")
    return max(in_force, key=lambda s: s.effective_from)


SEED_TIERS: tuple[Tier, ...] = (
    Tier(0, D(0), D("0.20")),
    Tier(1, D(5_000_000), D("0.30")),
    Tier(2, D(10_000_000), D("0.35")),
    Tier(3, D(20_000_000), D("0.40")),
    Tier(4, D(60_000_000), D("0.45")),
    Tier(5, D(100_000_000), D("0.50")),
)

SEED_SCHEDULE = TierSchedule(Month(2000, 1), SEED_TIERS)
