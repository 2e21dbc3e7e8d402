"""The broker API: a broker reads its own figures, and only its own.

Fills are ingested the way the service ingests them; figures are checked against the close's
own computation and against sums over the fills written here.
"""

import csv
import io
import json
import shutil
import sqlite3
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_support import Api, MovableClock
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from bkr.api.app import create_app
from bkr.domain.config import ProgramConfig, TierBasis
from bkr.domain.money import canonical
from bkr.domain.periods import Month
from bkr.domain.registry import BrokerStatus
from bkr.domain.signing import KeyPair
from bkr.domain.statement_document import parse_statement
from bkr.ingest.readers import RawRow
from bkr.program import registry
from bkr.program.close import close_month, compute_statements, stored_statement
from bkr.program.exports import statement_csv
from bkr.program.importer import import_rows
from bkr.store import db
from program_support import use_program

BROKER, OTHER = 1400, 2200
OCTOBER, SEPTEMBER, AUGUST = Month(2026, 10), Month(2026, 9), Month(2026, 8)  # the clock: 2026-10-15 12:00 UTC
CAP = Decimal("0.5")
AFFILIATE_RATE = Decimal("0.4")  # carol's code: she earns her affiliate 40%, her broker at most 10%


def fill(fill_id: str, at: str, *, user: str = "alice", broker: int | None = BROKER, price: str = "100",
         quantity: str = "1", fee: str = "0.1", market: str = "SPOT", order_id: str | None = None) -> dict[str, Any]:
    return {"fill_id": fill_id, "order_id": order_id or f"order-{fill_id}", "user_id": user,
            "symbol": "SOL_USDC" if market == "SPOT" else f"SOL_USDC_{market}", "market_type": market,
            "side": "Bid", "price": price, "quantity": quantity, "fee": fee, "fee_symbol": "USDC",
            "is_maker": Decimal(fee) < 0, "timestamp": at, "broker_id": broker, "via_api": True,
            "fill_type": "User"}


def ingest(api: Api, rows: Iterable[Mapping[str, Any]]) -> None:
    raw = [RawRow(number, dict(row), json.dumps(row)) for number, row in enumerate(rows, start=1)]
    tally = import_rows(api.engine, raw, source="test", clock=api.clock, actor="ops")
    assert (tally.accepted, tally.rejected, tally.conflicts) == (len(raw), 0, 0)


def register_users(api: Api) -> None:
    """alice and bob without a referral code; carol with a 40% affiliate code."""
    since = datetime(2026, 1, 1, tzinfo=UTC)
    with api.engine.begin() as connection:
        registry.enroll_affiliate(connection, "aff-1", "Affiliate", since, actor="ops")
        registry.set_referral_rate(connection, "aff-1", "FRIENDS", AFFILIATE_RATE, since, since, actor="ops")
        registry.add_users(connection, [("alice", None), ("bob", None), ("carol", "FRIENDS")], since, actor="ops")


def expected(rows: Iterable[Mapping[str, Any]], broker_rate: Decimal) -> dict[str, Decimal]:
    """The seed's formula over the fills themselves (USDC fees: 1 USD)."""
    spot = futures = fee_base = payout = Decimal(0)
    for row in rows:
        volume = Decimal(row["price"]) * Decimal(row["quantity"])
        if row["market_type"] == "SPOT":
            spot += volume
        else:
            futures += volume
        affiliate = AFFILIATE_RATE if row["user_id"] == "carol" else Decimal(0)
        base = max(Decimal(row["fee"]), Decimal(0))
        fee_base += base
        payout += base * min(broker_rate, max(Decimal(0), CAP - affiliate))
    return {"spot": spot, "futures": futures, "api": spot + futures, "fee_base": fee_base, "payout": payout}


OCTOBER_FILLS = [
    fill("o1", "2026-10-02T09:00:00Z", price="150.5", quantity="10", fee="0.75"),
    fill("o2", "2026-10-02T23:59:59.999Z", user="bob", market="PERP", price="2000", quantity="3", fee="1.2"),
    fill("o3", "2026-10-05T00:00:00Z", user="carol", price="99.99", quantity="7", fee="0.35"),
    fill("o4", "2026-10-05T13:30:00Z", user="bob", price="100", quantity="2", fee="-0.02"),  # maker rebate
    fill("o5", "2026-10-15T11:00:00Z", user="carol", market="IPERP", price="10", quantity="100", fee="0.5"),
    fill("x1", "2026-10-03T10:00:00Z", broker=OTHER, price="1000", quantity="1000", fee="100"),
]


