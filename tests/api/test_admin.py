"""The operator API, `/v1/admin/…`: keys and roles, the registry, the review of fills that were not
accepted, periods and their closes, statements and the configuration. On SQLite and PostgreSQL."""

import csv
import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from api_support import Api, error, ok

from bkr.domain.errors import InvalidInput
from bkr.domain.registry import registry_text
from bkr.ingest.readers import json_record
from bkr.program import keys, registry
from bkr.program.importer import import_rows

BROKER = 1400
SEPTEMBER = "2026-09"  # ended: the test clock is at 2026-10-15


def fill(fill_id: str, *, user: str = "alice", fee: str = "10", quantity: str = "1000",
         at: str = "2026-09-10T12:00:00Z", **changes: Any) -> dict[str, Any]:
    """One API fill of broker 1400 in September 2026: 100 × 1000 = $100,000 of spot volume."""
    return {"fill_id": fill_id, "order_id": f"order-{fill_id}", "user_id": user, "symbol": "SOL_USDC",
            "market_type": "SPOT", "side": "Bid", "price": "100", "quantity": quantity, "fee": fee,
            "fee_symbol": "USDC", "is_maker": "false", "timestamp": at, "broker_id": str(BROKER),
            "via_api": "true", "fill_type": "User"} | changes


def ingest(api: Api, *rows: dict[str, Any], source: str = "feed.ndjson") -> None:
    import_rows(api.engine, [json_record(line, row) for line, row in enumerate(rows, start=1)],
                source=source, clock=api.clock, actor="ops")


@pytest.fixture
def op(api: Api) -> dict[str, str]:
    return api.operator_key("operator")


# --- keys and roles ---------------------------------------------------------------------------------

def test_a_request_without_a_key_is_401_credentials_missing(api: Api) -> None:
    assert error(api.client.get("/v1/admin/brokers"), 401) == ("credentials_missing", "Authorization")


def test_an_unknown_token_is_401_unknown_key(api: Api) -> None:
    response = api.client.get("/v1/admin/brokers", headers={"Authorization": "Bearer bkr_op_abc_nothing"})
    assert error(response, 401) == ("unknown_key", "Authorization")


def test_a_viewer_key_reads_but_writing_is_403_role_insufficient(api: Api) -> None:
    viewer = api.operator_key("viewer")

    assert ok(api.client.get("/v1/admin/brokers", headers=viewer)) == []
    assert ok(api.client.get("/v1/admin/config", headers=viewer))["tier_basis"] == "same_month"
    enroll = api.client.post("/v1/admin/brokers", headers=viewer, json={
        "broker_id": BROKER, "account": "acct-ccxt", "name": "ccxt", "type": "exchange_aggregator"})
    assert error(enroll, 403)[0] == "role_insufficient"
    assert error(api.client.post(f"/v1/admin/periods/{SEPTEMBER}/close", headers=viewer), 403)[0] == \
        "role_insufficient"


# --- brokers ---------------------------------------------------------------------------------------

def test_a_broker_is_enrolled_listed_activated_and_suspended_with_its_history(api: Api, op: dict[str, str]) -> None:
    enrolled = ok(api.client.post("/v1/admin/brokers", headers=op, json={
        "broker_id": BROKER, "account": "acct-ccxt", "name": "ccxt", "type": "exchange_aggregator"}), 201)
    assert enrolled == {"broker_id": BROKER, "account": "acct-ccxt", "name": "ccxt", "type": "exchange_aggregator",
                        "status": "pending"}

    assert [b["broker_id"] for b in ok(api.client.get("/v1/admin/brokers", headers=op))] == [BROKER]
    assert ok(api.client.post(f"/v1/admin/brokers/{BROKER}/activate", headers=op))["status"] == "active"
    suspended = ok(api.client.post(f"/v1/admin/brokers/{BROKER}/suspend", headers=op,
                                   json={"effective_at": "2026-10-20T00:00:00Z"}))
    assert suspended["status"] == "active"  # the suspension starts in five days

    api.clock.set(datetime(2026, 10, 21, tzinfo=UTC))
    shown = ok(api.client.get(f"/v1/admin/brokers/{BROKER}", headers=op))
    assert shown["status"] == "suspended"
    assert shown["history"] == [{"status": "active", "effective_at": "2026-10-15T12:00:00Z"},
                                {"status": "suspended", "effective_at": "2026-10-20T00:00:00Z"}]
    assert shown["statements"] == []
    assert ok(api.client.get("/v1/admin/brokers", headers=op, params={"status": "active"})) == []
    assert len(ok(api.client.get("/v1/admin/brokers", headers=op, params={"status": "suspended"}))) == 1


