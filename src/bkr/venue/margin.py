"""Margin over a whole account: what its perpetual positions and resting orders need, and what it has.

Pure and exact (every operation in `bkr.domain.money.MONEY`, whatever the thread's context), so
that order entry (`bkr.venue.execution`) and the tests compute the very same figures.

An account's perpetual markets share one collateral asset, their quote (USDC by default):

    collateral       the account's available balance of it (what spot orders hold is not in it)
    unrealized PnL   Σ position × mark − net cost, each market at its mark price
                     (`bkr.venue.perpetuals.mark_price`: its last trade price, held inside
                     the best bid and ask when the book has both)
    equity           collateral + unrealized PnL
    initial margin   initial_margin × Σ (|position| × mark + the resting orders that would
                     increase the position: of the bids and of the asks, the larger notional)
    maintenance      maintenance_margin × Σ |position| × mark

A resting order "would increase the position" beyond what would close it: against a short of 10,
bids for 4 only reduce it and need nothing, bids for 15 open a long of 5. The bids that fill
first (the highest) are the ones that close; the rest are counted at their own prices (asks: the
lowest close first). Only the larger side counts, since both cannot hold at once: filling all
the bids then all the asks never leaves a position larger than the larger of the two alone.
A position in a market that has no mark (no trade and no configured index price) is counted at
its cost (no PnL).

Unary minus and `abs()` round to the thread's context; `copy_negate` and `copy_abs` never do.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from bkr.domain.money import ZERO, add, mul, sub


@dataclass(frozen=True, slots=True)
class MarketExposure:
    """One perpetual market of one account: its position and its resting orders there."""

    symbol: str
    position: Decimal  # signed: long above zero
    net_cost: Decimal  # signed sum of price × quantity of what is open
    mark: Decimal | None  # the market's mark price; None when it has none
    bids: Sequence[tuple[Decimal, Decimal]] = ()  # resting (price, remaining)
    asks: Sequence[tuple[Decimal, Decimal]] = ()

    @property
    def unrealized_pnl(self) -> Decimal:
        if self.mark is None:
            return ZERO
        return sub(mul(self.position, self.mark), self.net_cost)

    @property
    def notional(self) -> Decimal:
        """The position's size in the quote asset, at the mark."""
        if self.mark is None:
            return self.net_cost.copy_abs()
        return mul(self.position, self.mark).copy_abs()

    @property
    def opening_notional(self) -> Decimal:
        """What the resting orders could add to the position, the larger side of the two."""
        short = self.position.copy_negate() if self.position < 0 else ZERO
        long = self.position if self.position > 0 else ZERO
        bids = _beyond(sorted(self.bids, reverse=True), short)  # the highest bids fill first
        asks = _beyond(sorted(self.asks), long)  # the lowest asks fill first
        return max(bids, asks)


@dataclass(frozen=True, slots=True)
class AccountMargin:
    """One account's margin in one collateral asset."""

    collateral: Decimal
    unrealized_pnl: Decimal
    initial: Decimal  # what its positions and its opening resting orders need
    maintenance: Decimal  # what its positions need to stay open

    @property
    def equity(self) -> Decimal:
        return add(self.collateral, self.unrealized_pnl)

    @property
    def covers_initial(self) -> bool:
        return self.equity >= self.initial

    @property
    def covers_maintenance(self) -> bool:
        return self.equity >= self.maintenance


def account_margin(collateral: Decimal, exposures: Iterable[MarketExposure], initial_margin: Decimal,
                   maintenance_margin: Decimal) -> AccountMargin:
    pnl = positions = opening = ZERO
    for exposure in exposures:
        pnl = add(pnl, exposure.unrealized_pnl)
        positions = add(positions, exposure.notional)
        opening = add(opening, exposure.opening_notional)
    return AccountMargin(collateral, pnl, mul(initial_margin, add(positions, opening)),
                         mul(maintenance_margin, positions))


def _beyond(orders: Sequence[tuple[Decimal, Decimal]], closing: Decimal) -> Decimal:
    """The notional of `orders` (in the order they would fill) past the first `closing` quantity."""
    notional = ZERO
    for price, quantity in orders:
        if closing >= quantity:
            closing = sub(closing, quantity)
            continue
        notional = add(notional, mul(price, sub(quantity, closing)))
        closing = ZERO
    return notional
