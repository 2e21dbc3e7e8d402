"""Statements: a broker's month priced line by line and rounded once, checked against a plain reference."""

import decimal
import json
from collections import defaultdict
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bkr.domain.config import DEFAULT_CONFIG, ProgramConfig, TierBasis
from bkr.domain.fills import MarketType
from bkr.domain.money import D, round_down, total
from bkr.domain.periods import Month
from bkr.domain.statements import AggregateLine, api_volumes, build_statement, paying_tier
from bkr.domain.tiers import SEED_SCHEDULE, SEED_TIERS, Tier, TierSchedule

BROKER = 1400
PERIOD = Month(2024, 5)
APRIL, MARCH = PERIOD.previous(), PERIOD.previous().previous()

# The seed's table, written out here rather than read from bkr: (threshold USD, rate) per level.
SEED_TABLE = [("0", "0.20"), ("5000000", "0.30"), ("10000000", "0.35"), ("20000000", "0.40"),
              ("60000000", "0.45"), ("100000000", "0.50")]


# --- the reference -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReferenceFill:
    """One counted fill, already in USD, as the store would have aggregated it."""

    fill_month: Month
    user_id: str
    market_type: MarketType
    affiliate_rate: Decimal
    volume_usd: Decimal
    fee_usd: Decimal


def reference_rate(volume: Decimal) -> Decimal:
    return max(Decimal(rate) for threshold, rate in SEED_TABLE if volume >= Decimal(threshold))


def reference_payout(fills: list[ReferenceFill], regular_rate: Decimal, prior_rates: dict[Month, Decimal]) -> Decimal:
    """Σ fee_usd × min(broker_rate, max(0, 0.5 − affiliate_rate)) per fill, negative fees paying 0."""
    with localcontext() as context:
        context.prec = 100
        context.traps[decimal.Inexact] = True  # the reference itself must not round either
        exact = Decimal(0)
        for fill in fills:
            broker_rate = regular_rate if fill.fill_month == PERIOD else prior_rates[fill.fill_month]
            if fill.fee_usd > 0:
                exact += fill.fee_usd * min(broker_rate, max(Decimal(0), Decimal("0.5") - fill.affiliate_rate))
        return exact


def round_down_exactly(amount: Decimal, quantum: str = "0.01") -> Decimal:
    with localcontext() as context:
        context.prec = 100
        return amount.quantize(Decimal(quantum), rounding=ROUND_DOWN)


def aggregate(fills: list[ReferenceFill]) -> list[AggregateLine]:
    """What the store keeps: running totals per (fill month, user, market type, affiliate rate)."""
    groups: dict[tuple[Month, str, MarketType, Decimal], list[ReferenceFill]] = defaultdict(list)
    for fill in fills:
        groups[(fill.fill_month, fill.user_id, fill.market_type, fill.affiliate_rate)].append(fill)
    lines = []
    with localcontext() as context:
        context.prec = 100
        for (fill_month, user_id, market_type, affiliate_rate), members in groups.items():
            lines.append(AggregateLine(
                broker_id=BROKER, period=PERIOD, fill_month=fill_month, user_id=user_id, market_type=market_type,
                affiliate_rate=affiliate_rate, fills=len(members),
                volume_usd=sum((f.volume_usd for f in members), Decimal(0)),
                fee_usd=sum((f.fee_usd for f in members), Decimal(0)),
                fee_base_usd=sum((f.fee_usd for f in members if f.fee_usd > 0), Decimal(0)),
            ))
    return lines


def line(fee_base: str, *, user_id: str = "u-1", market_type: MarketType = MarketType.SPOT,
         affiliate_rate: str = "0", volume: str = "0", fill_month: Month = PERIOD, fee: str | None = None,
         fills: int = 1, correction: bool = False) -> AggregateLine:
    return AggregateLine(
        broker_id=BROKER, period=PERIOD, fill_month=fill_month, user_id=user_id, market_type=market_type,
        affiliate_rate=D(affiliate_rate), fills=fills, volume_usd=D(volume),
        fee_usd=D(fee if fee is not None else fee_base), fee_base_usd=D(fee_base), is_correction=correction,
    )


# --- the property: bkr's statement equals the per-fill reference, to the last digit ------------

AMOUNTS_18 = st.decimals(min_value=Decimal("-1000"), max_value=Decimal("1e12"), places=18)
VOLUMES = st.decimals(min_value=0, max_value=Decimal("5e7"), places=18)
AFFILIATE_RATES = st.one_of(st.sampled_from([D("0"), D("0.1"), D("0.2"), D("0.5"), D("0.6")]),
                            st.decimals(min_value=0, max_value=1, places=6))
