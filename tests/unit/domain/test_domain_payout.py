"""The payout formula: fee × min(broker rate, max(0, cap − affiliate rate)); rebates pay nothing."""

from decimal import Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bkr.domain.money import D, total
from bkr.domain.payout import DEFAULT_CAP, effective_rate, fee_base, line_payout, statement_payout

TIER_RATES = ["0.20", "0.30", "0.35", "0.40", "0.45", "0.50"]

# Effective rate for (affiliate rate, broker rate), worked out by hand from the seed's formula.
CAP_TABLE = {
    "0": {"0.20": "0.20", "0.30": "0.30", "0.35": "0.35", "0.40": "0.40", "0.45": "0.45", "0.50": "0.50"},
    "0.2": {"0.20": "0.20", "0.30": "0.30", "0.35": "0.30", "0.40": "0.30", "0.45": "0.30", "0.50": "0.30"},
    "0.5": {"0.20": "0", "0.30": "0", "0.35": "0", "0.40": "0", "0.45": "0", "0.50": "0"},
    "0.6": {"0.20": "0", "0.30": "0", "0.35": "0", "0.40": "0", "0.45": "0", "0.50": "0"},
}
CAP_CASES = [(affiliate, broker, expected) for affiliate, row in CAP_TABLE.items() for broker, expected in row.items()]


def test_default_cap_is_fifty_percent() -> None:
    assert D("0.5") == DEFAULT_CAP


@pytest.mark.parametrize(("affiliate_rate", "broker_rate", "expected"), CAP_CASES)
def test_effective_rate_is_capped_by_the_affiliate_share(affiliate_rate: str, broker_rate: str,
                                                         expected: str) -> None:
    assert effective_rate(D(broker_rate), D(affiliate_rate)) == D(expected)


@pytest.mark.parametrize(("affiliate_rate", "broker_rate", "expected"), CAP_CASES)
def test_line_payout_applies_the_capped_rate_to_the_fee_base(affiliate_rate: str, broker_rate: str,
                                                             expected: str) -> None:
    assert line_payout(D("1000"), D(broker_rate), D(affiliate_rate)) == D("1000") * D(expected)


def test_affiliate_rate_above_the_cap_never_makes_the_rate_negative() -> None:
    assert effective_rate(D("0.5"), D("1")) == 0
    assert line_payout(D("100"), D("0.5"), D("0.9")) == 0


def test_effective_rate_follows_a_configured_cap() -> None:
    assert effective_rate(D("0.5"), D("0.1"), cap=D("0.4")) == D("0.3")
    assert effective_rate(D("0.2"), D("0.1"), cap=D("0.4")) == D("0.2")
    assert line_payout(D("10"), D("0.5"), D("0.1"), cap=D("0.4")) == D("3")


@pytest.mark.parametrize(("fee", "base"), [("1.5", "1.5"), ("0", "0"), ("-0.25", "0"),
                                           ("0.000000000000000001", "0.000000000000000001")])
def test_a_maker_rebate_contributes_nothing_to_the_fee_base(fee: str, base: str) -> None:
    assert fee_base(D(fee)) == D(base)


def test_statement_payout_rounds_down_to_the_quantum() -> None:
    assert statement_payout(D("123.456789"), D("0.01")) == D("123.45")
    assert statement_payout(D("123.456789"), D("1")) == D("123")


FEES = st.decimals(min_value=Decimal("-100"), max_value=Decimal("1e9"), places=18)


@settings(max_examples=150)
@given(fees=st.lists(FEES, max_size=30), broker_rate=st.sampled_from([D(r) for r in TIER_RATES]),
       affiliate_rate=st.decimals(min_value=0, max_value=1, places=6))
def test_paying_the_summed_fee_base_once_equals_paying_every_fill(fees: list[Decimal], broker_rate: Decimal,
                                                                  affiliate_rate: Decimal) -> None:
    """What lets bkr aggregate: exact arithmetic makes Σ(fee × r) equal (Σ fee) × r, to the digit."""
    with localcontext() as context:
        context.prec = 100
        rate = min(broker_rate, max(Decimal(0), Decimal("0.5") - affiliate_rate))
        per_fill = sum((fee * rate for fee in fees if fee > 0), Decimal(0))
    aggregated = line_payout(total(fee_base(fee) for fee in fees), broker_rate, affiliate_rate)
    assert aggregated == per_fill
