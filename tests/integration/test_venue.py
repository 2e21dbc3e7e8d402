"""The venue's order entry on both databases: fills land in the venue and in the broker program
together or not at all, as the very rows an import of the same fills would store; attribution
follows the registry without a restart; balances are held and released exactly; several
processes share one book."""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from integration_support import write_fills
from sqlalchemy import Connection, Engine, Table, delete, select

from bkr.api.app import create_app
from bkr.domain.clock import system_clock
from bkr.domain.config import ProgramConfig, UnknownBrokerPolicy
from bkr.domain.money import D, canonical
from bkr.domain.operators import Role
from bkr.domain.registry import BrokerStatus
from bkr.program import operators, registry
from bkr.program.importer import import_file
from bkr.program.writer import Tally
from bkr.settings import ServiceSettings
from bkr.store.tables import (
    aggregate_totals,
    aggregates,
    daily_volumes,
    fill_conflicts,
    fill_keys,
    fill_rejections,
    fills,
    venue_balances,
    venue_broker_ids_seen,
    venue_fills,
    venue_orders,
)
from bkr.venue.accounts import create_user_key
from bkr.venue.client import BackpackClient, BackpackError
from bkr.venue.entry import program_trade_id
from bkr.venue.markets import DEFAULT_MARKETS, VenueConfig, market_from_symbol

SINCE = datetime(2026, 1, 1, tzinfo=UTC)


def import_now(engine: Engine, path: Path, rows: list[dict[str, Any]]) -> Tally:
    """Import rows as a file, on the clock the venue trades on (its fills are dated now)."""
    return import_file(engine, write_fills(path, rows), clock=system_clock, actor="ops")


@dataclass
class Venue:
    engine: Engine
    client: TestClient
    config: VenueConfig

    def user(self, user_id: str, broker_id: int | str | None = None, referral_code: str | None = None
             ) -> BackpackClient:
        with self.engine.begin() as connection:
            pair = create_user_key(connection, self.config, user_id, datetime.now(UTC), referral_code=referral_code,
                                   actor="ops")
        return BackpackClient("http://testserver", pair.api_key, pair.secret, broker_id=broker_id, http=self.client)

    def broker(self, broker_id: int) -> None:
        with self.engine.begin() as connection:
            registry.enroll_broker(connection, broker_id, f"acct-{broker_id}", f"Broker {broker_id}", "trading_bot",
                                   SINCE, actor="ops")
            registry.change_broker_status(connection, broker_id, BrokerStatus.ACTIVE, SINCE, SINCE, actor="ops")

    def balance(self, user_id: str, asset: str) -> tuple[Decimal, Decimal]:
        with self.engine.connect() as connection:
            row = connection.execute(select(venue_balances.c.available, venue_balances.c.locked).where(
                (venue_balances.c.user_id == user_id) & (venue_balances.c.asset == asset))).one()
        return row.available, row.locked


def _venue(engine: Engine, config: VenueConfig, program: ProgramConfig) -> Iterator[Venue]:
    app = create_app(engine, program, ServiceSettings(), venue_config=config)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Venue(engine, client, config)


@pytest.fixture
def venue(engine: Engine) -> Iterator[Venue]:
    yield from _venue(engine, VenueConfig(), ProgramConfig())


def test_an_order_s_fills_are_in_the_venue_and_in_the_broker_program_together(venue: Venue) -> None:
    venue.broker(1400)
    maker, taker = venue.user("maker"), venue.user("taker", broker_id=1400)
    maker.order(symbol="SOL_USDC", side="Ask", orderType="Limit", price="150.25", quantity="4")
    order = taker.order(symbol="SOL_USDC", side="Bid", orderType="Market", quantity="3")
    assert (order["status"], order["executedQuantity"], order["executedQuoteQuantity"]) == ("Filled", "3", "450.75")
    with venue.engine.connect() as connection:
        in_venue = {r.fill_id: r for r in connection.execute(select(venue_fills))}
        in_program = {r.fill_id: r for r in connection.execute(select(fills))}
    assert set(in_venue) == set(in_program) and len(in_venue) == 2
    taker_fill = next(r for r in in_program.values() if r.user_id == "taker")
    maker_fill = next(r for r in in_program.values() if r.user_id == "maker")
    assert (taker_fill.broker_id, taker_fill.attribution, taker_fill.volume_usd) == (1400, "counted", D("450.75"))
    assert (taker_fill.fee, taker_fill.fee_symbol, taker_fill.fee_usd) == (D("0.003"), "SOL", D("0.45075"))
    assert (maker_fill.broker_id, maker_fill.attribution) == (None, "no_broker")  # the maker sent no id
    assert (maker_fill.fee, maker_fill.fee_symbol) == (D("0.3606"), "USDC")  # 0.08% of 450.75


