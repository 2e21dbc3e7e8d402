"""The rules of perpetual markets that are pure arithmetic: the mark price, the funding
intervals and payments, and a position's life read back from its fills.

All exact (`bkr.domain.money.MONEY`'s operations, whatever the thread's context):

- **Mark price**: the median of the best bid, the best ask and the last trade price, when the
  book has both sides; else the last trade price; a market that never traded is marked at its
  configured index price, else it has no mark. The book is never crossed (bid < ask), so the
  median is the last trade price held inside the spread: a trade far from a standing book does
  not move the mark past it, and a resting order moves it no further than the other side's best
  price (an order placed beyond that would trade, not rest). A one-sided book does not move it
  at all, or one large resting order on an empty side could mark every position to its price.
  No division, no rounding: the mark is always one of the three prices.
- **Funding**: intervals end at whole multiples of the market's interval since the Unix epoch
  (1h: on the hour, UTC). At each end every open position pays `position × mark × rate`: a
  long pays and a short receives when the rate is positive. Nothing is rounded, so over a market
  the payments sum to exactly zero (the positions of a market sum to zero: every fill has two
  sides).
- **A position's life**: it opens when a fill takes its quantity away from zero and closes when
  a fill brings it back to zero (a fill through zero closes one and opens the next with what is
  left), with the same exact accounting as order entry (`bkr.venue.execution`): no average price
  is divided out; the PnL of the part closed is realized at once.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal

from bkr.domain.bounds import PRECISION
from bkr.domain.fills import Side
from bkr.domain.money import MONEY, ZERO, add, mul, neg, sub

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def mark_price(best_bid: Decimal | None, best_ask: Decimal | None, last_trade: Decimal | None,
               index_price: Decimal | None = None) -> Decimal | None:
    """The venue's mark price (see the module's docstring)."""
    if last_trade is None:
        return index_price
    if best_bid is None or best_ask is None:
        return last_trade
    return sorted((best_bid, best_ask, last_trade))[1]


def funding_payment(position: Decimal, mark: Decimal, rate: Decimal) -> Decimal:
    """What an account receives (negative: pays) for `position` at one interval's end."""
    return neg(mul(mul(position, mark), rate))


def funding_payments(positions: Mapping[str, Decimal], mark: Decimal, rate: Decimal) -> dict[str, Decimal]:
    """Every account's payment at one interval's end, for its position in one market; a flat
    account pays nothing and is left out."""
    return {account: funding_payment(quantity, mark, rate) for account, quantity in positions.items() if quantity}


def interval_ends(after: datetime, until: datetime, interval: timedelta) -> list[datetime]:
    """The ends of funding intervals in (`after`, `until`]: whole multiples of `interval` since
    the epoch."""
    step = _micros(interval)
    first = _micros(after - EPOCH) // step + 1
    last = _micros(until - EPOCH) // step
    return [EPOCH + timedelta(microseconds=n * step) for n in range(first, last + 1)]


