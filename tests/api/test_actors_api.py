"""Every change the operator API makes to the registry, and every key it makes or revokes, is on
the audit trail as the operator whose key made it, with the values before and after. A change
reaching a closed month is a 409 `retroactive_change` until it is declared, with a reason."""

import hashlib
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from api_support import Api, error, ok

from bkr.domain.periods import Month
from bkr.domain.registry import BrokerStatus
from bkr.ingest.readers import json_record
from bkr.program import registry
from bkr.program.close import close_month
from bkr.program.importer import import_rows

BROKER = 1400
SCHEDULED = 4100  # active, with a suspension scheduled
AT = "2026-10-01T00:00:00Z"
AT_STORED = "2026-10-01T00:00:00+00:00"


def trail_after(api: Api, headers: dict[str, str], after: int) -> list[dict[str, Any]]:
    return ok(api.client.get("/v1/admin/audit", headers=headers, params={"after": after}))["entries"]  # type: ignore[no-any-return]


def last_entry(api: Api, headers: dict[str, str]) -> int:
    return ok(api.client.get("/v1/admin/audit/verify", headers=headers))["entries"]  # type: ignore[no-any-return]


def users_digest(*lines: str) -> str:
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


# Each request: method, path, body (or query), and the entries (action, subject, before, after) it appends.
REQUESTS: dict[str, tuple[str, dict[str, Any], list[tuple[str, str, Any, Any]]]] = {
    "enroll a broker": ("/v1/admin/brokers", {"json": {"broker_id": 2200, "account": "acct-2200", "name": "Bots",
                                                       "type": "trading_bot"}},
                        [("broker.add", "broker 2200", None,
                          {"account": "acct-2200", "name": "Bots", "type": "trading_bot"})]),
    "suspend": (f"/v1/admin/brokers/{BROKER}/suspend", {"json": {"effective_at": AT}},
                [("broker.status", f"broker {BROKER}", {"status": "active"},
                  {"status": "suspended", "effective_at": AT_STORED})]),
    "terminate": (f"/v1/admin/brokers/{BROKER}/terminate", {"json": {"effective_at": AT}},
                  [("broker.status", f"broker {BROKER}", {"status": "active"},
                    {"status": "terminated", "effective_at": AT_STORED})]),
    "cancel a change": (f"/v1/admin/brokers/{SCHEDULED}/cancel-change",
                        {"json": {"effective_at": "2027-01-01T00:00:00Z"}},
                        [("broker.cancel", f"broker {SCHEDULED}",
                          {"status": "suspended", "effective_at": "2027-01-01T00:00:00+00:00"}, None)]),
    "enroll an affiliate": ("/v1/admin/affiliates", {"json": {"account": "acct-aff-2", "name": "Second"}},
                            [("affiliate.add", "affiliate acct-aff-2", None, {"name": "Second"})]),
    "change a rate": ("/v1/admin/referral-codes", {"json": {"affiliate": "acct-aff", "code": "C", "rate": "0.25",
                                                            "effective_from": AT}},
                      [("referral.rate", "code C", {"rate": "0.2"},
                        {"affiliate": "acct-aff", "rate": "0.25", "effective_from": AT_STORED})]),
    "cancel a rate": ("/v1/admin/referral-codes/C/cancel-rate", {"json": {"effective_from": "2027-01-01T00:00:00Z"}},
                      [("referral.cancel", "code C", {"rate": "0.3", "effective_from": "2027-01-01T00:00:00+00:00"},
                        None)]),
    "register users": ("/v1/admin/users", {"json": [{"user_id": "xavier", "referral_code": "C"},
                                                    {"user_id": "yves"}]},
                       [("user.add", "2 users", None, {"users": 2, "with_code": 1, "first": ["xavier", "yves"],
                                                       "digest": users_digest("xavier,C", "yves,")})]),
}


@pytest.fixture
def program(api: Api) -> Api:
    """Brokers 1400 and 4100 active since January, 4100 with a suspension scheduled for January
    2027; affiliate acct-aff's code C at 20%, with 30% scheduled for January 2027."""
    api.broker(BROKER)
    api.broker(SCHEDULED)
    later = datetime(2027, 1, 1, tzinfo=UTC)
    with api.engine.begin() as connection:
        registry.change_broker_status(connection, SCHEDULED, BrokerStatus.SUSPENDED, later, api.clock(),
                                      actor="ops")
        registry.enroll_affiliate(connection, "acct-aff", "Affiliate", api.clock(), actor="ops")
        for rate, since in (("0.2", datetime(2026, 1, 1, tzinfo=UTC)), ("0.3", later)):
            registry.set_referral_rate(connection, "acct-aff", "C", Decimal(rate), since, api.clock(),
                                       actor="ops")
    return api


@pytest.mark.parametrize("name", list(REQUESTS))
def test_a_change_over_the_api_is_on_the_trail_as_the_keys_operator(program: Api, name: str) -> None:
    path, request, expected = REQUESTS[name]
    viewer = program.operator_key("viewer", "vera")
    olga = program.operator_key("operator", "olga")
    last = last_entry(program, viewer)

    assert error(program.client.post(path, **request), 401)[0] == "credentials_missing"
    assert error(program.client.post(path, headers=viewer, **request), 403)[0] == "role_insufficient"
    assert last_entry(program, viewer) == last  # refused: not even the trail changed
    assert program.client.post(path, headers=olga, **request).status_code in (200, 201)

    entries = trail_after(program, viewer, last)
    assert [(e["actor"], e["action"], e["subject"], e["before"], e["after"]) for e in entries] == [
        ("olga", *entry) for entry in expected]
    verified = ok(program.client.get("/v1/admin/audit/verify", headers=viewer))
    assert (verified["ok"], verified["problems"]) == (True, [])


