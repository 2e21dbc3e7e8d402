"""Executing orders inside one order-entry transaction (`bkr.venue.entry.Entry`).

A spot order holds what it may spend (price × quantity of quote for a bid, the base for an ask);
a perpetual order holds nothing. The order is matched on the in-memory book (`bkr.venue.book`,
pure), and each match settles two fills: the users' balances, a perpetual's position (its PnL
realized in the quote asset, exactly, when it returns to zero), and the venue's fill, which
carries the order's broker and the venue's judgement of it. What a finished order still holds
goes back to its user. Nothing is written here: the entry keeps it.

Then the accounts are checked on what really happened (`bkr.venue.margin`), and if one cannot
take it, the book and the entry are put back as they were before the order:

- No balance goes below zero, by a fill, a fee or a realized loss.
- A maker that cannot take its fill (its balance would go below zero, or the fill would open or
  increase a position of an account below its maintenance margin) has that resting order
  cancelled (`InsufficientFunds`, `InsufficientMargin`), and the order is matched again without it
  (if the order is refused in the end, those orders rest again: a refusal changes nothing).
- The taker's account, after the order, covers the initial margin of its positions and of its
  resting orders that would increase them. An order that only reduces a position (and a spot
  order that spends no collateral) needs no new margin: it must leave the account at or above its
  maintenance margin, or the account was below it already (it may only reduce). A spot order
  that spends the collateral of perpetual markets is a withdrawal from it: it needs the initial
  margin covered.
"""

from dataclasses import dataclass
from decimal import ROUND_DOWN, Context, Decimal

from bkr.domain.errors import BkrError
from bkr.domain.fills import Side
from bkr.domain.money import ZERO, canonical
from bkr.domain.registry import BrokerId
from bkr.venue.accounts import Balance, Position
from bkr.venue.book import BookError, Execution, OrderBook, OrderRequest, OrderStatus, OrderType, RestingOrder
from bkr.venue.directory import BrokerDecision
from bkr.venue.entry import Checkpoint, Entry, OrderChange, PlacedOrder, VenueFill
from bkr.venue.errors import InsufficientFunds, InsufficientMargin, InvalidOrder
from bkr.venue.margin import AccountMargin, MarketExposure, account_margin
from bkr.venue.markets import FeeRates, Market
from bkr.venue.orders import OrderInput, OrderView
from bkr.venue.perpetuals import settle_fill

_FLOOR = Context(prec=80, rounding=ROUND_DOWN)


# Backpack's expiry reasons for a resting order its account can no longer honour
FUNDS_REASON = "InsufficientFunds"
MARGIN_REASON = "InsufficientMargin"


