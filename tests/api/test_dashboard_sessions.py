"""The dashboard's sign-in, session cookie and CSRF protection, in process (the browser tests in
tests/browser/ drive the pages themselves)."""

import base64
import re
from datetime import UTC, datetime

import httpx
import pytest
from api_support import Api
from fastapi.testclient import TestClient
from feed_support import closed_october, fill

from bkr.api.dashboard import session as sessions
from bkr.domain.errors import InvalidInput
from bkr.domain.registry import BrokerStatus
from bkr.program import audit, keys, registry
from bkr.settings import load_service_settings


def _csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None, page.text
    return found.group(1)


def _sign_in(client: TestClient, key: str) -> httpx.Response:
    token = _csrf(client.get("/dashboard/sign-in"))
    return client.post("/dashboard/sign-in", data={"csrf": token, "key": key, "next": ""}, follow_redirects=False)


def sessions_payload(set_cookie: str) -> str:
    """The JSON inside a Set-Cookie header's session value (base64url, unpadded)."""
    value = set_cookie.split(";")[0].split("=", 1)[1].split(".")[0]
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()


def _operator_token(api: Api, role: str = "operator") -> str:
    return api.operator_key(role)["Authorization"].removeprefix("Bearer ")


def test_root_leads_to_the_dashboard_and_a_stranger_to_sign_in(api: Api) -> None:
    assert api.client.get("/", follow_redirects=False).headers["location"] == "/dashboard"
    assert api.client.get("/dashboard", follow_redirects=False).headers["location"] == "/dashboard/sign-in"
    page = api.client.get("/dashboard/brokers/1400", follow_redirects=False)
    assert (page.status_code, page.headers["location"]) == (303, "/dashboard/sign-in?next=/dashboard/brokers/1400")


def test_the_session_cookie_is_httponly_samesite_and_holds_no_key(api: Api) -> None:
    token = _operator_token(api)
    answer = _sign_in(api.client, token)
    assert (answer.status_code, answer.headers["location"]) == (303, "/dashboard/program")
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/dashboard" in cookie
    assert "Secure" not in cookie  # served over http
    random_part = token.removeprefix(keys.TOKEN_PREFIX).split("_", 1)[1]
    assert random_part not in cookie and random_part not in sessions_payload(cookie)


def test_the_cookie_is_secure_over_https(api: Api) -> None:
    with TestClient(api.client.app, base_url="https://testserver") as client:
        answer = _sign_in(client, _operator_token(api))
    assert "Secure" in answer.headers["set-cookie"]


def test_a_wrong_key_is_refused_with_the_reason(api: Api) -> None:
    for key, reason in (("bkr_op_nothere_x", "unknown operator key"), ("not a key", "not a key bkr issues"),
                        ("", "paste an operator key")):
        answer = _sign_in(api.client, key)
        assert answer.status_code == 401 and reason in answer.text
        assert api.client.get("/dashboard/program", follow_redirects=False).status_code == 303


def test_a_post_without_the_session_token_is_refused(api: Api) -> None:
    api.broker(1400)
    _sign_in(api.client, _operator_token(api))
    for form in ({"status": "suspended"}, {"status": "suspended", "csrf": "forged"}):
        refused = api.client.post("/dashboard/program/brokers/1400/status", data=form, follow_redirects=False)
        assert refused.status_code == 403 and "security token" in refused.text
    with api.engine.connect() as connection:
        assert registry.get_broker(connection, 1400, api.clock()).status is BrokerStatus.ACTIVE
    token = _csrf(api.client.get("/dashboard/program/brokers"))
    done = api.client.post("/dashboard/program/brokers/1400/status", data={"status": "suspended", "csrf": token},
                           follow_redirects=False)
    assert (done.status_code, done.headers["location"]) == (303, "/dashboard/brokers/1400")
    with api.engine.connect() as connection:
        assert registry.get_broker(connection, 1400, api.clock()).status is BrokerStatus.SUSPENDED
        changes = audit.entries(connection, audit.AuditQuery(action="broker.status", actor=api.made[-1]))
    # the signed-in operator's, as an API call with its key would be
    assert [(e.subject, e.before, e.after) for e in changes] == [
        ("broker 1400", {"status": "active"}, {"status": "suspended", "effective_at": "2026-10-15T12:00:00+00:00"})]


def test_the_sign_in_form_needs_its_token_too(api: Api) -> None:
    answer = api.client.post("/dashboard/sign-in", data={"key": _operator_token(api)}, follow_redirects=False)
    assert answer.status_code == 403 and "security token" in answer.text
    assert api.client.get("/dashboard/program", follow_redirects=False).status_code == 303  # still a stranger


def test_a_forged_or_altered_cookie_is_a_stranger(api: Api) -> None:
    api.broker(1400)
    pair = api.broker(2200)
    _sign_in(api.client, pair.secret)
    payload, mac = api.client.cookies[sessions.COOKIE].split(".")
    forged = sessions.encode(sessions.signed_in(sessions.Holder.OPERATOR, "x", None, api.clock()),
                             "another secret " * 3)
    for cookie in (forged, f"{payload}.{mac[:-2]}AA", "garbage"):
        api.client.cookies.set(sessions.COOKIE, cookie, path="/dashboard")
        assert api.client.get("/dashboard/program", follow_redirects=False).status_code == 303