def own(rows: Iterable[Mapping[str, Any]], broker: int = BROKER) -> list[Mapping[str, Any]]:
    return [row for row in rows if row["broker_id"] == broker]


def api_routes(routes: Iterable[Any]) -> Iterable[APIRoute]:
    """Every endpoint of `app.routes`, also those of included routers that FastAPI keeps nested."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):
            yield from api_routes(route.original_router.routes)


WEBHOOK_PATHS = "/v1/broker/{broker_id}/webhook"  # writes among them: tests/api/test_webhooks_api.py


def broker_routes(api: Api) -> list[APIRoute]:
    """The broker's read endpoints (GET)."""
    app: Any = api.client.app
    return [r for r in api_routes(app.routes) if r.path.startswith("/v1/broker/")
            and not r.path.startswith(WEBHOOK_PATHS)]


def instruction_for(route: str) -> str:
    if route.startswith("/statements/"):
        return "brokerStatementQuery"
    return {"/summary": "brokerSummaryQuery", "/volume/daily": "brokerDailyVolumeQuery",
            "/statements": "brokerStatementQueryAll", "/users": "brokerUsersQuery",
            "/inactive-orders": "brokerInactiveOrdersQuery", "/fills": "brokerFillsQuery",
            "/fills/export": "brokerFillsExport"}[route]


def get(api: Api, pair: KeyPair, route: str, params: dict[str, Any] | None = None) -> httpx.Response:
    """A signed GET of one of broker 1400's endpoints, `route` being the part after its id."""
    return api.signed_get(pair, f"/v1/broker/{BROKER}{route}", instruction_for(route), params)


# --- who may read what ------------------------------------------------------------------------------------


def test_every_broker_endpoint_refuses_another_brokers_key(api: Api) -> None:
    api.broker(BROKER)
    other = api.broker(OTHER)
    routes = broker_routes(api)
    assert len(routes) >= 6
    for route in routes:
        instruction = (route.openapi_extra or {}).get("x-instruction")
        assert instruction, f"{route.path} names no signing instruction"
        for target in (BROKER, 9999):  # another broker, and a broker that does not exist
            path = route.path.format(broker_id=target, month="2026-09")

            response = api.signed_get(other, path, instruction)

            assert response.status_code in (403, 404), (path, response.status_code)
            assert response.json()["code"] == "not_your_broker", path


def test_every_broker_endpoint_answers_its_own_broker(api: Api) -> None:
    pair = api.broker(BROKER)
    for route in broker_routes(api):
        path = route.path.format(broker_id=BROKER, month="2026-09")

        response = api.signed_get(pair, path, (route.openapi_extra or {})["x-instruction"])

        assert response.status_code in (200, 404), (path, response.text)
        if response.status_code == 404:
            assert response.json()["code"] == "not_found"  # no statement for September yet


def test_reads_answer_while_a_writer_holds_the_sqlite_database(sqlite_template: Path, tmp_path: Path,
                                                               clock: MovableClock) -> None:
    """A GET reads a snapshot: on SQLite it neither waits for nor takes the write lock, so a long
    import or close does not stall the broker API or the dashboard. (PostgreSQL readers never
    wait for writers.)"""
    shutil.copy(sqlite_template, tmp_path / "bkr.db")
    engine = db.open_engine(f"sqlite:///{tmp_path / 'bkr.db'}")
    with TestClient(create_app(engine, ProgramConfig(), clock=clock)) as client:
        _reads_while_locked(Api(client, engine, clock))
    engine.dispose()


