"""Each user's month (`user_totals`), on both databases: it stays the sum of the aggregates
through imports, late fills, corrections, self-trades, retroactive changes and rebuilds, and the
users report read from it, sorted and paged by the database, is the projection's own figures in
the projection's own order, page for page."""

from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import pytest
from alembic import command
from integration_support import (
    BROKER,
    JUNE,
    MAY,
    NOW,
    add_broker,
    add_code,
    add_users,
    close,
    correction,
    fill,
    import_rows,
)
from sqlalchemy import Engine, select

from bkr.domain.fill_audit import PricedPart, zero_payout_reason
from bkr.domain.fills import MarketType
from bkr.domain.money import ZERO, add, neg
from bkr.domain.payout import DEFAULT_CAP
from bkr.domain.periods import Month, parse_instant
from bkr.domain.registry import BrokerStatus
from bkr.domain.statements import StatementLine
from bkr.program import registry
from bkr.program.close import compute_statements
from bkr.program.periods import closed_months
from bkr.program.reports import UserFigures, user_breakdown
from bkr.store import db
from bkr.store.tables import aggregates, user_totals

OTHER = 2200
# ids whose order differs between byte order and a language's collation (case, punctuation, accents)
USERS = ("alice", "bob", "Zed", "_under", "a-b", "ab", "é", "Émile", "10", "9")


def _totals_from_aggregates(engine: Engine) -> dict[tuple[int, Month, str], tuple[Decimal, ...]]:
    """What `user_totals` must hold: the aggregates summed per (broker, period, user)."""
    expected: dict[tuple[int, Month, str], list[Decimal]] = {}
    with engine.connect() as connection:
        for row in connection.execute(select(aggregates)):
            sums = expected.setdefault((row.broker_id, row.period, row.user_id), [ZERO] * 5)
            if row.kind == "fill" and row.fill_month == row.period:
                slot = 0 if row.market_type == MarketType.SPOT.value else 1
                sums[slot] = add(sums[slot], row.volume_usd)
                sums[2] = add(sums[2], row.fee_usd)
                sums[3] = add(sums[3], row.fee_base_usd)
            else:
                sums[4] = add(sums[4], row.fee_base_usd)
    return {key: tuple(sums) for key, sums in expected.items()}


def _stored_totals(engine: Engine) -> dict[tuple[int, Month, str], tuple[Decimal, ...]]:
    with engine.connect() as connection:
        rows = connection.execute(select(user_totals)).all()
    for row in rows:
        assert row.rank_key == neg(add(row.fee_base_usd, row.adjustment_fee_base_usd)), row
    return {(r.broker_id, r.period, r.user_id): (r.spot_volume_usd, r.futures_volume_usd, r.fee_usd, r.fee_base_usd,
                                                 r.adjustment_fee_base_usd) for r in rows}


def _projected_users(engine: Engine, broker_id: int, month: Month) -> list[UserFigures]:
    """The users of an open month as the projection's own lines give them, in the report's order."""
    with engine.connect() as connection:
        projection = compute_statements(connection, month, broker_id)
    by_user: dict[str, list[Decimal]] = {}
    lines_of: dict[str, list[StatementLine]] = {}
    for line in projection[0].lines if projection else ():
        sums = by_user.setdefault(line.user_id, [ZERO] * 6)
        lines_of.setdefault(line.user_id, []).append(line)
        if line.is_adjustment:
            sums[4] = add(sums[4], line.fee_base)
        else:
            slot = 1 if line.market_type.is_futures else 0
            sums[slot] = add(sums[slot], line.volume_usd)
            sums[2] = add(sums[2], line.fee_usd)
            sums[3] = add(sums[3], line.fee_base)
        sums[5] = add(sums[5], line.payout_exact)
    return sorted((UserFigures(user, *sums, tuple(sorted({line.affiliate_rate for line in lines_of[user]})),
                               zero_payout_reason([PricedPart(line.fee_base, line.affiliate_rate, line.effective_rate,
                                                              line.payout_exact) for line in lines_of[user]],
                                                  DEFAULT_CAP))
                   for user, sums in by_user.items()),
                  key=lambda u: (neg(add(u.fee_base, u.adjustment_fee_base)), u.user_id))


def _check(engine: Engine, months: Sequence[Month] = (MAY, JUNE)) -> None:
    """`user_totals` is the aggregates' sum, and every page of every open month's report is the
    projection's."""
    assert _stored_totals(engine) == _totals_from_aggregates(engine)
    with engine.connect() as connection:
        closed = closed_months(connection)
    for month in months:
        if month in closed:
            continue
        for broker_id in (BROKER, OTHER):
            expected = _projected_users(engine, broker_id, month)
            for limit, offset in ((1000, 0), (1, 0), (3, 0), (3, 3), (4, 7), (2, max(0, len(expected) - 1)),
                                  (5, len(expected)), (5, 10_000)):
                with engine.connect() as connection:
                    page = user_breakdown(connection, broker_id, month, limit=limit, offset=offset)
                assert (page.source, page.total) == ("projection", len(expected))
                assert list(page.users) == expected[offset:offset + limit], (broker_id, month, limit, offset)


