"""Closing a month: the statement document, idempotence byte for byte, the dry run, tiers at their
thresholds, the 50% cap, rounding once, late fills and the tier basis."""

import csv
import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from integration_support import (
    APRIL,
    JUNE,
    MAY,
    NOW,
    add_broker,
    add_code,
    add_users,
    close,
    count,
    fill,
    import_rows,
    operator_key,
    statement_count,
    write_fills,
)
from sqlalchemy import Engine

from bkr.domain.config import ProgramConfig, TierBasis
from bkr.domain.periods import Month
from bkr.program.close import close_month, compute_statements
from bkr.store import db
from bkr.store.tables import periods
from program_support import use_program

STATEMENT_FIELDS = {"month", "broker_id", "spot_volume", "futures_volume", "api_volume", "tier", "broker_rate",
                    "fee_base", "payout_exact", "payout"}


@pytest.fixture
def may_of_broker_1400(engine: Engine, tmp_path: Path) -> Engine:
    """Broker 1400 in May 2024: alice (no referral code) trades 15M spot, bob (code at 0.15) 6M of
    perpetuals: 21M of API volume, tier BKR 3 (40%)."""
    add_broker(engine)
    add_code(engine, "BOB-CODE", "0.15")
    add_users(engine, "alice")
    add_users(engine, "bob", code="BOB-CODE")
    import_rows(engine, tmp_path / "may.csv", [
        fill("f-1", user="alice", price="150", quantity="60000", fee="900.1"),
        fill("f-2", user="alice", price="150", quantity="40000", fee="600.023456", at="2024-05-31T23:59:59.999999Z"),
        fill("f-3", user="bob", market="PERP", price="100", quantity="60000", fee="1200.00999"),
        fill("f-4", user="bob", market="PERP", price="100", quantity="1", fee="-0.01", is_maker=True),
    ])
    return engine


def close_json(bkr: Any, db_url: str, month: str = "2024-05", *flags: str) -> Any:
    engine = db.open_engine(db_url)
    key = operator_key(engine, "operator")
    engine.dispose()
    result = bkr("close", "--month", month, "--db", db_url, "--json", "--key", key, *flags)
    assert result.code == 0, result.err
    return result


def test_close_json_prints_each_brokers_statement_with_decimals_as_strings(
        may_of_broker_1400: Engine, db_url: str, bkr: Any) -> None:
    document = json.loads(close_json(bkr, db_url).out)

    assert (document["month"], document["already_closed"], document["dry_run"]) == ("2024-05", False, False)
    [statement] = document["statements"]
    assert set(statement) >= STATEMENT_FIELDS
    assert {k: statement[k] for k in STATEMENT_FIELDS} == {
        "month": "2024-05",
        "broker_id": 1400,
        "spot_volume": "15000000",
        "futures_volume": "6000100",
        "api_volume": "21000100",
        "tier": "BKR 3",
        "broker_rate": "0.4",
        "fee_base": "2700.133446",
        "payout_exact": "1020.0528789",  # 1500.123456 × 0.40 + 1200.00999 × min(0.40, 0.50 − 0.15)
        "payout": "1020.05",
    }
    assert statement["line_count"] == 2


def test_closing_twice_gives_the_same_bytes(may_of_broker_1400: Engine, db_url: str, bkr: Any) -> None:
    first = close_json(bkr, db_url).out
    shown = bkr("statement", "--broker", "1400", "--month", "2024-05", "--db", db_url, "--format", "json")

    second = close_json(bkr, db_url).out

    assert json.loads(second)["already_closed"] is True
    assert second == first.replace('"already_closed": false', '"already_closed": true')
    again = bkr("statement", "--broker", "1400", "--month", "2024-05", "--db", db_url, "--format", "json")
    assert (shown.code, again.code) == (0, 0)
    assert again.out == shown.out
    assert statement_count(may_of_broker_1400) == 1


def test_a_dry_run_gives_the_statements_of_the_real_close_and_writes_nothing(
        may_of_broker_1400: Engine, db_url: str, bkr: Any, tmp_path: Path) -> None:
    periods_before = count(may_of_broker_1400, periods)
    dry = close_json(bkr, db_url, "2024-05", "--dry-run").out

    assert json.loads(dry)["dry_run"] is True
    assert statement_count(may_of_broker_1400) == 0
    assert count(may_of_broker_1400, periods) == periods_before
    missing = bkr("statement", "--broker", "1400", "--month", "2024-05", "--db", db_url)
    assert (missing.code, missing.err) == (1, "error: no statement for broker 1400 in 2024-05 (2024-05 is open: its "
                                              "statements are issued when it closes); preview: "
                                              "bkr close --month 2024-05 --dry-run\n")
    # May is still open: a fill arriving now is paid in May, not as a June adjustment
    import_rows(may_of_broker_1400, tmp_path / "more.csv", [fill("f-5", user="alice", fee="1")])
    dry = close_json(bkr, db_url, "2024-05", "--dry-run").out

    real = close_json(bkr, db_url).out

    assert real == dry.replace('"dry_run": true', '"dry_run": false')
    assert json.loads(real)["statements"][0]["fee_base"] == "2701.133446"


