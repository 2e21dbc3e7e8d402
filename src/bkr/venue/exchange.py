"""Order entry: the venue's one linear command stream, where attribution happens.

`Venue` is the facade the API calls. Every order, batch or cancel is one database transaction
that first locks the single `venue_state` row (`bkr.venue.persistence.lock_stream`), as Backpack
feeds all order entry through one stream. Inside it each order's broker id (its body's `brokerId`,
else the request's `X-Broker-Id`) is decided once, against the cached broker directory
(`bkr.venue.directory`); funds are held, the in-memory book
matches and fills settle (`bkr.venue.execution`, on the transaction's state in
`bkr.venue.entry`); at the end everything is written together with the same fills, typed,
ingested by the broker program (`bkr.venue.persistence.write_entry`): a fill is in both
histories or in neither.

Books live in memory, validated by `venue_state.sequence`: a process that finds the stored
sequence ahead of its own (another process traded) reloads the books that changed. The broker
directory is validated the same way, by the registry's row counts read in the same statement
as the lock, and so are the program's versions (the unknown-broker policy, USD rates and
plausibility of the month an order trades in), by their number: none costs a round trip of its own.
"""

import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal, localcontext

from sqlalchemy import Connection, Engine

from bkr.domain.clock import Clock
from bkr.domain.config import UnknownBrokerPolicy
from bkr.domain.errors import BkrError, NotFound
from bkr.domain.money import MONEY
from bkr.domain.periods import Month
from bkr.domain.program_versions import ProgramTimeline
from bkr.program.settings_versions import load_timeline
from bkr.venue import persistence
from bkr.venue.book import OrderBook
from bkr.venue.directory import BODY, HEADER, BrokerDecision, BrokerDirectory, count_problem, header_broker_id
from bkr.venue.entry import Entry
from bkr.venue.errors import BrokerIdRejected, InvalidMarket
from bkr.venue.execution import cancel_resting, execute_order
from bkr.venue.funding import apply_due_funding, market_mark
from bkr.venue.markets import Market, VenueConfig
from bkr.venue.orders import OrderInput, OrderView
from bkr.venue.perpetuals import last_interval_end


