"""A statement's stored form: what the close writes reads back as the same statement, and writes
again as the same bytes; a document that does not read is reported field by field, not raised."""

import json
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bkr.domain.config import DEFAULT_CONFIG
from bkr.domain.fills import MarketType
from bkr.domain.money import D
from bkr.domain.periods import Month
from bkr.domain.statement_document import (
    UnreadableStatement,
    canonical_json,
    parse_statement,
    read_statement,
    read_statement_text,
    statement_json,
)
from bkr.domain.statements import AggregateLine, BrokerStatement, LineKind, StatementLine, build_statement

MAY, APRIL, MARCH = Month(2024, 5), Month(2024, 4), Month(2024, 3)
TIERS = DEFAULT_CONFIG.schedule_for(MAY).tiers


def aggregate(user: str, market: str, fee_base: str, *, rate: str = "0", volume: str = "1000",
              fill_month: Month = MAY, correction: bool = False, fills: int = 2) -> AggregateLine:
    return AggregateLine(1400, MAY, fill_month, user, MarketType(market), D(rate), fills, D(volume), D(fee_base),
                         D(fee_base), correction)


def closed(lines: list[AggregateLine], *, level: int = 3, carried_in: str = "0", quantum: str = "0.01",
           version: int | None = 3) -> str:
    """What the close stores for these lines: the canonical JSON of the statement it builds, under
    program version `version` (None: as a statement issued before program versions existed)."""
    config = replace(DEFAULT_CONFIG, rounding_quantum=D(quantum))
    statement = build_statement(config, 1400, MAY, lines, TIERS[level], {APRIL: TIERS[1], MARCH: TIERS[5]},
                                D(carried_in), version=version)
    return canonical_json(statement.to_document())


EVERY_KIND = closed([
    aggregate("alice", "SPOT", "1500.123456", volume="15000000"),
    aggregate("bob", "PERP", "1200.00999", rate="0.15", volume="6000100"),
    aggregate("zoë <b>&amp;", "IPERP", "0.5", volume="5000", fills=1),  # not ASCII, not HTML-safe
    aggregate("carol", "SPOT", "80", rate="0.1", fill_month=APRIL),  # a late fill of April
    aggregate("dan", "DATED", "-120.5", volume="-9000", fill_month=MARCH, correction=True),  # a bust of March
], carried_in="-7.5")
SHORTFALL = closed([aggregate("carol", "SPOT", "-80", volume="-800000", fill_month=APRIL, correction=True)],
                   carried_in="-3")
NO_LINES = closed([], carried_in="-2.25")  # a month without volume that only carries a shortfall on


@pytest.mark.parametrize("stored", [EVERY_KIND, SHORTFALL, NO_LINES, closed([aggregate("a", "SPOT", "3.3")],
                                                                             quantum="1"),
                                    closed([aggregate("a", "SPOT", "3.3")], version=None)],
                         ids=["every kind of line", "a shortfall carried out", "no lines", "a quantum of 1",
                              "issued before program versions"])
def test_a_stored_statement_reads_back_and_writes_the_same_bytes(stored: str) -> None:
    statement = parse_statement(stored)

    assert canonical_json(statement.to_document()) == stored
    assert read_statement(json.loads(stored)) == (statement, [])


def test_the_statement_read_back_is_the_one_the_close_built() -> None:
    lines = [aggregate("alice", "SPOT", "10"), aggregate("carol", "PERP", "-30", fill_month=APRIL, correction=True),
             aggregate("bob", "SPOT", "4", fill_month=APRIL)]
    built = build_statement(DEFAULT_CONFIG, 1400, MAY, lines, TIERS[0], {APRIL: TIERS[2]}, D("-1"))

    read = parse_statement(canonical_json(built.to_document()))

    assert read == built
    assert [(line.kind, line.tier_name) for line in read.lines] == [
        (LineKind.REGULAR, "BKR 0"), (LineKind.ADJUSTMENT, "BKR 2"), (LineKind.CORRECTION, "BKR 2")]
    assert (read.carried_in, read.carried_out, format(read.payout, "f"), read.quantum) == (
        D("-1"), D("-8.1"), "0.00", Decimal("0.01"))  # 2 + 1.4 - 10.5 - 1


def test_a_statement_issued_before_carries_existed_reads_as_carrying_nothing_and_writes_back_without_them() -> None:
    document = json.loads(closed([aggregate("alice", "SPOT", "10")]))
    del document["carried_in"], document["carried_out"]
    stored = canonical_json(document)

    statement = parse_statement(stored)

    assert not statement.records_carries and statement.carried_in == statement.carried_out == 0
    assert canonical_json(statement.to_document()) == stored


def test_a_statement_names_its_program_version_and_carries_the_terms_it_used() -> None:
    document = json.loads(closed([aggregate("alice", "SPOT", "10")], level=2, quantum="0.001", version=7))

    assert document["program"] == {
        "version": 7, "cap": "0.5", "rounding_quantum": "0.001", "prior_tiers": [],
        "tier_schedule": {"effective_from": "2000-01", "tiers": [
            {"tier": f"BKR {t.level}", "min_volume": str(t.min_volume), "rate": str(t.rate.normalize())}
            for t in TIERS]}}
    assert (document["format_version"], document["tier_volume"]) == (2, document["api_volume"])
    assert parse_statement(canonical_json(document)).program is not None