def test_an_order_that_trades_with_its_own_user_s_resting_order_counts_for_nobody(venue: Venue) -> None:
    venue.broker(1400)
    alice, bob = venue.user("alice", broker_id=1400), venue.user("bob", broker_id=1400)
    alice.order(symbol="SOL_USDC", side="Ask", orderType="Limit", price="150", quantity="4")
    bob.order(symbol="SOL_USDC", side="Bid", orderType="Limit", price="150", quantity="1")  # 150 USD, counted
    with venue.engine.connect() as connection:
        before = {t.name: connection.execute(select(t)).all() for t in (aggregates, aggregate_totals, daily_volumes)}

    mine = alice.order(symbol="SOL_USDC", side="Bid", orderType="Limit", price="150", quantity="3",
                       selfTradePrevention="Allow")

    assert (mine["status"], mine["executedQuantity"]) == ("Filled", "3")
    with venue.engine.connect() as connection:
        after = {t.name: connection.execute(select(t)).all() for t in (aggregates, aggregate_totals, daily_volumes)}
    assert after == before  # the broker's volume is the two sides of alice's trade with bob alone
    assert sum(row.volume_usd for row in after["aggregates"]) == D(300)
    with venue.engine.connect() as connection:
        stored = connection.execute(select(fills.c.fill_id, fills.c.user_id, fills.c.trade_id, fills.c.attribution)
                                    .order_by(fills.c.fill_id)).all()
        in_venue = connection.execute(select(venue_fills.c.fill_id, venue_fills.c.trade_id)
                                      .order_by(venue_fills.c.fill_id)).all()
    assert stored == [("venue-1-maker", "alice", "venue-1", "counted"), ("venue-1-taker", "bob", "venue-1", "counted"),
                      ("venue-2-maker", "alice", "venue-2", "self_trade"),
                      ("venue-2-taker", "alice", "venue-2", "self_trade")]
    assert [(f, program_trade_id(t)) for f, t in in_venue] == [(f, t) for f, _, t, _ in stored]


