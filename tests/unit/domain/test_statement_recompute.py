"""A statement worked out again from its document alone (`recompute`, `check`): its tier from its
volume, each line's rate from the schedule, the cap and its affiliate rate (a line of an earlier
month's fills at the tier that month was paid at), each payout, the totals, the carry and the
rounding; every figure that differs named with both values. A plain reference computation from
the JSON agrees with it on any statement, and any one derived figure changed is named."""

import json
from dataclasses import replace
from decimal import ROUND_DOWN, Context, Decimal, Inexact, InvalidOperation
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bkr.domain.config import DEFAULT_CONFIG, ProgramConfig, TierBasis
from bkr.domain.fills import MarketType
from bkr.domain.money import D
from bkr.domain.periods import Month
from bkr.domain.statement_checks import check, recompute, unchecked
from bkr.domain.statement_document import canonical_json, parse_statement, statement_json
from bkr.domain.statements import AggregateLine, BrokerStatement, build_statement, paying_tier
from bkr.domain.tiers import Tier, TierSchedule

MAY, APRIL, MARCH = Month(2024, 5), Month(2024, 4), Month(2024, 3)
TIERS = DEFAULT_CONFIG.schedule_for(MAY).tiers  # the seed's: BKR 1 from 5M at 0.3, BKR 2 from 10M at 0.35, …


def line(user: str, fee_base: str, *, rate: str = "0", volume: str = "0", market: str = "SPOT",
         fill_month: Month = MAY, correction: bool = False) -> AggregateLine:
    return AggregateLine(1400, MAY, fill_month, user, MarketType(market), D(rate), 1, D(volume), D(fee_base),
                         D(fee_base), correction)


def issued(lines: list[AggregateLine], *, config: ProgramConfig = DEFAULT_CONFIG,
           prior: dict[Month, Tier] | None = None, previous_volume: str | None = None,
           version: int | None = 3) -> dict[str, Any]:
    """The document the close stores for these lines, as JSON data to tamper with."""
    own = sum((x.volume_usd for x in lines if x.fill_month == MAY), D(0))
    previous = D(previous_volume) if previous_volume is not None else None
    tier = paying_tier(config, MAY, own, previous if previous is not None else D(0))
    built = build_statement(config, 1400, MAY, lines, tier, prior or {}, version=version, previous_volume=previous)
    return json.loads(statement_json(built))  # type: ignore[no-any-return]


def read(document: dict[str, Any]) -> BrokerStatement:
    return parse_statement(canonical_json(document))


