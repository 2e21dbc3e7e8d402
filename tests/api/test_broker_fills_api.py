"""The broker API's per-fill audit and a suspended or terminated broker reading its own past, on
both databases: pages and the download are the rows of `bkr.program.fill_audit`, the download is
the file `bkr fills export` writes, and an inactive broker's key reads but never writes."""

import csv
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import pyarrow.parquet as pq
import pytest
from api_support import Api, error, ok, signed_headers
from fastapi import Depends, Request, Response
from test_broker_api import BROKER, OTHER, SEPTEMBER, broker_routes, fill, ingest, register_users

from bkr.api.deps import BrokerSignature, ServicesDep, broker_signature
from bkr.api.routers import broker as broker_router
from bkr.domain.money import total
from bkr.domain.registry import BrokerStatus
from bkr.domain.signing import KeyPair
from bkr.program import registry
from bkr.program.close import close_month, stored_statement

SEPTEMBER_FILLS = [
    fill("s1", "2026-09-04T12:00:00Z", price="200", quantity="5", fee="0.5"),
    fill("s2", "2026-09-05T12:00:00Z", user="carol", market="PERP", price="300", quantity="4", fee="0.6"),
    fill("s3", "2026-09-06T12:00:00Z", user="bob", price="10", quantity="1", fee="-0.001"),
    fill("s4", "2026-09-07T12:00:00Z", user="bob", price="10", quantity="3", fee="0.003"),
    fill("s5", "2026-09-08T12:00:00Z", user="alice", price="10", quantity="3", fee="0.013"),
    fill("x1", "2026-09-09T12:00:00Z", broker=OTHER, price="10", quantity="3", fee="0.003"),
]


def fills_get(api: Api, pair: KeyPair, params: dict[str, Any] | None = None) -> Any:
    return api.signed_get(pair, f"/v1/broker/{BROKER}/fills", "brokerFillsQuery", params)


def export_get(api: Api, pair: KeyPair, params: dict[str, Any]) -> Any:
    return api.signed_get(pair, f"/v1/broker/{BROKER}/fills/export", "brokerFillsExport", params)


def closed_september(api: Api) -> KeyPair:
    pair = api.broker(BROKER)
    api.broker(OTHER)
    register_users(api)
    ingest(api, SEPTEMBER_FILLS)
    close_month(api.engine, SEPTEMBER, now=api.clock())
    ingest(api, [fill("late", "2026-09-30T12:00:00Z", user="bob", fee="0.2"),  # paid in October
                 fill("o1", "2026-10-02T12:00:00Z", user="carol", fee="0.3")])
    return pair


