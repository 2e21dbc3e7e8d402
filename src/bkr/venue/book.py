"""One market's limit order book: price-time priority matching, as Backpack Exchange matches.

Pure and in memory — no clock, no I/O, no database — so that the sandbox venue, the tests and a
benchmark drive the very same matching. Priority is the caller's: each order carries a `sequence`,
and the book never reads a clock. Storage rebuilds a book with `rest`, in priority order.

Layout, chosen for speed in CPython: each side keeps a sorted list of level keys (`bisect`) and a
FIFO `deque` per price level, so taking the best order is O(1) and adding a level is one C-level
insertion; the keys are the prices for bids and the negated prices for asks, which puts the best
level at the end of the list on both sides. An order id index makes `get` and `cancel` direct, and
an index by user gives one account's resting orders (`orders_of`) without a scan of the book.

`revert` undoes the last `submit` exactly (fills, self-trade cancels, the rested remainder, each
order back in its place in its queue): the venue matches first and checks the accounts after, on
what really happened, and puts the book back when an account cannot take the result.

Conventions (what `Execution.status` and `reason` say):
- `Filled`: the whole quantity executed. A market order by quote quantity is `Filled` once the quote
  left over cannot buy (or sell for) one `step_size` at the next price on the book.
- `New` / `PartiallyFilled`: only for a GTC limit order whose remainder now rests (nothing / some
  executed).
- `Expired`: the order, or its remainder, was dropped; `reason` says why — `NO_LIQUIDITY` (an IOC or
  market order found nothing more within its limit), `SELF_TRADE` (the taker's self-trade prevention
  stopped it; this also drops a GTC remainder), `FOK_UNFILLABLE` (nothing changed), `POST_ONLY_WOULD_TAKE`
  (nothing changed). `Cancelled` is never produced by `submit`; it is for explicit cancels.

Arithmetic runs in `bkr.domain.money`'s exact context: a product that would round raises.
"""

from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from bkr.domain.errors import InvalidInput
from bkr.domain.fills import Side
from bkr.domain.money import MONEY, ZERO, add, mul, sub

NO_LIQUIDITY = "no liquidity"
SELF_TRADE = "self-trade prevention"
FOK_UNFILLABLE = "FOK order cannot be filled in full"
POST_ONLY_WOULD_TAKE = "post-only order would take liquidity"

# what `submit` changed, for `revert`: a maker's remaining lowered, a maker taken off the book,
# the taker's remainder rested
_FILLED, _TAKEN, _RESTED = 0, 1, 2


class OrderType(StrEnum):
    LIMIT = "Limit"
    MARKET = "Market"


class TimeInForce(StrEnum):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"


class SelfTradePrevention(StrEnum):
    REJECT_TAKER = "RejectTaker"
    REJECT_MAKER = "RejectMaker"
    REJECT_BOTH = "RejectBoth"
    ALLOW = "Allow"


class OrderStatus(StrEnum):
    NEW = "New"
    PARTIALLY_FILLED = "PartiallyFilled"
    FILLED = "Filled"
    CANCELLED = "Cancelled"
    EXPIRED = "Expired"


class BookError(InvalidInput):
    """A request the book refuses: missing or malformed price/quantity, off-grid values, a duplicate id."""

    code = "invalid_order"


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """An incoming order. Limit: `price` and `quantity`. Market: exactly one of `quantity` (base)
    and `quote_quantity` (quote to spend for a Bid, to receive for an Ask)."""

    order_id: int
    user_id: str
    side: Side
    order_type: OrderType
    price: Decimal | None
    quantity: Decimal | None
    quote_quantity: Decimal | None
    time_in_force: TimeInForce = TimeInForce.GTC
    post_only: bool = False
    self_trade_prevention: SelfTradePrevention = SelfTradePrevention.REJECT_TAKER
    sequence: int = 0


@dataclass(slots=True)
class RestingOrder:
    """An order on the book. The book hands out copies, so changing one never changes the book."""

    order_id: int
    user_id: str
    side: Side
    price: Decimal
    remaining: Decimal
    sequence: int
    self_trade_prevention: SelfTradePrevention


@dataclass(frozen=True, slots=True)
class Match:
    """One trade between a taker and a resting maker, at the maker's price."""

    maker_order_id: int
    maker_user_id: str
    taker_order_id: int
    taker_user_id: str
    taker_side: Side
    price: Decimal
    quantity: Decimal