@pytest.fixture
def traded(engine: Engine, tmp_path: Path) -> Engine:
    """Two brokers; alice signed up with code C (0.40), the other users without a code; May's
    fills of every user, with ties in fee base, maker rebates and both market types."""
    add_broker(engine)
    add_broker(engine, OTHER)
    add_code(engine, "C", "0.40")
    add_users(engine, "alice", code="C")
    add_users(engine, *USERS[1:])
    rows = []
    for number, user in enumerate(USERS):
        rows.append(fill(f"m-{number}", user=user, fee=str(Decimal(number % 3) / 10 + Decimal("0.1"))))
        rows.append(fill(f"p-{number}", user=user, market="PERP", at="2024-05-11T12:00:00Z",
                         fee="-0.01" if number % 4 == 0 else "0.0000000000000001"))
        if number % 2:
            rows.append(fill(f"o-{number}", user=user, broker=OTHER, fee="0.2"))  # a tie for each of them
    import_rows(engine, tmp_path / "may.csv", rows)
    return engine


def test_the_users_totals_follow_every_way_fills_reach_the_aggregates(traded: Engine, tmp_path: Path) -> None:
    engine = traded
    _check(engine)

    close(engine, MAY)
    import_rows(engine, tmp_path / "june.csv", [
        fill("j-1", user="bob", at="2024-06-02T00:00:00Z", fee="0.3"),
        fill("j-2", user="Zed", at="2024-06-02T00:00:00Z", market="PERP", fee="0.3"),
        fill("late-1", user="é", at="2024-05-30T00:00:00Z", fee="0.4"),  # a late fill: a June adjustment
        correction(fill("m-1", user="bob", fee="0.2"), "m-1-bust", quantity="-1", fee="-0.2"),  # below zero
    ])
    _check(engine)

    # both sides of one trade are alice's: the side counted first is taken back
    import_rows(engine, tmp_path / "self.csv", [fill("s-1", user="alice", at="2024-06-03T00:00:00Z", fee="0.5",
                                                     trade_id="t-1")])
    _check(engine)
    import_rows(engine, tmp_path / "self-other.csv", [fill("s-2", user="alice", at="2024-06-03T00:00:00Z",
                                                           fee="0.5", side="Ask", trade_id="t-1")])
    _check(engine)

    # a rate change inside the open month rebuilds June's aggregates from the fills
    with engine.begin() as connection:
        registry.set_referral_rate(connection, "acct-aff", "C", Decimal("0.25"),
                                   parse_instant("2024-06-01T00:00:00Z"), NOW, actor="ops")
    # fills of a user bkr did not know wait, then count when the user is registered
    import_rows(engine, tmp_path / "unknown.csv", [fill("u-1", user="newcomer", at="2024-06-04T00:00:00Z",
                                                        fee="0.9")])
    _check(engine)
    add_users(engine, "newcomer")
    _check(engine)

    # a retroactive suspension reaching into paid May: retroactive lines in June
    with engine.begin() as connection:
        registry.change_broker_status(connection, BROKER, BrokerStatus.SUSPENDED,
                                      parse_instant("2024-05-10T06:00:00Z"), NOW, actor="ops",
                                      is_retroactive=True, reason="terms breached")
    _check(engine)
    assert any(adjustment != ZERO for (_, month, _), (*_, adjustment) in _stored_totals(engine).items()
               if month == JUNE)


def test_a_closed_months_users_come_from_its_statement_in_the_same_order(traded: Engine) -> None:
    engine = traded
    expected = _projected_users(engine, BROKER, MAY)
    close(engine, MAY)
    with engine.connect() as connection:
        page = user_breakdown(connection, BROKER, MAY, limit=4, offset=2)
    assert (page.source, page.total, list(page.users)) == ("statement", len(USERS), expected[2:6])


def test_upgrading_to_user_totals_fills_them_from_the_aggregates_already_stored(traded: Engine,
                                                                              tmp_path: Path) -> None:
    engine = traded
    import_rows(engine, tmp_path / "june.csv", [fill("late-1", user="é", at="2024-05-30T00:00:00Z", fee="0.4"),
                                                fill("j-1", user="bob", at="2024-06-02T00:00:00Z", fee="0.3")])
    before = _stored_totals(engine)

    command.downgrade(db._alembic_config(engine), "0015")
    db.upgrade(engine)

    assert _stored_totals(engine) == before == _totals_from_aggregates(engine)
    _check(engine)


def test_the_users_page_is_sorted_by_fee_base_then_user_id_in_byte_order(traded: Engine) -> None:
    with traded.connect() as connection:
        page = user_breakdown(connection, BROKER, MAY, limit=1000, offset=0)
    keys = [(neg(add(u.fee_base, u.adjustment_fee_base)), u.user_id.encode()) for u in page.users]
    assert keys == sorted(keys) and len(keys) == len(USERS)
    # a tie: byte order, whatever the database's collation
    assert [u.user_id for u in page.users if u.fee_base == Decimal("0.1000000000000001")] == ["9", "_under", "é"]


def test_an_aggregate_written_without_its_user_total_is_what_the_check_catches(traded: Engine) -> None:
    """The comparison above is not vacuous: a user total out of step with the aggregates fails it."""
    with traded.begin() as connection:
        connection.execute(user_totals.update().where(user_totals.c.user_id == "bob")
                           .values(fee_base_usd=Decimal("7"), rank_key=Decimal("-7")))
    assert _stored_totals(traded) != _totals_from_aggregates(traded)
