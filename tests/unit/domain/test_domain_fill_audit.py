"""Why a line, or a user's lines together, pay nothing; and which line a counted row is paid on."""

from decimal import Decimal

import pytest

from bkr.domain.fill_audit import PricedPart, ZeroPayoutReason, line_kind, zero_payout_reason
from bkr.domain.payout import DEFAULT_CAP, effective_rate, line_payout
from bkr.domain.periods import Month
from bkr.domain.statements import LineKind

D = Decimal


def part(fee_base: str, affiliate_rate: str, broker_rate: str = "0.2") -> PricedPart:
    rate = effective_rate(D(broker_rate), D(affiliate_rate))
    return PricedPart(D(fee_base), D(affiliate_rate), rate, line_payout(D(fee_base), D(broker_rate), D(affiliate_rate)))


@pytest.mark.parametrize(("parts", "reason"), [
    ([part("144.4", "0.5")], ZeroPayoutReason.AFFILIATE_RATE_AT_CAP),  # the user: 144.40 of base, paid 0
    ([part("1", "0.6")], ZeroPayoutReason.AFFILIATE_RATE_AT_CAP),  # above the cap too
    ([part("0", "0")], ZeroPayoutReason.REBATE_FEES_ONLY),  # maker rebates only: no fee base
    ([part("0", "0.5"), part("0", "0")], ZeroPayoutReason.REBATE_FEES_ONLY),
    ([part("1", "0", broker_rate="0")], ZeroPayoutReason.BROKER_RATE_ZERO),
    ([part("1", "0"), part("-1", "0")], ZeroPayoutReason.OFFSET_BY_CORRECTIONS),  # a bust of what it earned
    ([part("1", "0.5"), part("0", "0")], ZeroPayoutReason.AFFILIATE_RATE_AT_CAP),
    ([part("1", "0.49")], None),  # just below the cap: 1% of it
    ([part("1", "0")], None),
    ([part("-1", "0")], None),  # a negative payout is not 0: it is carried
    ([], ZeroPayoutReason.REBATE_FEES_ONLY),
])
def test_a_payout_of_zero_names_its_reason(parts: list[PricedPart], reason: ZeroPayoutReason | None) -> None:
    assert zero_payout_reason(parts, DEFAULT_CAP) is reason


SEPTEMBER, OCTOBER = Month(2026, 9), Month(2026, 10)


@pytest.mark.parametrize(("fill_id", "corrects", "fill_month", "kind"), [
    ("f-1", None, OCTOBER, LineKind.REGULAR),
    ("f-1c", "f-1", OCTOBER, LineKind.REGULAR),  # a correction within its fill's month joins its line
    ("late", None, SEPTEMBER, LineKind.ADJUSTMENT),
    ("f-0c", "f-0", SEPTEMBER, LineKind.CORRECTION),
    ("f-0#retroactive-7-out", "f-0", SEPTEMBER, LineKind.RETROACTIVE),
    ("f-0#retroactive-x-in", "f-0", SEPTEMBER, LineKind.CORRECTION),  # not bkr's name: an ordinary correction
])
def test_a_counted_row_is_paid_on_the_line_its_kind_and_month_give(fill_id: str, corrects: str | None,
                                                                   fill_month: Month, kind: LineKind) -> None:
    assert line_kind(fill_id, corrects, fill_month, OCTOBER) is kind