class Venue:
    """The venue of one process: its books and broker directory, and the use cases that change
    them. Safe to share between threads; any number of processes may run one on the same
    database."""

    def __init__(self, engine: Engine, config: VenueConfig, clock: Clock) -> None:
        self.engine = engine
        self.config = config
        self.clock = clock
        self._lock = threading.Lock()
        self._books: dict[str, OrderBook] | None = None
        self._sequence = -1
        self.directory = BrokerDirectory()
        self._program: ProgramTimeline | None = None  # the program's versions, as of `_program_versions`
        self._program_versions = -1
        self._funding_seen: datetime | None = None  # when this process last saw every due interval applied

    # -- use cases -------------------------------------------------------------------------------

    def execute(self, user_id: str, orders: Sequence[OrderInput], broker_header: str | None, *,
                batch: bool = False) -> list[OrderView | BkrError]:
        """Execute one order (or a batch, each with its own outcome) for `user_id`, each attributed
        by its body's `brokerId`, else by `broker_header`. A single order's error is raised; a
        batch's are returned in place. Under the `reject` policy, an order whose broker id is not
        an active broker, or is ambiguous, refuses the whole request: nothing of it trades."""
        rejected: BrokerIdRejected | None = None
        results: list[OrderView | BkrError] = []
        with self._entry() as entry:
            header = header_broker_id(broker_header)
            decisions = [self.directory.decide(header, order.broker_id, entry.now) for order in orders]
            problems = Counter(d for d in decisions if d.problem is not None)
            if problems:
                policy = self.program.config_for(Month.of(entry.now)).unknown_broker_policy
                reject = policy is UnknownBrokerPolicy.REJECT
                for decision, count in problems.items():
                    count_problem(entry.connection, decision, reject, count, entry.now)
                if reject:
                    index, first = next((i, d) for i, d in enumerate(decisions) if d.problem is not None)
                    rejected = _rejection(first, index if batch and _names_its_own_broker(first) else None)
            if rejected is None:
                for order, decision in zip(orders, decisions, strict=True):
                    try:
                        market = self._market(order.symbol)
                        results.append(execute_order(entry, market, self.book(market.symbol), user_id, order,
                                                     decision))
                    except BkrError as error:
                        if not batch:
                            raise
                        results.append(error)
        if rejected is not None:
            raise rejected
        return results

    def cancel(self, user_id: str, symbol: str, order_id: int | None, client_id: int | None) -> OrderView:
        with self._entry() as entry:
            market = self._market(symbol)
            found = persistence.open_order_ids(entry.connection, user_id, market.symbol, order_id, client_id)
            if not found:
                raise NotFound("Order not found", code="RESOURCE_NOT_FOUND")
            cancel_resting(entry, market, self.book(market.symbol), found[0])
        return self._views([found[0]])[0]

    def cancel_all(self, user_id: str, symbol: str) -> list[OrderView]:
        with self._entry() as entry:
            market = self._market(symbol)
            ids = sorted(persistence.open_order_ids(entry.connection, user_id, market.symbol))
            for order_id in ids:
                cancel_resting(entry, market, self.book(market.symbol), order_id)
        return self._views(ids)

    def depth(self, symbol: str, limit: int | None) -> tuple[list[tuple[Decimal, Decimal]],
                                                             list[tuple[Decimal, Decimal]], int]:
        """The book's levels (bids best first, asks best first) and its sequence (Backpack's
        `lastUpdateId`)."""
        market = self._market(symbol)
        with self._lock:
            try:
                with self.engine.connect() as connection:
                    self._catch_up(connection, persistence.stored_sequence(connection))
            except BaseException:
                self._books = None
                raise
            bids, asks = self.book(market.symbol).depth(limit)
            return bids, asks, self._sequence

    def settle_funding(self) -> None:
        """Apply the funding intervals that ended since this process last looked (an order-entry
        transaction does so first thing; this is one with no order, for the tick and the reads)."""
        if self._funding_due(self.clock()):
            with self._entry():
                pass

    def mark_prices(self) -> dict[str, Decimal | None]:
        """Every perpetual market's mark price now, from the books caught up to the stored sequence."""
        with self._lock:
            try:
                with self.engine.connect() as connection:
                    self._catch_up(connection, persistence.stored_sequence(connection))
                    assert self._books is not None
                    return {m.symbol: market_mark(connection, m, self._books.get(m.symbol))
                            for m in self.config.markets if m.is_futures}
            except BaseException:
                self._books = None
                raise

    def _funding_due(self, now: datetime) -> bool:
        """Whether an interval of some perpetual market ended since this process last saw them all
        applied (then the stream's transaction looks at what is stored, and applies what is due)."""
        seen = self._funding_seen
        return seen is None or any(last_interval_end(now, m.funding_interval) > seen
                                   for m in self.config.markets if m.is_futures)

    @property
    def program(self) -> ProgramTimeline:
        """The program's versions as the current order-entry transaction found them."""
        assert self._program is not None
        return self._program

    def book(self, symbol: str) -> OrderBook:
        assert self._books is not None
        return self._books[symbol]

    # -- the stream ------------------------------------------------------------------------------

    @contextmanager
    def _entry(self) -> Iterator[Entry]:
        """One order-entry transaction: the stream's lock, the books caught up, and on a failure
        after a book changed, the books dropped (they are rebuilt from the database next time).
        A refusal before any book changed (funds, a bad price, an unknown order) keeps them."""
        with self._lock:
            entry: Entry | None = None
            try:
                with self.engine.begin() as connection, localcontext(MONEY):
                    state = persistence.lock_stream(connection)
                    self._catch_up(connection, state.sequence)
                    self.directory.refresh(connection, state.registry_version)
                    if state.program_versions != self._program_versions:
                        self._program = load_timeline(connection)
                        self._program_versions = state.program_versions
                    now = self.clock()
                    funding_checked = self._funding_due(now)
                    if funding_checked:  # before any order: the positions and marks of the intervals' ends
                        apply_due_funding(connection, self.config, self._books or {}, now)
                    entry = Entry(connection, self.config, self.directory, now, state.sequence,
                                  state.last_order_id, state.last_trade_id, books=self._books or {})
                    yield entry
                    persistence.write_entry(entry, state.sequence, self.program)
                self._sequence = entry.sequence
                if funding_checked:
                    self._funding_seen = now
            except BaseException:
                if entry is None or entry.touched_books:
                    self._books = None
                    self._sequence = -1
                raise

    def _catch_up(self, connection: Connection, stored: int) -> None:
        """Bring the books up to the stored sequence: all of them the first time (or after a
        failure dropped them), else those another process changed since this one last saw it."""
        if self._books is not None and stored == self._sequence:
            return
        if self._books is None:
            self._books = {m.symbol: _new_book(m) for m in self.config.markets}
            symbols = [m.symbol for m in self.config.markets]
        else:
            symbols = sorted(persistence.symbols_changed_since(connection, self._sequence) & set(self._books))
            for symbol in symbols:
                self._books[symbol] = _new_book(self.config.market(symbol))  # type: ignore[arg-type]
        if symbols:
            for symbol, resting in persistence.resting_orders(connection, symbols):
                self._books[symbol].rest(resting)
        self._sequence = stored

    def _market(self, symbol: str) -> Market:
        market = self.config.market(symbol)
        if market is None:
            raise InvalidMarket(f"Invalid market: {symbol!r}", field="symbol")
        return market

    def _views(self, order_ids: Sequence[int]) -> list[OrderView]:
        with self.engine.connect() as connection:
            return persistence.orders_by_id(connection, order_ids)


def _new_book(market: Market) -> OrderBook:
    return OrderBook(market.symbol, tick_size=market.tick_size, step_size=market.step_size)


def _names_its_own_broker(decision: BrokerDecision) -> bool:
    """Whether the decision is about an order's own `brokerId` (not only the request's header)."""
    return decision.ambiguous is not None or (decision.sent is not None and decision.sent.source == BODY)


def _rejection(decision: BrokerDecision, index: int | None) -> BrokerIdRejected:
    """The refusal, under the `reject` policy, of a request with an order of `decision`; `index`
    names the order of a batch whose own `brokerId` is refused."""
    assert decision.problem is not None
    if decision.ambiguous is not None:
        advice = (f"this exchange rejects orders whose {HEADER} and {BODY} name different brokers (send the same "
                  f"id in both, or only one of them)")
    else:
        advice = (f"this exchange rejects orders whose {decision.source} is not an active broker (send no "
                  f"{decision.source} to trade unattributed)")
    where = "" if index is None else f"order {index}: "
    return BrokerIdRejected(f"{where}{decision.problem}; {advice}", field=decision.source)