def execute_order(entry: Entry, market: Market, book: OrderBook, user_id: str, order: OrderInput,
                  decision: BrokerDecision) -> OrderView:
    """Hold, match and settle one order of `user_id`, sent with the broker of `decision`; refused,
    with nothing changed, if its account cannot take what it did."""
    entry.prefetch([user_id], [market.base, market.quote])
    fees = entry.config.fees(entry.fee_tier(user_id))
    asset, reserve = _reservation(entry, book, market, user_id, order)
    if asset is not None and entry.balance(user_id, asset).available < reserve:
        raise InsufficientFunds(f"Insufficient funds: {canonical(reserve)} {asset} needed, "
                                f"{canonical(entry.balance(user_id, asset).available)} available")
    before = _TakerBefore.of(entry, market, book, user_id, order)
    order_id = entry.next_order_id()
    request = OrderRequest(order_id, user_id, order.side, order.order_type, order.price, order.quantity,
                           order.quote_quantity, order.time_in_force, order.post_only,
                           order.self_trade_prevention, entry.next_sequence())
    untouched = market.symbol not in entry.touched_books
    entry.touched_books.add(market.symbol)  # from here a failure must drop the books
    start = entry.checkpoint()
    cancelled: list[RestingOrder] = []  # makers that could not take their fills
    while True:
        checkpoint = entry.checkpoint()
        try:
            execution = book.submit(request)
        except BookError as error:  # the book validates before it changes anything
            _refuse(entry, market, book, start, cancelled, untouched)
            raise InvalidOrder(str(error)) from None
        if order.post_only and not execution.matches and execution.resting is None:
            _refuse(entry, market, book, start, cancelled, untouched)  # nothing matched, nothing changed
            raise InvalidOrder("Order would immediately match and take")
        makers_before = _positions_before(entry, market, execution)
        held = _apply(entry, market, book, fees, user_id, order, order_id, decision, execution, asset, reserve)
        unable = _makers_unable(entry, market, execution, makers_before)
        if unable:  # those resting orders go, and the order is matched again without them
            entry.restore(checkpoint)
            book.revert()
            for maker_order_id, reason in unable:
                resting = book.get(maker_order_id)
                if resting is not None:
                    cancelled.append(resting)
                    cancel_resting(entry, market, book, maker_order_id, reason)
            continue
        refusal = _taker_refusal(entry, market, user_id, order, execution, before)
        if refusal is not None:
            book.revert()
            _refuse(entry, market, book, start, cancelled, untouched)
            raise refusal
        break
    view = OrderView(
        order_id, user_id, market.symbol, order.side, order.order_type, order.time_in_force, order.post_only,
        order.self_trade_prevention, order.price, order.quantity, order.quote_quantity,
        execution.executed_quantity, execution.executed_quote_quantity, execution.status,
        _expiry_reason(execution), order.client_id, decision.broker_id, entry.now)
    remaining = execution.resting.remaining if execution.resting is not None else ZERO
    entry.placed.append(PlacedOrder(view, remaining, held, request.sequence))
    return view


def _refuse(entry: Entry, market: Market, book: OrderBook, start: Checkpoint, cancelled: list[RestingOrder],
            untouched: bool) -> None:
    """A refused order changes nothing: the makers cancelled on its way rest again, in their
    places (their sequence), and the entry is as it was before the order."""
    for resting in cancelled:
        book.rest(resting)
    entry.restore(start)
    if untouched:
        entry.touched_books.discard(market.symbol)


def _apply(entry: Entry, market: Market, book: OrderBook, fees: FeeRates, user_id: str, order: OrderInput,
           order_id: int, decision: BrokerDecision, execution: Execution, asset: str | None,
           reserve: Decimal) -> Decimal:
    """Settle what the book did on the entry; returns what the order's resting remainder holds."""
    if asset is not None:
        entry.move(user_id, asset, -reserve, reserve)
    _settle(entry, market, book, fees, user_id, order, order_id, decision, execution)
    for maker in execution.cancelled_makers:
        _release(entry, market, maker, OrderStatus.CANCELLED, "SelfTradePrevention")
    spent = execution.executed_quote_quantity if order.side is Side.BID else execution.executed_quantity
    held = ZERO
    if execution.resting is not None and not market.is_futures:
        held = (execution.resting.remaining * execution.resting.price if order.side is Side.BID
                else execution.resting.remaining)
    if asset is not None:
        entry.move(user_id, asset, reserve - spent - held, -(reserve - held))
    return held


def cancel_resting(entry: Entry, market: Market, book: OrderBook, order_id: int, reason: str | None = None) -> None:
    resting = book.cancel(order_id)
    if resting is None:  # not on the book any more: it left it earlier in this transaction
        return
    entry.touched_books.add(market.symbol)
    _release(entry, market, resting, OrderStatus.CANCELLED, reason)