def test_a_broker_key_made_over_the_api_is_the_keys_operators(program: Api) -> None:
    olga = program.operator_key("operator", "olga")
    last = last_entry(program, olga)

    pair = ok(program.client.post(f"/v1/admin/brokers/{BROKER}/keys", headers=olga), 201)

    [entry] = trail_after(program, olga, last)
    assert (entry["actor"], entry["action"], entry["subject"], entry["after"]) == (
        "olga", "key.create", f"key {pair['api_key']}",
        {"kind": "broker", "owner": str(BROKER), "role": None, "expires_at": None})
    assert pair["secret"] not in str(entry)


def test_keys_and_operators_managed_over_the_api_are_the_admins(program: Api) -> None:
    root = program.operator_key("admin", "root")
    program.operator_key("viewer", "vera")
    last = last_entry(program, root)

    made = ok(program.client.post("/v1/admin/operators/vera/keys", headers=root), 201)
    ok(program.client.post("/v1/admin/keys/revoke", headers=root, json={"key_id": made["key_id"]}))
    ok(program.client.post("/v1/admin/operators/vera/disable", headers=root))

    entries = trail_after(program, root, last)
    assert [(e["actor"], e["action"], e["subject"], e["before"], e["after"]) for e in entries] == [
        ("root", "key.create", f"key {made['key_id']}", None,
         {"kind": "operator", "owner": "vera", "role": "viewer", "expires_at": None}),
        ("root", "key.revoke", f"key {made['key_id']}",
         {"kind": "operator", "owner": "vera", "role": "viewer", "expires_at": None}, None),
        ("root", "operator.disable", "operator vera", {"role": "viewer", "working_keys": 1},
         {"disabled_at": "2026-10-15T12:00:00+00:00"}),
    ]
    assert made["token"] not in str(entries)


@pytest.fixture
def closed_september(program: Api) -> Api:
    """September 2026 closed, with a fill of alice's and one of walt's, whom bkr does not know yet."""
    with program.engine.begin() as connection:
        registry.add_users(connection, [("alice", "C")], program.clock(), actor="ops")
    rows = [{"fill_id": f"f-{user}", "order_id": f"o-{user}", "user_id": user, "symbol": "SOL_USDC",
             "market_type": "SPOT", "side": "Bid", "price": "100", "quantity": "1", "fee": "1", "fee_symbol": "USDC",
             "is_maker": "false", "timestamp": "2026-09-10T12:00:00Z", "broker_id": str(BROKER)}
            for user in ("alice", "walt")]
    tally = import_rows(program.engine, [json_record(line, row) for line, row in enumerate(rows, start=1)],
                        source="september.ndjson", clock=program.clock, actor="ops")
    assert tally.accepted == 2
    close_month(program.engine, Month(2026, 9), now=program.clock())
    return program


def test_a_change_reaching_a_closed_month_is_a_409_until_declared_retroactive_with_a_reason(
        closed_september: Api) -> None:
    api = closed_september
    olga = api.operator_key("operator", "olga")
    changes = [
        (f"/v1/admin/brokers/{BROKER}/suspend", {"effective_at": "2026-09-20T00:00:00Z"}, "broker.status"),
        ("/v1/admin/referral-codes", {"affiliate": "acct-aff", "code": "C", "rate": "0.1",
                                      "effective_from": "2026-09-15T00:00:00Z"}, "referral.rate"),
    ]
    for path, body, action in changes:
        last = last_entry(api, olga)
        refused = api.client.post(path, headers=olga, json=body)
        assert error(refused, 409) == ("retroactive_change", None)
        assert "2026-09, which is closed" in refused.json()["message"]
        assert error(api.client.post(path, headers=olga, json={**body, "retroactive": True}), 422) == (
            "invalid_input", "reason")
        assert error(api.client.post(path, headers=olga, json={**body, "retroactive": True, "reason": "a\nb"}),
                     422) == ("invalid_input", "reason")
        assert last_entry(api, olga) == last

        assert api.client.post(path, headers=olga, json={**body, "retroactive": True,
                                                          "reason": "agreed in September"}).status_code in (200, 201)
        [entry] = trail_after(api, olga, last)
        assert (entry["actor"], entry["action"], entry["after"]["retroactive_to"], entry["reason"]) == (
            "olga", action, "2026-09", "agreed in September")


def test_users_whose_fills_wait_in_a_closed_month_are_registered_with_retroactive_and_reason_parameters(
        closed_september: Api) -> None:
    api = closed_september
    olga = api.operator_key("operator", "olga")
    last = last_entry(api, olga)
    walt = {"user_id": "walt"}

    refused = api.client.post("/v1/admin/users", headers=olga, json=walt)
    assert error(refused, 409) == ("retroactive_change", None)
    assert "1 of 2026-09" in refused.json()["message"]
    assert error(api.client.post("/v1/admin/users", headers=olga, json=walt, params={"retroactive": "true"}),
                 422) == ("invalid_input", "reason")
    assert last_entry(api, olga) == last

    done = api.client.post("/v1/admin/users", headers=olga, json=walt,
                           params={"retroactive": "true", "reason": "signed up in September"})
    assert ok(done) == {"users": 1, "new": 1}
    [entry] = trail_after(api, olga, last)
    assert (entry["actor"], entry["subject"], entry["after"]["retroactive_to"], entry["reason"]) == (
        "olga", "user walt", "2026-09", "signed up in September")