FILLS = st.builds(
    ReferenceFill,
    fill_month=st.sampled_from([PERIOD, PERIOD, PERIOD, APRIL, MARCH]),
    user_id=st.sampled_from(["u-1", "u-2", "u-3"]),
    market_type=st.sampled_from(list(MarketType)),
    affiliate_rate=AFFILIATE_RATES,
    volume_usd=VOLUMES,
    fee_usd=AMOUNTS_18,
)


@settings(max_examples=200, deadline=None)
@given(fills=st.lists(FILLS, max_size=40), april_level=st.integers(0, 5), march_level=st.integers(0, 5))
def test_statement_payout_equals_the_per_fill_reference_to_the_last_digit(
        fills: list[ReferenceFill], april_level: int, march_level: int) -> None:
    with localcontext() as context:
        context.prec = 100
        own_volume = sum((f.volume_usd for f in fills if f.fill_month == PERIOD), Decimal(0))
        regular_fee_base = sum((f.fee_usd for f in fills if f.fill_month == PERIOD and f.fee_usd > 0), Decimal(0))
    tier = paying_tier(DEFAULT_CONFIG, PERIOD, own_volume, D(0))
    assert tier.rate == reference_rate(own_volume)

    statement = build_statement(DEFAULT_CONFIG, BROKER, PERIOD, aggregate(fills), tier,
                                {APRIL: SEED_TIERS[april_level], MARCH: SEED_TIERS[march_level]})

    exact = reference_payout(fills, reference_rate(own_volume),
                             {APRIL: Decimal(SEED_TABLE[april_level][1]), MARCH: Decimal(SEED_TABLE[march_level][1])})
    assert statement.payout_exact == exact
    assert statement.payout == round_down_exactly(exact)
    assert statement.api_volume == own_volume
    assert statement.fee_base == regular_fee_base
    assert D(statement.to_document()["payout_exact"]) == exact


def test_statement_total_above_ten_billion_keeps_every_18th_decimal() -> None:
    fills = [
        ReferenceFill(PERIOD, "u-1", MarketType.SPOT, D("0"), D("1000"), D("98765432109.123456789012345678")),
        ReferenceFill(PERIOD, "u-2", MarketType.PERP, D("0.123456"), D("1000"), D("55555555555.000000000000000001")),
        ReferenceFill(PERIOD, "u-3", MarketType.SPOT, D("0"), D("1000"), D("0.000000000000000001")),
    ]
    tier = SEED_TIERS[0]
    statement = build_statement(DEFAULT_CONFIG, BROKER, PERIOD, aggregate(fills), tier, {})
    exact = reference_payout(fills, D("0.20"), {})
    assert exact > D("1E+10")
    assert statement.payout_exact == exact
    assert statement.payout_exact == D("30864197532.824691357802469136")
    assert statement.payout == D("30864197532.82")
    # The same sum in Python's default 28-digit context comes out different: the trap is real.
    with localcontext(decimal.Context()):
        naive = sum((f.fee_usd * D("0.20") for f in fills), Decimal(0))
    assert naive != exact


# --- rounding once, down -------------------------------------------------------------------------

def test_rounding_happens_once_at_the_total_not_per_line() -> None:
    # Ten users each earn 0.019 × 20% = 0.0038 USD: under a cent per line, 0.038 in all.
    lines = [line("0.019", user_id=f"u-{n:02d}") for n in range(10)]
    statement = build_statement(DEFAULT_CONFIG, BROKER, PERIOD, lines, SEED_TIERS[0], {})
    assert all(priced.payout_exact == D("0.0038") for priced in statement.lines)
    assert statement.payout_exact == D("0.038")
    assert statement.payout == D("0.03")
    rounded_per_line = total(round_down(priced.payout_exact) for priced in statement.lines)
    assert rounded_per_line == D("0.00")
    assert statement.payout != rounded_per_line


def test_the_total_is_rounded_down_not_to_nearest() -> None:
    statement = build_statement(DEFAULT_CONFIG, BROKER, PERIOD, [line("49.9995")], SEED_TIERS[0], {})
    assert statement.payout_exact == D("9.9999")
    assert statement.payout == D("9.99")