def test_a_statement_carries_the_tier_of_each_earlier_month_it_has_lines_of() -> None:
    document = json.loads(EVERY_KIND)

    assert document["program"]["prior_tiers"] == [  # by month; the tiers the close was given for them
        {"month": "2024-03", "tier": "BKR 5", "rate": "0.5"}, {"month": "2024-04", "tier": "BKR 1", "rate": "0.3"}]
    assert {line["fill_month"]: line["tier"] for line in document["lines"] if line["kind"] != "regular"} == {
        "2024-03": "BKR 5", "2024-04": "BKR 1"}


def test_a_statement_issued_before_format_2_reads_without_its_tier_volume_and_prior_tiers_and_writes_back() -> None:
    document = json.loads(EVERY_KIND)
    del document["format_version"], document["tier_volume"], document["program"]["prior_tiers"]
    stored = canonical_json(document)

    statement = parse_statement(stored)

    assert statement.format_version is None and statement.tier_volume is None
    assert statement.program is not None and statement.program.prior_tiers is None
    assert canonical_json(statement.to_document()) == stored


@pytest.mark.parametrize(("edit", "problem"), [
    (lambda d: d.pop("tier_volume"), "format_version: a statement of format 2 carries what it was computed with, "
                                     "but tier_volume is missing"),
    (lambda d: d["program"].pop("prior_tiers"), "format_version: a statement of format 2 carries what it was "
                                                "computed with, but program: prior_tiers is missing"),
    (lambda d: d.update(format_version=3), "format_version: 3 is not a statement format this verifier knows (2)"),
    (lambda d: d["program"].update(prior_tiers=[{"month": "2024-04", "tier": "BKR 1", "rate": "0.3"}] * 2),
     "program: prior_tiers: months are not listed once each, in order"),
    (lambda d: d["program"].update(prior_tiers=[{"month": "2024-04", "tier": "Gold", "rate": "0.3"}]),
     "program: prior_tiers[0]: tier: 'Gold' is not a tier name (BKR 0, BKR 1, …)"),
])
def test_a_format_2_statement_without_what_it_was_computed_with_does_not_read(edit: Any, problem: str) -> None:
    document = json.loads(EVERY_KIND)
    edit(document)

    statement, problems = read_statement(document)

    assert statement is None and [str(p) for p in problems] == [problem]


def test_a_statement_issued_before_program_versions_reads_without_them_and_writes_back_without_them() -> None:
    stored = closed([aggregate("alice", "SPOT", "10")], version=None)

    statement = parse_statement(stored)

    assert statement.program is None and "program" not in json.loads(stored)
    assert canonical_json(statement.to_document()) == stored


LINES = st.lists(st.tuples(st.sampled_from(["alice", "bob", "zoë"]), st.sampled_from(list(MarketType)),
                           st.sampled_from(["0", "0.1", "0.25", "0.6"]),
                           st.decimals(min_value=Decimal("-1000"), max_value=Decimal(10**9), places=18,
                                       allow_nan=False, allow_infinity=False),
                           st.decimals(min_value=0, max_value=Decimal(10**9), places=8,
                                       allow_nan=False, allow_infinity=False),
                           st.sampled_from([MAY, MAY, APRIL, MARCH]), st.booleans()),
                 max_size=12)


@settings(max_examples=80, deadline=None)
@given(lines=LINES, level=st.integers(0, 5), carried_in=st.sampled_from(["0", "-0.01", "-123.456789"]),
       quantum=st.sampled_from(["0.01", "0.001", "1"]))
def test_any_statement_the_close_stores_round_trips_byte_for_byte(
        lines: list[tuple[str, MarketType, str, Decimal, Decimal, Month, bool]], level: int, carried_in: str,
        quantum: str) -> None:
    stored = closed([aggregate(user, market.value, str(fee_base), rate=rate, volume=str(volume), fill_month=month,
                               correction=correction and month != MAY)
                     for user, market, rate, fee_base, volume, month, correction in lines],
                    level=level, carried_in=carried_in, quantum=quantum)

    assert canonical_json(parse_statement(stored).to_document()) == stored


AMOUNTS = st.one_of(st.decimals(min_value=Decimal("-1000"), max_value=Decimal(10**9), places=18, allow_nan=False,
                                allow_infinity=False),
                    st.sampled_from([Decimal("0E-18"), Decimal("-0"), Decimal("1E-7"), Decimal("1.50"), Decimal("1E+3"),
                                     Decimal("-0.000000000000000001")]))
USERS = st.one_of(st.sampled_from(["alice", "zoë", 'say "hi"', "back\\slash", "tab\there", "\u2028", "😀", "\x7f"]),
                  st.text(max_size=8))


