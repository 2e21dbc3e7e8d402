"""One transaction of order entry: what it read and what it changes, kept until its end.

An `Entry` lives for one order, batch or cancel. It reads a user's fee tier, balances and
positions once, then keeps them as named records (`bkr.venue.accounts.Balance` and `Position`,
the same records the read side returns) while the orders execute; it collects the orders placed
(`PlacedOrder`), what happened to orders already resting (`OrderChange`) and the fills made
(`VenueFill`), and `bkr.venue.persistence.write_entry` writes them all at once. A `VenueFill`
is also what the broker program receives, as a typed `DecidedFill`: nothing is turned into text.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType

from sqlalchemy import Connection, bindparam, select

from bkr.domain.errors import NotFound
from bkr.domain.fills import USER_FILL, Fill, Side
from bkr.domain.money import MONEY, ZERO
from bkr.domain.periods import as_utc
from bkr.domain.registry import BrokerId
from bkr.program.writer import DecidedFill
from bkr.store.tables import venue_accounts, venue_balances, venue_fills, venue_orders, venue_positions
from bkr.venue.accounts import Balance, Position
from bkr.venue.book import OrderBook, OrderStatus
from bkr.venue.directory import BrokerDirectory
from bkr.venue.markets import Market, VenueConfig
from bkr.venue.orders import OrderView
from bkr.venue.perpetuals import mark_price

# Built once: building and keying a statement costs more than SQLite takes to run it.
_ACCOUNTS = (
    select(venue_accounts.c.user_id, venue_accounts.c.fee_tier, venue_balances.c.asset, venue_balances.c.available,
           venue_balances.c.locked)
    .select_from(venue_accounts.outerjoin(venue_balances, (venue_balances.c.user_id == venue_accounts.c.user_id)
                                          & venue_balances.c.asset.in_(bindparam("assets", expanding=True))))
    .where(venue_accounts.c.user_id.in_(bindparam("users", expanding=True))))
_MAKER_BROKERS = select(venue_orders.c.order_id, venue_orders.c.broker_id).where(
    venue_orders.c.order_id.in_(bindparam("ids", expanding=True)))
_BALANCE = select(venue_balances.c.available, venue_balances.c.locked).where(
    (venue_balances.c.user_id == bindparam("u")) & (venue_balances.c.asset == bindparam("a")))
_POSITION = select(venue_positions.c.net_quantity, venue_positions.c.net_cost, venue_positions.c.realized_pnl).where(
    (venue_positions.c.user_id == bindparam("u")) & (venue_positions.c.symbol == bindparam("s")))
_POSITIONS = select(venue_positions.c.symbol, venue_positions.c.net_quantity, venue_positions.c.net_cost,
                    venue_positions.c.realized_pnl).where(venue_positions.c.user_id == bindparam("u"))
_LAST_PRICE = (select(venue_fills.c.price).where(venue_fills.c.symbol == bindparam("s"))
               .order_by(venue_fills.c.trade_id.desc()).limit(1))
_FEE_TIER = select(venue_accounts.c.fee_tier).where(venue_accounts.c.user_id == bindparam("u"))


@dataclass(frozen=True, slots=True)
class PlacedOrder:
    """An order this transaction placed: how its client sees it, and what only storage keeps."""

    view: OrderView
    remaining: Decimal  # what still rests on the book
    locked: Decimal  # what its remainder holds of the user's funds
    sequence: int  # its priority on the book


@dataclass(slots=True)
class OrderChange:
    """What this transaction did to an order placed earlier: its fills, and where it stands."""

    remaining: Decimal
    status: OrderStatus
    filled: Decimal = ZERO
    filled_quote: Decimal = ZERO
    left_book: bool = False  # cancelled or expired here: `expiry_reason` replaces the stored one
    expiry_reason: str | None = None


@dataclass(frozen=True, slots=True)
class VenueFill:
    """One side of one trade, as the venue records it and hands it to the broker program."""

    fill_id: str
    trade_id: int
    order_id: int
    user_id: str
    market: Market
    side: Side
    price: Decimal
    quantity: Decimal
    fee: Decimal
    fee_symbol: str
    is_maker: bool
    client_id: int | None
    broker_id: BrokerId | None  # the broker its order was sent with
    broker_active: bool | None  # whether that broker was active at the fill's time (None: not enrolled)
    at: datetime

    def for_program(self) -> DecidedFill:
        """The fill as the broker program stores it, with the venue's judgement of its broker.
        Amounts are given in canonical form, as a fill file states them (`1.5`, not `1.50`), so
        that the program stores the same row for this fill as an import of it would. Both sides
        of a trade carry its id, in the venue's own namespace as fill ids are (`venue-17`): the
        program matches them, and a trade of one user with itself counts for nobody."""
        fill = Fill(fill_id=self.fill_id, order_id=str(self.order_id), user_id=self.user_id,
                    symbol=self.market.symbol, market_type=self.market.market_type, side=self.side,
                    price=_canonical_value(self.price), quantity=_canonical_value(self.quantity),
                    fee=_canonical_value(self.fee), fee_symbol=self.fee_symbol, is_maker=self.is_maker,
                    timestamp=as_utc(self.at), broker_id=self.broker_id, via_api=True, fill_type=USER_FILL,
                    trade_id=program_trade_id(self.trade_id))
        return DecidedFill(fill, self.broker_active)


def program_trade_id(trade_id: int) -> str:
    """A venue trade's id as the broker program knows it: apart from the trade ids of fills the
    exchange sends in files, as `venue-17-maker` is apart from their fill ids."""
    return f"venue-{trade_id}"


def _canonical_value(amount: Decimal) -> Decimal:
    """The amount `canonical(amount)` reads back as: no trailing zeros, no exponent. Only its
    scale changes (PostgreSQL's NUMERIC keeps a scale; `0.360600` and `0.3606` are stored apart)."""
    if amount.is_zero():
        return ZERO
    normal = amount.normalize(MONEY)
    exponent = normal.as_tuple().exponent
    assert isinstance(exponent, int)  # a finite amount
    return normal.quantize(Decimal(1), context=MONEY) if exponent > 0 else normal  # 1E+2 is 100


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """An `Entry` as it was before one order's matching, to go back to if an account cannot
    take what the order did (see `Entry.checkpoint`)."""

    balances: dict[tuple[str, str], Balance]
    positions: dict[tuple[str, str], Position]
    order_changes: dict[int, OrderChange]
    fills: int
    placed: int
    marks: dict[str, Decimal | None]
    last_trade_id: int


@dataclass
class Entry:
    """What one order-entry transaction changes, kept until its end and written at once."""

    connection: Connection
    config: VenueConfig
    directory: BrokerDirectory
    now: datetime
    sequence: int
    last_order_id: int
    last_trade_id: int
    balances: dict[tuple[str, str], Balance] = field(default_factory=dict)  # (user, asset)
    stored_balances: set[tuple[str, str]] = field(default_factory=set)
    tiers: dict[str, int] = field(default_factory=dict)
    placed: list[PlacedOrder] = field(default_factory=list)
    order_changes: dict[int, OrderChange] = field(default_factory=dict)
    fills: list[VenueFill] = field(default_factory=list)
    positions: dict[tuple[str, str], Position] = field(default_factory=dict)  # (user, symbol), as changed
    stored_positions: set[tuple[str, str]] = field(default_factory=set)
    touched_books: set[str] = field(default_factory=set)
    # every market's book (an account's margin counts its resting orders in all of them)
    books: Mapping[str, OrderBook] = field(default_factory=lambda: MappingProxyType({}))
    marks: dict[str, Decimal | None] = field(default_factory=dict)  # symbol -> last trade price
    read_positions: dict[tuple[str, str], Position] = field(default_factory=dict)  # as stored
    position_users: set[str] = field(default_factory=set)  # users all of whose positions were read

    def next_order_id(self) -> int:
        self.last_order_id += 1
        return self.last_order_id

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence

    def next_trade_id(self) -> int:
        self.last_trade_id += 1
        return self.last_trade_id

    def balance(self, user_id: str, asset: str) -> Balance:
        key = (user_id, asset)
        balance = self.balances.get(key)
        if balance is None:
            row = self.connection.execute(_BALANCE, {"u": user_id, "a": asset}).first()
            if row is not None:
                self.stored_balances.add(key)
                balance = Balance(asset, row.available, row.locked)
            else:
                balance = Balance(asset, ZERO, ZERO)
            self.balances[key] = balance
        return balance

    def prefetch(self, user_ids: Sequence[str], assets: Sequence[str]) -> None:
        """Read the fee tiers and balances an order will touch in one statement, not one each."""
        users = sorted({u for u in user_ids if u not in self.tiers or any((u, a) not in self.balances for a in assets)})
        if not users:
            return
        for row in self.connection.execute(_ACCOUNTS, {"users": users, "assets": list(assets)}):
            self.tiers[row.user_id] = int(row.fee_tier)
            key = (row.user_id, row.asset)
            if row.asset is not None and key not in self.balances:
                self.balances[key] = Balance(row.asset, row.available, row.locked)
                self.stored_balances.add(key)
        for user_id in users:
            for asset in assets:
                self.balances.setdefault((user_id, asset), Balance(asset, ZERO, ZERO))

    def move(self, user_id: str, asset: str, available: Decimal = ZERO, locked: Decimal = ZERO) -> None:
        """Add to a user's available and locked (held) amounts of an asset."""
        balance = self.balance(user_id, asset)
        self.balances[(user_id, asset)] = Balance(asset, balance.available + available, balance.locked + locked)

    def fee_tier(self, user_id: str) -> int:
        tier = self.tiers.get(user_id)
        if tier is None:
            tier = self.connection.execute(_FEE_TIER, {"u": user_id}).scalar()
            if tier is None:
                raise NotFound(f"user {user_id} has no trading account", code="RESOURCE_NOT_FOUND")
            self.tiers[user_id] = tier = int(tier)
        return tier

    def position(self, user_id: str, symbol: str) -> Position:
        """A user's position in a market as this transaction left it (flat if it has none).
        Reading it changes nothing: only `set_position` is written."""
        key = (user_id, symbol)
        position = self.positions.get(key) or self.read_positions.get(key)
        if position is None:
            position = Position(symbol, ZERO, ZERO, ZERO)
            if user_id not in self.position_users:
                row = self.connection.execute(_POSITION, {"u": user_id, "s": symbol}).first()
                if row is not None:
                    self.stored_positions.add(key)
                    position = Position(symbol, row.net_quantity, row.net_cost, row.realized_pnl)
            self.read_positions[key] = position
        return position

    def read_all_positions(self, user_id: str) -> None:
        """Read all of a user's positions in one statement (its margin needs every market)."""
        if user_id in self.position_users:
            return
        for row in self.connection.execute(_POSITIONS, {"u": user_id}):
            key = (user_id, row.symbol)
            self.stored_positions.add(key)
            self.read_positions.setdefault(key, Position(row.symbol, row.net_quantity, row.net_cost,
                                                         row.realized_pnl))
        self.position_users.add(user_id)

    def set_position(self, user_id: str, position: Position) -> None:
        self.positions[(user_id, position.symbol)] = position

    def mark(self, symbol: str) -> Decimal | None:
        """A market's mark price (`bkr.venue.perpetuals.mark_price`) as this transaction leaves
        it: its last trade price, this transaction's trades included, held inside its book's
        best bid and ask; the index price before its first trade (None: neither)."""
        if symbol not in self.marks:
            self.marks[symbol] = self.connection.execute(_LAST_PRICE, {"s": symbol}).scalar()
        book = self.books.get(symbol)
        market = self.config.market(symbol)
        return mark_price(book.best_bid() if book is not None else None,
                          book.best_ask() if book is not None else None, self.marks[symbol],
                          market.index_price if market is not None else None)

    def checkpoint(self) -> Checkpoint:
        """What an order's matching may change here, to `restore` if it must be undone."""
        return Checkpoint(dict(self.balances), dict(self.positions),
                          {k: replace(v) for k, v in self.order_changes.items()}, len(self.fills),
                          len(self.placed), dict(self.marks), self.last_trade_id)

    def restore(self, checkpoint: Checkpoint) -> None:
        self.balances = checkpoint.balances
        self.positions = checkpoint.positions
        self.order_changes = checkpoint.order_changes
        del self.fills[checkpoint.fills:]
        del self.placed[checkpoint.placed:]
        self.marks = checkpoint.marks
        self.last_trade_id = checkpoint.last_trade_id

    def brokers_of(self, order_ids: Sequence[int]) -> dict[int, BrokerId | None]:
        """The broker each order was sent with (resting orders' fills carry it too); an order
        keeps only an id its directory decision made, so it is in the range."""
        if not order_ids:
            return {}
        found = {p.view.order_id: _broker_id(p.view.broker_id) for p in self.placed}
        wanted = sorted(set(order_ids) - set(found))
        if wanted:
            found.update({int(o): _broker_id(b) for o, b in self.connection.execute(_MAKER_BROKERS, {"ids": wanted})})
        return found


def _broker_id(stored: int | None) -> BrokerId | None:
    return None if stored is None else BrokerId(stored)
