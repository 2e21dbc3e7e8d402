"""Operators and keys over the operator API (`/v1/admin/operators…`, `/v1/admin/keys…`), on SQLite
and PostgreSQL: admins only; keys listed with their life, revoked or expired keys refused at their
next request, and each key's last use recorded at most once a minute."""

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from api_support import Api

from bkr.domain.operators import Role


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    return str(response.json()["code"])


@pytest.mark.parametrize("role", [r.value for r in Role if r is not Role.ADMIN])
def test_only_an_admin_manages_operators_and_keys(api: Api, role: str) -> None:
    key = api.operator_key(role)
    for method, path, body in (("GET", "/v1/admin/operators", None), ("GET", "/v1/admin/keys", None),
                               ("POST", "/v1/admin/operators", {"name": "eve", "role": "admin"}),
                               ("POST", f"/v1/admin/operators/{role}-1/keys", None),
                               ("POST", f"/v1/admin/operators/{role}-1/disable", None),
                               ("POST", "/v1/admin/keys/revoke", {"key_id": "x"})):
        answer = api.client.request(method, path, headers=key, json=body)
        assert _error(answer, 403) == "role_insufficient", path
        assert f"needs the admin role; {role}-1" in answer.json()["message"]


def test_an_admin_adds_an_operator_whose_first_key_works_with_its_role(api: Api) -> None:
    root = api.operator_key("admin", "root")
    added = api.client.post("/v1/admin/operators", headers=root, json={"name": "alice", "role": "approver"})
    assert added.status_code == 201
    made = added.json()
    assert (made["operator"], made["role"], made["expires_at"]) == ("alice", "approver", None)
    assert api.client.get("/v1/admin/periods", headers=_bearer(made["token"])).status_code == 200
    assert _error(api.client.post("/v1/admin/brokers", headers=_bearer(made["token"]), json={
        "broker_id": 1400, "account": "acct", "name": "ccxt", "type": "other"}), 403) == "role_insufficient"
    operators = api.client.get("/v1/admin/operators", headers=root).json()
    assert [(o["name"], o["role"], o["created_by"], o["active_keys"]) for o in operators] == [
        ("alice", "approver", "root", 1), ("root", "admin", None, 1)]
    again = api.client.post("/v1/admin/operators", headers=root, json={"name": "alice", "role": "viewer"})
    assert _error(again, 409) == "operator_exists"
    for body, field in (({"name": "Alice", "role": "viewer"}, "name"), ({"name": "bob", "role": "root"}, "role"),
                        ({"name": "bob", "role": "viewer", "by": "x"}, "by")):
        answer = api.client.post("/v1/admin/operators", headers=root, json=body)
        assert _error(answer, 422) == "invalid_input" and answer.json()["field"].endswith(field)


def test_a_key_revoked_over_the_api_is_refused_at_its_next_request(api: Api) -> None:
    root = api.operator_key("admin", "root")
    made = api.client.post("/v1/admin/operators/root/keys", headers=root).json()
    pair = api.broker(1400)  # a broker's key id is its public key, which may hold a "/"
    assert api.client.get("/v1/admin/periods", headers=_bearer(made["token"])).status_code == 200

    revoked = api.client.post("/v1/admin/keys/revoke", headers=root, json={"key_id": made["key_id"]})
    broker = api.client.post("/v1/admin/keys/revoke", headers=root, json={"key_id": pair.api_key})

    assert (revoked.json()["status"], broker.json()["status"], broker.json()["owner"]) == ("revoked", "revoked", "1400")
    answer = api.client.get("/v1/admin/periods", headers=_bearer(made["token"]))
    assert _error(answer, 401) == "key_revoked" and answer.json()["field"] == "Authorization"
    assert _error(api.signed_get(pair, "/v1/broker/1400/summary", "brokerSummaryQuery"), 401) == "unknown_key"
    assert _error(api.client.post("/v1/admin/keys/revoke", headers=root, json={"key_id": made["key_id"]}),
                  409) == "already_revoked"
    assert _error(api.client.post("/v1/admin/keys/revoke", headers=root, json={"key_id": "nothing"}),
                  404) == "not_found"


def test_an_expired_key_is_refused_and_listed_as_expired(api: Api) -> None:
    root = api.operator_key("admin", "root")
    expires = api.clock() + timedelta(hours=1)
    made = api.client.post("/v1/admin/operators/root/keys", headers=root,
                           json={"expires_at": expires.isoformat()}).json()
    assert datetime.fromisoformat(made["expires_at"]) == expires
    assert api.client.get("/v1/admin/periods", headers=_bearer(made["token"])).status_code == 200
    api.clock.advance(timedelta(hours=1))
    answer = api.client.get("/v1/admin/periods", headers=_bearer(made["token"]))
    assert _error(answer, 401) == "key_expired" and "expired at" in answer.json()["message"]
    listed = {key["key_id"]: key for key in api.client.get("/v1/admin/keys", headers=root).json()}
    assert listed[made["key_id"]]["status"] == "expired"
    for expiry in ((api.clock() - timedelta(seconds=1)).isoformat(), "2040-01-01T00:00:00Z"):
        late = api.client.post("/v1/admin/operators/root/keys", headers=root, json={"expires_at": expiry})
        assert _error(late, 422) == "invalid_input" and late.json()["field"] == "expires_at"


def test_a_disabled_operator_is_refused_and_gets_no_new_key(api: Api) -> None:
    root = api.operator_key("admin", "root")
    olga = api.operator_key("operator", "olga")
    disabled = api.client.post("/v1/admin/operators/olga/disable", headers=root).json()
    assert (disabled["name"], disabled["active_keys"]) == ("olga", 0) and disabled["disabled_at"] is not None
    assert _error(api.client.get("/v1/admin/periods", headers=olga), 401) == "operator_disabled"
    assert _error(api.client.post("/v1/admin/operators/olga/keys", headers=root), 409) == "operator_disabled"
    assert _error(api.client.post("/v1/admin/operators/olga/disable", headers=root), 409) == "already_disabled"
    assert _error(api.client.post("/v1/admin/operators/nobody/disable", headers=root), 404) == "not_found"


def test_each_keys_last_use_is_recorded_at_most_once_a_minute(api: Api) -> None:
    root = api.operator_key("admin", "root")
    viewer = api.operator_key("viewer", "vera")
    pair = api.broker(1400)

    def last_used() -> dict[str, str | None]:
        return {key["owner"]: key["last_used_at"] for key in api.client.get("/v1/admin/keys", headers=root).json()}

    assert last_used()["vera"] is None and last_used()["1400"] is None
    start = api.clock()
    api.client.get("/v1/admin/periods", headers=viewer)
    api.signed_get(pair, "/v1/broker/1400/summary", "brokerSummaryQuery")
    assert last_used()["vera"] == last_used()["1400"] == start.isoformat().replace("+00:00", "Z")
    api.clock.advance(timedelta(seconds=59))
    api.client.get("/v1/admin/periods", headers=viewer)
    assert last_used()["vera"] == start.isoformat().replace("+00:00", "Z")  # not a write per read
    api.clock.advance(timedelta(seconds=1))
    api.client.get("/v1/admin/periods", headers=viewer)
    assert last_used()["vera"] == (start + timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    assert datetime.fromisoformat(last_used()["root"] or "") == api.clock().astimezone(UTC)