def problems_of(document: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    return [(p.subject, p.expected, p.found) for p in check(read(document))]


def test_the_issues_example_a_line_of_affiliate_rate_0_paid_at_0_1_instead_of_0_3_is_named() -> None:
    document = issued([line("alice", "100", volume="6000000"), line("bob", "50", rate="0.15")])  # BKR 1: 0.3
    assert document["tier"] == "BKR 1" and check(read(document)) == []
    alice = document["lines"][0]
    # the rate lowered, and every payout and total made consistent with it: only the terms tell
    alice.update(effective_rate="0.1", payout_exact="10")
    document.update(fee_base="150", payout_exact="25", payout="25.00")  # 10 + 50 × 0.3

    problems = check(read(document))

    assert [(p.subject, p.expected, p.found) for p in problems] == [
        ("line 1 (alice SPOT 2024-05 regular) effective_rate", D("0.3"), D("0.1")),
        ("line 1 (alice SPOT 2024-05 regular) payout_exact", D("30"), D("10")),
        ("payout_exact", D("45"), D("25")), ("payout", D("45.00"), D("25.00"))]
    assert str(problems[0]) == ("line 1 (alice SPOT 2024-05 regular): effective_rate 0.1 is not min(BKR 1's rate 0.3, "
                                "max(0, cap 0.5 − affiliate_rate 0)) = 0.3")


def test_a_tier_the_volume_does_not_reach_is_named_with_the_rates_it_inflated() -> None:
    document = issued([line("alice", "100", volume="9999999.99")])  # BKR 1, a cent short of BKR 2
    document.update(tier="BKR 2", broker_rate="0.35", payout_exact="35", payout="35.00")
    document["lines"][0].update(tier="BKR 2", effective_rate="0.35", payout_exact="35")

    assert [subject for subject, _, _ in problems_of(document)] == [
        "line 1 (alice SPOT 2024-05 regular) tier", "line 1 (alice SPOT 2024-05 regular) effective_rate",
        "line 1 (alice SPOT 2024-05 regular) payout_exact", "tier", "broker_rate", "payout_exact", "payout"]
    assert str(check(read(document))[3]) == ("tier: BKR 2 is not the tier a volume of 9999999.99 reaches in the "
                                             "schedule the statement carries = BKR 1")


def test_a_threshold_is_reached_at_exactly_its_volume() -> None:
    at = issued([line("alice", "100", volume="10000000")])
    below = issued([line("alice", "100", volume="9999999.999999")])

    assert (at["tier"], below["tier"]) == ("BKR 2", "BKR 1")
    assert check(read(at)) == check(read(below)) == []
    at["lines"][0]["volume_usd"] = at["spot_volume"] = at["api_volume"] = at["tier_volume"] = "9999999.999999"
    assert ("tier", "BKR 1", "BKR 2") in problems_of(at)


def test_under_the_previous_month_basis_the_tier_is_the_one_the_recorded_volume_reaches() -> None:
    config = replace(DEFAULT_CONFIG, tier_basis=TierBasis.PREVIOUS_MONTH)
    document = issued([line("alice", "100", volume="1")], config=config, previous_volume="20000000")

    assert (document["tier"], document["tier_volume"], document["api_volume"]) == ("BKR 3", "20000000", "1")
    assert check(read(document)) == [] and unchecked(read(document)) == []
    document["tier_volume"] = "60000000"  # BKR 4's threshold: the statement's tier no longer follows
    assert ("tier", "BKR 4", "BKR 3") in problems_of(document)


def test_a_line_of_an_earlier_month_is_priced_at_the_tier_that_month_was_paid_at() -> None:
    document = issued([line("alice", "100", volume="6000000"), line("carol", "80", rate="0.1", fill_month=APRIL),
                       line("dan", "-20", rate="0.3", fill_month=MARCH, correction=True)],
                      prior={APRIL: TIERS[4], MARCH: TIERS[0]})
    assert document["program"]["prior_tiers"] == [{"month": "2024-03", "rate": "0.2", "tier": "BKR 0"},
                                                  {"month": "2024-04", "rate": "0.45", "tier": "BKR 4"}]
    assert [(x["tier"], x["effective_rate"]) for x in document["lines"]] == [
        ("BKR 1", "0.3"), ("BKR 4", "0.4"), ("BKR 0", "0.2")]  # min(0.45, 0.5 − 0.1); min(0.2, 0.5 − 0.3)
    assert check(read(document)) == []

    carol = document["lines"][1]
    carol.update(effective_rate="0.45", payout_exact="36")  # the affiliate's share ignored
    assert problems_of(document)[:2] == [
        ("line 2 (carol SPOT 2024-04 adjustment) effective_rate", D("0.4"), D("0.45")),
        ("line 2 (carol SPOT 2024-04 adjustment) payout_exact", D("32"), D("36"))]
    assert str(check(read(document))[0]).endswith("min(BKR 4's rate 0.45, max(0, cap 0.5 − affiliate_rate 0.1)) = 0.4")


def test_a_line_of_a_month_whose_tier_the_statement_does_not_record_is_named() -> None:
    document = issued([line("carol", "80", fill_month=APRIL)], prior={APRIL: TIERS[1]})
    document["program"]["prior_tiers"] = []

    assert problems_of(document) == [
        ("line 1 (carol SPOT 2024-04 adjustment)", None, None)]
    assert str(check(read(document))[0]) == ("line 1 (carol SPOT 2024-04 adjustment): program: prior_tiers has no "
                                             "tier for 2024-04: this month's lines cannot be priced")


def test_a_regular_line_of_another_month_and_a_prior_tier_of_the_statements_own_month_are_named() -> None:
    document = issued([line("alice", "10")])
    document["lines"][0]["fill_month"] = "2024-04"
    document["program"]["prior_tiers"] = [{"month": "2024-04", "rate": "0.2", "tier": "BKR 0"},
                                          {"month": "2024-05", "rate": "0.5", "tier": "BKR 5"}]

    assert [str(p) for p in check(read(document))][:2] == [
        "program: prior_tiers: 2024-05 is not a month before 2024-05",
        "line 1 (alice SPOT 2024-04 regular): a regular line is of the statement's own month (2024-05), not of 2024-04"]


def test_a_statement_without_program_terms_is_checked_for_its_sums_only_and_says_so() -> None:
    document = issued([line("alice", "100", volume="6000000")], version=None)
    assert "program" not in document and "format_version" not in document
    document["lines"][0].update(effective_rate="0.1", payout_exact="10")
    document.update(payout_exact="10", payout="10.00")
    statement = read(document)

    assert check(statement) == []  # a consistent lie: without terms there is nothing to hold the rate to
    assert unchecked(statement) == ["the tier, the broker rate and the lines' rates: the statement carries no "
                                    "program version (it was issued before statements named one), so only its sums "
                                    "were checked"]
    document["payout"] = "10.01"
    assert problems_of(document) == [("payout", D("10.00"), D("10.01"))]


def test_a_statement_of_the_first_format_with_terms_has_its_regular_lines_checked_not_its_adjustments() -> None:
    document = issued([line("alice", "100", volume="6000000"), line("carol", "80", fill_month=APRIL)],
                      prior={APRIL: TIERS[1]})
    del document["format_version"], document["tier_volume"], document["program"]["prior_tiers"]
    document["lines"][1].update(effective_rate="0.5", payout_exact="40")  # not BKR 1's 0.3
    document.update(adjustment_payout_exact="40", payout_exact="70", payout="70.00")

    assert check(read(document)) == []
    assert unchecked(read(document)) == ["the tiers and rates of the lines of earlier months' fills: the statement "
                                         "does not record the tier each earlier month was paid at"]
    document["lines"][0].update(effective_rate="0.2")  # a regular line: held to the terms, as before
    assert problems_of(document)[0] == ("line 1 (alice SPOT 2024-05 regular) effective_rate", D("0.3"), D("0.2"))


# --- any statement: the check agrees with a plain computation, and names any one figure changed ------------

EXACT = Context(prec=200, traps=[Inexact, InvalidOperation])


def reference(document: dict[str, Any]) -> dict[str, Any]:
    """The seed's formula worked out from the JSON with nothing but `decimal`: the tier, each
    line's tier, rate and payout, and the statement's payout_exact, carried_out and payout."""
    program = document["program"]
    cap = Decimal(program["cap"])
    own = Decimal(0)
    for entry in document["lines"]:
        if entry["kind"] == "regular":
            own = EXACT.add(own, Decimal(entry["volume_usd"]))
    volume = own if document["tier_basis"] == "same_month" else Decimal(document["tier_volume"])
    tier, rate = None, None
    for row in program["tier_schedule"]["tiers"]:
        if volume >= Decimal(row["min_volume"]):
            tier, rate = row["tier"], Decimal(row["rate"])
    priced_at = {prior["month"]: (prior["tier"], Decimal(prior["rate"])) for prior in program["prior_tiers"]}
    priced_at[document["month"]] = (tier, rate)
    lines, payout_exact = [], Decimal(0)
    for entry in document["lines"]:
        line_tier, tier_rate = priced_at[entry["fill_month"]]
        effective = min(tier_rate, max(Decimal(0), EXACT.subtract(cap, Decimal(entry["affiliate_rate"]))))
        payout = EXACT.multiply(Decimal(entry["fee_base"]), effective)
        lines.append((line_tier, effective, payout))
        payout_exact = EXACT.add(payout_exact, payout)
    balance = EXACT.add(payout_exact, Decimal(document["carried_in"]))
    paid = max(balance, Decimal(0)).quantize(Decimal(program["rounding_quantum"]), rounding=ROUND_DOWN,
                                             context=Context(prec=200))
    return {"tier": tier, "broker_rate": rate, "lines": lines, "payout_exact": payout_exact,
            "carried_out": min(balance, Decimal(0)), "payout": paid}


@st.composite
def schedules(draw: st.DrawFn) -> TierSchedule:
    steps = draw(st.lists(st.integers(1, 10**8), min_size=0, max_size=5))
    rates = draw(st.lists(st.integers(0, 100), min_size=len(steps) + 1, max_size=len(steps) + 1))
    thresholds = [0]
    for step in steps:
        thresholds.append(thresholds[-1] + step)
    return TierSchedule(Month(2000, 1), tuple(Tier(level, D(threshold), D(rate).scaleb(-2))
                                              for level, (threshold, rate) in enumerate(zip(thresholds, rates,
                                                                                            strict=True))))


AMOUNTS = st.decimals(min_value=Decimal("-1000"), max_value=Decimal(10**9), places=8, allow_nan=False,
                      allow_infinity=False)
LINES = st.lists(st.tuples(st.sampled_from(["alice", "bob", "zoë"]), st.sampled_from(list(MarketType)),
                           st.sampled_from(["0", "0.05", "0.1", "0.15", "0.25", "0.4", "0.6"]),
                           AMOUNTS, AMOUNTS.map(abs), st.sampled_from([MAY, MAY, MAY, APRIL, MARCH])),
                 max_size=10)


@st.composite
def statements(draw: st.DrawFn) -> dict[str, Any]:
    """A statement as the close issues it: any schedule, cap, quantum and basis, any lines (of the
    month, late fills and corrections of two earlier months at any of their tiers), any carry."""
    schedule = draw(schedules())
    config = ProgramConfig(schedules=(schedule,), cap=D(draw(st.sampled_from(["0.3", "0.5", "0.6", "1"]))),
                           tier_basis=draw(st.sampled_from(list(TierBasis))),
                           rounding_quantum=D(draw(st.sampled_from(["0.01", "0.001", "1"]))))
    rows = draw(LINES)
    # a fill's fee base is its fee, or 0 for a rebate; a correction of an earlier month's fill may take some back
    lines = [AggregateLine(1400, MAY, month, user, market, D(rate), 1, volume, fee,
                           fee if month != MAY and fee < 0 else max(fee, D(0)), month != MAY and fee < 0)
             for user, market, rate, fee, volume, month in rows]
    levels = st.integers(0, len(schedule.tiers) - 1)
    prior = {APRIL: schedule.tiers[draw(levels)], MARCH: schedule.tiers[draw(levels)]}
    previous = draw(st.integers(0, 3 * 10**8)) if config.tier_basis is TierBasis.PREVIOUS_MONTH else None
    own = sum((x.volume_usd for x in lines if x.fill_month == MAY), D(0))
    tier = paying_tier(config, MAY, own, D(previous or 0))
    carried_in = D(draw(st.sampled_from(["0", "-0.01", "-123.456789"])))
    built = build_statement(config, 1400, MAY, lines, tier, prior, carried_in, version=draw(st.integers(1, 99)),
                            previous_volume=None if previous is None else D(previous))
    return json.loads(statement_json(built))  # type: ignore[no-any-return]


@settings(max_examples=150, deadline=None)
@given(document=statements())
def test_any_statement_the_close_issues_is_what_a_plain_computation_makes_of_its_document(
        document: dict[str, Any]) -> None:
    statement = read(document)
    expected = reference(document)

    assert check(statement) == [] and unchecked(statement) == []
    assert (document["tier"], D(document["broker_rate"])) == (expected["tier"], expected["broker_rate"])
    assert [(x["tier"], D(x["effective_rate"]), D(x["payout_exact"])) for x in document["lines"]] == expected["lines"]
    made = recompute(statement)
    assert (made.payout_exact, made.carried_out, made.payout) == (
        expected["payout_exact"], expected["carried_out"], expected["payout"]) == (
        D(document["payout_exact"]), D(document["carried_out"]), D(document["payout"]))


def bumped(text: str) -> str:
    """Another decimal: one more in its last place (a tier, one level up)."""
    if text.startswith("BKR "):
        return f"BKR {int(text[4:]) + 1}"
    value = Decimal(text)
    return format(EXACT.add(value, Decimal(1).scaleb(min(int(value.as_tuple().exponent), 0))), "f")


FIGURES = ["tier", "broker_rate", "spot_volume", "futures_volume", "api_volume", "fee_base", "adjustment_fee_base",
           "adjustment_payout_exact", "payout_exact", "carried_out", "payout"]
LINE_FIGURES = ["tier", "effective_rate", "payout_exact"]


@settings(max_examples=200, deadline=None)
@given(document=statements(), data=st.data())
def test_any_one_figure_changed_is_named_with_its_worked_out_value(document: dict[str, Any],
                                                                   data: st.DataObject) -> None:
    expected = reference(document)
    figures = [*FIGURES, *(["tier_volume"] if document["tier_basis"] == "same_month" else [])]
    choices: list[tuple[str, int | None]] = [(name, None) for name in figures]
    choices += [(name, number) for number in range(len(document["lines"])) for name in LINE_FIGURES]
    name, number = data.draw(st.sampled_from(choices))
    target = document if number is None else document["lines"][number]
    target[name] = bumped(target[name])
    statement = read(document)

    problems = check(statement)

    if number is None:
        subjects = {p.subject: p for p in problems}
        assert name in subjects, (name, [str(p) for p in problems])
        worked_out = {"tier": expected["tier"], "broker_rate": expected["broker_rate"],
                      "payout_exact": expected["payout_exact"], "payout": expected["payout"],
                      "carried_out": expected["carried_out"]}
        if name in worked_out:
            assert subjects[name].expected == worked_out[name]
    else:
        line_tier, rate, payout = expected["lines"][number]
        found = {p.figure: p for p in problems if p.where.startswith(f"line {number + 1} (")}
        assert name in found, (name, [str(p) for p in problems])
        assert found[name].expected == {"tier": line_tier, "effective_rate": rate, "payout_exact": payout}[name]


@settings(max_examples=100, deadline=None)
@given(document=statements(), data=st.data())
def test_a_line_input_changed_is_caught_by_the_figures_it_makes(document: dict[str, Any], data: st.DataObject) -> None:
    """A line's fee base and volume are the fills' (the signature vouches for them, the per-fill
    audit details them): changed alone, the totals they make no longer match. (An earlier month's
    line's volume makes no total: it counts towards no tier, and only the signature covers it.)"""
    choices = [(number, "fee_base") for number in range(len(document["lines"]))]
    choices += [(number, "volume_usd") for number, entry in enumerate(document["lines"]) if entry["kind"] == "regular"]
    if not choices:
        return
    number, name = data.draw(st.sampled_from(choices))
    document["lines"][number][name] = bumped(document["lines"][number][name])

    assert check(read(document)) != []

