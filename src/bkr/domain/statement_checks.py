"""A statement checked in full: is every figure it states what its lines and the terms it carries make?

One check, `check`, which `bkr reconcile` runs on every stored statement of a month and `bkr
statement verify` on a signed statement it was handed. `recompute` works a statement out again
from its document alone, as the close worked it out:

- its tier: the tier its `tier_volume` reaches in the tier schedule it carries (under the
  `same_month` basis the tier volume is its own API volume, the spot and futures volume of its
  regular lines; under `previous_month` the previous month's, which it records), and its
  `broker_rate` that tier's rate;
- each line's tier and `effective_rate`: a line of the statement's own month at the statement's
  tier, a line of an earlier month's fills (late fills, corrections, retroactive changes) at the
  tier that month was paid at (`program.prior_tiers`), each at min(that tier's rate, max(0, cap −
  the line's affiliate rate));
- each line's `payout_exact`: its `fee_base` × that rate;
- the totals, as `total_statement` (the close's own totalling) makes them of those lines: the
  volumes and fee bases, `payout_exact`, `carried_out` (what is left below zero with the
  `carried_in` it states), and `payout`, that sum with `carried_in`, if positive, rounded down
  once to the quantum of its terms.

`check` compares every figure stated with the one worked out and returns each that differs as a
`Problem` naming the line (or the statement), the figure, and both values: every problem, not
only the first. A figure that is wrong shows where it is wrong (a line's rate, then the payouts it
throws out); one that is right is not reported because another is wrong.

What a document does not carry cannot be worked out, and is taken as stated: the lines' fee bases,
volumes and counts (the fills', which the signature vouches for); for a statement issued before
program versions existed (no `program`), its tiers and rates, so only its sums are checked; for
one issued before statements recorded their earlier months' tiers, its adjustment lines' tiers and
rates; for one without a `tier_volume` under the previous_month basis, its tier. `unchecked` says
which of these apply to a statement.
"""

from collections.abc import Callable
from decimal import Decimal, DecimalException

from bkr.domain.config import TierBasis
from bkr.domain.money import ZERO, canonical, plain, total
from bkr.domain.payout import effective_rate, line_payout_at
from bkr.domain.periods import Month
from bkr.domain.problems import Problem
from bkr.domain.statements import BrokerStatement, LineKind, StatementLine, total_statement


def recompute(statement: BrokerStatement) -> BrokerStatement:
    """The statement as its document's lines and terms make it: its tier and rate, each line's
    tier, rate and payout, the totals, carry and payout worked out again (see the module's
    docstring for what is taken as stated). Raises a `DecimalException` for figures beyond the
    money context's exact digits."""
    terms = statement.program
    if terms is None:  # no terms: the rates are the statement's own, only the arithmetic is redone
        quantum = statement.quantum
        level, broker_rate, tier_volume = statement.tier_level, statement.broker_rate, statement.tier_volume
        lines = [_repriced(line, line.tier_level, line.effective_rate) for line in statement.lines]
    else:
        quantum = terms.rounding_quantum
        level, broker_rate, tier_volume = _statement_tier(statement)
        at = _tiers_by_month(statement, level, broker_rate)
        cap = terms.cap
        # Lines come grouped by fill month (months are interned: compared by identity), and a month
        # has few affiliate rates: each rate is worked out once per month, found again by its value.
        rates_by_month: dict[Month, dict[Decimal, Decimal]] = {}
        lines = []
        last_month: Month | None = None
        priced: tuple[int, Decimal] | None = None
        rates: dict[Decimal, Decimal] = {}
        for line in statement.lines:
            fill_month = line.fill_month
            if fill_month is not last_month:
                last_month, priced = fill_month, at.get(fill_month)
                rates = rates_by_month.setdefault(fill_month, {})
            if priced is None:  # a month whose tier the statement does not carry: taken as stated
                lines.append(_repriced(line, line.tier_level, line.effective_rate))
                continue
            affiliate_rate = line.affiliate_rate
            rate = rates.get(affiliate_rate)
            if rate is None:
                rate = rates[affiliate_rate] = effective_rate(priced[1], affiliate_rate, cap)
            lines.append(_repriced(line, priced[0], rate))
    return total_statement(statement.broker_id, statement.month, level, broker_rate, statement.tier_basis, lines,
                           statement.carried_in, quantum, records_carries=statement.records_carries,
                           program=terms, tier_volume=tier_volume, format_version=statement.format_version)