def test_a_scheduled_suspension_is_cancelled_before_it_takes_effect_and_not_after(
        api: Api, op: dict[str, str]) -> None:
    api.broker(BROKER)
    ok(api.client.post(f"/v1/admin/brokers/{BROKER}/suspend", headers=op,
                       json={"effective_at": "2026-10-20T00:00:00Z"}))

    cancelled = ok(api.client.post(f"/v1/admin/brokers/{BROKER}/cancel-change", headers=op,
                                   json={"effective_at": "2026-10-20T00:00:00Z"}))
    assert cancelled["status"] == "active"
    api.clock.set(datetime(2026, 10, 21, tzinfo=UTC))
    assert ok(api.client.get(f"/v1/admin/brokers/{BROKER}", headers=op))["status"] == "active"
    in_effect = api.client.post(f"/v1/admin/brokers/{BROKER}/cancel-change", headers=op,
                                json={"effective_at": "2026-01-01T00:00:00Z"})
    assert (in_effect.status_code, in_effect.json()["code"]) == (409, "conflict")
    assert error(api.client.post(f"/v1/admin/brokers/{BROKER}/cancel-change", headers=op, json={}), 422) == (
        "invalid_input", "effective_at")


def test_a_forbidden_transition_and_an_unknown_broker_are_409_and_404(api: Api, op: dict[str, str]) -> None:
    api.broker(BROKER)
    ok(api.client.post(f"/v1/admin/brokers/{BROKER}/terminate", headers=op))

    assert error(api.client.post(f"/v1/admin/brokers/{BROKER}/activate", headers=op), 409)[0] == "conflict"
    assert error(api.client.get("/v1/admin/brokers/2200", headers=op), 404)[0] == "not_found"


@pytest.mark.parametrize(("path", "field"), [("/v1/admin/brokers/0", "broker_id"),
                                             ("/v1/admin/brokers/65536", "broker_id"),
                                             ("/v1/admin/periods/2026-13", "month"),
                                             ("/v1/admin/periods/2026-9", "month"),
                                             ("/v1/admin/periods/0000-01", "month")])
def test_a_bad_broker_id_or_month_in_the_path_is_422_naming_it(api: Api, op: dict[str, str], path: str,
                                                               field: str) -> None:
    assert error(api.client.get(path, headers=op), 422) == ("invalid_input", field)


# Integers past any bound a column or a page can hold, and months no close can have: each is a 422
# that names its field, never a 500 (2^63 once reached the database, which cannot compare it).
HUGE_OR_NOT_POSITIVE = [str(2**63), str(2**64), str(-2**63 - 1), "-1", "0", "1" + "0" * 100]
UNKEPT_MONTHS = ["0000-01", "0001-01", "1969-12", "9999-12", "10000-01", "\uff12\uff10\uff12\uff16-10", "2026-00"]