# -- the accounts' rules ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _TakerBefore:
    """What the taker's account was before its order: whether the order can only reduce a
    position is judged against it, and whether the account was below maintenance already."""

    position: Decimal  # in the order's market (perpetuals)
    same_side_resting: Decimal  # the quantity of its resting orders on the order's side there
    margin: AccountMargin | None  # of the order's collateral, when the order may only reduce

    @staticmethod
    def of(entry: Entry, market: Market, book: OrderBook, user_id: str, order: OrderInput) -> "_TakerBefore":
        if not market.is_futures:
            return _TakerBefore(ZERO, ZERO, None)
        position = entry.position(user_id, market.symbol).net_quantity
        resting = ZERO
        for mine in book.orders_of(user_id):
            if mine.side is order.side:
                resting += mine.remaining
        opposite = position < 0 if order.side is Side.BID else position > 0
        margin = _margin(entry, user_id, market.quote) if opposite else None
        return _TakerBefore(position, resting, margin)


def _taker_refusal(entry: Entry, market: Market, user_id: str, order: OrderInput, execution: Execution,
                   before: _TakerBefore) -> BkrError | None:
    """Why the taker's account cannot take what its order did, if it cannot."""
    negative = _negative_balance(entry, user_id, market)
    if negative is not None:
        return InsufficientFunds(f"Insufficient funds: the order would take the {negative.asset} balance to "
                                 f"{canonical(negative.available if negative.available < 0 else negative.locked)}")
    if market.is_futures:
        collateral = market.quote
        placed = execution.executed_quantity + (execution.resting.remaining if execution.resting else ZERO)
        reduces = before.margin is not None and before.same_side_resting + placed <= abs(before.position)
    else:
        collateral = market.quote if order.side is Side.BID else market.base  # what the order spends
        if collateral not in entry.config.collaterals:
            return None
        reduces = False
    after = _margin(entry, user_id, collateral)
    if not reduces:
        if after.covers_initial:
            return None
        return InsufficientMargin(
            f"Insufficient margin: after this order the account's equity would be {canonical(after.equity)} "
            f"{collateral}, below the initial margin of {canonical(after.initial)} {collateral} that its positions "
            f"and open orders need")
    assert before.margin is not None
    if after.covers_maintenance or not before.margin.covers_maintenance:
        return None  # reducing needs no new margin; below maintenance, reducing is all an account may do
    return InsufficientMargin(
        f"Insufficient margin: after this order the account's equity would be {canonical(after.equity)} "
        f"{collateral}, below its maintenance margin of {canonical(after.maintenance)} {collateral}")


def _positions_before(entry: Entry, market: Market, execution: Execution) -> dict[str, Decimal]:
    if not market.is_futures:
        return {}
    return {m.maker_user_id: entry.position(m.maker_user_id, market.symbol).net_quantity
            for m in execution.matches}


def _makers_unable(entry: Entry, market: Market, execution: Execution,
                   before: dict[str, Decimal]) -> list[tuple[int, str]]:
    """The resting orders whose accounts cannot take their fills, with the reason: a balance
    below zero, or a position opened or increased by an account below its maintenance margin."""
    orders: dict[str, list[int]] = {}
    for match in execution.matches:
        orders.setdefault(match.maker_user_id, []).append(match.maker_order_id)
    unable: list[tuple[int, str]] = []
    for user_id, order_ids in orders.items():
        reason = None
        if _negative_balance(entry, user_id, market) is not None:
            reason = FUNDS_REASON
        elif market.is_futures and user_id in before:
            was, now = before[user_id], entry.position(user_id, market.symbol).net_quantity
            increased = now > max(was, ZERO) or now < min(was, ZERO)
            if increased and not _margin(entry, user_id, market.quote).covers_maintenance:
                reason = MARGIN_REASON
        if reason is not None:
            unable.extend((order_id, reason) for order_id in dict.fromkeys(order_ids))
    return unable


def _negative_balance(entry: Entry, user_id: str, market: Market) -> Balance | None:
    for asset in (market.quote, market.base):
        balance = entry.balance(user_id, asset)
        if balance.available < 0 or balance.locked < 0:
            return balance
    return None