def _repriced(line: StatementLine, level: int, rate: Decimal) -> StatementLine:
    payout = line_payout_at(line.fee_base, rate)
    if level == line.tier_level and rate == line.effective_rate and payout == line.payout_exact:
        return line  # the same line: a statement that checks makes no new ones
    return line._replace(tier_level=level, effective_rate=rate, payout_exact=payout)


def _own_volume(statement: BrokerStatement) -> Decimal:
    regular = LineKind.REGULAR
    return total([line.volume_usd for line in statement.lines if line.kind is regular])


def _statement_tier(statement: BrokerStatement) -> tuple[int, Decimal, Decimal | None]:
    """(tier level, broker rate, tier volume) as the terms make them: the tier the tier volume
    reaches; the stated tier's rate where no tier volume is known; the stated figures where the
    stated tier is not in the schedule at all (`check` says so)."""
    assert statement.program is not None
    tiers = statement.program.tier_schedule
    volume = _own_volume(statement) if statement.tier_basis is TierBasis.SAME_MONTH else statement.tier_volume
    if volume is not None:
        tier = tiers.tier_for_volume(volume)
        return tier.level, tier.rate, volume
    if statement.tier_level < len(tiers.tiers):
        return statement.tier_level, tiers.tiers[statement.tier_level].rate, None
    return statement.tier_level, statement.broker_rate, None


def _tiers_by_month(statement: BrokerStatement, level: int, rate: Decimal) -> dict[Month, tuple[int, Decimal]]:
    """The (tier level, tier rate) each fill month's lines are priced at: the statement's month at
    its own tier, an earlier month at the tier it records for it (never its own month: `check`
    reports a prior tier that is not of an earlier month)."""
    assert statement.program is not None
    at = {prior.month: (prior.tier_level, prior.rate) for prior in statement.program.prior_tiers or ()
          if prior.month < statement.month}
    at[statement.month] = (level, rate)
    return at


def check(statement: BrokerStatement) -> list[Problem]:
    """Every figure of `statement` that is not what its lines and terms make it, each as a `Problem`."""
    try:
        return _check(statement, recompute(statement))
    except DecimalException:  # only a forged statement has figures beyond the money context's exact digits
        return [Problem("", "figures too large to check exactly")]


def unchecked(statement: BrokerStatement) -> list[str]:
    """What `check` takes as stated for this statement because its document does not carry what
    it would take to work it out (nothing, for a statement of the current format)."""
    terms = statement.program
    if terms is None:
        return ["the tier, the broker rate and the lines' rates: the statement carries no program version (it was "
                "issued before statements named one), so only its sums were checked"]
    notes = []
    if statement.tier_basis is TierBasis.PREVIOUS_MONTH and statement.tier_volume is None:
        notes.append("the tier against the previous month's volume: the statement does not record that volume")
    if terms.prior_tiers is None and any(line.fill_month != statement.month for line in statement.lines):
        notes.append("the tiers and rates of the lines of earlier months' fills: the statement does not record "
                     "the tier each earlier month was paid at")
    return notes


def line_name(number: int, line: StatementLine) -> str:
    """How a problem names a line: its position (from 1) and what tells it apart."""
    return f"line {number} ({line.user_id} {line.market_type.value} {line.fill_month} {line.kind.value})"


