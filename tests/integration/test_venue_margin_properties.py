"""Random order flows on the venue, on both databases, checked after every order against figures
computed here from what the venue stored (balances, positions, the last trade prices):

- no balance of any account is ever below zero;
- an order the venue refuses changes nothing;
- after an order it accepts, its account's equity covers its maintenance margin, unless the
  account was below it already and the order increased no position; and an order that opened or
  increased a position (or spent collateral on spot) leaves at least the initial margin of the
  positions covered.

Accounts start small (1,000 USDC) and prices move freely, so that the limits are reached often,
accounts fall below maintenance, and some owe more than they have."""

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, select

from bkr.domain.clock import system_clock
from bkr.domain.errors import BkrError
from bkr.domain.fills import Side
from bkr.domain.money import D
from bkr.store.tables import venue_balances, venue_fills, venue_orders, venue_positions
from bkr.venue.accounts import open_account
from bkr.venue.book import OrderType, TimeInForce
from bkr.venue.exchange import Venue
from bkr.venue.markets import VenueConfig
from bkr.venue.orders import OrderInput
from program_support import use_program

CONFIG = VenueConfig(starting_balances={"USDC": D(1000), "SOL": D(20)})
PERPS = ("SOL_USDC_PERP", "ETH_USDC_PERP")
MARKETS = ("SOL_USDC_PERP", "SOL_USDC_PERP", "SOL_USDC_PERP", "ETH_USDC_PERP", "SOL_USDC")
REFUSALS = {"INSUFFICIENT_MARGIN", "INSUFFICIENT_FUNDS", "INVALID_ORDER"}
USERS = 4

_runs = itertools.count()

# mostly near 100, so that orders cross; now and then far off, so that marks jump
prices = st.one_of(st.integers(97, 103), st.integers(97, 103), st.integers(97, 103), st.integers(50, 150)).map(Decimal)
quantities = st.integers(1, 500).map(lambda n: Decimal(n).scaleb(-1))  # 0.1 .. 50: up to 5x per order
limits = st.tuples(st.just("limit"), st.integers(0, USERS - 1), st.sampled_from(MARKETS), st.sampled_from(Side),
                   prices, quantities, st.sampled_from([TimeInForce.GTC, TimeInForce.GTC, TimeInForce.IOC]))
markets = st.tuples(st.just("market"), st.integers(0, USERS - 1), st.sampled_from(MARKETS), st.sampled_from(Side),
                    quantities)
cancels = st.tuples(st.just("cancel"), st.integers(0, USERS - 1), st.sampled_from(MARKETS))
# two accounts trade 0.1 at a price far from 100: the mark jumps, and positions gain or lose
jumps = st.tuples(st.integers(0, USERS - 1), st.integers(1, USERS - 1), st.sampled_from(PERPS),
                  st.integers(60, 140).map(Decimal)).map(lambda j: [
                      ("limit", j[0], j[2], Side.ASK, j[3], D("0.1"), TimeInForce.GTC),
                      ("limit", (j[0] + j[1]) % USERS, j[2], Side.BID, j[3], D("0.1"), TimeInForce.IOC)])
one = st.one_of(limits, limits, limits, markets, markets, cancels).map(lambda step: [step])
# first two pairs of accounts open leveraged positions against each other (4x to 9.5x at 100)
openings = st.tuples(st.integers(40, 95).map(Decimal), st.integers(40, 95).map(Decimal)).map(lambda q: [
    ("limit", 0, "SOL_USDC_PERP", Side.ASK, D(100), q[0], TimeInForce.GTC),
    ("market", 1, "SOL_USDC_PERP", Side.BID, q[0]),
    ("limit", 2, "SOL_USDC_PERP", Side.BID, D(100), q[1], TimeInForce.GTC),
    ("market", 3, "SOL_USDC_PERP", Side.ASK, q[1])])
steps = st.tuples(openings, st.lists(st.one_of(one, one, one, jumps), min_size=1, max_size=25)).map(
    lambda flow: flow[0] + [step for group in flow[1] for step in group])


@dataclass(frozen=True)
class Account:
    """An account as stored, and its margin computed here from it."""

    balances: dict[str, tuple[Decimal, Decimal]]
    positions: dict[str, Decimal]
    equity: Decimal
    maintenance: Decimal
    initial_of_positions: Decimal


def account(connection: Connection, user_id: str, marks: dict[str, Decimal]) -> Account:
    balances = {r.asset: (r.available, r.locked) for r in connection.execute(
        select(venue_balances).where(venue_balances.c.user_id == user_id))}
    equity, notional, positions = balances["USDC"][0], D(0), {}
    for row in connection.execute(select(venue_positions).where(venue_positions.c.user_id == user_id)):
        if row.net_quantity:
            mark = marks[row.symbol]  # a position was traded, so its market has a last price
            equity += row.net_quantity * mark - row.net_cost
            notional += abs(row.net_quantity) * mark
            positions[row.symbol] = row.net_quantity
    return Account(balances, positions, equity, CONFIG.maintenance_margin * notional,
                   CONFIG.initial_margin * notional)