def _margin(entry: Entry, user_id: str, collateral: str) -> AccountMargin:
    """The account's margin in `collateral` as this transaction leaves it: every perpetual market
    margined in it, each position at its market's mark price, every resting order."""
    entry.read_all_positions(user_id)
    exposures = []
    for market in entry.config.perpetuals(collateral):
        position = entry.position(user_id, market.symbol)
        book = entry.books.get(market.symbol)
        resting = book.orders_of(user_id) if book is not None else []
        if not position.net_quantity and not resting:
            continue
        exposures.append(MarketExposure(
            market.symbol, position.net_quantity, position.net_cost,
            entry.mark(market.symbol) if position.net_quantity else None,
            tuple((o.price, o.remaining) for o in resting if o.side is Side.BID),
            tuple((o.price, o.remaining) for o in resting if o.side is Side.ASK)))
    return account_margin(entry.balance(user_id, collateral).available, exposures, entry.config.initial_margin,
                          entry.config.maintenance_margin)


def _reservation(entry: Entry, book: OrderBook, market: Market, user_id: str,
                 order: OrderInput) -> tuple[str | None, Decimal]:
    """The asset and amount an order holds while it lives: the quote a bid may spend, the
    base an ask may sell. A perpetual holds nothing."""
    if order.order_type is OrderType.LIMIT:
        if order.price is None or order.quantity is None:
            raise InvalidOrder("A limit order needs a price and a quantity")
        notional = order.price * order.quantity
        base_needed = order.quantity
    elif market.is_futures:
        return None, ZERO
    else:
        notional, base_needed = _walk(book, order)
    if market.is_futures:  # its margin is checked on what it did (`_taker_refusal`)
        return None, ZERO
    if order.side is Side.BID:
        return market.quote, notional
    return market.base, base_needed


def _settle(entry: Entry, market: Market, book: OrderBook, fees: FeeRates, user_id: str, order: OrderInput,
            order_id: int, decision: BrokerDecision, execution: Execution) -> None:
    maker_brokers = entry.brokers_of([m.maker_order_id for m in execution.matches])
    entry.prefetch([m.maker_user_id for m in execution.matches], [market.base, market.quote])
    for match in execution.matches:
        trade_id = entry.next_trade_id()
        maker_fees = entry.config.fees(entry.fee_tier(match.maker_user_id))
        maker_side = Side.ASK if match.taker_side is Side.BID else Side.BID
        _fill(entry, market, trade_id, order_id, user_id, match.taker_side, match.price, match.quantity,
              fees.rate(market, False), False, order.client_id, decision.broker_id, decision.active)
        maker_broker = maker_brokers.get(match.maker_order_id)
        # the resting order's broker is judged at this fill's time, by the same directory
        maker_active = None if maker_broker is None else entry.directory.is_active(maker_broker, entry.now)
        _fill(entry, market, trade_id, match.maker_order_id, match.maker_user_id, maker_side, match.price,
              match.quantity, maker_fees.rate(market, True), True, None, maker_broker, maker_active)
        resting = book.get(match.maker_order_id)
        remaining = resting.remaining if resting is not None else ZERO
        status = OrderStatus.PARTIALLY_FILLED if resting is not None else OrderStatus.FILLED
        change = entry.order_changes.get(match.maker_order_id)
        if change is None:
            change = entry.order_changes[match.maker_order_id] = OrderChange(remaining, status)
        change.filled += match.quantity
        change.filled_quote += match.price * match.quantity
        change.remaining, change.status = remaining, status