def test_the_unrounded_total_is_kept_beside_the_payout() -> None:
    lines = [line("0.019", user_id=f"u-{n}") for n in range(7)]
    document = build_statement(DEFAULT_CONFIG, BROKER, PERIOD, lines, SEED_TIERS[0], {}).to_document()
    assert document["payout_exact"] == "0.0266"
    assert document["payout"] == "0.02"
    assert [entry["payout_exact"] for entry in document["lines"]] == ["0.0038"] * 7


def test_the_rounding_quantum_is_configurable() -> None:
    config = ProgramConfig(rounding_quantum=D("1"))
    statement = build_statement(config, BROKER, PERIOD, [line("64.935")], SEED_TIERS[0], {})
    assert statement.payout_exact == D("12.987")
    assert statement.payout == D("12")
    assert statement.to_document()["payout"] == "12"


def test_a_statement_without_payout_shows_zero_at_the_quantum() -> None:
    statement = build_statement(DEFAULT_CONFIG, BROKER, PERIOD, [], SEED_TIERS[0], {})
    assert statement.payout_exact == 0
    assert statement.payout == 0
    assert statement.to_document()["payout"] == "0.00"
    assert statement.to_document()["payout_exact"] == "0"


def test_maker_rebates_do_not_reduce_the_payout() -> None:
    # The store keeps the rebate in fee_usd but not in the fee base.
    statement = build_statement(DEFAULT_CONFIG, BROKER, PERIOD,
                                [line("10", fee="7", user_id="u-1"), line("0", fee="-5", user_id="u-2")],
                                SEED_TIERS[0], {})
    assert statement.fee_base == D("10")
    assert statement.payout_exact == D("2")
    assert statement.payout == D("2.00")


# --- volumes and tiers ---------------------------------------------------------------------------

def test_api_volume_is_spot_plus_all_futures_of_regular_lines() -> None:
    lines = [
        line("0", market_type=MarketType.SPOT, volume="100", user_id="a"),
        line("0", market_type=MarketType.PERP, volume="20", user_id="b"),
        line("0", market_type=MarketType.IPERP, volume="3", user_id="c"),
        line("0", market_type=MarketType.DATED, volume="0.4", user_id="d"),
        line("0", market_type=MarketType.SPOT, volume="5000", user_id="e", fill_month=APRIL),
    ]
    assert api_volumes(lines) == (D("100"), D("23.4"))
    statement = build_statement(DEFAULT_CONFIG, BROKER, PERIOD, lines, SEED_TIERS[0], {APRIL: SEED_TIERS[0]})
    assert (statement.spot_volume, statement.futures_volume, statement.api_volume) == (D("100"), D("23.4"),
                                                                                       D("123.4"))


@pytest.mark.parametrize(("basis", "expected"), [
    (TierBasis.SAME_MONTH, "BKR 3"),
    (TierBasis.PREVIOUS_MONTH, "BKR 1"),
])
def test_paying_tier_follows_the_tier_basis(basis: TierBasis, expected: str) -> None:
    config = ProgramConfig(tier_basis=basis)
    assert paying_tier(config, PERIOD, own_volume=D("25000000"), previous_volume=D("5000000")).name == expected


@pytest.mark.parametrize(("basis", "own", "previous", "expected"), [
    (TierBasis.SAME_MONTH, "5000000", "0", "BKR 1"),
    (TierBasis.SAME_MONTH, "4999999.999999999999999999", "100000000", "BKR 0"),
    (TierBasis.PREVIOUS_MONTH, "100000000", "4999999.999999999999999999", "BKR 0"),
    (TierBasis.PREVIOUS_MONTH, "0", "100000000", "BKR 5"),
])
def test_paying_tier_is_decided_at_the_exact_threshold(basis: TierBasis, own: str, previous: str,
                                                       expected: str) -> None:
    assert paying_tier(ProgramConfig(tier_basis=basis), PERIOD, D(own), D(previous)).name == expected


def test_paying_tier_uses_the_schedule_in_force_for_the_month() -> None:
    new_terms = TierSchedule(Month(2024, 6), (Tier(0, D(0), D("0.25")), Tier(1, D(1_000_000), D("0.45"))))
    config = ProgramConfig(schedules=(SEED_SCHEDULE, new_terms))
    assert paying_tier(config, Month(2024, 5), D(2_000_000), D(0)).rate == D("0.20")
    assert paying_tier(config, Month(2024, 6), D(2_000_000), D(0)).rate == D("0.45")


