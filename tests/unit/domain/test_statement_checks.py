"""`check`, the one check of a statement's arithmetic (`bkr reconcile` and `bkr statement verify`
both run it): each problem is a value naming the figure, with the value it should have and the
one it has. Tampering with a signed statement, figure by figure, is in test_statement_signing.py."""

import json
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from bkr.domain.config import DEFAULT_CONFIG
from bkr.domain.fills import MarketType
from bkr.domain.money import D
from bkr.domain.periods import Month
from bkr.domain.problems import Problem
from bkr.domain.statement_checks import check, recompute
from bkr.domain.statement_document import canonical_json, parse_statement
from bkr.domain.statements import AggregateLine, BrokerStatement, build_statement

MAY = Month(2024, 5)
TIERS = DEFAULT_CONFIG.schedule_for(MAY).tiers


def statement_of(*fee_bases: str, carried_in: str = "0") -> BrokerStatement:
    """A statement of regular spot lines at BKR 0, as the close stores it and reads it back."""
    lines = [AggregateLine(1400, MAY, MAY, f"user-{n}", MarketType.SPOT, D(0), 1, D(1000), D(fee), D(fee))
             for n, fee in enumerate(fee_bases)]
    built = build_statement(DEFAULT_CONFIG, 1400, MAY, lines, TIERS[0], {}, D(carried_in))
    return parse_statement(canonical_json(built.to_document()))


def test_a_figure_that_does_not_follow_is_named_with_both_values() -> None:
    statement = replace(statement_of("10", "5"), payout=D("3.50"))  # the lines make 3.00

    assert check(statement) == [Problem(
        "payout", "3.50 is not the lines' payout 3 with carried_in 0, if positive, rounded down to 0.01 = 3.00",
        "payout", D("3.00"), D("3.50"))]


def test_a_line_whose_payout_is_not_its_fee_base_at_its_rate_is_named_by_position() -> None:
    statement = statement_of("10", "5")
    wrong = statement.lines[1]._replace(payout_exact=D("1.01"))
    statement = replace(statement, lines=(statement.lines[0], wrong))

    problems = check(statement)

    # the line alone: worked out again, the totals are what they state
    assert [(p.subject, p.expected, p.found) for p in problems] == [
        ("line 2 (user-1 SPOT 2024-05 regular) payout_exact", D("1"), D("1.01"))]
    assert str(problems[0]) == ("line 2 (user-1 SPOT 2024-05 regular): payout_exact 1.01 is not fee_base 5 × "
                                "effective_rate 0.2 = 1")


def statement_with_terms(*fee_bases: str, quantum: str = "0.01") -> BrokerStatement:
    """A statement of regular spot lines at BKR 2 (12M of volume) under program version 4, with its terms."""
    config = replace(DEFAULT_CONFIG, rounding_quantum=D(quantum))
    lines = [AggregateLine(1400, MAY, MAY, f"user-{n}", MarketType.SPOT, D("0.2"), 1, D(12_000_000 if n == 0 else 0),
                           D(fee), D(fee))
             for n, fee in enumerate(fee_bases)]
    built = build_statement(config, 1400, MAY, lines, TIERS[2], {}, version=4)
    return parse_statement(canonical_json(built.to_document()))


def test_a_statement_that_departs_from_the_terms_it_carries_is_named() -> None:
    statement = statement_with_terms("10")
    assert check(statement) == []
    line = statement.lines[0]
    # a higher rate written into the statement, its line and its totals, consistently: only the terms tell
    forged = replace(statement, broker_rate=D("0.5"), lines=(line._replace(effective_rate=D("0.5"),
                                                                      payout_exact=D("5")),),
                     payout_exact=D("5"), payout=D("5.00"))

    problems = check(forged)

    assert [(p.subject, p.expected, p.found) for p in problems] == [
        ("line 1 (user-0 SPOT 2024-05 regular) effective_rate", D("0.3"), D("0.5")),
        ("line 1 (user-0 SPOT 2024-05 regular) payout_exact", D("3"), D("5")),
        ("broker_rate", D("0.35"), D("0.5")),
        ("payout_exact", D("3"), D("5")), ("payout", D("3.00"), D("5.00"))]
    assert str(problems[0]) == ("line 1 (user-0 SPOT 2024-05 regular): effective_rate 0.5 is not min(BKR 2's rate "
                                "0.35, max(0, cap 0.5 − affiliate_rate 0.2)) = 0.3")


def test_the_payout_is_rounded_to_the_quantum_of_the_terms_not_the_one_it_is_written_with() -> None:
    statement = statement_with_terms("10.07", quantum="1")  # 10.07 × 0.3 = 3.021: pays 3
    assert check(statement) == []

    problems = check(replace(statement, payout=D("3.02")))  # written to cents: the terms say units

    assert [(p.subject, p.expected, p.found) for p in problems] == [("payout", D("3"), D("3.02"))]


def test_a_positive_carry_in_is_a_problem_without_an_expected_value() -> None:
    problems = check(replace(statement_of("10"), carried_in=D("1")))

    first = problems[0]
    assert (first.subject, first.expected, first.found) == ("carried_in", None, D("1"))
    assert str(first) == "carried_in: 1 is positive; only a shortfall is carried"


FEES = st.lists(st.decimals(min_value=-50, max_value=10**6, places=6, allow_nan=False, allow_infinity=False),
                max_size=8)


@settings(max_examples=60, deadline=None)
@given(fees=FEES, carried_in=st.sampled_from(["0", "-0.5", "-1000"]))
def test_what_the_close_builds_checks_clean_and_is_what_its_lines_make(fees: list[object],
                                                                       carried_in: str) -> None:
    statement = statement_of(*map(str, fees), carried_in=carried_in)

    assert check(statement) == []
    assert recompute(statement) == statement
    assert json.loads(canonical_json(recompute(statement).to_document())) == statement.to_document()