def test_integers_past_their_bounds_in_a_path_or_a_query_are_422_naming_them(api: Api) -> None:
    op = api.operator_key("admin")  # every route below, approving included
    for value in HUGE_OR_NOT_POSITIVE:
        for method, path in [("GET", f"/v1/admin/brokers/{value}"), ("POST", f"/v1/admin/brokers/{value}/activate"),
                             ("POST", f"/v1/admin/brokers/{value}/keys"),
                             ("GET", f"/v1/admin/periods/2026-09/statements/{value}"),
                             ("POST", f"/v1/admin/periods/2026-09/statements/{value}/approve")]:
            assert error(api.client.request(method, path, headers=op), 422) == ("invalid_input", "broker_id"), path
        for page in ("/v1/admin/fills/rejected", "/v1/admin/fills/conflicts"):
            assert error(api.client.get(page, headers=op, params={"limit": value}), 422) == ("invalid_input", "limit")
            if value != "0":  # after=0 is the first page
                assert error(api.client.get(page, headers=op, params={"after": value}), 422) == (
                    "invalid_input", "after")


def test_a_month_no_close_can_have_is_422_naming_it_wherever_it_is_given(api: Api) -> None:
    op = api.operator_key("admin")  # every route below, approving and settling included
    for month in UNKEPT_MONTHS:
        for method, path in [("GET", f"/v1/admin/periods/{month}"), ("POST", f"/v1/admin/periods/{month}/preview"),
                             ("POST", f"/v1/admin/periods/{month}/close"),
                             ("POST", f"/v1/admin/periods/{month}/settle"),
                             ("GET", f"/v1/admin/periods/{month}/statements/{BROKER}"),
                             ("POST", f"/v1/admin/periods/{month}/statements/{BROKER}/approve")]:
            assert error(api.client.request(method, path, headers=op), 422) == ("invalid_input", "month"), path


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01", "0000-01-01"])
def test_a_time_past_the_first_or_last_year_is_422_naming_it(api: Api, op: dict[str, str], moment: str) -> None:
    """A year-1 time east of UTC is in year 0 once in UTC: it once left the parser as an overflow, a 500."""
    api.broker(BROKER)
    ok(api.client.post("/v1/admin/affiliates", headers=op, json={"account": "acct-aff", "name": "Aff"}), 201)
    suspend = api.client.post(f"/v1/admin/brokers/{BROKER}/suspend", headers=op, json={"effective_at": moment})
    assert error(suspend, 422) == ("invalid_input", "effective_at")
    code = api.client.post("/v1/admin/referral-codes", headers=op, json={
        "affiliate": "acct-aff", "code": "C", "rate": "0.1", "effective_from": moment})
    assert error(code, 422) == ("invalid_input", "effective_from")


def test_a_control_character_in_a_name_or_id_is_422_naming_the_field(api: Api, op: dict[str, str]) -> None:
    enroll = api.client.post("/v1/admin/brokers", headers=op, json={
        "broker_id": BROKER, "account": "acct-1", "name": "cc\x00xt", "type": "exchange_aggregator"})
    assert error(enroll, 422) == ("invalid_input", "name")
    assert error(api.client.get("/v1/admin/users/al%00ice", headers=op), 422) == ("invalid_input", "user_id")
    assert error(api.client.get("/v1/admin/fills/rejected", headers=op, params={"after": 2**40}), 422) == \
        ("invalid_input", "after")


@pytest.mark.parametrize("text", ["a\x1b[31m", "a\nb", "a\x85b", "abc\u202e", "a\u2028b", "x" * 257, "   "])
def test_a_name_the_registry_refuses_is_422_with_the_registrys_reason(api: Api, op: dict[str, str], text: str) -> None:
    """The API applies the registry's one text rule (the command line applies it too), with its reason."""
    for field, body in [("name", {"broker_id": BROKER, "account": "acct-1", "name": text, "type": "other"}),
                        ("account", {"broker_id": BROKER, "account": text, "name": "ccxt", "type": "other"})]:
        refused = api.client.post("/v1/admin/brokers", headers=op, json=body)
        assert error(refused, 422) == ("invalid_input", field)
        with pytest.raises(InvalidInput) as reason:
            registry_text(text, field)
        assert refused.json()["message"] == str(reason.value)
    for field, body in [("0.user_id", {"user_id": text}),
                        ("0.referral_code", {"user_id": "alice", "referral_code": text})]:
        assert error(api.client.post("/v1/admin/users", headers=op, json=body), 422) == ("invalid_input", field)
    assert api.client.get("/v1/admin/brokers", headers=op).json() == []


