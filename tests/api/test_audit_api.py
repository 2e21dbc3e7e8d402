"""The audit trail over the operator API and on the dashboard's audit page."""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from api_support import Api
from sqlalchemy import text

from bkr.program import audit

AT = datetime(2026, 10, 14, 8, 0, tzinfo=UTC)


def _entries(api: Api) -> None:
    with api.engine.begin() as connection:
        audit.record(connection, actor="alice", action="broker.status", subject="broker 1400", at=AT,
                     before={"status": "pending"}, after={"status": "active"}, reason="contract signed")
        audit.record(connection, actor="bob", action="referral.rate", subject="code X", at=AT + timedelta(hours=1),
                     after={"rate": Decimal("0.05")})


def test_operators_read_the_trail_by_filter_and_check_its_chain(api: Api) -> None:
    viewer = api.operator_key("viewer")  # on the trail itself, after the program's first version
    base = len(api.client.get("/v1/admin/audit", headers=viewer).json()["entries"])
    _entries(api)
    first, second = base + 1, base + 2

    listed = api.client.get("/v1/admin/audit", headers=viewer, params={"after": base}).json()
    assert [(e["id"], e["actor"], e["action"], e["after"]) for e in listed["entries"]] == [
        (first, "alice", "broker.status", {"status": "active"}), (second, "bob", "referral.rate", {"rate": "0.05"})]
    assert listed["next_after"] is None
    assert [e["id"] for e in api.client.get("/v1/admin/audit", headers=viewer, params={
        "since": "2026-10-14T08:30:00Z", "actor": "bob"}).json()["entries"]] == [second]
    assert [e["id"] for e in api.client.get("/v1/admin/audit", headers=viewer,
                                            params={"action": "broker"}).json()["entries"]] == [first]
    page = api.client.get("/v1/admin/audit", headers=viewer, params={"limit": 1, "after": base}).json()
    assert ([e["id"] for e in page["entries"]], page["next_after"]) == ([first], first)
    checked = api.client.get("/v1/admin/audit/verify", headers=viewer).json()
    assert (checked["ok"], checked["entries"], checked["head"], checked["problems"]) == (
        True, second, listed["entries"][1]["hash"], [])

    bad = api.client.get("/v1/admin/audit", headers=viewer, params={"since": "noon"})
    assert (bad.status_code, bad.json()["code"], bad.json()["field"]) == (422, "invalid_input", "since")
    assert api.client.get("/v1/admin/audit").status_code == 401


def test_the_audit_page_lists_entries_and_says_when_the_chain_is_broken(api: Api) -> None:
    _entries(api)
    token = api.operator_key("viewer")["Authorization"].removeprefix("Bearer ")
    form = api.client.get("/dashboard/sign-in").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf is not None
    api.client.post("/dashboard/sign-in", data={"csrf": csrf.group(1), "key": token, "next": ""})

    page = api.client.get("/dashboard/program/audit", params={"actor": "", "action": ""})
    assert page.status_code == 200
    assert "contract signed" in page.text and 'data-entry="' in page.text
    assert 'id="audit-verdict">The chain holds:' in page.text
    assert api.client.get("/dashboard/program/audit", params={"actor": "bob"}).text.count('<tr data-entry="') == 1
    assert api.client.get("/dashboard/program/audit", params={"actor": "alice"}).text.count('<tr data-entry="') == 1

    with api.engine.begin() as connection:  # the guard lifted behind bkr's back
        if api.engine.dialect.name == "postgresql":
            connection.execute(text("ALTER TABLE audit_entries DISABLE TRIGGER audit_entries_append_only"))
        else:
            connection.execute(text("DROP TRIGGER audit_entries_no_update"))
        connection.execute(text("UPDATE audit_entries SET reason = 'no reason' WHERE actor = 'alice'"))

    broken = api.client.get("/dashboard/program/audit").text
    assert 'The chain is broken:' in broken and ": edited: its content does not give its stored hash" in broken
