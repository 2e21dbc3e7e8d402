"""A statement's arithmetic, checked: do its figures follow from its lines?

One check, which `bkr reconcile` runs on every stored statement of a month and `bkr statement
verify` on a signed statement it was handed. Each line's `payout_exact` must be its `fee_base` ×
`effective_rate`; the totals must be what `total_statement` (the close's own totalling) makes of
the lines: `fee_base` of the regular lines, `adjustment_fee_base` and `adjustment_payout_exact` of
the others, `spot_volume` and `futures_volume` of the regular lines (and `api_volume` their sum),
`payout_exact` of every line, `carried_out` what is left below zero with `carried_in`, and `payout`
that sum with `carried_in`, if positive, rounded down once to the quantum the payout is written
with (the quantum the statement's `program` terms name, when it carries them). A statement that
carries its terms is also held to them: its `broker_rate` is its tier's rate in the schedule it
carries, and each regular line is priced at that tier, under that cap. Every problem is
returned, not only the first.
"""

from decimal import Decimal, DecimalException

from bkr.domain.money import ZERO, add, canonical, plain
from bkr.domain.payout import effective_rate, line_payout_at
from bkr.domain.problems import Problem
from bkr.domain.statements import BrokerStatement, StatementLine, total_statement


def restated(statement: BrokerStatement) -> BrokerStatement:
    """What a statement's lines make of it: its totals, carry and payout worked out again, with
    the carry it states it took in and the quantum of its terms (or, without terms, the quantum its
    payout is written with). Raises a `DecimalException` for figures beyond the money context's
    exact digits."""
    quantum = statement.program.rounding_quantum if statement.program is not None else statement.quantum
    return total_statement(statement.broker_id, statement.month, statement.tier_level, statement.broker_rate,
                           statement.tier_basis, statement.lines, statement.carried_in, quantum,
                           records_carries=statement.records_carries, program=statement.program)


def check(statement: BrokerStatement) -> list[Problem]:
    """Every figure of `statement` that does not follow from its lines, each as a `Problem`."""
    try:
        return _check(statement)
    except DecimalException:  # only a forged statement has figures beyond the money context's exact digits
        return [Problem("", "figures too large to check exactly")]


def line_name(number: int, line: StatementLine) -> str:
    """How a problem names a line: its position (from 1) and what tells it apart."""
    return f"line {number} ({line.user_id} {line.market_type.value} {line.fill_month} {line.kind.value})"


def _check(statement: BrokerStatement) -> list[Problem]:
    problems: list[Problem] = []
    for number, line in enumerate(statement.lines, start=1):
        expected = line_payout_at(line.fee_base, line.effective_rate)
        if line.payout_exact != expected:
            problems.append(Problem(
                line_name(number, line),
                f"payout_exact {plain(line.payout_exact)} is not fee_base {plain(line.fee_base)} × effective_rate "
                f"{plain(line.effective_rate)} = {canonical(expected)}", "payout_exact", expected, line.payout_exact))
    problems.extend(_terms_problems(statement))
    made = restated(statement)

    def compare(name: str, stated: Decimal, expected: Decimal, what: str) -> None:
        if stated != expected:
            problems.append(Problem(name, f"{plain(stated)} is not {what} = {canonical(expected)}", name, expected,
                                    stated))

    for name, stated, expected in (
            ("fee_base", statement.fee_base, made.fee_base),
            ("adjustment_fee_base", statement.adjustment_fee_base, made.adjustment_fee_base),
            ("adjustment_payout_exact", statement.adjustment_payout_exact, made.adjustment_payout_exact),
            ("spot_volume", statement.spot_volume, made.spot_volume),
            ("futures_volume", statement.futures_volume, made.futures_volume)):
        compare(name, stated, expected, "the lines' sum")
    compare("api_volume", statement.api_volume, add(statement.spot_volume, statement.futures_volume),
            "spot_volume + futures_volume")
    compare("payout_exact", statement.payout_exact, made.payout_exact, "the sum of the lines' payout_exact")
    if statement.carried_in > ZERO:
        problems.append(Problem("carried_in", f"{plain(statement.carried_in)} is positive; only a shortfall is "
                                "carried", "carried_in", None, statement.carried_in))
    if statement.records_carries:
        compare("carried_out", statement.carried_out, made.carried_out, "min(0, payout_exact + carried_in)")
    if statement.payout != made.payout:
        problems.append(Problem(
            "payout", f"{plain(statement.payout)} is not the lines' payout {canonical(made.payout_exact)} with "
                      f"carried_in {canonical(statement.carried_in)}, if positive, rounded down to "
                      f"{canonical(statement.program.rounding_quantum) if statement.program else statement.quantum} "
                      f"= {made.payout}", "payout", made.payout, statement.payout))
    return problems


def _terms_problems(statement: BrokerStatement) -> list[Problem]:
    """Where a statement departs from the terms it carries (none to check without terms)."""
    terms = statement.program
    if terms is None:
        return []
    tiers = terms.tier_schedule.tiers
    if statement.tier_level >= len(tiers):
        return [Problem("tier", f"{statement.tier_name} is not in the tier schedule the statement carries "
                                f"(BKR 0 to BKR {len(tiers) - 1})")]
    problems = []
    rate = tiers[statement.tier_level].rate
    if statement.broker_rate != rate:
        problems.append(Problem("broker_rate", f"{plain(statement.broker_rate)} is not {statement.tier_name}'s rate "
                                f"in the schedule the statement carries = {canonical(rate)}", "broker_rate", rate,
                                statement.broker_rate))
    for number, line in enumerate(statement.lines, start=1):
        if line.is_adjustment:  # priced at an earlier month's tier, under that month's schedule
            continue
        expected = effective_rate(statement.broker_rate, line.affiliate_rate, terms.cap)
        if line.tier_level != statement.tier_level or line.effective_rate != expected:
            problems.append(Problem(
                line_name(number, line), f"effective_rate {plain(line.effective_rate)} at {line.tier_name} is not "
                f"min(broker_rate, max(0, cap {canonical(terms.cap)} − affiliate_rate)) at {statement.tier_name} = "
                f"{canonical(expected)}", "effective_rate", expected, line.effective_rate))
    return problems