def test_a_field_the_request_does_not_declare_is_422_naming_it(api: Api, op: dict[str, str]) -> None:
    """A misspelled field once vanished: `brokerId` left the broker id to its default, or to a 422
    that named the field it missed rather than the one it was sent."""
    enroll = api.client.post("/v1/admin/brokers", headers=op, json={
        "broker_id": BROKER, "account": "acct-1", "name": "ccxt", "type": "exchange_aggregator", "tier": "BKR 5"})
    assert error(enroll, 422) == ("invalid_input", "tier")
    assert enroll.json()["message"] == "tier: Extra inputs are not permitted"
    assert api.client.get("/v1/admin/brokers", headers=op).json() == []


def test_a_broker_key_pair_is_made_once_and_its_secret_is_not_kept(api: Api, op: dict[str, str]) -> None:
    api.broker(BROKER)

    pair = ok(api.client.post(f"/v1/admin/brokers/{BROKER}/keys", headers=op), 201)

    assert pair["broker_id"] == BROKER and pair["secret"]
    with api.engine.connect() as connection:
        holder = keys.broker_key(connection, pair["api_key"], api.clock())
        assert holder is not None and holder.broker_id == BROKER
    assert error(api.client.post("/v1/admin/brokers/2200/keys", headers=op), 404)[0] == "not_found"


# --- affiliates, referral codes, users -------------------------------------------------------------------

def test_an_account_cannot_be_both_broker_and_affiliate(api: Api, op: dict[str, str]) -> None:
    ok(api.client.post("/v1/admin/brokers", headers=op, json={
        "broker_id": BROKER, "account": "acct-1", "name": "ccxt", "type": "exchange_aggregator"}), 201)

    response = api.client.post("/v1/admin/affiliates", headers=op, json={"account": "acct-1", "name": "Influencer"})

    assert error(response, 409)[0] == "already_enrolled"
    assert ok(api.client.get("/v1/admin/affiliates", headers=op)) == []


@pytest.mark.parametrize("rate", ["1.5", "abc", "-0.1", 0.1])
def test_a_bad_rate_is_422_naming_the_field(api: Api, op: dict[str, str], rate: Any) -> None:
    ok(api.client.post("/v1/admin/affiliates", headers=op, json={"account": "acct-aff", "name": "Aff"}), 201)

    response = api.client.post("/v1/admin/referral-codes", headers=op,
                               json={"affiliate": "acct-aff", "code": "BETA", "rate": rate})

    assert error(response, 422) == ("invalid_input", "rate")


def test_a_referral_code_keeps_its_rate_history(api: Api, op: dict[str, str]) -> None:
    ok(api.client.post("/v1/admin/affiliates", headers=op, json={"account": "acct-aff", "name": "Aff"}), 201)
    ok(api.client.post("/v1/admin/referral-codes", headers=op, json={
        "affiliate": "acct-aff", "code": "BETA", "rate": "0.10", "effective_from": "2026-01-01T00:00:00Z"}), 201)

    changed = ok(api.client.post("/v1/admin/referral-codes", headers=op, json={
        "affiliate": "acct-aff", "code": "BETA", "rate": "0.25", "effective_from": "2026-11-01T00:00:00Z"}), 201)

    expected = {"code": "BETA", "affiliate": "acct-aff", "rate_now": "0.1",
                "rates": [{"rate": "0.1", "effective_from": "2026-01-01T00:00:00Z"},
                          {"rate": "0.25", "effective_from": "2026-11-01T00:00:00Z"}]}
    assert changed == expected
    assert ok(api.client.get("/v1/admin/referral-codes/BETA", headers=op)) == expected
    assert ok(api.client.get("/v1/admin/affiliates", headers=op)) == [
        {"account": "acct-aff", "name": "Aff", "codes": ["BETA"]}]
    assert error(api.client.get("/v1/admin/referral-codes/NOPE", headers=op), 404)[0] == "not_found"