def test_a_broker_sees_only_its_own_pages(api: Api) -> None:
    api.broker(1400)
    pair = api.broker(2200)
    answer = _sign_in(api.client, pair.secret)
    assert answer.headers["location"] == "/dashboard/brokers/2200"
    assert api.client.get("/dashboard/brokers/2200").status_code == 200
    other = api.client.get("/dashboard/brokers/1400")
    assert other.status_code == 403 and "cannot open broker 1400" in other.text
    assert api.client.get("/dashboard/brokers/1400/statements/2026-09/download?format=csv").status_code == 403
    assert api.client.get("/dashboard/program").status_code == 403
    assert api.client.get("/dashboard/program/brokers").status_code == 403


def test_a_viewer_reads_operator_pages_but_cannot_act(api: Api) -> None:
    api.broker(1400)
    _sign_in(api.client, _operator_token(api, "viewer"))
    page = api.client.get("/dashboard/program/brokers")
    assert page.status_code == 200 and "Suspend" not in page.text
    refused = api.client.post("/dashboard/program/brokers/1400/status",
                              data={"status": "suspended", "csrf": _csrf(page)})
    assert refused.status_code == 403 and "viewer" in refused.text


def test_revoking_a_key_ends_its_sessions_and_a_suspended_broker_still_reads_its_pages(api: Api) -> None:
    pair = api.broker(1400)
    _sign_in(api.client, pair.secret)
    assert api.client.get("/dashboard/brokers/1400").status_code == 200
    with api.engine.begin() as connection:
        registry.change_broker_status(connection, 1400, BrokerStatus.SUSPENDED, api.clock(), api.clock(), actor="ops")
    suspended = api.client.get("/dashboard/brokers/1400")  # its pages only read its own figures
    assert suspended.status_code == 200 and 'id="broker-status">suspended<' in suspended.text
    with api.engine.begin() as connection:
        keys.revoke_key(connection, pair.api_key, api.clock(), actor="ops")
    assert api.client.get("/dashboard/brokers/1400", follow_redirects=False).status_code == 401
    with TestClient(api.client.app) as operator:
        token = _operator_token(api)
        _sign_in(operator, token)
        with api.engine.begin() as connection:
            keys.revoke_key(connection, token.removeprefix(keys.TOKEN_PREFIX).split("_")[0], api.clock(), actor="ops")
        assert operator.get("/dashboard/program").status_code == 401


def test_sign_out_forgets_the_session(api: Api) -> None:
    _sign_in(api.client, _operator_token(api))
    page = api.client.get("/dashboard/program")
    out = api.client.post("/dashboard/sign-out", data={"csrf": _csrf(page)}, follow_redirects=False)
    assert out.headers["location"] == "/dashboard/sign-in"
    assert api.client.get("/dashboard/program", follow_redirects=False).status_code == 303


def test_a_copy_of_the_cookie_stops_working_when_its_session_signs_out(api: Api) -> None:
    """The cookie is signed, not stored: signing out ends the session on the server, so a copy
    taken before (another tab, a stolen cookie) is refused too, while other sessions of the same
    key go on."""
    token = _operator_token(api)
    _sign_in(api.client, token)
    copied = api.client.cookies.get(sessions.COOKIE, path="/dashboard")
    with TestClient(api.client.app) as other:
        _sign_in(other, token)
        page = api.client.get("/dashboard/program")
        api.client.post("/dashboard/sign-out", data={"csrf": _csrf(page)}, follow_redirects=False)

        with TestClient(api.client.app, cookies={sessions.COOKIE: copied}) as thief:
            refused = thief.get("/dashboard/program", follow_redirects=False)
        assert refused.status_code == 401
        assert "signed out" in refused.text
        assert other.get("/dashboard/program").status_code == 200


def test_an_approval_from_the_dashboard_is_the_operators_approval(api: Api) -> None:
    closed_october(api)
    approver = api.operator_key("approver", "alice")
    _sign_in(api.client, approver["Authorization"].removeprefix("Bearer "))
    page = api.client.get("/dashboard/program/months/2026-10")
    assert page.status_code == 200 and "Approve" in page.text
    done = api.client.post("/dashboard/program/months/2026-10/statements/1400/approve",
                           data={"csrf": _csrf(page)}, follow_redirects=False)
    assert done.status_code == 303
    assert api.client.get("/v1/admin/periods/2026-10", headers=approver).json()["statements"][0]["approved_by"] == \
        ["alice"]
    again = api.client.post("/v1/admin/periods/2026-10/statements/1400/approve", headers=approver)
    assert again.status_code == 409 and again.json()["code"] == "statement_final"
    repeated = api.client.post("/dashboard/program/months/2026-10/statements/1400/approve",
                               data={"csrf": _csrf(page)})
    assert repeated.status_code == 409 and "already final" in repeated.text


