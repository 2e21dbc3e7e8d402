"""Statements: a broker's month, from its aggregate lines to the amount to pay.

Lines whose fills belong to the statement's own month are *regular*: they make the month's
API volume and so its tier. Lines whose fills belong to an earlier, already closed month are
*prior-period adjustments*: they do not count towards this month's tier and are priced at the
tier of the month the fills belong to. Lines of *corrections* to fills that were on an earlier
statement (a busted trade, a corrected quantity or fee) are adjustments too, labelled as such:
their fee base is the change, negative for a bust, priced like the fills they correct.

When corrections outweigh what a statement earns, it pays 0 and carries the difference to the
broker's next statement (`carried_out`, then that one's `carried_in`): nothing paid is taken
back, and nothing overpaid is forgotten.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bkr.domain.config import ProgramConfig, TierBasis
from bkr.domain.fills import MarketType
from bkr.domain.money import ZERO, add, canonical, total
from bkr.domain.payout import effective_rate, line_payout_at, statement_payout
from bkr.domain.periods import Month
from bkr.domain.tiers import Tier


@dataclass(frozen=True, slots=True)
class AggregateLine:
    """Running totals of counted fills for one (broker, period, fill month, user, market type, rate)."""

    broker_id: int
    period: Month  # the statement month these fills are paid in
    fill_month: Month  # the month the fills happened in (earlier than `period` for late fills)
    user_id: str
    market_type: MarketType
    affiliate_rate: Decimal
    fills: int
    volume_usd: Decimal
    fee_usd: Decimal
    fee_base_usd: Decimal
    is_correction: bool = False  # corrections of fills paid on an earlier statement

    @property
    def is_adjustment(self) -> bool:
        # months are interned (`Month.parse`, `Month.of`): identity settles the common case cheaply
        return self.fill_month is not self.period and self.fill_month != self.period


@dataclass(frozen=True, slots=True)
class StatementLine:
    user_id: str
    market_type: MarketType
    affiliate_rate: Decimal
    fill_month: Month
    is_adjustment: bool
    is_correction: bool
    tier: Tier
    fills: int
    volume_usd: Decimal
    fee_usd: Decimal
    fee_base: Decimal
    effective_rate: Decimal
    payout_exact: Decimal

    @property
    def kind(self) -> str:
        if self.is_correction:
            return "correction"
        return "adjustment" if self.is_adjustment else "regular"

    def sort_key(self) -> tuple[bool, bool, Month, str, str, Decimal]:
        return (self.is_adjustment, self.is_correction, self.fill_month, self.user_id, self.market_type.value,
                self.affiliate_rate)

    def to_document(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "market_type": self.market_type.value,
            "kind": self.kind,
            "fill_month": str(self.fill_month),
            "tier": self.tier.name,
            "affiliate_rate": canonical(self.affiliate_rate),
            "effective_rate": canonical(self.effective_rate),
            "fills": self.fills,
            "volume_usd": canonical(self.volume_usd),
            "fee_usd": canonical(self.fee_usd),
            "fee_base": canonical(self.fee_base),
            "payout_exact": canonical(self.payout_exact),
        }


@dataclass(frozen=True, slots=True)
class BrokerStatement:
    broker_id: int
    month: Month
    tier: Tier
    tier_basis: TierBasis
    spot_volume: Decimal
    futures_volume: Decimal
    fee_base: Decimal  # regular lines only
    adjustment_fee_base: Decimal  # adjustment and correction lines
    adjustment_payout_exact: Decimal
    payout_exact: Decimal  # every line, unrounded
    carried_in: Decimal  # the previous statement's carried_out: 0 or negative
    payout: Decimal  # max(0, payout_exact + carried_in) rounded once, down
    lines: tuple[StatementLine, ...]

    @property
    def api_volume(self) -> Decimal:
        return total((self.spot_volume, self.futures_volume))

    @property
    def carried_out(self) -> Decimal:
        return carried_out(self.payout_exact, self.carried_in)

    def to_document(self) -> dict[str, Any]:
        """The statement as JSON-ready data: decimals as strings, lines in a fixed order."""
        return {
            "month": str(self.month),
            "broker_id": self.broker_id,
            "tier": self.tier.name,
            "tier_basis": self.tier_basis.value,
            "broker_rate": canonical(self.tier.rate),
            "spot_volume": canonical(self.spot_volume),
            "futures_volume": canonical(self.futures_volume),
            "api_volume": canonical(self.api_volume),
            "fee_base": canonical(self.fee_base),
            "adjustment_fee_base": canonical(self.adjustment_fee_base),
            "adjustment_payout_exact": canonical(self.adjustment_payout_exact),
            "payout_exact": canonical(self.payout_exact),
            "carried_in": canonical(self.carried_in),
            "carried_out": canonical(self.carried_out),
            "payout": format(self.payout, "f"),  # already a multiple of the rounding quantum
            "lines": [line.to_document() for line in self.lines],
        }


def api_volumes(lines: Iterable[AggregateLine]) -> tuple[Decimal, Decimal]:
    """(spot, futures) volume of the regular lines."""
    regular = [line for line in lines if not line.is_adjustment]
    spot = total(line.volume_usd for line in regular if line.market_type is MarketType.SPOT)
    futures = total(line.volume_usd for line in regular if line.market_type.is_futures)
    return spot, futures


def paying_tier(config: ProgramConfig, month: Month, own_volume: Decimal, previous_volume: Decimal) -> Tier:
    """The tier month `month` is paid at, under the configured tier basis."""
    schedule = config.schedule_for(month)
    if config.tier_basis is TierBasis.PREVIOUS_MONTH:
        return schedule.tier_for_volume(previous_volume)
    return schedule.tier_for_volume(own_volume)


def carried_out(payout_exact: Decimal, carried_in: Decimal) -> Decimal:
    """What a statement leaves to recover from the next: the part of its payout below zero."""
    return min(ZERO, add(payout_exact, carried_in))


def payable(payout_exact: Decimal, carried_in: Decimal, quantum: Decimal) -> Decimal:
    """The amount a statement pays: its exact payout with what it carries in, if positive,
    rounded down once to `quantum`."""
    return statement_payout(max(ZERO, add(payout_exact, carried_in)), quantum)


def build_statement(config: ProgramConfig, broker_id: int, month: Month, lines: Iterable[AggregateLine],
                    tier: Tier, prior_tiers: Mapping[Month, Tier], carried_in: Decimal = ZERO) -> BrokerStatement:
    """Price every line and total the statement. `prior_tiers` holds the tier of each earlier
    month that adjustment lines belong to; `carried_in` is what the broker's previous statement
    left to recover."""
    lines = list(lines)
    spot, futures = api_volumes(lines)
    priced: list[StatementLine] = []
    rates: dict[tuple[Decimal, Decimal], Decimal] = {}  # a statement has few (tier rate, affiliate rate) pairs
    for line in lines:
        adjustment = line.is_adjustment
        line_tier = prior_tiers[line.fill_month] if adjustment else tier
        pair = (line_tier.rate, line.affiliate_rate)
        rate = rates.get(pair)
        if rate is None:
            rate = rates[pair] = effective_rate(line_tier.rate, line.affiliate_rate, config.cap)
        priced.append(StatementLine(
            user_id=line.user_id, market_type=line.market_type, affiliate_rate=line.affiliate_rate,
            fill_month=line.fill_month, is_adjustment=adjustment, is_correction=line.is_correction, tier=line_tier,
            fills=line.fills, volume_usd=line.volume_usd, fee_usd=line.fee_usd, fee_base=line.fee_base_usd,
            effective_rate=rate, payout_exact=line_payout_at(line.fee_base_usd, rate),
        ))
    priced.sort(key=StatementLine.sort_key)
    adjustments = [line for line in priced if line.is_adjustment]
    payout_exact = total(line.payout_exact for line in priced)
    return BrokerStatement(
        broker_id=broker_id, month=month, tier=tier, tier_basis=config.tier_basis,
        spot_volume=spot, futures_volume=futures,
        fee_base=total(line.fee_base for line in priced if not line.is_adjustment),
        adjustment_fee_base=total(line.fee_base for line in adjustments),
        adjustment_payout_exact=total(line.payout_exact for line in adjustments),
        payout_exact=payout_exact,
        carried_in=carried_in,
        payout=payable(payout_exact, carried_in, config.rounding_quantum),
        lines=tuple(priced),
    )