@dataclass(frozen=True, slots=True)
class Execution:
    """What `submit` did to one order (see the module docstring for status and reason)."""

    matches: tuple[Match, ...]
    status: OrderStatus
    executed_quantity: Decimal
    executed_quote_quantity: Decimal
    resting: RestingOrder | None
    cancelled_makers: tuple[RestingOrder, ...]
    reason: str | None


def _copy(order: RestingOrder) -> RestingOrder:
    return RestingOrder(order.order_id, order.user_id, order.side, order.price, order.remaining,
                        order.sequence, order.self_trade_prevention)


def _is_multiple(value: Decimal, step: Decimal) -> bool:
    try:
        return MONEY.remainder(value, step).is_zero()
    except InvalidOperation:  # the quotient has more digits than the context: far off any grid
        return False


class _BookSide:
    """One side's price levels. Keys are prices (bids) or negated prices (asks): best is last."""

    __slots__ = ("is_bid", "keys", "levels")

    def __init__(self, side: Side) -> None:
        self.is_bid = side is Side.BID
        self.keys: list[Decimal] = []
        self.levels: dict[Decimal, deque[RestingOrder]] = {}

    def key(self, price: Decimal) -> Decimal:
        return price if self.is_bid else price.copy_negate()  # copy_negate is exact, unary minus rounds

    def best_price(self) -> Decimal | None:
        if not self.keys:
            return None
        key = self.keys[-1]
        return key if self.is_bid else key.copy_negate()

    def add(self, order: RestingOrder) -> None:
        key = self.key(order.price)
        level = self.levels.get(key)
        if level is None:
            self.levels[key] = deque((order,))
            insort(self.keys, key)
        elif level[-1].sequence <= order.sequence:  # the usual case: the newest order goes last
            level.append(order)
        else:  # a rebuild out of order: keep the level sorted by sequence, ties in arrival order
            position = next(i for i, queued in enumerate(level) if queued.sequence > order.sequence)
            level.insert(position, order)

    def put_first(self, order: RestingOrder) -> None:
        """Put back an order taken from the front of its level (undoing a fill or a cancel)."""
        key = self.key(order.price)
        level = self.levels.get(key)
        if level is None:
            self.levels[key] = deque((order,))
            insort(self.keys, key)
        else:
            level.appendleft(order)

    def remove(self, order: RestingOrder) -> None:
        key = self.key(order.price)
        level = self.levels[key]
        level.remove(order)
        if not level:
            self.drop_level(key)

    def drop_level(self, key: Decimal) -> None:
        del self.levels[key]
        del self.keys[bisect_left(self.keys, key)]

    def depth(self, limit: int | None) -> list[tuple[Decimal, Decimal]]:
        keys = self.keys if limit is None else self.keys[-limit:] if limit > 0 else []
        return [(key if self.is_bid else key.copy_negate(), _level_total(self.levels[key])) for key in reversed(keys)]


def _level_total(level: deque[RestingOrder]) -> Decimal:
    result = ZERO
    for order in level:
        result = add(result, order.remaining)
    return result


