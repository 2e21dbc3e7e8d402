"""Retroactive registry changes, on both databases: a status, a rate or a registration that reaches
into a closed month is refused unless declared retroactive with a reason; declared, its statements
stand and what it changes about the fills they paid reaches the next open month as `retroactive`
lines (taken back at the rate paid, paid again at the new one), which reconcile and later changes
build on."""

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
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
    preview,
)
from sqlalchemy import Engine, select

from bkr.domain.errors import Conflict, InvalidInput
from bkr.domain.fills import Attribution
from bkr.domain.money import ZERO, total
from bkr.domain.payout import effective_rate
from bkr.domain.periods import parse_instant
from bkr.domain.registry import BrokerStatus
from bkr.program import audit, registry
from bkr.program.audit import AuditQuery
from bkr.program.close import stored_statement
from bkr.program.reconcile import reconcile_month
from bkr.store.tables import broker_status_changes, fills

BASE_RATE = Decimal("0.20")  # BKR 0 of the seed schedule, the tier these small months are paid at
# alice signed up with code C (0.40: she earns the broker 0.10); bob without a code (0.20)
MAY_FILLS = [fill("f-1", user="alice", at="2024-05-10T12:00:00Z", fee="0.1"),
             fill("f-2", user="bob", at="2024-05-20T12:00:00Z", fee="0.2"),
             fill("f-3", user="alice", at="2024-05-25T12:00:00Z", fee="0.3")]


@pytest.fixture
def paid_may(engine: Engine, tmp_path: Path) -> Engine:
    """Broker 1400 active, alice (code C at 0.40) and bob; May's three fills closed (0.07 owed)."""
    add_broker(engine)
    add_code(engine, "C", "0.40")
    add_users(engine, "alice", code="C")
    add_users(engine, "bob")
    import_rows(engine, tmp_path / "may.csv", MAY_FILLS)
    may = close(engine, MAY)[BROKER]
    assert Decimal(may["payout_exact"]) == Decimal("0.1") * Decimal("0.1") + Decimal("0.2") * BASE_RATE \
        + Decimal("0.3") * Decimal("0.1")
    return engine


def _suspend(engine: Engine, at: str, **declared: Any) -> None:
    with engine.begin() as connection:
        registry.change_broker_status(connection, BROKER, BrokerStatus.SUSPENDED, parse_instant(at), NOW,
                                      actor="ops", **declared)


def _rate(engine: Engine, rate: str, since: str, **declared: Any) -> None:
    with engine.begin() as connection:
        registry.set_referral_rate(connection, "acct-aff", "C", Decimal(rate), parse_instant(since), NOW,
                                   actor="ops", **declared)


def _lines(statement: dict[str, Any], kind: str = "retroactive") -> list[tuple[str, str, str, str, str, str]]:
    return [(line["fill_month"], line["user_id"], line["affiliate_rate"], line["volume_usd"], line["fee_base"],
             line["payout_exact"]) for line in statement["lines"] if line["kind"] == kind]


def _reconciled(engine: Engine, *months: Any) -> None:
    with engine.connect() as connection:
        for month in months:
            assert reconcile_month(connection, month).differences == (), month


def test_a_retroactive_suspension_without_the_flag_is_refused_and_changes_nothing(paid_may: Engine) -> None:
    with paid_may.connect() as connection:
        changes = connection.execute(select(broker_status_changes)).all()
        entries = len(audit.entries(connection, AuditQuery(limit=1000)))

    with pytest.raises(Conflict) as refused:
        _suspend(paid_may, "2024-05-15T00:00:00Z")
    with pytest.raises(InvalidInput, match="a retroactive change needs a reason"):
        _suspend(paid_may, "2024-05-15T00:00:00Z", is_retroactive=True)

    assert refused.value.code == "retroactive_change"
    assert str(refused.value).startswith("broker 1400 suspended from 2024-05-15T00:00:00+00:00 reaches 2024-05, "
                                         "which is closed: its statements stand.")
    assert "--retroactive --reason TEXT" in str(refused.value)
    with paid_may.connect() as connection:
        assert connection.execute(select(broker_status_changes)).all() == changes
        assert len(audit.entries(connection, AuditQuery(limit=1000))) == entries
    assert preview(paid_may, JUNE) == {}  # nothing moved into June
    _suspend(paid_may, "2024-06-01T00:00:00Z")  # after the closed month: no flag needed