def test_pages_of_the_audit_return_every_fill_once_and_add_up_to_the_statement(api: Api) -> None:
    pair = closed_september(api)
    with api.engine.connect() as connection:
        statement = json.loads(stored_statement(connection, BROKER, SEPTEMBER))

    rows: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        page = ok(fills_get(api, pair, {"month": "2026-09", "limit": 2, **({"cursor": cursor} if cursor else {})}))
        assert (page["broker_id"], page["month"], page["source"]) == (BROKER, "2026-09", "statement")
        rows += page["fills"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert pages == 3 and [r["fill_id"] for r in rows] == ["s1", "s2", "s3", "s4", "s5"]
    assert total(Decimal(r["payout_exact"]) for r in rows) == Decimal(statement["payout_exact"])
    assert total(Decimal(r["volume_usd"]) for r in rows) == Decimal(statement["api_volume"])
    s2 = rows[1]
    assert {k: s2[k] for k in ("user_id", "market_type", "affiliate_rate", "effective_rate", "fee_base",
                               "payout_exact", "line_kind", "tier", "statement_month", "fill_month")} == {
        "user_id": "carol", "market_type": "PERP", "affiliate_rate": "0.4", "effective_rate": "0.1",
        "fee_base": "0.6", "payout_exact": "0.06", "line_kind": "regular", "tier": "BKR 0",
        "statement_month": "2026-09", "fill_month": "2026-09"}
    assert statement["lines"][s2["statement_line"] - 1]["user_id"] == "carol"
    assert s2["timestamp"] == "2026-09-05T12:00:00.000000Z" and s2["order_id"] == "order-s2"

    october = ok(fills_get(api, pair))  # the current month: the projection, the late fill as an adjustment
    assert october["source"] == "projection"
    assert [(r["fill_id"], r["line_kind"], r["statement_line"]) for r in october["fills"]] == [
        ("late", "adjustment", None), ("o1", "regular", None)]
    filtered = ok(fills_get(api, pair, {"user_id": "carol"}))
    assert [r["fill_id"] for r in filtered["fills"]] == ["o1"]
    assert ok(fills_get(api, pair, {"symbol": "BTC_USDC"}))["fills"] == []


def test_a_cursor_of_another_month_or_a_page_too_large_is_422_naming_it(api: Api) -> None:
    pair = closed_september(api)
    cursor = ok(fills_get(api, pair, {"month": "2026-09", "limit": 1}))["next_cursor"]

    assert error(fills_get(api, pair, {"cursor": cursor}), 422) == ("invalid_input", "cursor")
    assert error(fills_get(api, pair, {"cursor": "nonsense"}), 422) == ("invalid_input", "cursor")
    assert error(fills_get(api, pair, {"limit": 1001}), 422)[1] == "limit"
    assert error(fills_get(api, pair, {"month": "2026-11"}), 422) == ("invalid_input", "month")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_the_download_is_the_file_bkr_fills_export_writes(api: Api, bkr: Callable[..., Any], tmp_path: Path,
                                                           fmt: str) -> None:
    pair = closed_september(api)
    out = tmp_path / f"september.{fmt}"

    response = export_get(api, pair, {"month": "2026-09", "format": fmt})
    written = bkr("fills", "export", "--broker", str(BROKER), "--month", "2026-09", "--format", fmt, "--out",
                  str(out), "--db", api.engine.url.render_as_string(hide_password=False))

    assert response.status_code == 200, response.text
    assert written.code == 0, written.err
    assert "5 fills, priced by its statement" in written.out
    assert response.headers["content-disposition"] == f'attachment; filename="fills-{BROKER}-2026-09.{fmt}"'
    if fmt == "csv":
        assert response.headers["content-type"].startswith("text/csv")
        assert response.content == out.read_bytes()
        rows = list(csv.DictReader(io.StringIO(response.text)))
    else:
        assert response.headers["content-type"] == "application/vnd.apache.parquet"
        table = pq.read_table(io.BytesIO(response.content))
        assert table.equals(pq.read_table(out))
        rows = table.to_pylist()
    api_rows = ok(fills_get(api, pair, {"month": "2026-09", "limit": 1000}))["fills"]
    assert [r["fill_id"] for r in rows] == [r["fill_id"] for r in api_rows]
    assert [str(r["payout_exact"]) for r in rows] == [r["payout_exact"] for r in api_rows]


def test_the_users_view_gives_affiliate_rates_and_why_a_user_is_paid_nothing(api: Api) -> None:
    pair = api.broker(BROKER)
    since = datetime(2026, 1, 1, tzinfo=UTC)
    with api.engine.begin() as connection:
        registry.enroll_affiliate(connection, "aff-2", "Affiliate", since, actor="ops")
        registry.set_referral_rate(connection, "aff-2", "HALF", Decimal("0.5"), since, since, actor="ops")
        registry.add_users(connection, [("dave", "HALF"), ("erin", None), ("alice", None)], since, actor="ops")
    ingest(api, [fill("d1", "2026-10-02T12:00:00Z", user="dave", price="1444", quantity="100", fee="144.4"),
                 fill("e1", "2026-10-02T12:00:00Z", user="erin", fee="-0.02"),
                 fill("a1", "2026-10-02T12:00:00Z", user="alice", fee="0.1")])

    users = {u["user_id"]: u for u in ok(api.signed_get(pair, f"/v1/broker/{BROKER}/users", "brokerUsersQuery"))
             ["users"]}

    assert (users["dave"]["fee_base"], users["dave"]["payout_exact"], users["dave"]["affiliate_rates"],
            users["dave"]["zero_payout_reason"]) == ("144.4", "0", ["0.5"], "affiliate_rate_at_cap")
    assert (users["erin"]["affiliate_rates"], users["erin"]["zero_payout_reason"]) == (["0"], "rebate_fees_only")
    assert (users["alice"]["affiliate_rates"], users["alice"]["zero_payout_reason"]) == (["0"], None)


# --- a suspended or terminated broker reads its own past ------------------------------------------------------


READS = [("/summary", "brokerSummaryQuery", {}), ("/statements", "brokerStatementQueryAll", {}),
         ("/statements/2026-09", "brokerStatementQuery", {}), ("/users", "brokerUsersQuery", {"month": "2026-09"}),
         ("/volume/daily", "brokerDailyVolumeQuery", {}), ("/inactive-orders", "brokerInactiveOrdersQuery", {}),
         ("/fills", "brokerFillsQuery", {"month": "2026-09"}),
         ("/fills/export", "brokerFillsExport", {"month": "2026-09"}), ("/payouts", "brokerPayoutQueryAll", {})]


def _add_write_route(api: Api) -> None:
    """A broker endpoint that writes (none of today's does), declared as endpoints are, without a
    declared access: what an inactive broker must be refused."""
    signature = Annotated[BrokerSignature, Depends(broker_signature("brokerSummaryQuery"))]

    async def write(broker_id: int, request: Request, services: ServicesDep, signed: signature) -> Response:
        return await broker_router._as_broker(request, services, signed, broker_id,
                                              lambda connection, caller: Response("written"))

    app: Any = api.client.app
    app.add_api_route("/v1/broker/{broker_id}/test-write", write, methods=["POST"])


@pytest.mark.parametrize("status", [BrokerStatus.SUSPENDED, BrokerStatus.TERMINATED])
def test_an_inactive_broker_reads_its_statements_and_audit_but_cannot_write(api: Api, status: BrokerStatus) -> None:
    pair = closed_september(api)
    _add_write_route(api)
    with api.engine.begin() as connection:
        registry.change_broker_status(connection, BROKER, status, datetime(2026, 10, 10, tzinfo=UTC), api.clock(),
                                      actor="ops")
    ingest(api, [fill("while-out", "2026-10-12T12:00:00Z")])  # an order sent while inactive

    for route, instruction, params in READS:
        response = api.signed_get(pair, f"/v1/broker/{BROKER}{route}", instruction, params)
        assert response.status_code == 200, (route, response.text)
    summary = ok(api.signed_get(pair, f"/v1/broker/{BROKER}/summary", "brokerSummaryQuery"))
    assert summary["status"] == status.value
    audit = ok(fills_get(api, pair, {"month": "2026-09"}))
    assert [r["fill_id"] for r in audit["fills"]] == ["s1", "s2", "s3", "s4", "s5"]
    inactive = ok(api.signed_get(pair, f"/v1/broker/{BROKER}/inactive-orders", "brokerInactiveOrdersQuery"))
    assert (inactive["orders"], inactive["fills"]) == (1, 1)

    timestamp = api.clock.ms()
    refused = api.client.post(f"/v1/broker/{BROKER}/test-write",
                              headers=signed_headers(pair, "brokerSummaryQuery", {}, timestamp=timestamp))
    assert error(refused, 403) == (f"broker_{status.value}", None)
    assert "may only read its own figures" in refused.json()["message"]


def test_an_active_broker_may_write(api: Api) -> None:
    pair = api.broker(BROKER)
    _add_write_route(api)
    response = api.client.post(f"/v1/broker/{BROKER}/test-write",
                               headers=signed_headers(pair, "brokerSummaryQuery", {}, timestamp=api.clock.ms()))
    assert (response.status_code, response.text) == (200, "written")


def test_the_reads_an_inactive_broker_keeps_are_every_broker_endpoint(api: Api) -> None:
    """Every endpoint of the broker API reads: the test above covers each of them."""
    paths = {route.path.removeprefix("/v1/broker/{broker_id}").replace("{month}", "2026-09")
             for route in broker_routes(api)}

    assert paths == {route for route, _, _ in READS}
    assert all(route.methods == {"GET"} for route in broker_routes(api))


# --- the dashboard ------------------------------------------------------------------------------------------


def _signed_in_as_broker(api: Api, pair: KeyPair) -> None:
    page = api.client.get("/dashboard/sign-in")
    token = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    answer = api.client.post("/dashboard/sign-in", data={"csrf": token, "key": pair.secret, "next": ""},
                             follow_redirects=False)
    assert answer.status_code == 303, answer.text


def test_the_dashboard_shows_users_rates_and_reasons_and_downloads_the_audit_as_the_api_does(api: Api) -> None:
    pair = closed_september(api)
    ingest(api, [fill("o2", "2026-10-03T12:00:00Z", user="alice", fee="-0.01")])  # alice: a rebate only
    _signed_in_as_broker(api, pair)

    page = api.client.get(f"/dashboard/brokers/{BROKER}")  # this month: October's projection

    assert page.status_code == 200
    assert 'data-value="0.4">40%</td>' in page.text  # carol's affiliate rate
    assert page.text.count('data-value="rebate_fees_only">rebate fees only: no positive fee</td>') == 1  # alice
    for fmt in ("csv", "parquet"):
        download = api.client.get(f"/dashboard/brokers/{BROKER}/statements/2026-09/fills", params={"format": fmt})
        served = export_get(api, pair, {"month": "2026-09", "format": fmt})
        assert download.status_code == 200 and download.content == served.content, fmt
    statement_page = api.client.get(f"/dashboard/brokers/{BROKER}/statements/2026-09")
    assert "/statements/2026-09/fills?format=parquet" in statement_page.text
