"""The program's settings over the operator API (`/v1/admin/program`) and on the dashboard: the
version in force, the history, applying a version, and what is refused."""

import re
from datetime import UTC, datetime
from typing import Any

import httpx
from api_support import Api
from fastapi.testclient import TestClient
from feed_support import closed_october, fill

from bkr.program import registry

NEW_TERMS: dict[str, Any] = {
    "program": {"cap": "0.45", "approvals_required": 2, "review_days": 0},
    "usd_rates": {"EUR": "1.08"},
    "tier_schedules": [{"effective_from": "2026-12", "tiers": [["0", "0.25"], ["1000000", "0.4"]]}],
}


def apply(api: Api, headers: dict[str, str], from_month: str, settings: dict[str, Any] = NEW_TERMS,
          reason: str = "new terms from December") -> httpx.Response:
    return api.client.post("/v1/admin/program", json={"from_month": from_month, "reason": reason,
                                                      "settings": settings}, headers=headers)


def test_the_first_version_is_the_settings_the_app_started_with(api: Api) -> None:
    viewer = api.operator_key("viewer")

    answer = api.client.get("/v1/admin/program", headers=viewer)

    assert answer.status_code == 200
    body = answer.json()
    assert (body["version"], body["from_month"], body["month"], body["reason"], body["created_by"]) == (
        1, "2000-01", "2026-10", "imported from defaults", "system")
    assert body["settings"]["program"] == {
        "tier_basis": "same_month", "unknown_broker_policy": "ignore", "cap": "0.5", "rounding_quantum": "0.01",
        "review_days": 3, "approvals_required": 1, "start": "2000-01", "future_tolerance_seconds": 300,
        "max_fee_share": "1"}
    assert [t["rate"] for t in body["tier_schedule"]] == ["0.2", "0.3", "0.35", "0.4", "0.45", "0.5"]


def test_an_operator_applies_a_version_that_governs_its_months_only(api: Api) -> None:
    operator = api.operator_key("operator", "olga")

    applied = apply(api, operator, "2026-12")

    assert applied.status_code == 201, applied.text
    body = applied.json()
    assert (body["version"], body["from_month"], body["created_by"]) == (2, "2026-12", "olga")
    assert body["changes"] == ["program.approvals_required", "program.cap", "program.review_days", "tier_schedules",
                               "usd_rates.EUR"]
    december = api.client.get("/v1/admin/program", params={"month": "2026-12"}, headers=operator).json()
    november = api.client.get("/v1/admin/program", params={"month": "2026-11"}, headers=operator).json()
    assert (december["version"], december["settings"]["program"]["cap"]) == (2, "0.45")
    assert [(t["tier"], t["min_volume"], t["rate"]) for t in december["tier_schedule"]] == [
        ("BKR 0", "0", "0.25"), ("BKR 1", "1000000", "0.4")]
    assert (november["version"], november["settings"]["program"]["cap"]) == (1, "0.5")
    history = api.client.get("/v1/admin/program/history", headers=operator).json()
    assert [(v["version"], v["from_month"], v["reason"]) for v in history] == [
        (1, "2000-01", "imported from defaults"), (2, "2026-12", "new terms from December")]
    # what GET answers is a version POST takes back: the same settings again are a version that changes nothing
    again = apply(api, operator, "2026-12", december["settings"], "the same terms, restated")
    assert (again.status_code, again.json()["version"], again.json()["changes"]) == (201, 3, [])


def test_a_viewer_cannot_apply_a_version(api: Api) -> None:
    answer = apply(api, api.operator_key("viewer"), "2026-12")

    assert (answer.status_code, answer.json()["code"]) == (403, "role_insufficient")
    assert len(api.client.get("/v1/admin/program/history", headers=api.operator_key("viewer")).json()) == 1


def test_a_version_for_a_closed_month_is_refused_and_nothing_is_stored(api: Api) -> None:
    operator = closed_october(api)

    refused = apply(api, operator, "2026-10")
    accepted = apply(api, operator, "2026-11")

    assert (refused.status_code, refused.json()["code"], refused.json()["field"]) == (409, "period_closed",
                                                                                      "from_month")
    assert "2026-10 is closed" in refused.json()["message"] and "2026-11 at the earliest" in refused.json()["message"]
    assert (accepted.status_code, accepted.json()["version"]) == (201, 2)


