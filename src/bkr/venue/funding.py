"""Funding of perpetual markets, and the reads of perpetual market data: mark prices, funding
rates and payments, open interest and a position's history.

**When funding is applied.** Inside the order-entry stream (`bkr.venue.exchange.Venue`), under
its lock: the first order-entry transaction whose time is at or past an interval's end applies
that interval before anything else it does. No order can trade between the interval's end and
that transaction, so the positions it charges, and the book and last trade it marks them at,
are exactly those of the interval's end; several ends passed without a trade are applied one
by one, each with those same positions. `bkr serve` also runs a tick that opens such a
transaction shortly after every interval's end (`bkr.api.funding_tick`), and the reads that
show money (balances, positions, funding history) open one when an end has passed since the
process last looked, so that funding shows without waiting for an order. The process remembers
the latest end it saw applied, so the order path pays nothing between ends.

**Once.** Applying an interval writes its rate row (`venue_funding_rates`, keyed by market and
interval end) and one payment per account (`venue_funding_payments`, keyed by interval end,
account and market), and moves the accounts' balances of the market's quote asset, all in the
stream's transaction. Which intervals are due is read from the rate rows: the ones after the
market's latest row, or, for a market never funded, after its first trade (before it, nobody
held a position there). A second process finds the rows and applies nothing; were the lock
ever bypassed, the keys would refuse a second payment and undo the transaction.

**Amounts.** `bkr.venue.perpetuals.funding_payment`, exact: nothing is rounded, so the payments
of an interval sum to zero over a market. A payment may take an available balance below zero
(the sandbox does not liquidate); the margin rules then let the account only reduce.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, func, select, update

from bkr.domain.fills import Side
from bkr.domain.money import ZERO, add, mul
from bkr.domain.periods import as_utc
from bkr.store.tables import (
    venue_balances,
    venue_fills,
    venue_funding_payments,
    venue_funding_rates,
    venue_positions,
)
from bkr.venue.book import OrderBook
from bkr.venue.history import MAX_PAGE
from bkr.venue.markets import Market, VenueConfig
from bkr.venue.perpetuals import (
    FundingPaid,
    OpenInterest,
    PositionFill,
    PositionLife,
    funding_payments,
    interval_ends,
    mark_price,
    open_interest,
    position_lives,
)

MAX_RATES_PAGE = 10_000  # Backpack's limit for GET /api/v1/fundingRates


@dataclass(frozen=True, slots=True)
class FundingRate:
    symbol: str
    interval_end: datetime
    rate: Decimal
    mark_price: Decimal


@dataclass(frozen=True, slots=True)
class FundingPayment:
    symbol: str
    interval_end: datetime
    rate: Decimal
    quantity: Decimal  # received (negative: paid)


def last_trade_price(connection: Connection, symbol: str) -> Decimal | None:
    return connection.execute(select(venue_fills.c.price).where(venue_fills.c.symbol == symbol)
                              .order_by(venue_fills.c.trade_id.desc()).limit(1)).scalar()


def market_mark(connection: Connection, market: Market, book: OrderBook | None) -> Decimal | None:
    """The market's mark price now (`bkr.venue.perpetuals.mark_price`), from its book as given."""
    return mark_price(book.best_bid() if book is not None else None, book.best_ask() if book is not None else None,
                      last_trade_price(connection, market.symbol), market.index_price)


# -- applying --------------------------------------------------------------------------------------

def apply_due_funding(connection: Connection, config: VenueConfig, books: Mapping[str, OrderBook],
                      now: datetime) -> int:
    """Apply every interval of every perpetual market that ended at or before `now` and is not
    applied yet, in the caller's (the stream's) transaction. Returns how many were applied."""
    applied = 0
    for market in config.markets:
        if not market.is_futures:
            continue
        after = _funded_through(connection, market.symbol)
        if after is None:
            continue  # never traded: nobody holds a position, nothing to fund yet
        ends = interval_ends(after, now, market.funding_interval)
        if not ends:
            continue
        mark = market_mark(connection, market, books.get(market.symbol))
        assert mark is not None  # the market traded
        positions = _positions(connection, market.symbol)
        payments = funding_payments(positions, mark, market.funding_rate)
        connection.execute(venue_funding_rates.insert(), [
            {"symbol": market.symbol, "interval_end": end, "rate": market.funding_rate, "mark_price": mark}
            for end in ends])
        rows = [{"interval_end": end, "user_id": user_id, "symbol": market.symbol, "position": positions[user_id],
                 "rate": market.funding_rate, "mark_price": mark, "quantity": amount}
                for end in ends for user_id, amount in sorted(payments.items()) if amount]
        if rows:
            connection.execute(venue_funding_payments.insert(), rows)
            _credit(connection, market.quote, {u: mul(a, len(ends)) for u, a in payments.items() if a})
        applied += len(ends)
    return applied