def test_users_are_registered_one_or_many_and_an_unknown_code_is_404(api: Api, op: dict[str, str]) -> None:
    ok(api.client.post("/v1/admin/affiliates", headers=op, json={"account": "acct-aff", "name": "Aff"}), 201)
    ok(api.client.post("/v1/admin/referral-codes", headers=op,
                       json={"affiliate": "acct-aff", "code": "BETA", "rate": "0.1"}), 201)

    assert ok(api.client.post("/v1/admin/users", headers=op, json={"user_id": "alice"})) == {"users": 1, "new": 1}
    assert ok(api.client.post("/v1/admin/users", headers=op, json=[
        {"user_id": "alice"}, {"user_id": "bob", "referral_code": "BETA"}])) == {"users": 2, "new": 1}
    assert error(api.client.post("/v1/admin/users", headers=op,
                                 json={"user_id": "carol", "referral_code": "NOPE"}), 404)[0] == "not_found"
    assert error(api.client.post("/v1/admin/users", headers=op,
                                 json={"user_id": "bob", "referral_code": None}), 409)[0] == "conflict"
    assert error(api.client.post("/v1/admin/users", headers=op,
                                 json=[{"user_id": "dave"}, {"user_id": ""}]), 422) == ("invalid_input", "1.user_id")

    assert ok(api.client.get("/v1/admin/users/bob", headers=op)) == {
        "user_id": "bob", "referral_code": "BETA", "affiliate": "acct-aff", "registered_at": "2026-10-15T12:00:00Z"}
    assert error(api.client.get("/v1/admin/users/carol", headers=op), 404)[0] == "not_found"


# --- review of fills ---------------------------------------------------------------------------------

def test_rejected_rows_and_conflicts_are_listed_page_by_page_with_the_waiting_fills(
        api: Api, op: dict[str, str]) -> None:
    api.broker(BROKER)
    with api.engine.begin() as connection:
        registry.add_users(connection, [("alice", None)], api.clock(), actor="ops")
    ingest(api, fill("f-1"), fill("f-2", price="abc"), fill("f-3", quantity="-1"),
           fill("f-4", fee_symbol="BTC"), fill("f-5", user="zed"))
    ingest(api, fill("f-1", fee="11"), source="late.ndjson")

    first = ok(api.client.get("/v1/admin/fills/rejected", headers=op, params={"limit": 2}))
    second = ok(api.client.get("/v1/admin/fills/rejected", headers=op,
                               params={"limit": 2, "after": first["next_after"]}))

    assert [(r["source"], r["line"], r["fill_id"], r["reason"]) for r in first["items"] + second["items"]] == [
        ("feed.ndjson", 2, "f-2", "price: not a number: 'abc'"),
        ("feed.ndjson", 3, "f-3", "quantity: must be positive, got -1"),
        ("feed.ndjson", 4, "f-4", "fee_symbol: no USD rate configured for fee asset BTC"),
    ]
    assert json.loads(first["items"][0]["raw"])["price"] == "abc"
    assert second["next_after"] is None
    assert first["counts"] == {"rejected": 3, "conflicts": 1, "awaiting_user": 1, "self_trades": 0}
    conflicts = ok(api.client.get("/v1/admin/fills/conflicts", headers=op))
    assert [(c["source"], c["line"], c["fill_id"]) for c in conflicts["items"]] == [("late.ndjson", 1, "f-1")]
    assert json.loads(conflicts["items"][0]["raw"])["fee"] == "11"
    assert error(api.client.get("/v1/admin/fills/rejected", headers=op, params={"limit": 1001}), 422) == \
        ("invalid_input", "limit")