EUR = market_from_symbol("SOL_EUR", D("0.01"), D("0.01"))  # no USD rate for EUR is configured
REFUSALS = {
    # the market's quote has no USD rate: the program cannot price the fill
    "no USD rate": (VenueConfig(markets=(*DEFAULT_MARKETS, EUR), starting_balances={"EUR": D(10_000),
                                                                                     "SOL": D(100)}),
                    ProgramConfig(), "SOL_EUR", "EUR", "EUR"),
    # the venue charges 0.10% and the program takes no fee above 0.05% of the notional as plausible
    "implausible fee": (VenueConfig(starting_balances={"USDC": D(10_000), "SOL": D(100)}),
                        ProgramConfig(max_fee_share=D("0.0005")), "SOL_USDC", "USDC", "fee: "),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_fill_the_program_refuses_leaves_no_trace_anywhere(engine: Engine, case: str) -> None:
    config, program, symbol, quote, reason = REFUSALS[case]
    for venue in _venue(engine, config, program):
        maker, taker = venue.user("maker"), venue.user("taker")
        maker.order(symbol=symbol, side="Ask", orderType="Limit", price="100", quantity="1")
        with pytest.raises(BackpackError) as refused:
            taker.order(symbol=symbol, side="Bid", orderType="Limit", price="100", quantity="1")
        assert refused.value.status == 500 and refused.value.code == "SERVER_ERROR"
        assert reason in str(refused.value)
        with engine.connect() as connection:
            assert connection.execute(select(venue_fills)).all() == []
            assert connection.execute(select(fills)).all() == []
            orders = connection.execute(select(venue_orders.c.user_id, venue_orders.c.status)).all()
            for kept in (fill_rejections, fill_conflicts, aggregates, aggregate_totals, daily_volumes):
                assert connection.execute(select(kept)).all() == []  # the program's record of it went too
        assert orders == [("maker", "New")]
        assert venue.balance("taker", quote) == (D(10_000), D(0))
        assert venue.balance("maker", "SOL") == (D(99), D(1))
        depth = maker.depth(symbol)  # the book was rebuilt from the database: the ask still rests
        assert depth["asks"] == [["100", "1"]]


PROGRAM_HISTORY = (fills, fill_keys, aggregates, aggregate_totals, daily_volumes)


def _program_history(connection: Connection) -> dict[str, list[tuple[tuple[str, str], ...]]]:
    """Every row the program keeps of its fills, each value as its exact repr (on PostgreSQL a
    NUMERIC keeps its scale: 0.3606 and 0.360600 are equal numbers but not the same row). An
    import's fills carry its import id, which venue fills do not have: it is left out."""

    def exact(table: Table) -> list[tuple[tuple[str, str], ...]]:
        rows = connection.execute(select(table)).mappings()
        return sorted(tuple((k, repr(v)) for k, v in row.items() if k != "import_id") for row in rows)

    return {table.name: exact(table) for table in PROGRAM_HISTORY}


def _as_a_file_states_them(connection: Connection, config: VenueConfig) -> list[dict[str, Any]]:
    """The venue's fills as an exchange's fill file would state them, from the venue's own
    records: its fills (with their trade, as the program names it), and the broker id each
    order was sent with."""
    broker_of = dict(connection.execute(select(venue_orders.c.order_id, venue_orders.c.broker_id)).all())
    rows = []
    for fill in connection.execute(select(venue_fills).order_by(venue_fills.c.fill_id)):
        market = config.market(fill.symbol)
        assert market is not None
        rows.append({"fill_id": fill.fill_id, "order_id": str(fill.order_id), "user_id": fill.user_id,
                     "symbol": fill.symbol, "market_type": market.market_type.value, "side": fill.side,
                     "price": canonical(fill.price), "quantity": canonical(fill.quantity),
                     "fee": canonical(fill.fee), "fee_symbol": fill.fee_symbol, "is_maker": fill.is_maker,
                     "timestamp": fill.ts.isoformat(), "broker_id": broker_of[fill.order_id], "via_api": True,
                     "fill_type": "User", "trade_id": program_trade_id(fill.trade_id)})
    return rows


def test_a_venue_fill_is_stored_as_the_very_row_an_import_of_the_same_fill_stores(venue: Venue,
                                                                                    tmp_path: Path) -> None:
    venue.broker(1400)
    venue.broker(2200)
    with venue.engine.begin() as connection:  # 2200 is enrolled but suspended: its orders trade, unpaid
        registry.change_broker_status(connection, 2200, BrokerStatus.SUSPENDED, SINCE + timedelta(days=1),
                                      SINCE, actor="ops")
        registry.enroll_affiliate(connection, "acct-aff", "An affiliate", SINCE, actor="ops")
        registry.set_referral_rate(connection, "acct-aff", "FRIEND", D("0.1"), SINCE, SINCE, actor="ops")
    maker, taker = venue.user("maker"), venue.user("taker", broker_id=1400, referral_code="FRIEND")
    # amounts with trailing zeros, and a maker fee of 450.75 × 0.0008 = 0.360600
    maker.order(symbol="SOL_USDC", side="Ask", orderType="Limit", price="150.250", quantity="4.00")
    taker.order(symbol="SOL_USDC", side="Bid", orderType="Market", quantity="3.00")
    suspended, unknown = venue.user("resting", broker_id=2200), venue.user("seller", broker_id=9999)
    suspended.order(symbol="SOL_USDC", side="Bid", orderType="Limit", price="149", quantity="1")
    unknown.order(symbol="SOL_USDC", side="Ask", orderType="Limit", price="149", quantity="1")
    venue.user("maker", broker_id=1400).order(symbol="SOL_USDC_PERP", side="Ask", orderType="Limit",
                                             price="100.50", quantity="2")
    taker.order(symbol="SOL_USDC_PERP", side="Bid", orderType="Market", quantity="2")
    with venue.engine.connect() as connection:
        from_the_venue = _program_history(connection)
        as_a_file = _as_a_file_states_them(connection, venue.config)
        outcomes = sorted(connection.execute(select(fills.c.user_id, fills.c.symbol, fills.c.attribution,
                                                    fills.c.affiliate_rate)).all())
    assert outcomes == [("maker", "SOL_USDC", "no_broker", None), ("maker", "SOL_USDC_PERP", "counted", D(0)),
                        ("resting", "SOL_USDC", "broker_inactive", None),
                        ("seller", "SOL_USDC", "broker_unknown", None),
                        ("taker", "SOL_USDC", "counted", D("0.1")), ("taker", "SOL_USDC_PERP", "counted", D("0.1"))]

    again = import_now(venue.engine, tmp_path / "again.csv", as_a_file)  # the same content keys: duplicates
    assert (again.accepted, again.duplicates, again.conflicts, again.rejected) == (0, 6, 0, 0)
    with venue.engine.begin() as connection:  # the program forgets them, and imports them from the file
        for table in PROGRAM_HISTORY:
            connection.execute(delete(table))
    imported = import_now(venue.engine, tmp_path / "fills.csv", as_a_file)
    assert (imported.accepted, imported.counted) == (6, 3)
    with venue.engine.connect() as connection:
        assert _program_history(connection) == from_the_venue


def test_a_broker_suspended_in_the_registry_is_refused_at_the_next_order(engine: Engine) -> None:
    program = ProgramConfig(unknown_broker_policy=UnknownBrokerPolicy.REJECT)
    for venue in _venue(engine, VenueConfig(), program):
        venue.broker(2200)
        trader = venue.user("trader", broker_id=2200)
        trader.order(symbol="SOL_USDC", side="Bid", orderType="Limit", price="10", quantity="1")
        with engine.begin() as connection:  # another process of the exchange suspends the broker
            registry.change_broker_status(connection, 2200, BrokerStatus.SUSPENDED, datetime.now(UTC),
                                          datetime.now(UTC), actor="ops")
        with pytest.raises(BackpackError) as refused:
            trader.order(symbol="SOL_USDC", side="Bid", orderType="Limit", price="10", quantity="1")
        assert refused.value.status == 400 and refused.value.code == "INVALID_CLIENT_REQUEST"
        assert "2200" in str(refused.value) and "suspended" in str(refused.value)
        with engine.connect() as connection:
            seen = connection.execute(select(venue_broker_ids_seen)).one()
            assert connection.execute(select(venue_orders)).all()[0].broker_id == 2200
            assert len(connection.execute(select(venue_orders)).all()) == 1
        assert (seen.header, seen.orders, seen.rejected) == ("2200", 0, 1)


def test_under_the_ignore_policy_an_unknown_id_trades_unattributed_and_is_counted(venue: Venue) -> None:
    maker, taker = venue.user("maker"), venue.user("taker", broker_id="4242")
    maker.order(symbol="SOL_USDC", side="Ask", orderType="Limit", price="20", quantity="1")
    taker.order(symbol="SOL_USDC", side="Bid", orderType="Limit", price="20", quantity="1")
    with venue.engine.connect() as connection:
        taker_fill = connection.execute(select(fills).where(fills.c.user_id == "taker")).one()
        seen = connection.execute(select(venue_broker_ids_seen)).one()
    assert (taker_fill.broker_id, taker_fill.attribution) == (4242, "broker_unknown")
    assert (seen.header, seen.orders, seen.rejected) == ("4242", 1, 0)
    with venue.engine.begin() as connection:
        token = operators.add_operator(connection, "vera", Role.VIEWER, datetime.now(UTC), created_by=None).token
    listed = venue.client.get("/v1/admin/venue/broker-ids", headers={"Authorization": f"Bearer {token}"}).json()
    assert [(i["header"], i["orders"], i["rejected"], i["reason"]) for i in listed] == [
        ("4242", 1, 0, "X-Broker-Id 4242 is not an enrolled broker")]


def test_a_resting_bid_holds_its_price_times_quantity_and_a_cancel_gives_it_back(venue: Venue) -> None:
    trader = venue.user("trader")
    placed = trader.order(symbol="SOL_USDC", side="Bid", orderType="Limit", price="99.99", quantity="3")
    assert venue.balance("trader", "USDC") == (D(1_000_000) - D("299.97"), D("299.97"))
    trader.signed("DELETE", "/api/v1/order", {"symbol": "SOL_USDC", "orderId": placed["id"]})
    assert venue.balance("trader", "USDC") == (D(1_000_000), D(0))
    with pytest.raises(BackpackError) as refused:
        trader.order(symbol="SOL_USDC", side="Bid", orderType="Limit", price="1000", quantity="1001")
    assert refused.value.code == "INSUFFICIENT_FUNDS"
    assert venue.balance("trader", "USDC") == (D(1_000_000), D(0))


def test_a_bid_filled_below_its_limit_gets_the_difference_back(venue: Venue) -> None:
    maker, taker = venue.user("maker"), venue.user("taker")
    maker.order(symbol="SOL_USDC", side="Ask", orderType="Limit", price="95", quantity="1")
    taker.order(symbol="SOL_USDC", side="Bid", orderType="Limit", price="100", quantity="2")  # 1 fills, 1 rests
    available, held = venue.balance("taker", "USDC")
    assert held == D(100)  # the rest of the order: 1 at its limit
    assert available == D(1_000_000) - D(95) - D(100)
    assert venue.balance("taker", "SOL") == (D(10_000) + D(1) - D("0.001"), D(0))
    assert venue.balance("maker", "USDC") == (D(1_000_000) + D(95) - D("0.076"), D(0))


def test_two_processes_trade_on_one_book(engine: Engine) -> None:
    first = _venue(engine, VenueConfig(), ProgramConfig())
    second = _venue(engine, VenueConfig(), ProgramConfig())
    a, b = next(first), next(second)
    maker = a.user("maker")
    taker = b.user("taker")
    maker.order(symbol="ETH_USDC", side="Ask", orderType="Limit", price="3000", quantity="0.5")
    assert taker.depth("ETH_USDC")["asks"] == [["3000", "0.5"]]  # the second process caught up
    taker.order(symbol="ETH_USDC", side="Bid", orderType="Market", quoteQuantity="900")
    assert maker.depth("ETH_USDC")["asks"] == [["3000", "0.2"]]  # and the first one too
    with engine.connect() as connection:
        assert connection.execute(select(venue_orders.c.status).where(venue_orders.c.user_id == "maker")
                                  ).scalar() == "PartiallyFilled"
    for generator in (first, second):
        generator.close()


def test_a_perpetual_position_realizes_its_pnl_in_usdc_when_closed(venue: Venue) -> None:
    maker, trader = venue.user("maker"), venue.user("trader")
    maker.order(symbol="SOL_USDC_PERP", side="Ask", orderType="Limit", price="100", quantity="2")
    trader.order(symbol="SOL_USDC_PERP", side="Bid", orderType="Market", quantity="2")  # long 2 at 100
    maker.order(symbol="SOL_USDC_PERP", side="Bid", orderType="Limit", price="110", quantity="2")
    trader.order(symbol="SOL_USDC_PERP", side="Ask", orderType="Market", quantity="2")  # closed at 110
    fees = D("0.0005") * (D(200) + D(220))
    assert venue.balance("trader", "USDC") == (D(1_000_000) + D(20) - fees, D(0))
    assert venue.balance("maker", "USDC") == (D(1_000_000) - D(20) - D("0.0002") * D(420), D(0))
    assert trader.signed("GET", "/api/v1/position") == []  # flat again