def _check(statement: BrokerStatement, made: BrokerStatement) -> list[Problem]:
    problems = _shape_problems(statement)
    terms = statement.program
    for number, (line, want) in enumerate(zip(statement.lines, made.lines, strict=True), start=1):
        if line is want:
            continue
        name = line_name(number, line)
        if line.tier_level != want.tier_level:
            whose = ("the statement's tier" if line.fill_month == statement.month
                     else f"the tier {line.fill_month} was paid at (program: prior_tiers)")
            problems.append(Problem(name, f"tier {line.tier_name} is not {whose} = {want.tier_name}", "tier",
                                    want.tier_name, line.tier_name))
        if line.effective_rate != want.effective_rate and terms is not None:
            rate = made.broker_rate if line.fill_month == statement.month else _prior_rate(statement, line.fill_month)
            problems.append(Problem(
                name, f"effective_rate {plain(line.effective_rate)} is not min({want.tier_name}'s rate "
                      f"{canonical(rate)}, max(0, cap {canonical(terms.cap)} − affiliate_rate "
                      f"{canonical(line.affiliate_rate)})) = {canonical(want.effective_rate)}",
                "effective_rate", want.effective_rate, line.effective_rate))
        if line.payout_exact != want.payout_exact:
            problems.append(Problem(
                name, f"payout_exact {plain(line.payout_exact)} is not fee_base {plain(line.fee_base)} × "
                      f"effective_rate {canonical(want.effective_rate)} = {canonical(want.payout_exact)}",
                "payout_exact", want.payout_exact, line.payout_exact))

    def compare(name: str, stated: Decimal, expected: Decimal, what: str) -> None:
        if stated != expected:
            problems.append(Problem(name, f"{plain(stated)} is not {what} = {canonical(expected)}", name, expected,
                                    stated))

    if terms is not None:
        if statement.tier_level != made.tier_level:
            problems.append(Problem(
                "tier", f"{statement.tier_name} is not the tier a volume of {canonical(made.tier_volume or ZERO)} "
                        f"reaches in the schedule the statement carries = {made.tier_name}", "tier", made.tier_name,
                statement.tier_name))
        if statement.broker_rate != made.broker_rate:
            problems.append(Problem(
                "broker_rate", f"{plain(statement.broker_rate)} is not {made.tier_name}'s rate in the schedule the "
                               f"statement carries = {canonical(made.broker_rate)}", "broker_rate",
                made.broker_rate, statement.broker_rate))
        if (statement.tier_basis is TierBasis.SAME_MONTH and statement.tier_volume is not None
                and made.tier_volume is not None):
            compare("tier_volume", statement.tier_volume, made.tier_volume,
                    "the regular lines' volume (the tier basis is same_month)")
    for name, stated, expected in (
            ("fee_base", statement.fee_base, made.fee_base),
            ("adjustment_fee_base", statement.adjustment_fee_base, made.adjustment_fee_base),
            ("spot_volume", statement.spot_volume, made.spot_volume),
            ("futures_volume", statement.futures_volume, made.futures_volume)):
        compare(name, stated, expected, "the lines' sum")
    compare("api_volume", statement.api_volume, made.api_volume, "spot_volume + futures_volume")
    compare("adjustment_payout_exact", statement.adjustment_payout_exact, made.adjustment_payout_exact,
            "the sum of the other lines' payout_exact")
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
                      f"{canonical(terms.rounding_quantum) if terms else statement.quantum} = {made.payout}",
            "payout", made.payout, statement.payout))
    return problems


def _prior_rate(statement: BrokerStatement, month: Month) -> Decimal:
    assert statement.program is not None
    prior = statement.program.prior_tier(month)
    return ZERO if prior is None else prior.rate


def _shape_problems(statement: BrokerStatement) -> list[Problem]:
    """What is wrong with a statement's shape rather than its figures: a tier its schedule does not
    have, a regular line of another month, another line of a month not before the statement's,
    an earlier month whose tier it does not record."""
    problems: list[Problem] = []
    terms = statement.program
    if terms is not None:
        tiers = terms.tier_schedule.tiers
        if statement.tier_level >= len(tiers):
            problems.append(Problem("tier", f"{statement.tier_name} is not in the tier schedule the statement carries "
                                            f"(BKR 0 to BKR {len(tiers) - 1})"))
        for prior in terms.prior_tiers or ():
            if prior.month >= statement.month:
                problems.append(Problem("program: prior_tiers",
                                        f"{prior.month} is not a month before {statement.month}"))
    recorded: Callable[[Month], bool] = (
        (lambda month: True) if terms is None or terms.prior_tiers is None
        else (lambda month: terms.prior_tier(month) is not None))
    named: set[Month] = set()
    month, regular = statement.month, LineKind.REGULAR
    for number, line in enumerate(statement.lines, start=1):
        if line.kind is regular:
            if line.fill_month is not month and line.fill_month != month:  # months are mostly one object
                problems.append(Problem(line_name(number, line), f"a regular line is of the statement's own month "
                                        f"({statement.month}), not of {line.fill_month}"))
            continue
        if line.fill_month >= statement.month:
            problems.append(Problem(line_name(number, line), f"a line of kind {line.kind.value} is of an earlier "
                                    f"month's fills, not of {line.fill_month}"))
        elif line.fill_month not in named and not recorded(line.fill_month):
            named.add(line.fill_month)
            problems.append(Problem(line_name(number, line), f"program: prior_tiers has no tier for "
                                    f"{line.fill_month}: this month's lines cannot be priced"))
    return problems

