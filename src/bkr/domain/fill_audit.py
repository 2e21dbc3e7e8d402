"""The per-fill audit: each counted fill of a broker's month with the statement line it is on,
and why a line that pays nothing pays nothing.

A statement line is the sum of its fills: its fee base is the sum of theirs, and its exact
payout is that base times the line's effective rate. Each fill's *payout contribution* is its own
fee base times the same rate, exactly (no rounding: the statement rounds once, on its total), so
the contributions of a line's fills add up to the line's `payout_exact` digit for digit.

A fill's fee base is what it adds to its line: its fee if positive (a maker rebate adds 0), and
for a correction the change it makes to the fee base of the fill it corrects (stored with it).
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from bkr.domain.fills import retroactive_part
from bkr.domain.money import canonical, total
from bkr.domain.periods import Month, as_utc
from bkr.domain.statements import LineKind
from bkr.domain.tiers import tier_name


class ZeroPayoutReason(StrEnum):
    """Why a line (or a user's lines together) pays 0."""

    # the affiliate's rate is at or above the cap: min(broker rate, max(0, cap − affiliate rate)) is 0
    AFFILIATE_RATE_AT_CAP = "affiliate_rate_at_cap"
    REBATE_FEES_ONLY = "rebate_fees_only"  # no positive fee: the fee base is 0 or less
    BROKER_RATE_ZERO = "broker_rate_zero"  # the tier paid has a broker rate of 0
    # some fills earn, and corrections or retroactive lines take exactly as much back
    OFFSET_BY_CORRECTIONS = "offset_by_corrections"


@dataclass(frozen=True, slots=True)
class PricedPart:
    """What the reason needs of a line: its fee base, affiliate rate and effective rate."""

    fee_base: Decimal
    affiliate_rate: Decimal
    effective_rate: Decimal
    payout_exact: Decimal


def zero_payout_reason(parts: Iterable[PricedPart], cap: Decimal) -> ZeroPayoutReason | None:
    """Why `parts` (one line, or every line of a user) pay 0 together; None if they pay something."""
    parts = list(parts)
    if total(part.payout_exact for part in parts) != 0:
        return None
    earning = [part for part in parts if part.fee_base > 0]
    if not earning:
        return ZeroPayoutReason.REBATE_FEES_ONLY
    if all(part.effective_rate == 0 for part in earning):
        if all(part.affiliate_rate >= cap for part in earning):
            return ZeroPayoutReason.AFFILIATE_RATE_AT_CAP
        return ZeroPayoutReason.BROKER_RATE_ZERO
    return ZeroPayoutReason.OFFSET_BY_CORRECTIONS


@dataclass(frozen=True, slots=True)
class AuditedFill:
    """One counted fill (or correction) of a broker's month, priced as its statement line prices it.

    `statement_month` is the month whose statement pays it (a late fill's is later than its
    `fill_month`); the line is the statement's line of (`line_kind`, `fill_month`, `user_id`,
    `market_type`, `affiliate_rate`), at position `statement_line` (from 1) in a closed month's
    statement, None for a month not closed yet (the line it would be on if the month ended now)."""

    fill_id: str
    order_id: str
    timestamp: datetime
    user_id: str
    symbol: str
    market_type: str
    side: str
    is_maker: bool
    price: Decimal
    quantity: Decimal
    fee: Decimal
    fee_symbol: str
    volume_usd: Decimal
    fee_usd: Decimal
    fee_base: Decimal  # what the fill adds to its line's fee base
    affiliate_rate: Decimal
    tier_level: int  # the tier its line is priced at
    effective_rate: Decimal
    payout_exact: Decimal  # fee_base × effective_rate, exact
    corrects: str | None  # the fill a correction corrects
    fill_month: Month
    statement_month: Month
    line_kind: LineKind
    statement_line: int | None

    @property
    def tier_name(self) -> str:
        return tier_name(self.tier_level)

    @property
    def line_key(self) -> tuple[LineKind, Month, str, str, Decimal]:
        """The statement line it belongs to, within its statement."""
        return (self.line_kind, self.fill_month, self.user_id, self.market_type, self.affiliate_rate)

    def cells(self) -> tuple[Any, ...]:
        """Its values in `AUDIT_COLUMNS` order: decimals as canonical strings, the instant in ISO
        8601 UTC, `is_maker` a bool, `corrects` and `statement_line` None when they have none."""
        return (self.fill_id, self.order_id, iso_instant(self.timestamp), self.user_id, self.symbol,
                self.market_type, self.side, self.is_maker, canonical(self.price), canonical(self.quantity),
                canonical(self.fee), self.fee_symbol, canonical(self.volume_usd), canonical(self.fee_usd),
                canonical(self.fee_base), canonical(self.affiliate_rate), self.tier_name,
                canonical(self.effective_rate), canonical(self.payout_exact), self.corrects, str(self.fill_month),
                str(self.statement_month), self.line_kind.value, self.statement_line)

    def to_document(self) -> dict[str, Any]:
        """As JSON-ready data, keyed by `AUDIT_COLUMNS`."""
        return dict(zip(AUDIT_COLUMNS, self.cells(), strict=True))


AUDIT_COLUMNS = ("fill_id", "order_id", "timestamp", "user_id", "symbol", "market_type", "side", "is_maker", "price",
                 "quantity", "fee", "fee_symbol", "volume_usd", "fee_usd", "fee_base", "affiliate_rate", "tier",
                 "effective_rate", "payout_exact", "corrects", "fill_month", "statement_month", "line_kind",
                 "statement_line")


def line_kind(fill_id: str, corrects: str | None, fill_month: Month, period: Month) -> LineKind:
    """The kind of line a counted row is paid on in `period`'s statement, as the running totals
    file it (`bkr.program.attribution.Counted.kind`) and the close prices it: what a retroactive
    change moved; a correction paid after its fill's month; a late fill; or the month's own."""
    if retroactive_part(fill_id, corrects) is not None:
        return LineKind.RETROACTIVE
    if fill_month != period:
        return LineKind.CORRECTION if corrects is not None else LineKind.ADJUSTMENT
    return LineKind.REGULAR  # a correction within its fill's month joins its fill's line


def iso_instant(moment: datetime) -> str:
    """A UTC instant as ISO 8601 to the microsecond, ending in Z."""
    return as_utc(moment).isoformat(timespec="microseconds").replace("+00:00", "Z")


__all__ = ["AUDIT_COLUMNS", "AuditedFill", "PricedPart", "ZeroPayoutReason", "iso_instant", "line_kind",
           "zero_payout_reason"]
