"""Payouts over HTTP, on both databases: the wallet takes pending instructions and acknowledges
each (once; a conflicting reference is a 409), the operator's month list in JSON and CSV is the
dashboard's download byte for byte, and a broker reads its own payouts, signed."""

import csv
import io
import re

import httpx
from api_support import Api, error, ok
from fastapi.testclient import TestClient
from feed_support import closed_october

from bkr.program import audit

SETTLE = "/v1/admin/periods/2026-10/settle"
KEY = "payout/1400/2026-10"


def _settled_october(api: Api) -> dict[str, str]:
    """October closed, approved and settled; an approver's headers."""
    closed_october(api)
    approver = api.operator_key("approver", "alice")
    ok(api.client.post("/v1/admin/periods/2026-10/statements/1400/approve", headers=approver))
    assert ok(api.client.post(SETTLE, headers=approver))["paid"] == [1400]
    return approver


def _csrf(response: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', response.text)
    assert found is not None
    return found.group(1)


def test_the_wallet_takes_pending_payouts_and_acknowledges_each_once(api: Api) -> None:
    _settled_october(api)
    viewer = api.operator_key("viewer")
    pending = ok(api.client.get("/v1/admin/payouts", params={"state": "pending", "month": "2026-10"},
                                headers=viewer))["payouts"]
    assert [(p["key"], p["account_id"], p["amount"], p["currency"], p["state"]) for p in pending] == [
        (KEY, "acct-1400", "2.5", "USD", "pending")]  # 20% of 12.5
    assert error(api.client.post(f"/v1/admin/payouts/{KEY}/ack", json={"reference": "W-1"}, headers=viewer),
                 403)[0] == "role_insufficient"
    assert error(api.client.post(f"/v1/admin/payouts/{KEY}/ack", json={"reference": "W-1"}), 401)[0] == \
        "credentials_missing"
    wallet = api.operator_key("approver", "wallet")
    first = ok(api.client.post(f"/v1/admin/payouts/{KEY}/ack", json={"reference": "W-1"}, headers=wallet))
    again = ok(api.client.post(f"/v1/admin/payouts/{pending[0]['id']}/ack", json={"reference": "W-1"},
                               headers=wallet))
    assert (first["state"], first["reference"], first["acknowledged_by"], first["already_acknowledged"]) == (
        "acknowledged", "W-1", "wallet", False)
    assert {**again, "already_acknowledged": False} == first and again["already_acknowledged"] is True
    conflict = api.client.post(f"/v1/admin/payouts/{KEY}/ack", json={"reference": "W-2"}, headers=wallet)
    assert conflict.status_code == 409 and conflict.json()["code"] == "payout_reference_conflict"
    assert "already acknowledged with reference 'W-1'" in conflict.json()["message"]
    assert error(api.client.post("/v1/admin/payouts/payout/9/2026-10/ack", json={"reference": "W-3"},
                                 headers=wallet), 404)[0] == "payout_not_found"
    assert ok(api.client.get("/v1/admin/payouts", params={"state": "pending"}, headers=viewer))["payouts"] == []
    balances = ok(api.client.get("/v1/admin/ledger/balances", headers=viewer))
    assert {b["account"]: b["balance"] for b in balances} == {
        "broker:1400": "-2.5", "broker:1400:payable": "0", "program:rebate_expense": "2.5"}
    with api.engine.connect() as connection:
        trail = audit.entries(connection, audit.AuditQuery(action="payout.acknowledge"))
    assert [(e.actor, e.subject) for e in trail] == [("wallet", KEY)]  # the repeat changed nothing


def test_the_month_list_is_one_download_in_json_csv_and_on_the_dashboard(api: Api) -> None:
    approver = _settled_october(api)
    viewer = api.operator_key("viewer")
    as_json = api.client.get("/v1/admin/statements", params={"month": "2026-10"}, headers=viewer)
    rows = ok(as_json)["statements"]
    assert [(r["broker_id"], r["status"], r["payout"], r["instruction_key"], r["instruction_state"])
            for r in rows] == [(1400, "paid", "2.5", KEY, "pending")]
    as_csv = api.client.get("/v1/admin/statements", params={"month": "2026-10", "format": "csv"}, headers=viewer)
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert [r["instruction_state"] for r in csv.DictReader(io.StringIO(as_csv.text))] == ["pending"]
    assert error(api.client.get("/v1/admin/statements", params={"month": "2026-13"}, headers=viewer), 422)[0]
    with TestClient(api.client.app) as browser:
        token = _csrf(browser.get("/dashboard/sign-in"))
        browser.post("/dashboard/sign-in", data={"csrf": token, "key": approver["Authorization"][7:], "next": ""})
        page = browser.get("/dashboard/program/months/2026-10")
        assert page.status_code == 200 and 'data-state="pending"' in page.text
        assert "/dashboard/program/months/2026-10/statements.csv" in page.text
        assert browser.get("/dashboard/program/months/2026-10/statements.csv").text == as_csv.text
        assert browser.get("/dashboard/program/months/2026-10/statements.json").text == as_json.text
        assert browser.get("/dashboard/program/months/2026-10/statements.xml").status_code == 422


def test_a_broker_reads_its_own_payouts_signed(api: Api) -> None:
    pair = api.broker(2200)
    _settled_october(api)
    with api.engine.begin() as connection:
        from bkr.program import keys

        mine = keys.create_broker_key(connection, 1400, api.clock(), actor="ops")
    read = ok(api.signed_get(mine, "/v1/broker/1400/payouts", "brokerPayoutQueryAll"))
    assert read["broker_id"] == 1400
    assert [(p["key"], p["amount"], p["state"], p["reference"]) for p in read["payouts"]] == [
        (KEY, "2.5", "pending", None)]
    assert "acknowledged_by" not in read["payouts"][0]  # operators' names stay with the operators
    assert error(api.signed_get(pair, "/v1/broker/1400/payouts", "brokerPayoutQueryAll"), 403)[0] == \
        "not_your_broker"
    assert error(api.signed_get(mine, "/v1/broker/1400/payouts", "brokerStatementQueryAll"), 401)[0]
