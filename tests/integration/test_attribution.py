"""Which stored fills are broker volume, and how a registry change recorded in the past (an
activation, a referral rate, a user who arrives late) re-attributes the fills of open months.
The commands run as an operator (BKR_OPERATOR_KEY), as an operator's shell would."""

import json
from pathlib import Path
from typing import Any

import pytest
from integration_support import (
    JUNE,
    MAY,
    add_broker,
    add_code,
    add_users,
    close,
    count,
    fill,
    import_rows,
    operator_key,
    preview,
)
from sqlalchemy import Engine

from bkr.domain.registry import BrokerStatus
from bkr.store.tables import fills


@pytest.fixture(autouse=True)
def operator(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BKR_OPERATOR_KEY", operator_key(engine, "operator", "ops"))


def figures(statement: dict[str, Any]) -> tuple[str, str, str]:
    return statement["api_volume"], statement["fee_base"], statement["payout_exact"]


def ok(result: Any) -> Any:
    assert result.code == 0, result.err
    return result


NOT_COUNTED = {
    "pending broker": (dict(broker=2200), None),
    "suspended broker": (dict(broker=2200), BrokerStatus.SUSPENDED),
    "terminated broker": (dict(broker=2200), BrokerStatus.TERMINATED),
    "UI fill": (dict(via_api=False), None),
    "system fill": (dict(fill_type="Liquidation"), None),
    "unknown broker id": (dict(broker=9999), None),
    "no broker": (dict(broker=None), None),
}


@pytest.mark.parametrize("case", list(NOT_COUNTED))
def test_a_fill_that_is_not_broker_volume_is_accepted_but_not_counted(engine: Engine, tmp_path: Path,
                                                                      case: str) -> None:
    overrides, status_of_2200 = NOT_COUNTED[case]
    add_broker(engine, 1400)
    add_broker(engine, 2200, status=status_of_2200, since="2024-05-01T00:00:00Z")
    add_users(engine, "alice")

    tally = import_rows(engine, tmp_path / "may.csv", [
        fill("f-counted", price="100", quantity="1", fee="0.1"),
        fill("f-other", price="1000000", quantity="1", fee="1000", **overrides),  # type: ignore[arg-type]
    ])

    assert (tally.accepted, tally.counted, count(engine, fills)) == (2, 1, 2)
    statements = preview(engine, MAY)
    assert list(statements) == [1400]
    assert figures(statements[1400]) == ("100", "0.1", "0.02")


def test_only_fills_made_while_the_broker_was_active_count(engine: Engine, db_url: str, bkr: Any,
                                                           tmp_path: Path) -> None:
    add_broker(engine, since="2024-05-05T00:00:00Z")
    add_users(engine, "alice")
    ok(bkr("broker", "suspend", "1400", "--at", "2024-05-10T00:00:00Z", "--db", db_url))
    ok(bkr("broker", "activate", "1400", "--at", "2024-05-20T00:00:00Z", "--db", db_url))

    import_rows(engine, tmp_path / "may.csv", [
        fill("f-before", at="2024-05-04T23:59:59Z", fee="1", price="10000"),
        fill("f-active", at="2024-05-05T00:00:00Z", fee="10", price="10000"),  # the activation instant counts
        fill("f-suspended", at="2024-05-15T00:00:00Z", fee="100", price="10000"),
        fill("f-again", at="2024-05-25T00:00:00Z", fee="1000", price="10000"),
    ])

    assert figures(preview(engine, MAY)[1400]) == ("20000", "1010", "202")


def test_activating_a_broker_in_the_past_counts_its_fills_already_imported(engine: Engine, db_url: str, bkr: Any,
                                                                           tmp_path: Path) -> None:
    add_users(engine, "alice")
    import_rows(engine, tmp_path / "may.csv", [  # broker 2200 is not even enrolled yet
        fill("f-1", broker=2200, at="2024-05-10T00:00:00Z", fee="1"),
        fill("f-2", broker=2200, at="2024-05-20T00:00:00Z", fee="10"),
    ])
    ok(bkr("broker", "add", "--id", "2200", "--account", "acct-hummingbot", "--name", "Hummingbot",
           "--type", "trading_bot", "--db", db_url))
    assert preview(engine, MAY) == {}

    ok(bkr("broker", "activate", "2200", "--at", "2024-05-15T00:00:00Z", "--db", db_url))

    assert figures(preview(engine, MAY)[2200]) == ("100", "10", "2")


def test_a_referral_rate_recorded_in_the_past_reprices_the_fills_of_open_months(
        engine: Engine, db_url: str, bkr: Any, tmp_path: Path) -> None:
    add_broker(engine)
    add_code(engine, "ALICE-CODE", "0.1", affiliate="acct-aff")
    add_users(engine, "alice", code="ALICE-CODE")
    import_rows(engine, tmp_path / "fills.csv", [
        fill("f-april", at="2024-04-20T00:00:00Z", fee="100"),
        fill("f-1", at="2024-05-10T00:00:00Z", fee="100"),
        fill("f-2", at="2024-05-20T00:00:00Z", fee="100"),
    ])
    april = close(engine, MAY.previous())
    assert figures(preview(engine, MAY)[1400]) == ("200", "200", "40")

    ok(bkr("referral", "add", "--affiliate", "acct-aff", "--code", "ALICE-CODE", "--rate", "0.35",
           "--from", "2024-04-01T00:00:00Z", "--retroactive", "--reason", "the rate agreed in March", "--db", db_url))
    ok(bkr("referral", "add", "--affiliate", "acct-aff", "--code", "ALICE-CODE", "--rate", "0.1",
           "--from", "2024-05-01T00:00:00Z", "--db", db_url))
    ok(bkr("referral", "add", "--affiliate", "acct-aff", "--code", "ALICE-CODE", "--rate", "0.35",
           "--from", "2024-05-15T00:00:00Z", "--db", db_url))

    may = preview(engine, MAY)[1400]
    assert [(line["kind"], line["fill_month"], line["affiliate_rate"], line["effective_rate"], line["payout_exact"])
            for line in may["lines"]] == [
        ("regular", "2024-05", "0.1", "0.2", "20"),  # before the 15th: min(20%, 50% − 10%)
        ("regular", "2024-05", "0.35", "0.15", "15"),  # from the 15th: min(20%, 50% − 35%)
        # the first change reached closed April, declared retroactive: April's fill is taken back at the
        # rate April paid (BKR 0, min(20%, 50% − 10%)) and paid again at 35% (min(20%, 50% − 35%))
        ("retroactive", "2024-04", "0.1", "0.2", "-20"),
        ("retroactive", "2024-04", "0.35", "0.15", "15"),
    ]
    assert close(engine, MAY.previous()) == april  # a closed month keeps its statement


def test_a_fill_of_an_unknown_user_is_kept_unpaid_until_the_user_is_added(engine: Engine, db_url: str, bkr: Any,
                                                                          tmp_path: Path) -> None:
    add_broker(engine)
    add_users(engine, "alice")

    tally = import_rows(engine, tmp_path / "may.csv", [fill("f-1", fee="1"), fill("f-2", user="zed", fee="10")])

    assert (tally.accepted, tally.counted, tally.awaiting_user) == (2, 1, 1)
    review = json.loads(ok(bkr("fills", "rejected", "--db", db_url, "--json")).out)
    assert review["counts"]["awaiting_user"] == 1
    dry = json.loads(ok(bkr("close", "--month", "2024-05", "--dry-run", "--db", db_url, "--json",
                            "--key", operator_key(engine, "operator"))).out)
    assert dry["awaiting_user_fills"] == 1
    assert (dry["statements"][0]["fee_base"], dry["statements"][0]["payout_exact"]) == ("1", "0.2")

    ok(bkr("user", "add", "--id", "zed", "--db", db_url))

    assert figures(preview(engine, MAY)[1400]) == ("200", "11", "2.2")
    review = json.loads(ok(bkr("fills", "rejected", "--db", db_url, "--json")).out)
    assert review["counts"]["awaiting_user"] == 0


def test_the_users_that_fills_wait_for_are_named_with_what_registering_them_makes_payable(
        engine: Engine, db_url: str, bkr: Any, tmp_path: Path) -> None:
    add_broker(engine)
    add_broker(engine, 2200)
    add_users(engine, "alice")
    import_rows(engine, tmp_path / "may.csv", [
        fill("f-1", fee="1"),
        fill("f-2", user="zed", price="100.5", quantity="2", fee="0.000001"),
        fill("f-3", user="zed", price="3", quantity="0.1", fee="0.3", broker=2200, at="2024-05-20T08:30:00Z"),
        fill("f-4", user="=cmd", fee="2"),
        fill("f-5", user="yan", broker=None, fee="9"),  # no broker: not waiting for anyone
    ])

    listed = json.loads(ok(bkr("fills", "awaiting", "--db", db_url, "--json")).out)
    assert listed["awaiting_user_fills"] == 3
    assert listed["users"] == [
        {"user_id": "=cmd", "fills": 1, "volume_usd": "100", "fee_usd": "2", "brokers": [1400],
         "first_month": "2024-05", "last_seen": "2024-05-10T12:00:00+00:00"},
        {"user_id": "zed", "fills": 2, "volume_usd": "201.3", "fee_usd": "0.300001", "brokers": [1400, 2200],
         "first_month": "2024-05", "last_seen": "2024-05-20T08:30:00+00:00"},
    ]
    assert listed["next_after"] is None
    first = json.loads(ok(bkr("fills", "awaiting", "--limit", "1", "--db", db_url, "--json")).out)
    assert ([u["user_id"] for u in first["users"]], first["next_after"]) == (["=cmd"], "=cmd")
    rest = json.loads(ok(bkr("fills", "awaiting", "--after", "=cmd", "--db", db_url, "--json")).out)
    assert [u["user_id"] for u in rest["users"]] == ["zed"]
    assert "zed" in ok(bkr("fills", "awaiting", "--db", db_url)).out

    ok(bkr("user", "add", "--id", "zed", "--db", db_url))

    after = json.loads(ok(bkr("fills", "awaiting", "--db", db_url, "--json")).out)
    assert ([u["user_id"] for u in after["users"]], after["awaiting_user_fills"]) == (["=cmd"], 1)


def test_a_user_added_after_the_month_closed_is_paid_next_month_at_the_closed_months_tier(
        engine: Engine, db_url: str, bkr: Any, tmp_path: Path) -> None:
    add_broker(engine)
    add_code(engine, "ZED-CODE", "0.1")
    add_users(engine, "alice")
    import_rows(engine, tmp_path / "may.csv", [
        fill("f-1", price="5000000", quantity="1", fee="500"),  # BKR 1 in May: 30%
        fill("f-2", user="zed", price="1000000", quantity="1", fee="100"),
    ])
    closed = json.loads(ok(bkr("close", "--month", "2024-05", "--db", db_url, "--json",
                               "--key", operator_key(engine, "operator"))).out)
    assert closed["awaiting_user_fills"] == 1
    assert (closed["statements"][0]["tier"], closed["statements"][0]["payout"]) == ("BKR 1", "150.00")
    statement = ok(bkr("statement", "--broker", "1400", "--month", "2024-05", "--db", db_url)).out

    ok(bkr("user", "add", "--id", "zed", "--referral-code", "ZED-CODE", "--retroactive", "--reason",
           "signed up in May, registered late", "--db", db_url))

    june = close(engine, JUNE)[1400]
    assert (june["api_volume"], june["tier"]) == ("0", "BKR 0")  # an adjustment is not June's volume
    [adjustment] = june["lines"]
    assert {k: adjustment[k] for k in ("kind", "user_id", "fill_month", "tier", "affiliate_rate", "effective_rate",
                                       "payout_exact")} == {
        "kind": "adjustment", "user_id": "zed", "fill_month": "2024-05", "tier": "BKR 1", "affiliate_rate": "0.1",
        "effective_rate": "0.3", "payout_exact": "30"}
    assert june["payout"] == "30.00"
    assert ok(bkr("statement", "--broker", "1400", "--month", "2024-05", "--db", db_url)).out == statement