def _reads_while_locked(api: Api) -> None:
    pair = api.broker(BROKER)
    operator = api.operator_key()
    writer = sqlite3.connect(api.engine.url.database or "", timeout=1, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # the write lock, as an import holds it
        writer.execute("INSERT INTO periods (month, status) VALUES ('2020-01', 'open')")
        broker_answers = [api.signed_get(pair, route.path.format(broker_id=BROKER, month="2026-09"),
                                         (route.openapi_extra or {})["x-instruction"]).status_code
                          for route in broker_routes(api)]
        periods = api.client.get("/v1/admin/periods", headers=operator)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert set(broker_answers) <= {200, 404} and periods.status_code == 200
    assert "2020-01" not in {p["month"] for p in periods.json()}  # nor sees what is not committed


def test_every_broker_endpoint_documents_its_instruction_and_errors(api: Api) -> None:
    document = api.client.get("/openapi.json").json()
    operations = [operation for path, item in document["paths"].items() if path.startswith("/v1/broker/")
                  and not path.startswith(WEBHOOK_PATHS) for operation in item.values()]
    assert {op["x-instruction"] for op in operations} == {
        "brokerSummaryQuery", "brokerDailyVolumeQuery", "brokerStatementQueryAll", "brokerStatementQuery",
        "brokerUsersQuery", "brokerInactiveOrdersQuery", "brokerPayoutQueryAll", "brokerFillsQuery",
        "brokerFillsExport"}
    for operation in operations:
        assert {"401", "403"} <= set(operation["responses"]), operation["operationId"]


# --- summary ------------------------------------------------------------------------------------------------


def test_a_broker_without_volume_sees_zeros_at_the_base_tier(api: Api) -> None:
    pair = api.broker(BROKER)

    summary = get(api, pair, "/summary").json()

    assert summary | {"name": None} == {
        "broker_id": BROKER, "name": None, "status": "active", "month": "2026-10", "tier_basis": "same_month",
        "spot_volume": "0", "futures_volume": "0", "api_volume": "0", "tier": "BKR 0", "broker_rate": "0.2",
        "fee_base": "0", "adjustment_fee_base": "0", "payout_exact": "0", "payout": "0.00", "volume_tier": "BKR 0",
        "next_tier": "BKR 1", "next_tier_rate": "0.3", "volume_to_next_tier": "5000000",
        "last_closed_month": None, "last_closed_tier": None}


def test_the_summary_is_the_projection_of_the_close_and_the_sum_of_the_fills(api: Api) -> None:
    pair = api.broker(BROKER)
    api.broker(OTHER)
    register_users(api)
    ingest(api, OCTOBER_FILLS)

    summary = get(api, pair, "/summary").json()

    with api.engine.connect() as connection:
        (projection,) = compute_statements(connection, OCTOBER, BROKER)
    figures = expected(own(OCTOBER_FILLS), Decimal("0.2"))
    assert (summary["spot_volume"], summary["futures_volume"], summary["api_volume"]) == (
        canonical(projection.spot_volume), canonical(projection.futures_volume), canonical(projection.api_volume))
    assert (summary["fee_base"], summary["payout_exact"], summary["payout"]) == (
        canonical(projection.fee_base), canonical(projection.payout_exact), format(projection.payout, "f"))
    assert (Decimal(summary["spot_volume"]), Decimal(summary["futures_volume"]), Decimal(summary["api_volume"])) == (
        figures["spot"], figures["futures"], figures["api"])
    assert Decimal(summary["fee_base"]) == figures["fee_base"]
    assert Decimal(summary["payout_exact"]) == figures["payout"]
    assert summary["payout"] == str(figures["payout"].quantize(Decimal("0.01"), rounding="ROUND_DOWN"))
    assert (summary["tier"], summary["broker_rate"], summary["next_tier"]) == ("BKR 0", "0.2", "BKR 1")
    assert Decimal(summary["volume_to_next_tier"]) == Decimal(5_000_000) - figures["api"]


@pytest.mark.parametrize(("price", "tier", "rate", "next_tier", "to_next"), [
    ("4999999.99", "BKR 0", "0.2", "BKR 1", "0.01"),
    ("5000000", "BKR 1", "0.3", "BKR 2", "5000000"),  # a threshold is reached at exactly that volume
    ("5000000.01", "BKR 1", "0.3", "BKR 2", "4999999.99"),
    ("100000000", "BKR 5", "0.5", None, None),  # the top tier: nothing above it
], ids=["just below", "exactly at", "just above", "top"])
def test_the_tier_boundary_is_reached_at_exactly_its_volume(api: Api, price: str, tier: str, rate: str,
                                                           next_tier: str | None, to_next: str | None) -> None:
    pair = api.broker(BROKER)
    register_users(api)
    rows = [fill("big", "2026-10-07T12:00:00Z", price=price, quantity="1", fee="10")]
    ingest(api, rows)

    summary = get(api, pair, "/summary").json()

    assert (summary["tier"], summary["broker_rate"], summary["next_tier"], summary["volume_to_next_tier"]) == (
        tier, rate, next_tier, to_next)
    assert Decimal(summary["payout_exact"]) == expected(rows, Decimal(rate))["payout"]


def test_under_the_previous_month_basis_the_month_is_paid_at_last_months_tier(api: Api) -> None:
    config = ProgramConfig(tier_basis=TierBasis.PREVIOUS_MONTH)
    pair = api.broker(BROKER)
    register_users(api)
    september = [fill("s1", "2026-09-20T12:00:00Z", price="6000000", quantity="1", fee="600")]
    october = [fill("o1", "2026-10-03T12:00:00Z", price="1000", quantity="1", fee="1")]
    use_program(api.engine, config)  # the program's settings are the database's, whatever the app was given
    ingest(api, september + october)
    close_month(api.engine, SEPTEMBER, now=api.clock())

    summary = get(api, pair, "/summary").json()

    assert (summary["tier_basis"], summary["tier"], summary["broker_rate"]) == ("previous_month", "BKR 1", "0.3")
    assert (summary["volume_tier"], summary["next_tier"], summary["volume_to_next_tier"]) == (
        "BKR 0", "BKR 1", "4999000")
    assert Decimal(summary["payout_exact"]) == Decimal("0.3")  # 1 USD of fee at September's 30%
    # September itself was paid at the tier of August, without volume
    assert (summary["last_closed_month"], summary["last_closed_tier"]) == ("2026-09", "BKR 0")


def test_the_summary_names_the_tier_of_the_last_closed_month(api: Api) -> None:
    pair = api.broker(BROKER)
    register_users(api)
    ingest(api, [fill("s1", "2026-09-20T12:00:00Z", price="12000000", quantity="1", fee="5")])
    close_month(api.engine, SEPTEMBER, now=api.clock())

    summary = get(api, pair, "/summary").json()

    assert (summary["last_closed_month"], summary["last_closed_tier"]) == ("2026-09", "BKR 2")
    assert (summary["month"], summary["tier"], summary["api_volume"]) == ("2026-10", "BKR 0", "0")


# --- daily volume ---------------------------------------------------------------------------------------------


def test_the_daily_series_covers_each_day_to_today_and_sums_to_the_month_to_date(api: Api) -> None:
    pair = api.broker(BROKER)
    api.broker(OTHER)
    register_users(api)
    ingest(api, OCTOBER_FILLS)

    series = get(api, pair, "/volume/daily").json()
    summary = get(api, pair, "/summary").json()

    days = series["days"]
    assert [d["day"] for d in days] == [f"2026-10-{n:02d}" for n in range(1, 16)]
    assert sum(Decimal(d["api_volume"]) for d in days) == Decimal(summary["api_volume"])
    assert (series["spot_volume"], series["futures_volume"], series["api_volume"]) == (
        summary["spot_volume"], summary["futures_volume"], summary["api_volume"])
    assert sum(Decimal(d["fee_base"]) for d in days) == Decimal(summary["fee_base"])
    by_day = {d["day"]: d for d in days}
    assert by_day["2026-10-02"] | {"day": None} == {
        "day": None, "spot_volume": "1505", "futures_volume": "6000", "api_volume": "7505", "fills": 2,
        "fee_base": "1.95"}
    assert by_day["2026-10-05"]["fills"] == 2
    assert by_day["2026-10-05"]["fee_base"] == "0.35"  # the maker rebate adds nothing to the base
    assert by_day["2026-10-03"] | {"day": None} == {
        "day": None, "spot_volume": "0", "futures_volume": "0", "api_volume": "0", "fills": 0, "fee_base": "0"}
    assert series["fills"] == len(own(OCTOBER_FILLS))


def test_the_daily_series_of_a_past_month_covers_the_whole_month(api: Api) -> None:
    pair = api.broker(BROKER)
    register_users(api)
    ingest(api, [fill("s1", "2026-09-30T23:59:59Z", price="10", quantity="1", fee="0.01")])

    series = get(api, pair, "/volume/daily", {"month": "2026-09"}).json()

    assert len(series["days"]) == 30
    assert series["days"][-1] | {"fills": 1, "api_volume": "10"} == series["days"][-1]


def test_a_late_fill_shows_on_its_own_day_though_paid_next_month(api: Api) -> None:
    pair = api.broker(BROKER)
    register_users(api)
    ingest(api, [fill("s1", "2026-09-10T12:00:00Z", price="100", quantity="1", fee="0.1")])
    close_month(api.engine, SEPTEMBER, now=api.clock())
    ingest(api, [fill("late", "2026-09-11T12:00:00Z", price="50", quantity="1", fee="0.05")])

    september = get(api, pair, "/volume/daily", {"month": "2026-09"}).json()
    october = get(api, pair, "/volume/daily").json()
    summary = get(api, pair, "/summary").json()

    assert september["api_volume"] == "150"
    assert (october["api_volume"], summary["api_volume"]) == ("0", "0")  # not October's volume...
    assert summary["adjustment_fee_base"] == "0.05"  # ...but paid in October, at September's tier


@pytest.mark.parametrize(("month", "field"), [("2026-13", "month"), ("October", "month"), ("2026-11", "month"),
                                              ("0000-01", "month"), ("0001-01", "month"), ("9999-12", "month"),
                                              ("\uff12\uff10\uff12\uff16-10", "month")])
def test_a_month_that_is_malformed_or_not_begun_is_refused(api: Api, month: str, field: str) -> None:
    pair = api.broker(BROKER)
    for route in ("/volume/daily", "/users", "/inactive-orders"):
        response = get(api, pair, route, {"month": month})

        assert (response.status_code, response.json()["code"], response.json()["field"]) == (
            422, "invalid_input", field), route


def test_a_page_or_a_broker_id_past_its_bounds_is_422_naming_it(api: Api) -> None:
    """A cursor of 2^63 was answered as an empty page; it is a number no page reaches."""
    pair = api.broker(BROKER)
    for value in (str(2**63), str(2**64), "-1", "1" + "0" * 100):
        for name in ("limit", "offset"):
            response = get(api, pair, "/users", {name: value})
            assert (response.status_code, response.json()["field"]) == (422, name), (name, value)
        response = api.signed_get(pair, f"/v1/broker/{value}/summary", "brokerSummaryQuery")
        assert (response.status_code, response.json()["field"]) == (422, "broker_id"), value
    for month in ("0000-01", "9999-12"):
        response = api.signed_get(pair, f"/v1/broker/{BROKER}/statements/{month}", "brokerStatementQuery")
        assert (response.status_code, response.json()["field"]) == (422, "month"), month


# --- statements ---------------------------------------------------------------------------------------------


def close_august_and_september(api: Api) -> list[dict[str, Any]]:
    register_users(api)
    rows = [
        fill("a1", "2026-08-03T12:00:00Z", price="1000000", quantity="6", fee="600"),
        fill("s1", "2026-09-04T12:00:00Z", price="200", quantity="5", fee="0.5"),
        fill("s2", "2026-09-05T12:00:00Z", user="carol", market="PERP", price="300", quantity="4", fee="0.6"),
        fill("s3", "2026-09-06T12:00:00Z", user="bob", price="10", quantity="1", fee="-0.001"),
        fill("s4", "2026-09-07T12:00:00Z", user="bob", price="10", quantity="3", fee="0.003"),
    ]
    ingest(api, rows)
    for month in (AUGUST, SEPTEMBER):
        close_month(api.engine, month, now=api.clock())
    return rows


def test_statements_are_listed_newest_first(api: Api) -> None:
    pair = api.broker(BROKER)
    rows = close_august_and_september(api)

    listed = get(api, pair, "/statements").json()

    september = expected([r for r in rows if r["timestamp"].startswith("2026-09")], Decimal("0.2"))
    assert [(s["month"], s["tier"], s["broker_rate"]) for s in listed["statements"]] == [
        ("2026-09", "BKR 0", "0.2"), ("2026-08", "BKR 1", "0.3")]
    first = listed["statements"][0]
    assert Decimal(first["api_volume"]) == september["api"]
    assert Decimal(first["payout_exact"]) == september["payout"]
    assert first["payout"] == str(september["payout"].quantize(Decimal("0.01"), rounding="ROUND_DOWN"))
    assert first["status"] == "draft"


def test_one_statement_is_the_stored_document_as_json_or_csv(api: Api) -> None:
    pair = api.broker(BROKER)
    close_august_and_september(api)
    with api.engine.connect() as connection:
        stored = stored_statement(connection, BROKER, SEPTEMBER)

    as_json = get(api, pair, "/statements/2026-09")
    as_csv = get(api, pair, "/statements/2026-09", {"format": "csv"})

    assert as_json.status_code == 200
    assert as_json.headers["content-type"].startswith("application/json")
    assert as_json.content == stored.encode()  # byte for byte
    assert as_csv.status_code == 200
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert as_csv.text == statement_csv(parse_statement(stored))
    total_row = list(csv.DictReader(io.StringIO(as_csv.text)))[-1]
    assert (total_row["kind"], total_row["payout"]) == ("total", json.loads(stored)["payout"])


def test_a_statement_that_does_not_exist_is_not_found(api: Api) -> None:
    pair = api.broker(BROKER)
    close_august_and_september(api)

    messages = {}
    for month in ("2026-07", "2026-10"):
        response = get(api, pair, f"/statements/{month}")
        assert (response.status_code, response.json()["code"]) == (404, "not_found"), month
        messages[month] = response.json()["message"]
    assert messages == {  # July closed along with August, without volume; October is in progress
        "2026-07": f"no statement for broker {BROKER} in 2026-07",
        "2026-10": f"no statement for broker {BROKER} in 2026-10 (2026-10 is open: its statements are issued when "
                   f"it closes); the month so far: GET /v1/broker/{BROKER}/summary"}
    malformed = get(api, pair, "/statements/2026-9x")
    assert (malformed.status_code, malformed.json()["field"]) == (422, "month")
    bad_format = get(api, pair, "/statements/2026-09", {"format": "xml"})
    assert (bad_format.status_code, bad_format.json()["field"]) == (422, "format")


# --- users ------------------------------------------------------------------------------------------------------


def test_the_users_of_a_closed_month_sum_to_its_statement(api: Api) -> None:
    pair = api.broker(BROKER)
    close_august_and_september(api)
    with api.engine.connect() as connection:
        document = json.loads(stored_statement(connection, BROKER, SEPTEMBER))

    breakdown = get(api, pair, "/users", {"month": "2026-09"}).json()

    users = breakdown["users"]
    assert (breakdown["source"], breakdown["total"]) == ("statement", 3)
    assert [u["user_id"] for u in users] == ["carol", "alice", "bob"]  # fee base 0.6, 0.5, 0.003
    for field, statement_field in (("spot_volume", "spot_volume"), ("futures_volume", "futures_volume"),
                                   ("fee_base", "fee_base"), ("payout_exact", "payout_exact")):
        assert sum(Decimal(u[field]) for u in users) == Decimal(document[statement_field]), field
    bob = users[2]
    assert (bob["fee"], bob["fee_base"], bob["spot_volume"]) == ("0.002", "0.003", "40")


def test_the_users_of_the_open_month_are_the_projection(api: Api) -> None:
    pair = api.broker(BROKER)
    api.broker(OTHER)
    register_users(api)
    ingest(api, OCTOBER_FILLS)
    with api.engine.connect() as connection:
        (projection,) = compute_statements(connection, OCTOBER, BROKER)

    breakdown = get(api, pair, "/users").json()
    first_page = get(api, pair, "/users", {"limit": 2}).json()
    second_page = get(api, pair, "/users", {"limit": 2, "offset": 2}).json()

    assert (breakdown["source"], breakdown["month"], breakdown["total"]) == ("projection", "2026-10", 3)
    assert sum(Decimal(u["payout_exact"]) for u in breakdown["users"]) == projection.payout_exact
    assert sum(Decimal(u["spot_volume"]) + Decimal(u["futures_volume"]) for u in breakdown["users"]) == (
        projection.api_volume)
    fee_bases = [Decimal(u["fee_base"]) for u in breakdown["users"]]
    assert fee_bases == sorted(fee_bases, reverse=True)
    assert first_page["users"] + second_page["users"] == breakdown["users"]
    assert (len(first_page["users"]), second_page["total"]) == (2, 3)


def test_late_fills_appear_as_a_users_adjustment(api: Api) -> None:
    pair = api.broker(BROKER)
    register_users(api)
    ingest(api, [fill("s1", "2026-09-10T12:00:00Z", user="bob", price="100", quantity="1", fee="0.1")])
    close_month(api.engine, SEPTEMBER, now=api.clock())
    ingest(api, [fill("late", "2026-09-11T12:00:00Z", user="bob", price="50", quantity="1", fee="0.05"),
                 fill("o1", "2026-10-11T12:00:00Z", user="alice", price="50", quantity="1", fee="0.04")])

    users = {u["user_id"]: u for u in get(api, pair, "/users").json()["users"]}

    assert (users["bob"]["spot_volume"], users["bob"]["fee_base"], users["bob"]["adjustment_fee_base"]) == (
        "0", "0", "0.05")
    assert users["bob"]["payout_exact"] == "0.01"  # at September's BKR 0, 20%
    assert list(users) == ["bob", "alice"]  # 0.05 of base (as an adjustment) before 0.04


# --- orders while inactive -------------------------------------------------------------------------------------


def test_orders_carrying_the_id_before_activation_or_while_suspended_are_counted(api: Api) -> None:
    pair = api.broker(BROKER, active_since=datetime(2026, 10, 5, tzinfo=UTC))
    register_users(api)
    with api.engine.begin() as connection:
        registry.change_broker_status(connection, BROKER, BrokerStatus.SUSPENDED,
                                      datetime(2026, 10, 8, tzinfo=UTC), api.clock(), actor="ops")
        registry.change_broker_status(connection, BROKER, BrokerStatus.ACTIVE,
                                      datetime(2026, 10, 10, tzinfo=UTC), api.clock(), actor="ops")
    ingest(api, [
        fill("p1", "2026-10-02T12:00:00Z", order_id="early"),  # before activation: one order, two fills
        fill("p2", "2026-10-02T12:00:01Z", order_id="early"),
        fill("p3", "2026-10-04T23:59:59Z"),
        fill("a1", "2026-10-06T12:00:00Z", price="70", quantity="1"),  # active: counted
        fill("s1", "2026-10-09T12:00:00Z"),  # suspended
        fill("r1", "2026-10-10T00:00:00Z", price="30", quantity="1"),  # active again from that instant
        fill("x1", "2026-09-15T12:00:00Z"),  # September: before activation too, but another month
        fill("n1", "2026-10-02T12:00:00Z", broker=None),  # no broker id: nobody's
    ])

    october = get(api, pair, "/inactive-orders").json()
    september = get(api, pair, "/inactive-orders", {"month": "2026-09"}).json()
    summary = get(api, pair, "/summary").json()

    assert october == {"broker_id": BROKER, "month": "2026-10", "orders": 3, "fills": 4}
    assert (september["orders"], september["fills"]) == (1, 1)
    assert summary["api_volume"] == "100"  # only the fills made while active


def test_a_broker_sees_none_of_another_brokers_inactive_orders(api: Api) -> None:
    pair = api.broker(BROKER)
    api.broker(OTHER, active_since=datetime(2026, 10, 10, tzinfo=UTC))
    register_users(api)
    ingest(api, [fill("x1", "2026-10-02T12:00:00Z", broker=OTHER)])

    assert get(api, pair, "/inactive-orders").json()["orders"] == 0


def test_the_clock_decides_the_current_month(api: Api) -> None:
    pair = api.broker(BROKER)
    register_users(api)
    ingest(api, [fill("s1", "2026-09-30T23:00:00Z", price="10", quantity="1", fee="0.01")])
    api.clock.set(datetime(2026, 10, 1, 0, 30, tzinfo=UTC))

    summary = get(api, pair, "/summary").json()
    series = get(api, pair, "/volume/daily").json()

    assert (summary["month"], summary["api_volume"]) == ("2026-10", "0")
    assert [d["day"] for d in series["days"]] == ["2026-10-01"]
    api.clock.advance(timedelta(hours=-1))
    assert get(api, pair, "/summary").json()["api_volume"] == "10"
