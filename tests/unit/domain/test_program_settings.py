"""The program's settings as data: one validator for a config file's program sections, a request
and a stored version; the complete document a version stores, which reads back as the same
settings; and which version governs a month."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bkr.domain.config import PayoutTarget, ProgramConfig, TierBasis, UnknownBrokerPolicy
from bkr.domain.errors import InvalidInput
from bkr.domain.money import D
from bkr.domain.periods import Month
from bkr.domain.program_settings import changed_settings, program_document, read_program
from bkr.domain.program_versions import ProgramTimeline, ProgramVersion
from bkr.domain.tiers import SEED_SCHEDULE, Tier, TierSchedule
from bkr.settings import parse_config

AT = datetime(2026, 12, 1, tzinfo=UTC)


def test_no_settings_are_the_defaults_and_the_seed_schedule() -> None:
    assert read_program({}) == ProgramConfig()
    assert read_program({}).schedules == (SEED_SCHEDULE,)


SETTINGS = st.builds(
    ProgramConfig,
    schedules=st.sampled_from([(SEED_SCHEDULE,), (SEED_SCHEDULE, TierSchedule(Month(2027, 1), (
        Tier(0, D(0), D("0.25")), Tier(1, D("1000000.5"), D("0.333333333333333333"))))), (TierSchedule(
            Month(1999, 6), (Tier(0, D(0), D("0.1")),)),)]),
    cap=st.sampled_from([D("0.5"), D("0"), D("1"), D("0.45")]),
    tier_basis=st.sampled_from(list(TierBasis)),
    unknown_broker_policy=st.sampled_from(list(UnknownBrokerPolicy)),
    rounding_quantum=st.sampled_from([D("0.01"), D("1"), D("0.000001")]),
    usd_rates=st.sampled_from([{"USDC": D(1), "USDT": D(1), "USD": D(1)},
                               {"USDC": D("0.9999"), "USDT": D(1), "USD": D(1), "EUR": D("1.08"), "SOL": D("150.25")}]),
    review_days=st.integers(0, 365), approvals_required=st.integers(1, 20),
    start=st.sampled_from([None, Month(2024, 1), Month(2030, 12)]),
    future_tolerance=st.integers(0, 86_400).map(lambda s: timedelta(seconds=s)),
    max_fee_share=st.sampled_from([D(1), D("0.01"), D("0.000000000000000001")]))


@given(config=SETTINGS)
def test_a_version_document_reads_back_as_the_same_settings(config: ProgramConfig) -> None:
    document = program_document(config)

    assert read_program(document) == config
    assert program_document(read_program(document)) == document


def test_the_document_writes_every_setting_every_schedule_and_every_rate() -> None:
    assert program_document(ProgramConfig(start=Month(2024, 1))) == {
        "program": {"approvals_required": 1, "cap": "0.5", "future_tolerance_seconds": 300, "max_fee_share": "1",
                    "review_days": 3, "rounding_quantum": "0.01", "start": "2024-01", "tier_basis": "same_month",
                    "unknown_broker_policy": "ignore"},
        "tier_schedules": [{"effective_from": "2000-01", "tiers": [
            ["0", "0.2"], ["5000000", "0.3"], ["10000000", "0.35"], ["20000000", "0.4"], ["60000000", "0.45"],
            ["100000000", "0.5"]]}],
        "usd_rates": {"USD": "1", "USDC": "1", "USDT": "1"},
    }


def test_a_schedule_at_or_before_the_seeds_month_replaces_the_seed() -> None:
    own = {"effective_from": "2000-01", "tiers": [["0", "0.3"]]}
    later = {"effective_from": "2027-01", "tiers": [["0", "0.3"]]}

    assert [s.effective_from for s in read_program({"tier_schedules": [own]}).schedules] == [Month(2000, 1)]
    assert read_program({"tier_schedules": [own]}).schedule_for(Month(2026, 1)).tiers[0].rate == D("0.3")
    assert [str(s.effective_from) for s in read_program({"tier_schedules": [later]}).schedules] == [
        "2000-01", "2027-01"]


@pytest.mark.parametrize(("data", "message"), [
    ({"program": {"cap": 0.45}}, 'program.cap: write 0.45 as a string, e.g. "0.45" (floats are not exact)'),
    ({"program": {"cap": "1.5"}}, "program.cap: 1.5 is above 1 (the cap is a fraction of the fee)"),
    ({"program": {"cap": True}}, "program.cap: True is not a decimal (write it as a string, e.g. \"0.5\")"),
    ({"program": {"capp": "0.5"}}, "program: unknown setting(s) capp (known: tier_basis, unknown_broker_policy, cap, "
                                   "rounding_quantum, review_days, approvals_required, start, "
                                   "future_tolerance_seconds, max_fee_share, payout_target)"),
    ({"program": {"rounding_quantum": "0.05"}}, "program.rounding_quantum: 0.05 is not 1 or a power of ten below it "
                                                "(0.01, 0.0001, …): a payout is rounded down to a number of decimal "
                                                "places"),
    ({"program": {"rounding_quantum": "10"}}, "program.rounding_quantum: 10 is not 1 or a power of ten below it "
                                              "(0.01, 0.0001, …): a payout is rounded down to a number of decimal "
                                              "places"),
    ({"program": {"review_days": 366}}, "program.review_days: 366 is not in 0..365"),
    ({"program": {"approvals_required": 0}}, "program.approvals_required: 0 is not in 1..20"),
    ({"program": {"future_tolerance_seconds": "300"}}, "program.future_tolerance_seconds: '300' is not a whole number"),
    ({"program": {"max_fee_share": "0"}}, "program.max_fee_share: 0 is not in (0, 1]"),
    ({"program": {"tier_basis": "yearly"}}, "program.tier_basis: 'yearly' is not 'same_month' or 'previous_month'"),
    ({"program": {"start": 2024}}, "program.start: 2024 is not a month (write it as a string, \"YYYY-MM\")"),
    ({"program": {"start": "1990-01"}}, "tier_schedules: none is in force at the program's start (1990-01); give "
                                        "one that takes effect then or earlier"),
    ({"usd_rates": {"EUR": "0"}}, "usd_rates.EUR: 0 is not a positive rate"),
    ({"usd_rates": {"EUR": "1234567890"}}, "usd_rates.EUR: 1234567890 has 10 integer digits; at most 9 integer "
                                           "digits and 18 decimal places are accepted"),
    ({"tier_schedules": [{"effective_from": "2027-01", "tiers": [["0", "0.2"], ["100", "0.1"], ["50", "0.3"]]}]},
     "tier_schedules[0]: tier thresholds must increase"),
    ({"tier_schedules": [{"effective_from": "2027-01", "tiers": [["0", "0.2"]]},
                         {"effective_from": "2027-01", "tiers": [["0", "0.3"]]}]},
     "tier_schedules[1].effective_from: another schedule already takes effect in 2027-01"),
    ({"tier_schedules": [{"effective_from": "2027-01", "tiers": []}]},
     "tier_schedules[0].tiers: expected a list of 1 to 1000 [threshold, rate] pairs"),
    ({"tier_schedules": [{"effective_from": "2027-01", "tiers": [["0", "0.2"]], "note": "x"}]},
     "tier_schedules[0]: unknown key(s) note (known: effective_from, tiers)"),
    ({"service": {"port": 1}}, "settings: unknown section(s) service (the program's are program, usd_rates, "
                               "tier_schedules)"),
], ids=lambda value: value if isinstance(value, str) else "")
def test_a_setting_out_of_bounds_or_unknown_is_refused_naming_it(data: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        read_program(data)
    assert str(refused.value) == message


def test_a_config_file_and_a_stored_version_go_through_the_same_validator() -> None:
    with pytest.raises(InvalidInput, match=r"^program\.review_days: 366 is not in 0\.\.365$"):
        parse_config({"program": {"review_days": 366}, "service": {"port": 8000}})
    assert parse_config({"program": {"cap": "0.4"}, "venue": {}}) == read_program({"program": {"cap": "0.4"}})


def test_a_quantum_written_with_trailing_zeros_is_the_same_quantum() -> None:
    quantum = read_program({"program": {"rounding_quantum": "0.010"}}).rounding_quantum
    assert (str(quantum), quantum.as_tuple().exponent) == ("0.01", -2)


def test_the_settings_two_documents_differ_in_are_named() -> None:
    before = program_document(ProgramConfig())
    after = program_document(ProgramConfig(cap=D("0.4"), usd_rates={"USDC": D(1), "USDT": D(1), "USD": D(1),
                                                                    "EUR": D("1.1")}))

    assert changed_settings(before, after) == ["program.cap", "usd_rates.EUR"]
    assert changed_settings(before, before) == []


def version(number: int, from_month: Month, cap: str = "0.5") -> ProgramVersion:
    return ProgramVersion(number, from_month, ProgramConfig(cap=D(cap), start=Month(2024, 1)), "", AT, "ops")


def test_the_version_in_force_is_the_latest_from_the_month_or_before() -> None:
    timeline = ProgramTimeline((version(1, Month(2024, 1)), version(2, Month(2024, 6), "0.4"),
                                version(3, Month(2024, 6), "0.3"), version(4, Month(2025, 1), "0.2")))

    in_force = {month: timeline.in_force(Month.parse(month)).number
                for month in ("2023-12", "2024-01", "2024-05", "2024-06", "2024-12", "2025-01", "2030-01")}

    assert in_force == {"2023-12": 1, "2024-01": 1, "2024-05": 1, "2024-06": 3, "2024-12": 3, "2025-01": 4,
                        "2030-01": 4}
    assert timeline.start == Month(2024, 1) and timeline.latest.number == 4
    assert timeline.config_for(Month(2024, 7)).cap == D("0.3")


def test_the_payout_target_is_read_written_only_when_not_the_default_and_checked() -> None:
    venue = read_program({"program": {"payout_target": "venue"}})
    assert venue.payout_target is PayoutTarget.VENUE
    assert read_program(program_document(venue)) == venue
    assert "payout_target" not in program_document(read_program({}))["program"]  # older versions read alike
    with pytest.raises(InvalidInput, match=r"program\.payout_target: 'bank' is not 'wallet' or 'venue'"):
        read_program({"program": {"payout_target": "bank"}})