def test_a_retroactive_suspension_lands_as_adjustments_in_the_next_open_month(paid_may: Engine,
                                                                             tmp_path: Path) -> None:
    with paid_may.connect() as connection:
        paid = stored_statement(connection, BROKER, MAY)

    _suspend(paid_may, "2024-05-15T00:00:00Z", is_retroactive=True, reason="terms breached from 15 May")
    june = preview(paid_may, JUNE)[BROKER]

    # f-2 (bob, 0.20) and f-3 (alice, 0.10) happened after the 15th: taken back at what May paid
    assert _lines(june) == [("2024-05", "alice", "0.4", "-100", "-0.3", "-0.03"),
                            ("2024-05", "bob", "0", "-100", "-0.2", "-0.04")]
    assert all(line["tier"] == "BKR 0" for line in june["lines"])
    assert (june["api_volume"], june["payout_exact"], june["payout"]) == ("0", "-0.07", "0.00")
    with paid_may.connect() as connection:
        stored = dict(connection.execute(select(fills.c.fill_id, fills.c.attribution)
                                         .where(fills.c.corrects.is_not(None))).all())
        (entry,) = audit.entries(connection, AuditQuery(action="broker.status", limit=10))[-1:]
    assert entry.reason == "terms breached from 15 May"
    assert entry.after == {"status": "suspended", "effective_at": "2024-05-15T00:00:00+00:00",
                           "retroactive_to": "2024-05"}
    assert entry.before == {"status": "active"}
    assert stored == {f"f-2#retroactive-{entry.entry_id}-out": "counted",
                      f"f-3#retroactive-{entry.entry_id}-out": "counted"}

    closed_june = close(paid_may, JUNE)[BROKER]
    assert closed_june["carried_out"] == "-0.07"  # nothing paid is taken back: it is carried
    with paid_may.connect() as connection:
        assert stored_statement(connection, BROKER, MAY) == paid
    _reconciled(paid_may, MAY, JUNE)


def test_a_retroactive_rate_change_pays_the_difference_and_a_second_one_starts_from_it(
        paid_may: Engine, tmp_path: Path) -> None:
    _rate(paid_may, "0.10", "2024-05-01T00:00:00Z", is_retroactive=True, reason="contract signed in April")
    _rate(paid_may, "0.45", "2024-05-20T00:00:00Z", is_retroactive=True, reason="second amendment")
    june = preview(paid_may, JUNE)[BROKER]

    # one line per rate: f-1 and f-3 in at 0.10 and f-3 out at 0.10 again make the first
    assert _lines(june) == [("2024-05", "alice", "0.1", "100", "0.1", "0.02"),
                            ("2024-05", "alice", "0.4", "-200", "-0.4", "-0.04"),
                            ("2024-05", "alice", "0.45", "100", "0.3", "0.015")]
    # the plain reference: each fill's fee base at the rate it stands at now, less what May paid
    stands_at = {"f-1": Decimal("0.10"), "f-3": Decimal("0.45")}
    reference = total(Decimal(row["fee"]) * (effective_rate(BASE_RATE, stands_at[row["fill_id"]])
                                             - effective_rate(BASE_RATE, Decimal("0.40")))
                      for row in MAY_FILLS if row["user_id"] == "alice")
    assert Decimal(june["payout_exact"]) == reference == Decimal("-0.005")
    close(paid_may, JUNE)
    _reconciled(paid_may, MAY, JUNE)


def test_corrections_after_a_retroactive_change_follow_the_fill_s_standing(paid_may: Engine, tmp_path: Path) -> None:
    _suspend(paid_may, "2024-05-15T00:00:00Z", is_retroactive=True, reason="terms breached")
    bust = import_rows(paid_may, tmp_path / "bust.csv", [
        correction(MAY_FILLS[2], "f-3-bust", quantity="-1", fee="-0.3"),  # taken back already: counts for nobody
        correction(MAY_FILLS[0], "f-1-fix", quantity="0", fee="0.1")])  # still paid at 0.40: counts so

    assert (bust.accepted, bust.counted) == (2, 1)
    june = preview(paid_may, JUNE)[BROKER]
    assert _lines(june, "correction") == [("2024-05", "alice", "0.4", "0", "0.1", "0.01")]
    with paid_may.connect() as connection:
        attribution = connection.execute(select(fills.c.attribution).where(fills.c.fill_id == "f-3-bust")).scalar()
    assert attribution == Attribution.BROKER_INACTIVE.value
    close(paid_may, JUNE)
    _reconciled(paid_may, MAY, JUNE)