def test_statement_records_the_tier_basis_it_was_priced_under() -> None:
    config = ProgramConfig(tier_basis=TierBasis.PREVIOUS_MONTH)
    statement = build_statement(config, BROKER, PERIOD, [], SEED_TIERS[2], {})
    assert statement.tier_basis is TierBasis.PREVIOUS_MONTH
    assert statement.to_document()["tier_basis"] == "previous_month"


# --- prior-period adjustments --------------------------------------------------------------------

def test_adjustment_lines_are_priced_at_the_prior_months_tier_and_do_not_count_as_volume() -> None:
    regular = line("100", volume="1000000", user_id="u-1")
    late = line("200", volume="30000000", user_id="u-1", market_type=MarketType.PERP, affiliate_rate="0.1",
                fill_month=APRIL)
    own_volume = total(api_volumes([regular, late]))
    tier = paying_tier(DEFAULT_CONFIG, PERIOD, own_volume, D(0))
    assert tier.name == "BKR 0"  # the late 30M does not lift this month's tier

    statement = build_statement(DEFAULT_CONFIG, BROKER, PERIOD, [late, regular], tier, {APRIL: SEED_TIERS[3]})

    assert statement.spot_volume == D("1000000")
    assert statement.futures_volume == 0
    assert statement.fee_base == D("100")
    assert statement.adjustment_fee_base == D("200")
    regular_line, adjustment_line = statement.lines  # regular lines first
    assert not regular_line.is_adjustment
    assert (regular_line.tier_name, regular_line.effective_rate, regular_line.payout_exact) == (
        "BKR 0", D("0.20"), D("20"))
    assert adjustment_line.is_adjustment
    assert (adjustment_line.tier_name, adjustment_line.effective_rate, adjustment_line.payout_exact) == (
        "BKR 3", D("0.40"), D("80"))
    assert statement.adjustment_payout_exact == D("80")
    assert statement.payout_exact == D("100")
    assert statement.payout == D("100.00")
    kinds = [(entry["kind"], entry["fill_month"], entry["tier"]) for entry in statement.to_document()["lines"]]
    assert kinds == [("regular", "2024-05", "BKR 0"), ("adjustment", "2024-04", "BKR 3")]


def test_adjustments_from_different_months_use_each_months_own_tier() -> None:
    lines = [line("100", fill_month=APRIL, user_id="u-1"), line("100", fill_month=MARCH, user_id="u-1")]
    statement = build_statement(DEFAULT_CONFIG, BROKER, PERIOD, lines, SEED_TIERS[0],
                                {APRIL: SEED_TIERS[1], MARCH: SEED_TIERS[5]})
    assert {str(entry.fill_month): entry.payout_exact for entry in statement.lines} == {
        "2024-03": D("50"), "2024-04": D("30")}
    assert statement.api_volume == 0
    assert statement.fee_base == 0
    assert statement.payout_exact == D("80")


def test_adjustment_lines_are_capped_by_their_affiliate_rate_too() -> None:
    statement = build_statement(DEFAULT_CONFIG, BROKER, PERIOD, [line("100", fill_month=APRIL, affiliate_rate="0.2")],
                                SEED_TIERS[0], {APRIL: SEED_TIERS[5]})
    assert statement.lines[0].effective_rate == D("0.30")
    assert statement.payout_exact == D("30")


# --- the document --------------------------------------------------------------------------------

def test_statement_document_carries_the_figures_as_strings() -> None:
    lines = [line("1000.50", volume="6000000", user_id="u-1"),
             line("10", volume="500", user_id="u-2", market_type=MarketType.PERP, affiliate_rate="0.25")]
    tier = paying_tier(DEFAULT_CONFIG, PERIOD, total(api_volumes(lines)), D(0))
    document = build_statement(DEFAULT_CONFIG, BROKER, PERIOD, lines, tier, {}).to_document()
    assert {key: value for key, value in document.items() if key != "lines"} == {
        "month": "2024-05", "broker_id": BROKER, "tier": "BKR 1", "tier_basis": "same_month",
        "broker_rate": "0.3", "spot_volume": "6000000", "futures_volume": "500", "api_volume": "6000500",
        "fee_base": "1010.5", "adjustment_fee_base": "0", "adjustment_payout_exact": "0",
        "payout_exact": "302.65", "carried_in": "0", "carried_out": "0", "payout": "302.65",
    }
    assert document["lines"][1] == {
        "user_id": "u-2", "market_type": "PERP", "kind": "regular", "fill_month": "2024-05", "tier": "BKR 1",
        "affiliate_rate": "0.25", "effective_rate": "0.25", "fills": 1, "volume_usd": "500", "fee_usd": "10",
        "fee_base": "10", "payout_exact": "2.5",
    }