def test_the_users_that_fills_wait_for_are_listed_with_their_fills_and_brokers(api: Api, op: dict[str, str]) -> None:
    api.broker(BROKER)
    ingest(api, fill("f-1", user="zed", fee="0.25"), fill("f-2", user="zed", price="10.5"), fill("f-3", user="amy"))

    first = ok(api.client.get("/v1/admin/fills/awaiting", headers=op, params={"limit": 1}))
    rest = ok(api.client.get("/v1/admin/fills/awaiting", headers=op, params={"after": first["next_after"]}))

    assert [(u["user_id"], u["fills"], u["brokers"]) for u in first["items"] + rest["items"]] == [
        ("amy", 1, [BROKER]), ("zed", 2, [BROKER])]
    assert (first["awaiting_user_fills"], rest["next_after"]) == (3, None)
    zed = rest["items"][0]
    assert (zed["volume_usd"], zed["fee_usd"]) == ("110500", "10.25")  # 100 × 1000 + 10.5 × 1000; 0.25 + 10
    assert error(api.client.get("/v1/admin/fills/awaiting", headers=op, params={"after": ""}), 422)[1] == "after"


# --- periods, closes, statements ----------------------------------------------------------------------------

@pytest.fixture
def september(api: Api) -> Api:
    """Broker 1400 in September 2026: alice's two fills, $200,000 of volume, $10.123456 of fees:
    tier BKR 0 at 20%, payout 2.0246912, paid 2.02."""
    api.broker(BROKER)
    with api.engine.begin() as connection:
        registry.add_users(connection, [("alice", None)], api.clock(), actor="ops")
    ingest(api, fill("f-1"), fill("f-2", fee="0.123456", at="2026-09-30T23:59:59Z"))
    return api


def test_preview_and_close_give_the_same_statements_and_a_second_close_changes_nothing(
        september: Api, op: dict[str, str]) -> None:
    api = september
    preview = ok(api.client.post(f"/v1/admin/periods/{SEPTEMBER}/preview", headers=op))
    unchanged = ok(api.client.get(f"/v1/admin/periods/{SEPTEMBER}", headers=op))
    assert (unchanged["status"], unchanged["statement_count"]) == ("open", 0)  # a preview writes nothing

    closed = ok(api.client.post(f"/v1/admin/periods/{SEPTEMBER}/close", headers=op))
    again = ok(api.client.post(f"/v1/admin/periods/{SEPTEMBER}/close", headers=op))

    assert (preview["dry_run"], closed["dry_run"], closed["already_closed"], again["already_closed"]) == \
        (True, False, False, True)
    assert preview["statements"] == closed["statements"] == again["statements"]
    statement = closed["statements"][0]
    assert (statement["broker_id"], statement["api_volume"], statement["tier"], statement["broker_rate"],
            statement["fee_base"], statement["payout_exact"], statement["payout"]) == \
        (BROKER, "200000", "BKR 0", "0.2", "10.123456", "2.0246912", "2.02")

    periods = ok(api.client.get("/v1/admin/periods", headers=op))
    assert [(p["month"], p["status"], p["statement_count"], p["total_payout"]) for p in periods] == [
        (SEPTEMBER, "closed", 1, "2.02")]
    assert periods[0]["closed_at"] == "2026-10-15T12:00:00Z"
    detail = ok(api.client.get(f"/v1/admin/periods/{SEPTEMBER}", headers=op))
    assert [(s["broker_id"], s["payout_exact"], s["payout"]) for s in detail["statements"]] == [
        (BROKER, "2.0246912", "2.02")]
    broker = ok(api.client.get(f"/v1/admin/brokers/{BROKER}", headers=op))
    assert [(s["month"], s["payout"]) for s in broker["statements"]] == [(SEPTEMBER, "2.02")]


