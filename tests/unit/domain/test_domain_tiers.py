"""The tier schedule: thresholds reached at equality, versioned schedules, validation."""

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bkr.domain.errors import InvalidInput
from bkr.domain.money import D
from bkr.domain.periods import Month
from bkr.domain.tiers import SEED_SCHEDULE, SEED_TIERS, Tier, TierSchedule, schedule_in_force

ONE_WEI = D("0.000000000000000001")

# The seed's table, written out here rather than read from bkr: (level, threshold USD, rate).
SEED_TABLE = [
    (0, "0", "0.20"),
    (1, "5000000", "0.30"),
    (2, "10000000", "0.35"),
    (3, "20000000", "0.40"),
    (4, "60000000", "0.45"),
    (5, "100000000", "0.50"),
]


def test_seed_schedule_is_the_seed_table() -> None:
    assert [(t.level, t.min_volume, t.rate) for t in SEED_TIERS] == [(lv, D(v), D(r)) for lv, v, r in SEED_TABLE]
    assert SEED_SCHEDULE.tiers == SEED_TIERS
    assert [t.name for t in SEED_TIERS] == ["BKR 0", "BKR 1", "BKR 2", "BKR 3", "BKR 4", "BKR 5"]


@pytest.mark.parametrize(("level", "threshold", "rate"), SEED_TABLE)
def test_tier_is_reached_exactly_at_threshold(level: int, threshold: str, rate: str) -> None:
    tier = SEED_SCHEDULE.tier_for_volume(D(threshold))
    assert tier.level == level
    assert tier.rate == D(rate)


@pytest.mark.parametrize(("level", "threshold", "rate"), SEED_TABLE[1:])
def test_tier_is_not_reached_one_wei_under_threshold(level: int, threshold: str, rate: str) -> None:
    tier = SEED_SCHEDULE.tier_for_volume(D(threshold) - ONE_WEI)
    assert tier.level == level - 1
    assert tier.rate == D(SEED_TABLE[level - 1][2])


@pytest.mark.parametrize(("level", "threshold", "rate"), SEED_TABLE)
def test_tier_is_kept_one_wei_over_threshold(level: int, threshold: str, rate: str) -> None:
    tier = SEED_SCHEDULE.tier_for_volume(D(threshold) + ONE_WEI)
    assert tier.level == level
    assert tier.rate == D(rate)


def test_volume_far_above_the_top_threshold_stays_in_the_top_tier() -> None:
    assert SEED_SCHEDULE.tier_for_volume(D("1E+15")).name == "BKR 5"


def test_zero_volume_is_the_first_tier() -> None:
    assert SEED_SCHEDULE.tier_for_volume(D(0)).name == "BKR 0"


@settings(max_examples=200)
@given(volume=st.decimals(min_value=0, max_value=Decimal("2e8"), places=18))
def test_tier_for_volume_is_the_highest_threshold_reached(volume: Decimal) -> None:
    expected_level = max(level for level, threshold, _ in SEED_TABLE if volume >= D(threshold))
    assert SEED_SCHEDULE.tier_for_volume(volume).level == expected_level


def test_next_tier_is_the_one_above_and_none_at_the_top() -> None:
    assert SEED_SCHEDULE.next_tier(SEED_TIERS[2]) == SEED_TIERS[3]
    assert SEED_SCHEDULE.next_tier(SEED_TIERS[5]) is None


# --- validation ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("tiers", "reason"), [
    ((), "start with a tier at volume 0"),
    ((Tier(0, D(1), D("0.2")),), "start with a tier at volume 0"),
    ((Tier(0, D(0), D("0.2")), Tier(1, D(0), D("0.3"))), "thresholds must increase"),
    ((Tier(0, D(0), D("0.2")), Tier(1, D(10), D("0.3")), Tier(2, D(5), D("0.4"))), "thresholds must increase"),
    ((Tier(0, D(0), D("0.2")), Tier(2, D(10), D("0.3"))), "levels must count up by one"),
    ((Tier(0, D(0), D("1.01")),), "rate out of"),
    ((Tier(0, D(0), D("-0.01")),), "rate out of"),
])
def test_tier_schedule_refuses_an_inconsistent_table(tiers: tuple[Tier, ...], reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        TierSchedule(Month(2024, 1), tiers)


def test_tier_schedule_accepts_rates_zero_and_one() -> None:
    schedule = TierSchedule(Month(2024, 1), (Tier(0, D(0), D(0)), Tier(1, D(1), D(1))))
    assert schedule.tier_for_volume(D(1)).rate == D(1)


# --- versions ------------------------------------------------------------------------------------

NEW_TERMS = TierSchedule(Month(2025, 7), (Tier(0, D(0), D("0.25")), Tier(1, D(1_000_000), D("0.50"))))


@pytest.mark.parametrize(("month", "expected"), [
    (Month(2000, 1), SEED_SCHEDULE),
    (Month(2025, 6), SEED_SCHEDULE),
    (Month(2025, 7), NEW_TERMS),
    (Month(2030, 1), NEW_TERMS),
])
def test_schedule_in_force_is_the_latest_that_took_effect_by_that_month(month: Month,
                                                                        expected: TierSchedule) -> None:
    assert schedule_in_force([NEW_TERMS, SEED_SCHEDULE], month) == expected


def test_no_schedule_in_force_before_the_first_one_takes_effect() -> None:
    with pytest.raises(InvalidInput, match="no tier schedule is in force for 2025-06"):
        schedule_in_force([NEW_TERMS], Month(2025, 6))