def mark_prices(connection: Connection) -> dict[str, Decimal]:
    """Each perpetual market's mark, by the venue's documented rule: the middle of best bid, best
    ask and last trade when the book has both sides, else the last trade."""
    marks = {}
    for symbol in PERPS:
        last = connection.execute(select(venue_fills.c.price).where(venue_fills.c.symbol == symbol)
                                  .order_by(venue_fills.c.trade_id.desc()).limit(1)).scalar()
        if last is None:
            continue
        resting = (venue_orders.c.symbol == symbol) & (venue_orders.c.remaining > 0) & venue_orders.c.status.in_(
            ("New", "PartiallyFilled")) & venue_orders.c.price.is_not(None)
        bids = [p for p, side in connection.execute(select(venue_orders.c.price, venue_orders.c.side).where(resting))
                if side == "Bid"]
        asks = [p for p, side in connection.execute(select(venue_orders.c.price, venue_orders.c.side).where(resting))
                if side == "Ask"]
        marks[symbol] = sorted((max(bids), min(asks), last))[1] if bids and asks else last
    return marks


def everything(engine: Engine, users: Sequence[str]) -> tuple[dict[str, Account], list[tuple[object, ...]]]:
    with engine.connect() as connection:
        marks = mark_prices(connection)
        accounts = {u: account(connection, u, marks) for u in users}
        orders = [tuple(r) for r in connection.execute(
            select(venue_orders.c.order_id, venue_orders.c.status, venue_orders.c.remaining,
                   venue_orders.c.expiry_reason)
            .where(venue_orders.c.user_id.in_(users)).order_by(venue_orders.c.order_id))]
    return accounts, orders


def increased(before: Account, after: Account) -> bool:
    for symbol in set(before.positions) | set(after.positions):
        was, now = before.positions.get(symbol, D(0)), after.positions.get(symbol, D(0))
        if abs(now) > abs(was) or was * now < 0:
            return True
    return False


def request(step: tuple[object, ...]) -> OrderInput:
    kind, _, symbol, side = step[:4]
    if kind == "limit":
        _, _, _, _, price, quantity, tif = step
        return OrderInput(symbol, side, OrderType.LIMIT, price=price, quantity=quantity,  # type: ignore[arg-type]
                          time_in_force=tif)  # type: ignore[arg-type]
    return OrderInput(symbol, side, OrderType.MARKET, quantity=step[4])  # type: ignore[arg-type]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps)
def test_no_balance_goes_negative_and_an_accepted_order_leaves_its_account_above_maintenance(
        engine: Engine, flow: list[tuple[object, ...]]) -> None:
    run = next(_runs)  # accounts of this example, apart from the earlier examples' on the same database
    users = [f"r{run}-u{n}" for n in range(USERS)]
    use_program(engine)
    venue = Venue(engine, CONFIG, system_clock)
    with engine.begin() as connection:
        for user in users:
            open_account(connection, CONFIG, user, system_clock(), actor="ops")
    for step in flow:
        user = users[int(step[1])]  # type: ignore[call-overload]
        before, orders_before = everything(engine, users)
        if step[0] == "cancel":
            venue.cancel_all(user, str(step[2]))
            continue
        try:
            venue.execute(user, [request(step)], None)
        except BkrError as error:
            assert error.code in REFUSALS, error
            event(f"refused: {error.code}")
            assert everything(engine, users) == (before, orders_before)  # a refusal changes nothing
            continue
        after, orders_after = everything(engine, users)
        for cancelled in set(orders_after) - set(orders_before):
            if cancelled[3] in ("InsufficientFunds", "InsufficientMargin"):
                event(f"a resting order cancelled when reached: {cancelled[3]}")
        for name, state in after.items():
            for asset, (available, locked) in state.balances.items():
                assert available >= 0 and locked >= 0, (name, asset, available, locked)
            if state.equity < state.maintenance:
                event("an account is below maintenance")
            if state.equity < 0:
                event("an account owes more than it has")
        mine, was = after[user], before[user]
        grew = increased(was, mine) or (step[2] == "SOL_USDC" and step[3] is Side.BID)
        below = mine.equity < mine.maintenance
        event(f"accepted; {'grew' if grew else 'no growth'}; {'below' if below else 'above'} maintenance")
        assert not below or (was.equity < was.maintenance and not grew), (step, was, mine)
        if grew:
            assert mine.equity >= mine.initial_of_positions, (step, was, mine)
    for user in users:  # leave the books empty for the next example
        for symbol in set(MARKETS):
            venue.cancel_all(user, symbol)