def test_closing_a_month_not_yet_ended_is_409_period_not_ended(api: Api, op: dict[str, str]) -> None:
    for action, month in (("close", "2026-10"), ("close", "2026-11"), ("preview", "2026-11")):
        assert error(api.client.post(f"/v1/admin/periods/{month}/{action}", headers=op), 409)[0] == \
            "period_not_ended"
    assert error(api.client.get("/v1/admin/periods/2026-10", headers=op), 404)[0] == "not_found"


def test_the_month_in_progress_previews_as_a_projection_of_what_it_would_issue_now(
        api: Api, op: dict[str, str]) -> None:
    api.broker(BROKER)
    with api.engine.begin() as connection:
        registry.add_users(connection, [("alice", None)], api.clock(), actor="ops")
    ingest(api, fill("f-1", at="2026-10-02T00:00:00Z"), fill("f-2", fee="0.5", at="2026-10-14T00:00:00Z"))

    preview = ok(api.client.post("/v1/admin/periods/2026-10/preview", headers=op))

    assert (preview["month"], preview["dry_run"], preview["projection"]) == ("2026-10", True, True)
    [statement] = preview["statements"]
    assert (statement["api_volume"], statement["payout_exact"]) == ("200000", "2.1")  # 10.5 × 20%
    assert [(p["month"], p["status"], p["statement_count"]) for p in ok(api.client.get(
        "/v1/admin/periods", headers=op))] == [("2026-10", "open", 0)]  # nothing written
    ingest(api, fill("f-3", fee="1", at="2026-10-14T01:00:00Z"))
    moved = ok(api.client.post("/v1/admin/periods/2026-10/preview", headers=op))["statements"][0]
    assert moved["payout_exact"] == "2.3"


def test_a_statement_is_served_as_its_stored_json_and_as_csv(september: Api, op: dict[str, str]) -> None:
    api = september
    path = f"/v1/admin/periods/{SEPTEMBER}/statements/{BROKER}"
    missing = api.client.get(path, headers=op)  # not closed yet
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    assert missing.json()["message"] == (f"no statement for broker {BROKER} in {SEPTEMBER} ({SEPTEMBER} is open: "
                                         "its statements are issued when it closes); preview: "
                                         f"POST /v1/admin/periods/{SEPTEMBER}/preview")
    ok(api.client.post(f"/v1/admin/periods/{SEPTEMBER}/close", headers=op))

    as_json = api.client.get(path, headers=op)
    as_csv = api.client.get(path, headers=op, params={"format": "csv"})

    assert as_json.status_code == 200 and as_json.headers["content-type"] == "application/json"
    document = as_json.json()
    assert as_json.text == json.dumps(document, sort_keys=True, separators=(",", ":"))  # the canonical bytes
    assert (document["payout"], [line["fills"] for line in document["lines"]]) == ("2.02", [2])
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [(r["kind"], r["user_id"], r["fee_base"], r["payout_exact"], r["payout"]) for r in rows] == [
        ("regular", "alice", "10.123456", "2.0246912", ""), ("total", "", "10.123456", "2.0246912", "2.02")]
    assert error(api.client.get(path, headers=op, params={"format": "xml"}), 422) == ("invalid_input", "format")


# --- configuration -------------------------------------------------------------------------------------------

def test_the_configuration_shows_the_seed_schedule(api: Api) -> None:
    config = ok(api.client.get("/v1/admin/config", headers=api.operator_key("viewer")))

    assert [(t["name"], t["min_volume"], t["rate"]) for t in config["schedules"][0]["tiers"]] == [
        ("BKR 0", "0", "0.2"), ("BKR 1", "5000000", "0.3"), ("BKR 2", "10000000", "0.35"),
        ("BKR 3", "20000000", "0.4"), ("BKR 4", "60000000", "0.45"), ("BKR 5", "100000000", "0.5")]
    assert (config["cap"], config["tier_basis"], config["unknown_broker_policy"], config["rounding_quantum"]) == \
        ("0.5", "same_month", "ignore", "0.01")
    assert config["usd_rates"]["USDC"] == "1"