def _fill(entry: Entry, market: Market, trade_id: int, order_id: int, user_id: str, side: Side,
          price: Decimal, quantity: Decimal, rate: Decimal, is_maker: bool, client_id: int | None,
          broker_id: BrokerId | None, broker_active: bool | None) -> None:
    """One side of a trade: the user's balances (a maker's come out of what its resting order
    held; a taker's out of its reservation, when the order is done) and the fill."""
    notional = price * quantity
    if market.is_futures:
        fee, fee_symbol = notional * rate, market.quote
        entry.move(user_id, market.quote, -fee)
        _position(entry, user_id, market, side, quantity, notional)
        entry.marks[market.symbol] = price
    elif side is Side.BID:
        fee, fee_symbol = quantity * rate, market.base  # a buyer pays in what it receives
        entry.move(user_id, market.base, quantity - fee)
        if is_maker:  # a resting bid held price × quantity of quote
            entry.move(user_id, market.quote, ZERO, -notional)
    else:
        fee, fee_symbol = notional * rate, market.quote
        entry.move(user_id, market.quote, notional - fee)
        if is_maker:
            entry.move(user_id, market.base, ZERO, -quantity)
    fill_id = f"venue-{trade_id}-{'maker' if is_maker else 'taker'}"
    entry.fills.append(VenueFill(fill_id, trade_id, order_id, user_id, market, side, price, quantity, fee, fee_symbol,
                                 is_maker, client_id, broker_id, broker_active, entry.now))


def _release(entry: Entry, market: Market, resting: RestingOrder, status: OrderStatus, reason: str | None) -> None:
    """An order leaves the book: what it still holds (price × remaining of quote for a bid,
    the remaining base for an ask) goes back to its user."""
    if not market.is_futures:
        bid = resting.side is Side.BID
        held = resting.remaining * resting.price if bid else resting.remaining
        entry.move(resting.user_id, market.quote if bid else market.base, held, -held)
    change = entry.order_changes.get(resting.order_id)
    if change is None:
        change = entry.order_changes[resting.order_id] = OrderChange(ZERO, status)
    change.remaining, change.status, change.left_book, change.expiry_reason = ZERO, status, True, reason


def _expiry_reason(execution: Execution) -> str | None:
    if execution.status is not OrderStatus.EXPIRED:
        return None
    reason = execution.reason or ""
    if "self-trade" in reason:
        return "SelfTradePrevention"
    if "FOK" in reason:
        return "FillOrKill"
    if "liquidity" in reason:
        return "InsufficientLiquidity"
    return "ImmediateOrCancel"


def _walk(book: OrderBook, order: OrderInput) -> tuple[Decimal, Decimal]:
    """What a market order would spend, at most: (quote notional, base quantity), walking the
    opposite side of the book as it is now, a few levels at a time."""
    if order.quantity is None and order.quote_quantity is None:
        raise InvalidOrder("A market order needs a quantity or a quoteQuantity")
    notional = base = ZERO
    quantity_left, quote_left = order.quantity, order.quote_quantity
    seen, limit = 0, 16
    while True:
        bids, asks = book.depth(limit)
        levels = (asks if order.side is Side.BID else bids)[seen:]
        for price, size in levels:
            if quantity_left is not None:
                take = min(quantity_left, size)
                quantity_left -= take
            else:
                assert quote_left is not None
                fits = _FLOOR.divide(quote_left, price).quantize(book.step_size, rounding=ROUND_DOWN, context=_FLOOR)
                take = min(size, fits)
                quote_left -= take * price
            notional += take * price
            base += take
            if take < size or quantity_left == 0:  # the order ends inside this level
                return _spend(order, notional), base
        if len(levels) + seen < limit:  # the whole side was walked
            return _spend(order, notional), base
        seen, limit = limit, limit * 4


def _spend(order: OrderInput, notional: Decimal) -> Decimal:
    """A bid by quote quantity holds all of it (what it does not spend comes back)."""
    if order.side is Side.BID and order.quote_quantity is not None:
        return max(notional, order.quote_quantity)
    return notional


def _position(entry: Entry, user_id: str, market: Market, side: Side, quantity: Decimal,
              notional: Decimal) -> None:
    """A perpetual fill moves the position; closing it (back to zero, or through zero) realizes
    its PnL in the quote asset, exactly (`bkr.venue.perpetuals.settle_fill`)."""
    state = entry.position(user_id, market.symbol)
    after, cost, pnl = settle_fill(state.net_quantity, state.net_cost, side, quantity, notional)
    if pnl:
        entry.move(user_id, market.quote, pnl)
    entry.set_position(user_id, Position(market.symbol, after, cost, state.realized_pnl + pnl))