class OrderBook:
    """A single market's order book. `submit` matches and may rest; nothing else matches."""

    __slots__ = ("_asks", "_bids", "_by_user", "_orders", "_undo", "step_size", "symbol", "tick_size")

    def __init__(self, symbol: str, *, tick_size: Decimal, step_size: Decimal) -> None:
        for name, value in (("tick_size", tick_size), ("step_size", step_size)):
            if not isinstance(value, Decimal) or not value.is_finite() or value <= 0:
                raise BookError(f"{name} must be a positive Decimal, not {value!r}", field=name)
        self.symbol = symbol
        self.tick_size = tick_size
        self.step_size = step_size
        self._bids = _BookSide(Side.BID)
        self._asks = _BookSide(Side.ASK)
        self._orders: dict[int, RestingOrder] = {}
        self._by_user: dict[str, dict[int, RestingOrder]] = {}
        # what the last `submit` changed, in order: (_FILLED, maker, remaining before), (_TAKEN,
        # maker, remaining when taken off the book), (_RESTED, the taker's remainder, ...)
        self._undo: list[tuple[int, RestingOrder, Decimal]] = []

    # --- reading ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._orders)

    def get(self, order_id: int) -> RestingOrder | None:
        order = self._orders.get(order_id)
        return None if order is None else _copy(order)

    def orders(self) -> list[RestingOrder]:
        return [_copy(order) for order in self._orders.values()]

    def orders_of(self, user_id: str) -> list[RestingOrder]:
        """One user's resting orders (copies), in no particular order."""
        mine = self._by_user.get(user_id)
        return [] if mine is None else [_copy(order) for order in mine.values()]

    def best_bid(self) -> Decimal | None:
        return self._bids.best_price()

    def best_ask(self) -> Decimal | None:
        return self._asks.best_price()

    def depth(self, limit: int | None = None) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        """(bids, asks), each best first, as (price, total remaining) per level; `limit` levels a side."""
        return self._bids.depth(limit), self._asks.depth(limit)

    # --- changing without matching ---------------------------------------------------------------

    def rest(self, order: RestingOrder) -> None:
        """Put an order on the book as it is, without matching: rebuilding a book from storage.

        Refuses what a live book could never hold (off-grid values, a duplicate id, a cross), since
        a corrupt book would match wrongly from then on."""
        if order.order_id in self._orders:
            raise BookError(f"order {order.order_id} is already on the book", field="order_id")
        self._check_price(order.price)
        self._check_quantity(order.remaining, "remaining")
        best = self._asks.best_price() if order.side is Side.BID else self._bids.best_price()
        if best is not None and (order.price >= best if order.side is Side.BID else order.price <= best):
            raise BookError(f"order {order.order_id} at {order.price} would cross the book", field="price")
        stored = _copy(order)
        self._side(order.side).add(stored)
        self._index(stored)

    def cancel(self, order_id: int) -> RestingOrder | None:
        """Remove an order; returns it as it was, or None if it is not on the book."""
        order = self._orders.get(order_id)
        if order is None:
            return None
        self._side(order.side).remove(order)
        self._unindex(order)
        return order

    def reduce(self, order_id: int, remaining: Decimal) -> None:
        """Lower an order's remaining quantity in place; it keeps its priority (a larger one would not)."""
        order = self._orders.get(order_id)
        if order is None:
            raise BookError(f"order {order_id} is not on the book", field="order_id")
        self._check_quantity(remaining, "remaining")
        if remaining > order.remaining:
            raise BookError(f"cannot raise order {order_id} from {order.remaining} to {remaining}", field="remaining")
        order.remaining = remaining

    # --- matching --------------------------------------------------------------------------------

    def submit(self, order: OrderRequest) -> Execution:
        """Match an order against the book, then rest a GTC limit remainder. Raises BookError if invalid."""
        self._undo.clear()
        self._validate(order)
        opposite = self._asks if order.side is Side.BID else self._bids
        limit = order.price if order.order_type is OrderType.LIMIT else None
        if order.post_only:
            best = opposite.best_price()
            if best is not None and limit is not None and self._crosses(order.side, best, limit):
                return _refused(POST_ONLY_WOULD_TAKE)
        if order.time_in_force is TimeInForce.FOK:
            assert order.quantity is not None  # _validate: FOK orders have a base quantity
            if self._fillable(order, opposite, limit) < order.quantity:
                return _refused(FOK_UNFILLABLE)
        if order.quote_quantity is not None:
            return self._match_quote(order, opposite, order.quote_quantity)
        assert order.quantity is not None
        return self._match_base(order, opposite, limit, order.quantity)

    def revert(self) -> None:
        """Undo the last `submit`, exactly: every maker back at its place in its queue with what it
        had left, the taker's remainder off the book. Only right after that submit: a `cancel`,
        `rest` or `reduce` in between is not undone, and the next `submit` forgets it."""
        for kind, order, remaining in reversed(self._undo):
            if kind == _RESTED:
                self._side(order.side).remove(order)
                self._unindex(order)
            elif kind == _TAKEN:
                order.remaining = remaining
                self._side(order.side).put_first(order)
                self._index(order)
            else:
                order.remaining = remaining
        self._undo.clear()

    def _match_base(self, order: OrderRequest, opposite: _BookSide, limit: Decimal | None,
                    quantity: Decimal) -> Execution:
        matches: list[Match] = []
        cancelled: list[RestingOrder] = []
        remaining = quantity
        quote = ZERO
        stopped_by_stp = False
        keys, levels, is_bid, undo = opposite.keys, opposite.levels, order.side is Side.BID, self._undo
        while remaining and keys and not stopped_by_stp:
            key = keys[-1]
            level = levels[key]
            price = level[0].price
            if limit is not None and (price > limit if is_bid else price < limit):
                break
            while level and remaining:
                maker = level[0]
                if maker.user_id == order.user_id and order.self_trade_prevention is not SelfTradePrevention.ALLOW:
                    stopped_by_stp = self._prevent_self_trade(order, level, cancelled)
                    if stopped_by_stp:
                        break
                    continue
                filled = maker.remaining if maker.remaining < remaining else remaining
                matches.append(Match(maker.order_id, maker.user_id, order.order_id, order.user_id, order.side,
                                     maker.price, filled))
                remaining = sub(remaining, filled)
                quote = add(quote, mul(maker.price, filled))
                undo.append((_FILLED, maker, maker.remaining))
                maker.remaining = sub(maker.remaining, filled)
                if not maker.remaining:
                    self._take_first(level, maker)
            if not level:
                opposite.drop_level(key)
        executed = sub(quantity, remaining)
        if not remaining:
            return Execution(tuple(matches), OrderStatus.FILLED, executed, quote, None, tuple(cancelled), None)
        if stopped_by_stp:
            return Execution(tuple(matches), OrderStatus.EXPIRED, executed, quote, None, tuple(cancelled), SELF_TRADE)
        if limit is not None and order.time_in_force is TimeInForce.GTC:
            resting = RestingOrder(order.order_id, order.user_id, order.side, limit, remaining, order.sequence,
                                   order.self_trade_prevention)
            self._side(order.side).add(resting)
            self._index(resting)
            self._undo.append((_RESTED, resting, remaining))
            status = OrderStatus.PARTIALLY_FILLED if matches else OrderStatus.NEW
            return Execution(tuple(matches), status, executed, quote, _copy(resting), tuple(cancelled), None)
        return Execution(tuple(matches), OrderStatus.EXPIRED, executed, quote, None, tuple(cancelled), NO_LIQUIDITY)

    def _match_quote(self, order: OrderRequest, opposite: _BookSide, budget: Decimal) -> Execution:
        """A market order by quote quantity: at each price take the most whole steps the quote left covers."""
        matches: list[Match] = []
        cancelled: list[RestingOrder] = []
        left = budget
        executed = ZERO
        stopped_by_stp = False
        dust = False  # the quote left cannot pay for one step at the best price: as filled as it can be
        keys, levels, step, undo = opposite.keys, opposite.levels, self.step_size, self._undo
        while keys and not stopped_by_stp and not dust:
            key = keys[-1]
            level = levels[key]
            step_cost = mul(level[0].price, step)
            while level:
                if left < step_cost:
                    dust = True
                    break
                maker = level[0]
                if maker.user_id == order.user_id and order.self_trade_prevention is not SelfTradePrevention.ALLOW:
                    stopped_by_stp = self._prevent_self_trade(order, level, cancelled)
                    if stopped_by_stp:
                        break
                    continue
                affordable = mul(MONEY.divide_int(left, step_cost), step)
                filled = maker.remaining if maker.remaining < affordable else affordable
                matches.append(Match(maker.order_id, maker.user_id, order.order_id, order.user_id, order.side,
                                     maker.price, filled))
                executed = add(executed, filled)
                left = sub(left, mul(maker.price, filled))
                undo.append((_FILLED, maker, maker.remaining))
                maker.remaining = sub(maker.remaining, filled)
                if not maker.remaining:
                    self._take_first(level, maker)
            if not level:
                opposite.drop_level(key)
        spent = sub(budget, left)
        if dust or not left:
            return Execution(tuple(matches), OrderStatus.FILLED, executed, spent, None, tuple(cancelled), None)
        reason = SELF_TRADE if stopped_by_stp else NO_LIQUIDITY
        return Execution(tuple(matches), OrderStatus.EXPIRED, executed, spent, None, tuple(cancelled), reason)

    def _prevent_self_trade(self, order: OrderRequest, level: deque[RestingOrder],
                            cancelled: list[RestingOrder]) -> bool:
        """Apply the taker's mode to the maker at the front of `level`; True when the taker must stop."""
        mode = order.self_trade_prevention
        if mode is not SelfTradePrevention.REJECT_TAKER:  # RejectMaker and RejectBoth remove the maker
            maker = level[0]
            self._take_first(level, maker)
            cancelled.append(_copy(maker))
        return mode is not SelfTradePrevention.REJECT_MAKER

    def _fillable(self, order: OrderRequest, opposite: _BookSide, limit: Decimal | None) -> Decimal:
        """How much of a FOK order would execute, without changing anything: the same walk as matching."""
        assert order.quantity is not None
        wanted = order.quantity
        found = ZERO
        mode = order.self_trade_prevention
        for key in reversed(opposite.keys):
            level = opposite.levels[key]
            if limit is not None and not self._crosses(order.side, level[0].price, limit):
                break
            for maker in level:
                if maker.user_id == order.user_id and mode is not SelfTradePrevention.ALLOW:
                    if mode is SelfTradePrevention.REJECT_MAKER:
                        continue
                    return found
                found = add(found, maker.remaining)
                if found >= wanted:
                    return found
        return found

    # --- validation ------------------------------------------------------------------------------

    def _validate(self, order: OrderRequest) -> None:
        if order.order_id in self._orders:
            raise BookError(f"order {order.order_id} is already on the book", field="order_id")
        if order.order_type is OrderType.LIMIT:
            if order.price is None:
                raise BookError("a limit order needs a price", field="price")
            if order.quantity is None:
                raise BookError("a limit order needs a quantity", field="quantity")
            if order.quote_quantity is not None:
                raise BookError("a limit order takes a quantity, not a quote quantity", field="quote_quantity")
            self._check_price(order.price)
            self._check_quantity(order.quantity, "quantity")
            if order.post_only and order.time_in_force is not TimeInForce.GTC:
                raise BookError("a post-only order must be GTC: it can only rest", field="time_in_force")
            return
        if order.price is not None:
            raise BookError("a market order takes no price", field="price")
        if order.post_only:
            raise BookError("a market order cannot be post-only", field="post_only")
        if (order.quantity is None) == (order.quote_quantity is None):
            raise BookError("a market order needs exactly one of quantity and quote quantity", field="quantity")
        if order.quantity is not None:
            self._check_quantity(order.quantity, "quantity")
            return
        assert order.quote_quantity is not None
        if not order.quote_quantity.is_finite() or order.quote_quantity <= 0:
            raise BookError(f"quote quantity must be positive, not {order.quote_quantity}", field="quote_quantity")
        if order.time_in_force is TimeInForce.FOK:
            raise BookError("a FOK market order needs a base quantity", field="time_in_force")

    def _check_price(self, price: Decimal) -> None:
        if not price.is_finite() or price <= 0:
            raise BookError(f"price must be positive, not {price}", field="price")
        if not _is_multiple(price, self.tick_size):
            raise BookError(f"price {price} is not a multiple of the tick size {self.tick_size}", field="price")

    def _check_quantity(self, quantity: Decimal, field: str) -> None:
        if not quantity.is_finite() or quantity <= 0:
            raise BookError(f"{field} must be positive, not {quantity}", field=field)
        if not _is_multiple(quantity, self.step_size):
            raise BookError(f"{field} {quantity} is not a multiple of the step size {self.step_size}", field=field)

    # --- small helpers ---------------------------------------------------------------------------

    def _side(self, side: Side) -> _BookSide:
        return self._bids if side is Side.BID else self._asks

    def _take_first(self, level: deque[RestingOrder], maker: RestingOrder) -> None:
        """Take the maker at the front of `level` off the book (filled, or cancelled by the
        taker's self-trade prevention); `revert` puts it back. An emptied level is dropped by the
        caller's loop."""
        level.popleft()
        self._unindex(maker)
        self._undo.append((_TAKEN, maker, maker.remaining))

    def _index(self, order: RestingOrder) -> None:
        self._orders[order.order_id] = order
        mine = self._by_user.get(order.user_id)
        if mine is None:
            self._by_user[order.user_id] = {order.order_id: order}
        else:
            mine[order.order_id] = order

    def _unindex(self, order: RestingOrder) -> None:
        del self._orders[order.order_id]
        mine = self._by_user[order.user_id]
        del mine[order.order_id]
        if not mine:
            del self._by_user[order.user_id]

    @staticmethod
    def _crosses(taker_side: Side, maker_price: Decimal, limit: Decimal) -> bool:
        return maker_price <= limit if taker_side is Side.BID else maker_price >= limit


def _refused(reason: str) -> Execution:
    """An order turned away before it touched the book (FOK, post-only): nothing changed."""
    return Execution((), OrderStatus.EXPIRED, ZERO, ZERO, None, (), reason)