def test_an_invalid_version_is_refused_whole_naming_the_setting(api: Api) -> None:
    operator = api.operator_key()
    decreasing = {**NEW_TERMS, "tier_schedules": [{"effective_from": "2026-12",
                                                   "tiers": [["0", "0.25"], ["1000000", "0.4"], ["500", "0.5"]]}]}
    cases = {
        "a float": ({**NEW_TERMS, "program": {"cap": 0.45}}, 422, "settings.program.cap"),
        "an unknown setting": ({**NEW_TERMS, "program": {"capp": "0.45"}}, 422, "settings.program.capp"),
        "thresholds that do not increase": (decreasing, 422, "tier_schedules[0]"),
        "a cap above 1": ({"program": {"cap": "1.5"}}, 422, "program.cap"),
        "a quantum that is not a power of ten": ({"program": {"rounding_quantum": "0.05"}}, 422,
                                                 "program.rounding_quantum"),
    }
    for name, (settings, status, field) in cases.items():
        answer = apply(api, operator, "2026-12", settings)
        assert (answer.status_code, answer.json()["field"]) == (status, field), (name, answer.text)

    assert len(api.client.get("/v1/admin/program/history", headers=operator).json()) == 1


def test_a_usd_rate_change_into_a_month_that_holds_fills_is_refused(api: Api) -> None:
    api.broker(1400)
    operator = api.operator_key()
    assert api.client.post("/v1/fills", json=[fill("f-1")], headers=operator).status_code == 200

    refused = apply(api, operator, "2026-10", {"usd_rates": {"EUR": "1.10"}})
    accepted = apply(api, operator, "2026-10", {"program": {"review_days": 5}})  # no price changes

    assert (refused.status_code, refused.json()["code"], refused.json()["field"]) == (409, "fills_priced",
                                                                                      "usd_rates")
    assert "2026-11 or later" in refused.json()["message"]
    assert (accepted.status_code, accepted.json()["version"]) == (201, 2)


def test_a_close_names_the_version_in_force_for_its_month(api: Api) -> None:
    api.broker(1400)
    with api.engine.begin() as connection:
        registry.add_users(connection, [("alice", None)], api.clock(), actor="ops")
    operator = api.operator_key()
    assert apply(api, operator, "2026-10", {"program": {"cap": "0.15"}}).status_code == 201
    assert api.client.post("/v1/fills", json=[fill("f-1", fee="10")], headers=operator).status_code == 200
    api.clock.set(datetime(2026, 11, 2, tzinfo=UTC))

    closed = api.client.post("/v1/admin/periods/2026-10/close", headers=operator).json()
    document = api.client.get("/v1/admin/periods/2026-10/statements/1400", headers=operator).json()

    (statement,) = closed["statements"]
    assert statement["program"]["version"] == document["program"]["version"] == 2
    assert (document["program"]["cap"], document["broker_rate"], document["payout"]) == ("0.15", "0.2", "1.50")
    assert document["program"]["tier_schedule"]["effective_from"] == "2000-01"


def _sign_in(client: TestClient, key: str) -> None:
    page = client.get("/dashboard/sign-in")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token is not None
    client.post("/dashboard/sign-in", data={"csrf": token.group(1), "key": key, "next": ""}, follow_redirects=False)


def test_the_dashboard_shows_the_version_in_force_and_every_version(api: Api) -> None:
    operator = api.operator_key()
    assert apply(api, operator, "2026-12").status_code == 201
    _sign_in(api.client, operator["Authorization"].removeprefix("Bearer "))

    now = api.client.get("/dashboard/program/settings")
    december = api.client.get("/dashboard/program/settings", params={"month": "2026-12"})

    assert now.status_code == 200
    assert "Version 1, in force for 2026-10" in now.text and "Version 2 applies from 2026-12" in now.text
    assert 'data-setting="cap" data-value="0.5"' in now.text
    assert "Version 2, in force for 2026-12" in december.text
    assert 'data-setting="cap" data-value="0.45"' in december.text
    assert 'data-setting="usd_rates.EUR" data-value="1.08"' in december.text
    assert december.text.count('<tr data-version="') == 2 and "new terms from December" in december.text


def test_a_broker_cannot_open_the_settings_page(api: Api) -> None:
    pair = api.broker(1400)
    _sign_in(api.client, pair.secret)

    assert api.client.get("/dashboard/program/settings").status_code == 403