def test_a_bust_beyond_the_months_earnings_pays_nothing_and_carries_the_rest() -> None:
    lines = [line("10", volume="1000"), line("-30", volume="-3000", fill_month=APRIL, correction=True)]
    statement = build_statement(DEFAULT_CONFIG, BROKER, PERIOD, lines, SEED_TIERS[0], {APRIL: SEED_TIERS[0]},
                                carried_in=D("-1"))
    document = statement.to_document()

    assert [(row["kind"], row["fill_month"], row["payout_exact"]) for row in document["lines"]] == [
        ("regular", "2024-05", "2"), ("correction", "2024-04", "-6")]
    assert (statement.api_volume, statement.fee_base, statement.adjustment_fee_base) == (1000, 10, -30)
    assert (document["payout_exact"], document["carried_in"], document["carried_out"], document["payout"]) == (
        "-4", "-1", "-5", "0.00")


def test_a_carried_shortfall_comes_off_the_next_payout_before_it_is_rounded() -> None:
    statement = build_statement(DEFAULT_CONFIG, BROKER, PERIOD, [line("35.029")], SEED_TIERS[0], {},
                                carried_in=D("-5"))

    assert (statement.payout_exact, statement.payout, statement.carried_out) == (D("7.0058"), D("2.00"), 0)


@settings(max_examples=50, deadline=None)
@given(fills=st.lists(FILLS, min_size=1, max_size=20), data=st.data())
def test_statement_document_does_not_depend_on_the_order_of_lines(fills: list[ReferenceFill],
                                                                  data: st.DataObject) -> None:
    lines = aggregate(fills)
    shuffled = data.draw(st.permutations(lines))
    prior = {APRIL: SEED_TIERS[2], MARCH: SEED_TIERS[4]}
    first = build_statement(DEFAULT_CONFIG, BROKER, PERIOD, lines, SEED_TIERS[1], prior).to_document()
    second = build_statement(DEFAULT_CONFIG, BROKER, PERIOD, shuffled, SEED_TIERS[1], prior).to_document()
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)


def test_a_statement_at_the_headroom_is_priced_stored_read_back_and_checked_whatever_the_threads_context(
        hostile_decimal_context: decimal.Context) -> None:
    """A month of 10^12 fills at the largest price, quantity, fee and USD rate the bounds allow
    (bkr.domain.bounds' table), a shortfall carried in: the statement is exact to the last digit,
    its canonical JSON reads back to the same statement, and its one check finds nothing, under a
    thread context that would round (and raise)."""
    from fractions import Fraction

    from bkr.domain.statement_checks import check
    from bkr.domain.statement_document import canonical_json, parse_statement

    fills = 10**12
    largest, usd = "999999999999999.999999999999999999", "999999999.999999999999999999"
    month = Fraction(largest) * Fraction(largest) * Fraction(usd) * fills  # a base-asset fee is as large
    with localcontext(decimal.Context(prec=300)):  # the reference's own, ample precision
        figure = Decimal(largest) * Decimal(largest) * Decimal(usd) * fills
    assert Fraction(figure) == month
    config = ProgramConfig(cap=D(1), rounding_quantum=D("1E-18"))
    carried_in = D("-" + "9" * 45 + "." + "9" * 18)
    line = AggregateLine(BROKER, PERIOD, PERIOD, "=u", MarketType.PERP, D("1E-18"), fills, figure, figure, figure)

    def statement_text() -> str:
        tier = SEED_SCHEDULE.tier_for_volume(figure)
        return canonical_json(build_statement(config, BROKER, PERIOD, [line], tier, {}, carried_in).to_document())

    with localcontext(hostile_decimal_context):
        text = statement_text()
        back = parse_statement(text)
        problems = check(back)
    assert problems == [] and text == statement_text()
    payout_exact = month * Fraction("0.5")  # the top tier's 50%, below cap − affiliate rate
    assert (Fraction(back.api_volume), Fraction(back.fee_base), Fraction(back.payout_exact)) == (
        month, month, payout_exact)
    quantum = 10**18
    assert Fraction(back.payout) == Fraction(int((payout_exact + Fraction(carried_in)) * quantum), quantum)
    assert len(back.to_document()["payout_exact"].replace(".", "")) > 90  # far past 28 digits