def _funded_through(connection: Connection, symbol: str) -> datetime | None:
    """The latest interval end applied, or, for a market never funded, the time of its first trade."""
    latest = connection.execute(select(func.max(venue_funding_rates.c.interval_end))
                                .where(venue_funding_rates.c.symbol == symbol)).scalar()
    if latest is not None:
        return as_utc(latest)
    first = connection.execute(select(venue_fills.c.ts).where(venue_fills.c.symbol == symbol)
                               .order_by(venue_fills.c.trade_id).limit(1)).scalar()
    return None if first is None else as_utc(first)


def _positions(connection: Connection, symbol: str) -> dict[str, Decimal]:
    rows = connection.execute(select(venue_positions.c.user_id, venue_positions.c.net_quantity)
                              .where(venue_positions.c.symbol == symbol).order_by(venue_positions.c.user_id))
    return {row.user_id: row.net_quantity for row in rows if row.net_quantity != 0}


def _credit(connection: Connection, asset: str, amounts: Mapping[str, Decimal]) -> None:
    """Add `amounts` to the accounts' available balances of `asset`."""
    held = {row.user_id: row.available for row in connection.execute(
        select(venue_balances.c.user_id, venue_balances.c.available)
        .where((venue_balances.c.asset == asset) & venue_balances.c.user_id.in_(sorted(amounts))))}
    for user_id, amount in sorted(amounts.items()):
        if user_id in held:
            connection.execute(update(venue_balances).where(
                (venue_balances.c.user_id == user_id) & (venue_balances.c.asset == asset))
                .values(available=add(held[user_id], amount)))
        else:
            connection.execute(venue_balances.insert().values(user_id=user_id, asset=asset, available=amount,
                                                              locked=ZERO))


# -- reading ---------------------------------------------------------------------------------------

def funding_rates(connection: Connection, symbol: str, limit: int, offset: int) -> list[FundingRate]:
    """A market's funding rates, the latest interval first."""
    rows = connection.execute(select(venue_funding_rates).where(venue_funding_rates.c.symbol == symbol)
                              .order_by(venue_funding_rates.c.interval_end.desc())
                              .limit(min(limit, MAX_RATES_PAGE)).offset(offset))
    return [FundingRate(r.symbol, as_utc(r.interval_end), r.rate, r.mark_price) for r in rows]


def funding_history(connection: Connection, user_id: str, symbols: Sequence[str] | None, limit: int, offset: int,
                    ascending: bool) -> list[FundingPayment]:
    query = select(venue_funding_payments).where(venue_funding_payments.c.user_id == user_id)
    if symbols is not None:
        query = query.where(venue_funding_payments.c.symbol.in_(list(symbols)))
    keys = (venue_funding_payments.c.interval_end, venue_funding_payments.c.symbol)
    query = query.order_by(*(k.asc() if ascending else k.desc() for k in keys))
    rows = connection.execute(query.limit(min(limit, MAX_PAGE)).offset(offset))
    return [FundingPayment(r.symbol, as_utc(r.interval_end), r.rate, r.quantity) for r in rows]


def market_open_interest(connection: Connection, symbol: str) -> OpenInterest:
    rows = connection.execute(select(venue_positions.c.net_quantity).where(venue_positions.c.symbol == symbol))
    return open_interest(symbol, (row.net_quantity for row in rows))


def position_history(connection: Connection, user_id: str, symbols: Sequence[str]) -> list[PositionLife]:
    """Every position `user_id` held in these perpetual markets, replayed from its fills, each
    with the funding it received or paid while open; oldest first within a market."""
    if not symbols:
        return []
    fills: dict[str, list[PositionFill]] = {}
    rows = connection.execute(
        select(venue_fills.c.symbol, venue_fills.c.trade_id, venue_fills.c.side, venue_fills.c.price,
               venue_fills.c.quantity, venue_fills.c.fee, venue_fills.c.ts)
        .where((venue_fills.c.user_id == user_id) & venue_fills.c.symbol.in_(list(symbols)))
        # settlement order: by trade, the taker's side first (as `bkr.venue.execution` settles them)
        .order_by(venue_fills.c.trade_id, venue_fills.c.is_maker))
    for r in rows:
        fills.setdefault(r.symbol, []).append(PositionFill(int(r.trade_id), Side(r.side), r.price, r.quantity, r.fee,
                                                           as_utc(r.ts)))
    paid: dict[str, list[FundingPaid]] = {}
    for p in connection.execute(select(venue_funding_payments.c.symbol, venue_funding_payments.c.interval_end,
                                       venue_funding_payments.c.quantity)
                                .where((venue_funding_payments.c.user_id == user_id)
                                       & venue_funding_payments.c.symbol.in_(list(symbols)))
                                .order_by(venue_funding_payments.c.interval_end)):
        paid.setdefault(p.symbol, []).append(FundingPaid(as_utc(p.interval_end), p.quantity))
    lives: list[PositionLife] = []
    for symbol in sorted(fills):
        lives.extend(position_lives(symbol, fills[symbol], paid.get(symbol, ())))
    return lives
