"""The payout formula of the seed, per fill:

    payout = fee_usd × min(broker_rate, max(0, cap − affiliate_rate))

A fill with a negative fee (a maker rebate) contributes 0. Because the effective rate is the
same for every fill of one (broker tier, affiliate rate), bkr sums the positive fees of such
fills first (the *fee base*) and multiplies once: exact decimal arithmetic makes that equal,
digit for digit, to the per-fill sum.
"""

from decimal import Decimal

from bkr.domain.money import MONEY, ZERO, mul, round_down, sub

DEFAULT_CAP = Decimal("0.5")


def effective_rate(broker_rate: Decimal, affiliate_rate: Decimal, cap: Decimal = DEFAULT_CAP) -> Decimal:
    """min(broker rate, max(0, cap − affiliate rate))."""
    return min(broker_rate, max(ZERO, sub(cap, affiliate_rate)))


def fee_base(fee_usd: Decimal) -> Decimal:
    """What a fill's fee contributes to the rebate base: the fee, or 0 for a maker rebate."""
    return fee_usd if fee_usd > 0 else ZERO


def line_payout(fee_base_usd: Decimal, broker_rate: Decimal, affiliate_rate: Decimal,
                cap: Decimal = DEFAULT_CAP) -> Decimal:
    """The exact payout of a sum of fee bases that share one broker rate and one affiliate rate."""
    return line_payout_at(fee_base_usd, effective_rate(broker_rate, affiliate_rate, cap))


def line_payout_at(fee_base_usd: Decimal, rate: Decimal) -> Decimal:
    """The exact payout of a fee base at an effective rate already worked out."""
    return mul(fee_base_usd, rate)


def statement_payout(payout_exact: Decimal, quantum: Decimal) -> Decimal:
    """The amount paid: the exact total rounded once, down, to the quantum."""
    return round_down(payout_exact, quantum)


__all__ = ["DEFAULT_CAP", "MONEY", "effective_rate", "fee_base", "line_payout", "line_payout_at", "statement_payout"]
