"""Posting groups, pure: a payout of any amount a statement can pay, and its reversal, balance
to the last digit whatever the thread's decimal context."""

from decimal import Context, Decimal, localcontext

import pytest

from bkr.domain.money import total
from bkr.ledger.postings import REBATE_EXPENSE, broker_payable, payout

# A payout with the most digits a statement can have: 51 integer digits, 18 + 54 places rounded
# to a quantum of 10^-18 (bkr.domain.bounds).
LARGEST_PAYOUT = Decimal("9" * 51 + "." + "9" * 18)
NEGATED = LARGEST_PAYOUT.copy_negate()  # exact: `-x` would round to the thread's context


@pytest.mark.parametrize("context", [Context(), "hostile"])
def test_a_payout_and_its_reversal_balance_to_the_last_digit_whatever_the_threads_context(
        context: Context | str, hostile_decimal_context: Context) -> None:
    with localcontext(hostile_decimal_context if context == "hostile" else context):
        group = payout(1400, "2024-05", LARGEST_PAYOUT)
        undone = group.reversal("reversal/1400/2024-05")
    amounts = {p.account: p.amount for p in group.postings}
    assert amounts == {REBATE_EXPENSE: LARGEST_PAYOUT, broker_payable(1400): NEGATED}
    assert {p.account: p.amount for p in undone.postings} == {REBATE_EXPENSE: NEGATED,
                                                              broker_payable(1400): LARGEST_PAYOUT}
    assert total(p.amount for p in (*group.postings, *undone.postings)) == 0