def test_a_retroactive_activation_pays_fills_that_counted_for_nobody(engine: Engine, tmp_path: Path) -> None:
    add_broker(engine, 1500, status=None)  # pending: its May fills count for nobody
    add_users(engine, "bob")
    import_rows(engine, tmp_path / "may.csv", [fill("p-1", user="bob", broker=1500, fee="0.5")])
    assert close(engine, MAY) == {}

    with engine.begin() as connection:
        registry.change_broker_status(connection, 1500, BrokerStatus.ACTIVE, parse_instant("2024-05-01T00:00:00Z"),
                                      NOW, actor="ops", is_retroactive=True, reason="signed on 1 May")

    june = preview(engine, JUNE)[1500]
    assert _lines(june) == [("2024-05", "bob", "0", "100", "0.5", "0.1")]
    assert june["payout"] == "0.10"
    close(engine, JUNE)
    _reconciled(engine, MAY, JUNE)


def test_registering_users_whose_fills_wait_in_a_closed_month_is_retroactive(engine: Engine, tmp_path: Path) -> None:
    add_broker(engine)
    import_rows(engine, tmp_path / "may.csv", [fill("d-1", user="dave", fee="0.5")])
    close(engine, MAY)

    waiting = r"fills waiting in closed months \(1 of 2024-05\)"
    with engine.begin() as connection, pytest.raises(Conflict, match=waiting):
        registry.add_users(connection, [("dave", None)], NOW, actor="ops")
    with engine.begin() as connection:
        assert registry.add_users(connection, [("dave", None)], NOW, actor="ops", is_retroactive=True,
                                  reason="user table replayed") == 1
        (entry,) = audit.entries(connection, AuditQuery(action="user.add", limit=10))

    june = preview(engine, JUNE)[BROKER]
    assert _lines(june, "adjustment") == [("2024-05", "dave", "0", "100", "0.5", "0.1")]
    assert (entry.subject, entry.reason, entry.after["retroactive_to"]) == ("user dave", "user table replayed",
                                                                             "2024-05")
    assert sum(Decimal(line["payout_exact"]) for line in june["lines"]) == Decimal("0.1") != ZERO


def test_a_self_trade_found_after_a_retroactive_change_takes_back_what_the_fill_stands_at(
        engine: Engine, tmp_path: Path) -> None:
    """f-9 was paid in May at 0.40, moved to 0.10 by a retroactive rate change; when its trade
    turns out to be alice's with herself, its reversal takes back what it stands at (0.10). f-10,
    taken back already by a retroactive suspension, needs no reversal."""
    add_broker(engine)
    add_code(engine, "C", "0.40")
    add_users(engine, "alice", code="C")
    import_rows(engine, tmp_path / "may.csv", [
        fill("f-9", user="alice", at="2024-05-12T00:00:00Z", fee="0.5", trade_id="t-9"),
        fill("f-10", user="alice", at="2024-05-28T00:00:00Z", fee="0.2", trade_id="t-10")])
    close(engine, MAY)
    _rate(engine, "0.10", "2024-05-01T00:00:00Z", is_retroactive=True, reason="contract signed in April")
    _suspend(engine, "2024-05-26T00:00:00Z", is_retroactive=True, reason="terms breached")

    late = import_rows(engine, tmp_path / "late.csv", [
        fill("f-9-other", user="alice", at="2024-05-12T00:00:00Z", fee="0.5", side="Ask", trade_id="t-9"),
        fill("f-10-other", user="alice", at="2024-05-28T00:00:00Z", fee="0.2", side="Ask", trade_id="t-10")])

    assert (late.accepted, late.self_trades) == (2, 2)
    june = preview(engine, JUNE)[BROKER]
    assert _lines(june) == [("2024-05", "alice", "0.1", "100", "0.5", "0.1"),  # f-9, f-10 in; f-10 out
                            ("2024-05", "alice", "0.4", "-200", "-0.7", "-0.07")]  # both out
    assert _lines(june, "correction") == [("2024-05", "alice", "0.1", "-100", "-0.5", "-0.1")]  # f-9's reversal
    # May paid 0.07 for them; June takes back exactly that
    assert june["payout_exact"] == "-0.07"
    close(engine, JUNE)
    _reconciled(engine, MAY, JUNE)