@settings(max_examples=150, deadline=None)
@given(lines=st.lists(st.tuples(USERS, st.sampled_from(list(MarketType)), st.sampled_from(["0", "0.1", "0.15", "0.6"]),
                                AMOUNTS, AMOUNTS, AMOUNTS, st.sampled_from([MAY, APRIL, MARCH]),
                                st.sampled_from(["fill", "correction", "retroactive"]), st.integers(0, 10**12)),
                      max_size=10),
       level=st.integers(0, 5))
def test_the_stored_text_is_the_canonical_json_of_the_statement_document(
        lines: list[tuple[str, MarketType, str, Decimal, Decimal, Decimal, Month, str, int]], level: int) -> None:
    aggregates = [AggregateLine(1400, MAY, month, user, market, D(rate), fills, volume, fee, fee_base,
                                kind == "correction" and month != MAY, kind == "retroactive" and month != MAY)
                  for user, market, rate, volume, fee, fee_base, month, kind, fills in lines]
    statement = build_statement(DEFAULT_CONFIG, 1400, MAY, aggregates, TIERS[level],
                                {APRIL: TIERS[1], MARCH: TIERS[5]}, D("-1"), version=3)

    assert statement_json(statement) == canonical_json(statement.to_document())
    assert list(statement.lines) == sorted(statement.lines, key=StatementLine.sort_key)


# --- what does not read -----------------------------------------------------------------------------------


def edited(change: dict[str, Any], line_change: dict[str, Any] | None = None) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(EVERY_KIND) | change
    if line_change is not None:
        document["lines"][0] |= line_change
    return document


@pytest.mark.parametrize(("document", "problem"), [
    (edited({"payout": 1020.05}), "payout: missing or not a decimal string (1020.05)"),
    (edited({"fee_base": "lots"}), "fee_base: 'lots' is not a number"),
    (edited({"api_volume": "NaN"}), "api_volume: 'NaN' is not a number"),
    (edited({"spot_volume": "1_000"}), "spot_volume: '1_000' is not a number"),
    (edited({"broker_id": "1400"}), "broker_id: missing or not a whole number ('1400')"),
    (edited({"month": "May 2024"}), "month: 'May 2024' is not a month (YYYY-MM)"),
    (edited({"tier": "Gold"}), "tier: 'Gold' is not a tier name (BKR 0, BKR 1, …)"),
    (edited({"tier_basis": "yearly"}), "tier_basis: 'yearly' is not same_month or previous_month"),
    (edited({"lines": "none"}), "lines: missing or not a list of lines"),
    (edited({}, {"kind": "bonus"}), "line 1 (alice SPOT 2024-05 bonus): kind 'bonus' is not regular, adjustment, "
                                    "correction or retroactive"),
    (edited({}, {"market_type": "OPTION"}), "line 1 (alice OPTION 2024-05 regular): market_type 'OPTION' is not "
                                            "SPOT, PERP, IPERP or DATED"),
    (edited({}, {"fills": True}), "line 1 (alice SPOT 2024-05 regular): fills: missing or not a whole number (True)"),
    (edited({}, {"fee_base": 12}), "line 1 (alice SPOT 2024-05 regular): fee_base: missing or not a decimal string "
                                   "(12)"),
    (edited({"program": "v3"}), "program: not an object ('v3')"),
    (edited({"program": {**json.loads(EVERY_KIND)["program"], "version": "3"}}),
     "program: version: missing or not a whole number ('3')"),
    (edited({"program": {**json.loads(EVERY_KIND)["program"], "tier_schedule": {"effective_from": "2000-01"}}}),
     "program: tier_schedule: missing, or without a list of tiers"),
    ([], "not a statement: expected a JSON object"),
], ids=lambda value: value if isinstance(value, str) else "")
def test_each_field_that_does_not_read_is_a_problem_not_an_exception(document: Any, problem: str) -> None:
    statement, problems = read_statement(document)

    assert statement is None
    assert [str(p) for p in problems] == [problem]


def test_every_field_that_does_not_read_is_reported_in_one_pass() -> None:
    document = edited({"payout": None, "month": 5}, {"fee_base": "x"})
    document["lines"][2]["kind"] = "?"

    statement, problems = read_statement(document)

    assert statement is None
    assert [p.where for p in problems] == ["line 1 (alice SPOT 2024-05 regular): fee_base",
                                           "line 3 (zoë <b>&amp; IPERP 2024-05 ?)", "month", "payout"]


def test_a_stored_statement_that_does_not_read_is_corrupt_storage_and_raises() -> None:
    with pytest.raises(UnreadableStatement, match="payout: missing"):
        parse_statement(canonical_json(edited({"payout": None})))
    with pytest.raises(UnreadableStatement, match="not JSON"):
        parse_statement("{")
    statement, problems = read_statement_text("{")
    assert statement is None and str(problems[0]).startswith("not JSON")


def test_a_document_with_an_unknown_member_still_reads() -> None:
    statement, problems = read_statement(edited({"note": "added by hand"}))

    assert isinstance(statement, BrokerStatement) and problems == []