def test_sign_in_returns_only_to_a_dashboard_page(api: Api) -> None:
    token = _operator_token(api)
    for target, landing in (("/dashboard/program/review", "/dashboard/program/review"),
                            ("https://elsewhere.example/", "/dashboard/program"),
                            ("/dashboard//elsewhere.example", "/dashboard/program")):
        csrf = _csrf(api.client.get("/dashboard/sign-in"))
        answer = api.client.post("/dashboard/sign-in", data={"csrf": csrf, "key": token, "next": target},
                                 follow_redirects=False)
        assert answer.headers["location"] == landing


def test_the_dashboard_secret_is_a_setting_never_shown() -> None:
    secret = "s" * 40
    settings = load_service_settings(None, {"BKR_DASHBOARD_SECRET": secret}, {})
    assert settings.dashboard_secret == secret and secret not in repr(settings)
    with pytest.raises(InvalidInput, match="at least 32 characters"):
        load_service_settings(None, {"BKR_DASHBOARD_SECRET": "short"}, {})


def test_a_path_no_page_serves_is_a_page_too(api: Api) -> None:
    answer = api.client.get("/dashboard/nowhere")
    assert answer.status_code == 404 and answer.headers["content-type"].startswith("text/html")
    assert "/dashboard/nowhere: no such page" in answer.text


def test_auto_refresh_is_a_toggle_in_the_address(api: Api) -> None:
    pair = api.broker(1400)
    _sign_in(api.client, pair.secret)
    assert 'http-equiv="refresh"' not in api.client.get("/dashboard/brokers/1400").text
    live = api.client.get("/dashboard/brokers/1400?live=1").text
    assert '<meta http-equiv="refresh" content="5">' in live and "turn off" in live


def test_pages_run_no_script_and_cannot_be_framed(api: Api) -> None:
    page = api.client.get("/dashboard/sign-in")
    policy = page.headers["content-security-policy"]
    assert "script-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
    assert "<script" not in page.text


def test_a_statement_page_shows_a_correction_and_the_shortfall_it_carries(api: Api) -> None:
    operator = closed_october(api)
    october = fill("f-1", fee="12.5")  # the fill closed_october posted
    bust = {**october, "fill_id": "f-1-bust", "corrects": "f-1", "quantity": f"-{october['quantity']}",
            "fee": "-12.5"}
    assert api.client.post("/v1/fills", json=[bust], headers=operator).json()["accepted"] == 1
    api.clock.set(datetime(2026, 12, 2, tzinfo=UTC))
    assert api.client.post("/v1/admin/periods/2026-11/close", headers=operator).status_code == 200
    _sign_in(api.client, operator["Authorization"].removeprefix("Bearer "))

    page = api.client.get("/dashboard/brokers/1400/statements/2026-11")

    document = api.client.get("/v1/admin/periods/2026-11/statements/1400", headers=operator).json()
    assert [line["kind"] for line in document["lines"]] == ["correction"]
    assert page.status_code == 200 and ">correction<" in page.text
    for name in ("carried_out", "payout"):
        assert f'data-figure="{name}" data-value="{document[name]}"' in page.text
    assert document["carried_out"].startswith("-") and document["payout"] == "0.00"


def test_the_page_names_the_signed_in_operator_and_shows_only_what_its_role_may_do(api: Api) -> None:
    closed_october(api)  # closed by an operator other than the ones below
    for role, may_approve, may_suspend in (("viewer", False, False), ("operator", False, True),
                                           ("approver", True, False), ("admin", True, True)):
        with TestClient(api.client.app) as browser:
            _sign_in(browser, api.operator_key(role, f"{role}-on-the-page")["Authorization"].removeprefix("Bearer "))
            month = browser.get("/dashboard/program/months/2026-10").text
            brokers = browser.get("/dashboard/program/brokers").text
        assert f'<span id="operator-name">{role}-on-the-page</span> ({role})' in month
        assert ("Approve the statement of broker 1400" in month) is may_approve, role
        assert ("Suspend broker 1400" in brokers) is may_suspend, role


def test_an_expired_key_ends_its_session_at_the_next_request(api: Api) -> None:
    admin = api.operator_key("admin", "root")
    made = api.client.post("/v1/admin/operators", headers=admin, json={
        "name": "temp", "role": "viewer", "expires_at": "2026-10-15T13:00:00Z"}).json()
    _sign_in(api.client, made["token"])
    assert api.client.get("/dashboard/program").status_code == 200
    api.clock.set(datetime(2026, 10, 15, 13, 0, tzinfo=UTC))
    expired = api.client.get("/dashboard/program")
    assert expired.status_code == 401 and f"operator key {made['key_id']} expired at 2026-10-15T13:00:00+00:00" in \
        expired.text
    again = _sign_in(api.client, made["token"])
    assert again.status_code == 401 and "expired" in again.text