@pytest.mark.parametrize("offset", [0, 1], ids=["current month", "next month"])
def test_closing_a_month_that_has_not_ended_fails_with_a_one_line_reason(
        engine: Engine, db_url: str, bkr: Any, offset: int) -> None:
    month = Month.of(datetime.now(UTC))
    month = month.next() if offset else month
    use_program(engine)

    result = bkr("close", "--month", str(month), "--db", db_url, "--key", operator_key(engine, "operator"))

    assert result.code == 1
    assert result.err.startswith(f"error: {month} has not ended yet (it is ")
    hint = "; preview it with a dry run" if offset == 0 else ""
    assert result.err.endswith(f"UTC); a month is closed from the 1st of the next{hint}\n")
    assert result.err.count("\n") == 1
    assert statement_count(engine) == 0


def test_a_dry_run_of_the_month_in_progress_is_its_projection_and_writes_nothing(
        engine: Engine, db_url: str, bkr: Any, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    month = Month.of(now)
    add_broker(engine)
    add_users(engine, "alice")
    path = write_fills(tmp_path / "now.csv", [fill("f-1", at=f"{month}-01T00:00:00Z", fee="2.5")])
    assert bkr("fills", "import", str(path), "--db", db_url,
               "--key", operator_key(engine, "operator")).code == 0  # on today's clock

    dry = json.loads(close_json(bkr, db_url, str(month), "--dry-run").out)

    assert (dry["month"], dry["dry_run"], dry["projection"]) == (str(month), True, True)
    assert [(s["broker_id"], s["api_volume"], s["payout_exact"]) for s in dry["statements"]] == [(1400, "100", "0.5")]
    with engine.connect() as connection:
        assert [s.payout_exact for s in compute_statements(connection, month)] == [Decimal("0.5")]
    assert statement_count(engine) == 0
    assert count(engine, periods) == 1  # the fill's own month, opened by the import; nothing closed
    table = bkr("close", "--month", str(month), "--dry-run", "--db", db_url, "--key", operator_key(engine, "viewer"))
    assert table.code == 1  # a viewer may not preview a close
    table = bkr("close", "--month", str(month), "--dry-run", "--db", db_url, "--key", operator_key(engine, "operator"))
    assert f"projection, if it ended now, of {month}" in table.out.replace("\n", " ")


def test_a_volume_exactly_at_a_threshold_reaches_the_tier_and_one_cent_below_does_not(
        engine: Engine, tmp_path: Path) -> None:
    add_broker(engine, 1400)
    add_broker(engine, 2200)
    add_users(engine, "alice")
    import_rows(engine, tmp_path / "may.csv", [
        fill("f-1", broker=1400, price="2500000.00", quantity="1", fee="100"),
        fill("f-2", broker=1400, market="PERP", price="2500000.00", quantity="1", fee="100"),
        fill("f-3", broker=2200, price="2500000.00", quantity="1", fee="100"),
        fill("f-4", broker=2200, market="PERP", price="2499999.99", quantity="1", fee="100"),
    ])

    statements = close(engine, MAY)

    assert [(s["api_volume"], s["tier"], s["broker_rate"], s["payout"]) for s in statements.values()] == [
        ("5000000", "BKR 1", "0.3", "60.00"),
        ("4999999.99", "BKR 0", "0.2", "40.00"),
    ]


def test_a_volume_a_hair_below_a_threshold_stays_below_it(engine: Engine, tmp_path: Path) -> None:
    # 0.999999999999999999 × 5000000.000000000005 = 4999999.999999999999999999999999999995: 37 digits,
    # which Python's default 28-digit context would round up to exactly 5,000,000 (BKR 1).
    add_broker(engine)
    add_users(engine, "alice")
    import_rows(engine, tmp_path / "may.csv", [
        fill("f-1", price="0.999999999999999999", quantity="5000000.000000000005", fee="100")])

    [statement] = close(engine, MAY).values()

    assert statement["api_volume"] == "4999999.999999999999999999999999999995"
    assert (statement["tier"], statement["payout"]) == ("BKR 0", "20.00")


def test_the_cap_gives_the_broker_at_most_half_the_fee_minus_the_affiliate_rate(
        engine: Engine, tmp_path: Path) -> None:
    add_broker(engine)
    for rate in ("0", "0.2", "0.5", "0.6"):
        add_code(engine, f"CODE-{rate}", rate)
        add_users(engine, f"user-{rate}", code=f"CODE-{rate}")
    import_rows(engine, tmp_path / "may.csv", [
        fill("f-0", user="user-0", price="20000000", quantity="1", fee="100"),  # 20M: BKR 3, 40%
        fill("f-2", user="user-0.2", fee="100"),
        fill("f-5", user="user-0.5", fee="100"),
        fill("f-6", user="user-0.6", fee="100"),
    ])

    [statement] = close(engine, MAY).values()

    assert statement["tier"] == "BKR 3"
    assert [(line["affiliate_rate"], line["effective_rate"], line["payout_exact"]) for line in statement["lines"]] == [
        ("0", "0.4", "40"),  # the broker rate: 40% is under the cap of 50%
        ("0.2", "0.3", "30"),  # the cap: 50% − 20%
        ("0.5", "0", "0"),
        ("0.6", "0", "0"),  # never negative
    ]
    assert (statement["payout_exact"], statement["payout"]) == ("70", "70.00")


def test_the_payout_is_rounded_down_to_the_cent_once_for_the_whole_statement(engine: Engine, tmp_path: Path) -> None:
    add_broker(engine)
    add_users(engine, "alice", "bob", "carol")
    import_rows(engine, tmp_path / "may.csv", [
        fill("f-1", user="alice", fee="0.03"),  # × 20% = 0.006: each line alone would round to 0.00
        fill("f-2", user="bob", fee="0.03"),
        fill("f-3", user="carol", fee="0.0345"),
    ])

    [statement] = close(engine, MAY).values()

    assert [line["payout_exact"] for line in statement["lines"]] == ["0.006", "0.006", "0.0069"]
    assert (statement["payout_exact"], statement["payout"]) == ("0.0189", "0.01")  # down, not to nearest


def test_a_late_fill_is_paid_next_month_as_an_adjustment_at_the_closed_months_tier(
        engine: Engine, tmp_path: Path) -> None:
    add_broker(engine)
    add_users(engine, "alice")
    import_rows(engine, tmp_path / "may.csv", [fill("f-1", price="5000000", quantity="1", fee="500")])
    may = close(engine, MAY)[1400]
    assert (may["tier"], may["payout"]) == ("BKR 1", "150.00")

    tally = import_rows(engine, tmp_path / "june.csv", [
        fill("f-2", at="2024-06-10T08:00:00Z", price="4900000", quantity="1", fee="490"),
        fill("f-late", at="2024-05-20T08:00:00Z", price="1000000", quantity="1", fee="100"),
    ])
    june = close(engine, JUNE)[1400]

    assert (tally.accepted, tally.counted) == (2, 2)
    # the late 1M does not lift June to BKR 1, and it is paid at May's 30%
    assert (june["api_volume"], june["tier"], june["broker_rate"]) == ("4900000", "BKR 0", "0.2")
    [regular, adjustment] = june["lines"]
    assert (regular["kind"], regular["fill_month"], regular["payout_exact"]) == ("regular", "2024-06", "98")
    assert {k: adjustment[k] for k in ("kind", "fill_month", "tier", "effective_rate", "volume_usd",
                                       "payout_exact")} == {
        "kind": "adjustment", "fill_month": "2024-05", "tier": "BKR 1", "effective_rate": "0.3",
        "volume_usd": "1000000", "payout_exact": "30"}
    assert (june["fee_base"], june["adjustment_fee_base"], june["adjustment_payout_exact"]) == ("490", "100", "30")
    assert (june["payout_exact"], june["payout"]) == ("128", "128.00")
    assert close(engine, MAY)[1400] == may  # the closed month is not rewritten


PREVIOUS_MONTH = ProgramConfig(tier_basis=TierBasis.PREVIOUS_MONTH)


def test_previous_month_tier_basis_pays_a_month_at_the_tier_of_the_month_before(
        engine: Engine, tmp_path: Path) -> None:
    add_broker(engine)
    add_users(engine, "alice")
    import_rows(engine, tmp_path / "fills.csv", [
        fill("f-april", at="2024-04-15T00:00:00Z", price="10000000", quantity="1", fee="1000"),  # BKR 2: 35%
        fill("f-may", price="1000000", quantity="1", fee="100"),
    ], config=PREVIOUS_MONTH)
    april = close_month(engine, APRIL, now=NOW).statements[0].to_document()
    assert (april["tier"], april["tier_basis"], april["payout"]) == ("BKR 0", "previous_month", "200.00")

    may = close_month(engine, MAY, now=NOW).statements[0].to_document()

    assert (may["api_volume"], may["tier"], may["broker_rate"], may["payout"]) == (
        "1000000", "BKR 2", "0.35", "35.00")
    assert may["tier_basis"] == "previous_month"


def test_previous_month_tier_basis_uses_the_exact_volume_of_an_open_previous_month(
        engine: Engine, tmp_path: Path) -> None:
    add_broker(engine)
    add_users(engine, "alice")
    import_rows(engine, tmp_path / "fills.csv", [
        fill("f-april", at="2024-04-15T00:00:00Z", price="0.999999999999999999", quantity="5000000.000000000005"),
        fill("f-may", fee="100"),
    ], config=PREVIOUS_MONTH)

    with engine.connect() as connection:  # May's projection, as the broker summary shows it while April is open
        may = compute_statements(connection, MAY)[0]

    assert (may.tier_name, may.payout) == ("BKR 0", Decimal("20.00"))


def test_statement_csv_has_one_row_per_line_and_a_total_row(may_of_broker_1400: Engine, db_url: str,
                                                            bkr: Any) -> None:
    close_json(bkr, db_url)

    result = bkr("statement", "--broker", "1400", "--month", "2024-05", "--db", db_url, "--format", "csv")

    assert result.code == 0
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert [(r["kind"], r["user_id"], r["market_type"], r["fills"], r["payout_exact"], r["payout"]) for r in rows] == [
        ("regular", "alice", "SPOT", "2", "600.0493824", ""),
        ("regular", "bob", "PERP", "2", "420.0034965", ""),
        ("total", "", "", "4", "1020.0528789", "1020.05"),
    ]
    assert rows[-1]["volume_usd"] == "21000100"


def test_a_user_id_a_spreadsheet_would_run_is_neutralised_in_csv_and_exact_in_json(
        engine: Engine, db_url: str, bkr: Any, tmp_path: Path) -> None:
    users = ['=HYPERLINK("http://x","y")', "+1", "-2", "@SUM(A1)", "plain"]  # ids are stripped: no tab or CR
    add_broker(engine)
    add_users(engine, *users)
    import_rows(engine, tmp_path / "may.csv", [fill(f"f-{n}", user=user) for n, user in enumerate(users)])
    close_json(bkr, db_url)

    as_csv = bkr("statement", "--broker", "1400", "--month", "2024-05", "--db", db_url, "--format", "csv").out
    as_json = json.loads(bkr("statement", "--broker", "1400", "--month", "2024-05", "--db", db_url).out)

    shown = [row["user_id"] for row in csv.DictReader(io.StringIO(as_csv)) if row["kind"] == "regular"]
    assert sorted(shown) == sorted(["'" + user for user in users[:-1]] + ["plain"])
    assert sorted(line["user_id"] for line in as_json["lines"]) == sorted(users)


def test_a_month_without_broker_volume_closes_with_no_statements(engine: Engine, db_url: str, bkr: Any,
                                                                 tmp_path: Path) -> None:
    add_broker(engine)
    import_rows(engine, tmp_path / "may.csv", [fill("f-1", broker=None)])

    document = json.loads(close_json(bkr, db_url).out)

    assert (document["statements"], document["already_closed"]) == ([], False)
    assert json.loads(close_json(bkr, db_url).out)["already_closed"] is True


def test_merged_user_lines_give_the_per_user_statements_totals_to_the_last_digit(
        may_of_broker_1400: Engine, tmp_path: Path) -> None:
    from bkr.program.close import compute_statements

    engine = may_of_broker_1400
    add_users(engine, "carol", code="BOB-CODE")
    import_rows(engine, tmp_path / "more.csv", [
        fill("f-5", user="carol", price="99.123456789", quantity="3.3", fee="0.000000001"),
        fill("f-6", user="carol", market="PERP", price="7", quantity="11", fee="0.7777777"),
    ])
    with engine.connect() as connection:
        per_user = compute_statements(connection, MAY)
        merged = compute_statements(connection, MAY, per_user=False)
    figures = ("broker_id", "tier_level", "broker_rate", "spot_volume", "futures_volume", "fee_base",
               "adjustment_fee_base", "adjustment_payout_exact", "payout_exact", "payout")
    assert [tuple(getattr(s, f) for f in figures) for s in merged] == \
        [tuple(getattr(s, f) for f in figures) for s in per_user]
    # bob's and carol's perp lines share a rate and merge; spot at rates 0 and 0.15 stays apart
    assert (len(per_user[0].lines), len(merged[0].lines)) == (4, 3)