def last_interval_end(now: datetime, interval: timedelta) -> datetime:
    """The latest end of an interval at or before `now`."""
    step = _micros(interval)
    return EPOCH + timedelta(microseconds=(_micros(now - EPOCH) // step) * step)


def next_interval_end(now: datetime, interval: timedelta) -> datetime:
    """The first end of an interval after `now`."""
    return last_interval_end(now, interval) + interval


def _micros(span: timedelta) -> int:
    return (span.days * 86_400 + span.seconds) * 1_000_000 + span.microseconds


# -- a position's life, from its fills --------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PositionFill:
    """One fill of one account in one perpetual market, in the order the venue settled it."""

    trade_id: int
    side: Side
    price: Decimal
    quantity: Decimal
    fee: Decimal
    at: datetime


@dataclass(frozen=True, slots=True)
class FundingPaid:
    interval_end: datetime
    quantity: Decimal  # received (negative: paid)


@dataclass
class PositionLife:
    """One position from the fill that opened it to the fill that closed it (if any)."""

    symbol: str
    position_id: str  # the trade that opened it
    opened_at: datetime
    net_quantity: Decimal = ZERO
    net_cost: Decimal = ZERO  # signed: price × quantity of what is open
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO
    funding: Decimal = ZERO  # received (negative: paid) while it was open
    closed_volume: Decimal = ZERO  # the quantity closed, summed
    closing_price: Decimal | None = None  # the price of the fill that closed it
    closed_at: datetime | None = None
    entry_notional: Decimal = ZERO  # |price × quantity| of what opened or increased it
    entry_quantity: Decimal = ZERO

    @property
    def is_open(self) -> bool:
        return self.closed_at is None

    def entry_price(self, tick_size: Decimal) -> Decimal:
        """The average price of what opened or increased it, to the market's tick (a display,
        as Backpack's `entryPrice`: no money moves by it)."""
        if not self.entry_quantity:
            return ZERO
        return _DISPLAY.divide(self.entry_notional, self.entry_quantity).quantize(tick_size, context=_DISPLAY)


_DISPLAY = Context(prec=PRECISION)  # rounds (to nearest, half even) without trapping: displays only


def settle_fill(net: Decimal, net_cost: Decimal, side: Side, quantity: Decimal,
                notional: Decimal) -> tuple[Decimal, Decimal, Decimal]:
    """A perpetual fill applied to a position: (net quantity, net cost, PnL realized). Closing
    (back to zero, or through zero) realizes the closed part's PnL exactly: the closed share of
    the fill's cost is `cost × closed / quantity`, which is `price × closed`, exact. Reducing
    without reaching zero realizes nothing yet (the net cost carries it)."""
    signed = quantity if side is Side.BID else neg(quantity)
    cost = notional if side is Side.BID else neg(notional)
    after = add(net, signed)
    if net and (after == 0 or (net > 0) != (after > 0)):
        closing = net.copy_abs()
        closing_cost = cost if closing == quantity else MONEY.divide(mul(cost, closing), quantity)
        return after, sub(cost, closing_cost), neg(add(net_cost, closing_cost))
    return after, add(net_cost, cost), ZERO


def position_lives(symbol: str, fills: Iterable[PositionFill],
                   funding: Sequence[FundingPaid] = ()) -> list[PositionLife]:
    """The positions one account held in one market, oldest first, replayed from its fills (in
    settlement order); each funding payment is the position's that was open at the interval's
    end (opened before it, not closed before it)."""
    lives: list[PositionLife] = []
    current: PositionLife | None = None
    for fill in fills:
        if current is None:
            current = PositionLife(symbol, str(fill.trade_id), fill.at)
            lives.append(current)
        before = current.net_quantity
        notional = mul(fill.price, fill.quantity)
        net, cost, pnl = settle_fill(before, current.net_cost, fill.side, fill.quantity, notional)
        reducing = bool(before) and (before > 0) != (fill.side is Side.BID)
        reduced = min(before.copy_abs(), fill.quantity) if reducing else ZERO
        opened = sub(fill.quantity, reduced)  # what the fill adds beyond what it reduced
        through_zero = bool(reduced) and bool(opened)
        fee_here = MONEY.divide(mul(fill.fee, reduced), fill.quantity) if through_zero else fill.fee
        current.realized_pnl = add(current.realized_pnl, pnl)
        current.fees = add(current.fees, fee_here)
        if reduced:
            current.closed_volume = add(current.closed_volume, reduced)
        if net and (not before or (net > 0) == (before > 0)):
            if opened:  # opened or increased
                current.entry_notional = add(current.entry_notional, mul(fill.price, opened))
                current.entry_quantity = add(current.entry_quantity, opened)
            current.net_quantity, current.net_cost = net, cost
            continue
        current.net_quantity, current.net_cost = ZERO, ZERO
        current.closing_price, current.closed_at = fill.price, fill.at
        current = None
        if net:  # through zero: what is left opens the next position at this fill
            current = PositionLife(symbol, str(fill.trade_id), fill.at, net, cost, fees=sub(fill.fee, fee_here),
                                   entry_notional=mul(fill.price, opened), entry_quantity=opened)
            lives.append(current)
    for payment in funding:
        for life in lives:
            if life.opened_at < payment.interval_end and (life.closed_at is None
                                                          or payment.interval_end <= life.closed_at):
                life.funding = add(life.funding, payment.quantity)
                break
    return lives


@dataclass(frozen=True, slots=True)
class OpenInterest:
    symbol: str
    quantity: Decimal  # the long side's quantity (= the short side's)


def open_interest(symbol: str, positions: Iterable[Decimal]) -> OpenInterest:
    """A market's open interest: the sum of its long positions, in the base asset."""
    longs = ZERO
    for quantity in positions:
        if quantity > 0:
            longs = add(longs, quantity)
    return OpenInterest(symbol, longs)
