"""POST /v1/fills: the exchange's fill feed, on SQLite and PostgreSQL.

Each item is answered on its own, by the same rules and code path as a file import; a batch is
one transaction, so retries and concurrent posts store each fill once."""

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from api_support import Api
from feed_support import (
    BROKER,
    fill,
    fill_count,
    ndjson,
    post_fills,
    reference_engine,
    register_users,
    stored_aggregates,
)
from prometheus_client import REGISTRY
from sqlalchemy import Engine

from bkr.domain.registry import BrokerStatus
from bkr.ingest.readers import ndjson_rows
from bkr.program import registry
from bkr.program.importer import import_rows
from bkr.program.writer import Tally
from program_support import use_program

ACTIVE_SINCE = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def feed(api: Api) -> dict[str, str]:
    """Broker 1400 active, users alice and bob known, and the headers of an operator key."""
    api.broker(BROKER)
    register_users(api.engine, ["alice", "bob"], api.clock())
    return api.operator_key("operator")


def _reference(sqlite_template: Path, tmp_path: Path) -> Engine:
    engine = reference_engine(sqlite_template, tmp_path)
    use_program(engine)
    with engine.begin() as connection:
        registry.enroll_broker(connection, BROKER, f"acct-{BROKER}", f"Broker {BROKER}", "trading_bot", ACTIVE_SINCE,
                               actor="ops")
        registry.change_broker_status(connection, BROKER, BrokerStatus.ACTIVE, ACTIVE_SINCE, ACTIVE_SINCE, actor="ops")
        registry.add_users(connection, [("alice", None), ("bob", None)], ACTIVE_SINCE, actor="ops")
    return engine


def _import(engine: Engine, items: list[Any]) -> Tally:
    """The same items through the file import (one batch), for comparison."""
    return import_rows(engine, ndjson_rows(ndjson(items).splitlines()), source="batch.ndjson",
                       clock=lambda: datetime(2026, 10, 20, tzinfo=UTC), actor="ops")


def _counts(body: dict[str, Any]) -> dict[str, int]:
    return {name: body[name] for name in ("accepted", "duplicates", "conflicts", "rejected")}


@pytest.mark.parametrize("as_ndjson", [False, True], ids=["json", "ndjson"])
def test_a_batch_is_accepted_as_a_json_array_or_as_ndjson(api: Api, feed: dict[str, str], as_ndjson: bool) -> None:
    response = post_fills(api.client, feed, [fill("f-1"), fill("f-2", user="bob", market="PERP")],
                          as_ndjson=as_ndjson)

    assert response.status_code == 200, response.text
    assert response.json() == {
        "accepted": 2, "duplicates": 0, "conflicts": 0, "rejected": 0,
        "results": [{"index": 1, "fill_id": "f-1", "outcome": "accepted", "reason": None, "attribution": "counted"},
                    {"index": 2, "fill_id": "f-2", "outcome": "accepted", "reason": None, "attribution": "counted"}]}
    assert fill_count(api.engine) == 2


def test_ndjson_items_are_numbered_by_their_line(api: Api, feed: dict[str, str]) -> None:
    body = ndjson([fill("f-1")]) + "\n" + "{broken\n" + ndjson([fill("f-2")])

    response = api.client.post("/v1/fills", content=body, headers={**feed, "Content-Type": "application/x-ndjson"})

    assert response.status_code == 200, response.text
    assert [(r["index"], r["outcome"]) for r in response.json()["results"]] == [
        (1, "accepted"), (3, "rejected"), (4, "accepted")]
    assert response.json()["results"][1]["reason"].startswith("not valid JSON")


def test_each_item_is_answered_on_its_own_as_a_file_import_would(api: Api, feed: dict[str, str],
                                                                   sqlite_template: Path, tmp_path: Path) -> None:
    first = [
        fill("f-1"),
        fill("f-2", user="bob", price="250.5", quantity="0.2"),
        fill("f-1"),  # the same fill twice in one batch: a duplicate
        fill("f-3", price="abc"),  # rejected, naming the field
        {**fill("f-4"), "timestamp": None},
        fill("f-2", user="bob", price="251"),  # same fill_id, other content, in the same batch
        "not an object",
    ]
    second = [
        fill("f-1"),  # already stored: a duplicate across posts
        fill("f-5", user="bob", market="PERP", fee="0.35"),
        fill("f-2", user="bob", price="999"),  # conflicts with the stored f-2
    ]

    answer = post_fills(api.client, feed, first).json()
    again = post_fills(api.client, feed, second, as_ndjson=True).json()

    assert _counts(answer) == {"accepted": 2, "duplicates": 1, "conflicts": 1, "rejected": 3}
    outcomes = [(r["index"], r["fill_id"], r["outcome"]) for r in answer["results"]]
    assert outcomes == [(1, "f-1", "accepted"), (2, "f-2", "accepted"), (3, "f-1", "duplicate"),
                        (4, "f-3", "rejected"), (5, "f-4", "rejected"), (6, "f-2", "conflict"),
                        (7, None, "rejected")]
    reasons = [r["reason"] or "" for r in answer["results"]]
    assert reasons[3].startswith("price:") and reasons[4].startswith("timestamp:")
    assert reasons[6] == "not a JSON object"
    assert _counts(again) == {"accepted": 1, "duplicates": 1, "conflicts": 1, "rejected": 0}
    assert [r["outcome"] for r in again["results"]] == ["duplicate", "accepted", "conflict"]

    reference = _reference(sqlite_template, tmp_path)
    assert _counts(answer) == _import(reference, first).counts()
    assert _counts(again) == _import(reference, second).counts()
    assert stored_aggregates(api.engine) == stored_aggregates(reference)
    reference.dispose()


def test_a_self_trade_posted_side_by_side_is_answered_and_counted_for_nobody(api: Api, feed: dict[str, str]) -> None:
    buy = fill("f-buy") | {"trade_id": 4242}  # Backpack's tradeId is an integer
    sell = fill("f-sell") | {"side": "Ask", "is_maker": True, "trade_id": 4242}

    first = post_fills(api.client, feed, [buy, fill("f-bob", user="bob")]).json()
    counted = stored_aggregates(api.engine)
    second = post_fills(api.client, feed, [sell, sell | {"fill_id": "f-third", "user_id": "bob"}]).json()
    review = api.client.get("/v1/admin/fills/rejected", headers=feed).json()

    assert [r["attribution"] for r in first["results"]] == ["counted", "counted"]
    assert [(r["outcome"], r["attribution"]) for r in second["results"]] == [("accepted", "self_trade"),
                                                                             ("rejected", None)]
    assert second["results"][1]["reason"].startswith("trade_id: trade '4242' of SOL_USDC already has two sides")
    assert stored_aggregates(api.engine) != counted  # alice's first side was taken back: bob's fill alone counts
    assert [(r.user_id, r.fills, r.volume_usd) for r in stored_aggregates(api.engine)] == [("bob", 1, Decimal(100))]
    assert (review["counts"]["self_trades"], review["counts"]["rejected"]) == (2, 1)


def test_json_numbers_are_read_as_exact_decimals(api: Api, feed: dict[str, str]) -> None:
    body = ('[{"fill_id":"f-1","order_id":"o-1","user_id":"alice","symbol":"SOL_USDC","market_type":"SPOT",'
            '"side":"Bid","price":0.1,"quantity":0.3,"fee":0.000000000000000001,"fee_symbol":"USDC",'
            '"is_maker":false,"timestamp":"2026-10-15T12:00:00Z","broker_id":1400}]')

    response = api.client.post("/v1/fills", content=body, headers={**feed, "Content-Type": "application/json"})

    assert response.json()["accepted"] == 1
    (row,) = stored_aggregates(api.engine)
    assert (row.volume_usd, row.fee_usd) == (Decimal("0.03"), Decimal("1E-18"))


def test_a_retried_post_changes_nothing(api: Api, feed: dict[str, str]) -> None:
    batch = [fill("f-1"), fill("f-2", user="bob", market="PERP"), fill("f-3", fee="oops")]
    first = post_fills(api.client, feed, batch).json()
    aggregates, stored = stored_aggregates(api.engine), fill_count(api.engine)

    retry = post_fills(api.client, feed, batch).json()

    assert _counts(first) == {"accepted": 2, "duplicates": 0, "conflicts": 0, "rejected": 1}
    assert _counts(retry) == {"accepted": 0, "duplicates": 2, "conflicts": 0, "rejected": 1}
    assert stored_aggregates(api.engine) == aggregates
    assert fill_count(api.engine) == stored == 2


@pytest.mark.parametrize("as_ndjson", [False, True], ids=["json", "ndjson"])
def test_a_batch_over_the_configured_size_is_refused_before_any_work(api: Api, feed: dict[str, str],
                                                                      as_ndjson: bool) -> None:
    too_many = [fill(f"f-{n}") for n in range(1_001)]  # the fixture's max_batch is 1,000

    response = post_fills(api.client, feed, too_many, as_ndjson=as_ndjson)

    assert response.status_code == 413
    assert response.json()["code"] == "batch_too_large"
    assert fill_count(api.engine) == 0
    assert post_fills(api.client, feed, too_many[:1_000], as_ndjson=as_ndjson).json()["accepted"] == 1_000


@pytest.mark.parametrize(("content_type", "body"), [
    ("application/json", "this is not JSON"),
    ("application/json", '{"fill_id": "f-1"}'),
    ("application/json", ""),
    ("application/x-ndjson", "neither\nis this\n"),
], ids=["text", "an-object", "empty", "ndjson-text"])
def test_a_body_that_is_not_a_batch_of_json_is_422(api: Api, feed: dict[str, str], content_type: str,
                                                   body: str) -> None:
    response = api.client.post("/v1/fills", content=body, headers={**feed, "Content-Type": content_type})

    assert response.status_code == 422
    assert (response.json()["code"], response.json()["field"]) == ("invalid_input", "body")


def test_an_unsupported_content_type_is_415(api: Api, feed: dict[str, str]) -> None:
    response = api.client.post("/v1/fills", content="fill_id,price\nf-1,1\n",
                               headers={**feed, "Content-Type": "text/csv"})

    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


def test_an_empty_batch_is_answered_with_nothing_done(api: Api, feed: dict[str, str]) -> None:
    response = post_fills(api.client, feed, [])

    assert response.status_code == 200
    assert response.json() == {"accepted": 0, "duplicates": 0, "conflicts": 0, "rejected": 0, "results": []}


def test_posting_fills_needs_an_operator_key_of_the_operator_role(api: Api) -> None:
    missing = post_fills(api.client, {}, [fill("f-1")])
    viewer = post_fills(api.client, api.operator_key("viewer"), [fill("f-1")])
    unknown = post_fills(api.client, {"Authorization": "Bearer bkr_op_nonsense"}, [fill("f-1")])

    assert (missing.status_code, missing.json()["code"]) == (401, "credentials_missing")
    assert (viewer.status_code, viewer.json()["code"]) == (403, "role_insufficient")
    assert unknown.status_code == 401
    assert fill_count(api.engine) == 0


def test_concurrent_posts_of_overlapping_batches_store_each_fill_once(api: Api, feed: dict[str, str],
                                                                      sqlite_template: Path, tmp_path: Path) -> None:
    union = [fill(f"f-{n:03d}", user="alice" if n % 2 else "bob", market="PERP" if n % 3 else "SPOT",
                  price=f"{100 + n}.25", fee=f"0.{n:03d}") for n in range(120)]
    batches = [union[start:start + 60] for start in range(0, 120, 20)] * 2  # each fill in up to six batches

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda batch: post_fills(api.client, feed, batch), batches))

    assert all(answer.status_code == 200 for answer in answers), [a.text for a in answers if a.status_code != 200]
    bodies = [answer.json() for answer in answers]
    assert sum(body["accepted"] for body in bodies) == len(union)
    assert sum(body["conflicts"] + body["rejected"] for body in bodies) == 0
    assert fill_count(api.engine) == len(union)
    reference = _reference(sqlite_template, tmp_path)
    _import(reference, union)
    assert stored_aggregates(api.engine) == stored_aggregates(reference)
    reference.dispose()


def test_outcomes_are_counted_in_the_metrics(api: Api, feed: dict[str, str]) -> None:
    def count(outcome: str, reason: str) -> float:
        return REGISTRY.get_sample_value("bkr_fills_total", {"outcome": outcome, "reason": reason}) or 0.0

    before = count("accepted", ""), count("rejected", "price"), count("rejected", "record")

    post_fills(api.client, feed, [fill("f-1"), fill("f-2", price="-1"), 42])

    after = count("accepted", ""), count("rejected", "price"), count("rejected", "record")
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1]


def test_text_no_database_can_store_is_rejected_naming_the_field(api: Api, feed: dict[str, str]) -> None:
    body = ('[{"fill_id":"f-1\\u0000","order_id":"o"}, {"fill_id":"f-2","user_id":"\\ud800"}]\n')
    lines = '{"fill_id": "f-3"\u0000}\n'

    answer = api.client.post("/v1/fills", content=body, headers={**feed, "Content-Type": "application/json"})
    streamed = api.client.post("/v1/fills", content=lines, headers={**feed, "Content-Type": "application/x-ndjson"})

    assert answer.status_code == 200, answer.text
    assert [r["reason"] for r in answer.json()["results"]] == [
        "fill_id: contains a NUL character", "user_id: contains an unpaired UTF-16 surrogate, which is not text"]
    assert streamed.status_code == 422  # its only line is not JSON: the body is not NDJSON


def test_a_bust_is_posted_like_a_fill_and_applied_once(api: Api, feed: dict[str, str]) -> None:
    original = fill("f-1")
    bust = {**original, "fill_id": "f-1-bust", "corrects": "f-1", "quantity": f"-{original['quantity']}",
            "fee": f"-{original['fee']}"}
    too_much = {**bust, "fill_id": "f-1-again"}  # the fill stands at 0 once busted
    post_fills(api.client, feed, [original])

    first = post_fills(api.client, feed, [bust]).json()
    again = post_fills(api.client, feed, [bust, too_much]).json()

    assert _counts(first) == {"accepted": 1, "duplicates": 0, "conflicts": 0, "rejected": 0}
    assert [(r["fill_id"], r["outcome"]) for r in again["results"]] == [
        ("f-1-bust", "duplicate"), ("f-1-again", "rejected")]
    assert again["results"][1]["reason"].startswith("quantity: would take fill 'f-1' below zero (it stands at 0;")
    (row,) = stored_aggregates(api.engine)
    assert (row.fills, row.volume_usd, row.fee_base_usd) == (2, 0, 0)


def test_an_item_with_a_field_that_is_not_a_fill_field_is_rejected_naming_it(api: Api, feed: dict[str, str]) -> None:
    """A misspelled `brokerId` once lost the fill's attribution without a word."""
    misspelled = {k: v for k, v in fill("f-1").items() if k != "broker_id"} | {"brokerId": BROKER}
    extra = fill("f-2") | {"note": "x", "venue": "y"}

    answer = post_fills(api.client, feed, [misspelled, extra, fill("f-3")])

    assert answer.status_code == 200, answer.text
    assert [(r["fill_id"], r["outcome"], r.get("reason")) for r in answer.json()["results"]] == [
        ("f-1", "rejected", "brokerId: not a fill field; did you mean broker_id?"),
        ("f-2", "rejected", "note: not a fill field (and venue); the fields are fill_id, order_id, user_id, symbol, "
                            "market_type, side, price, quantity, fee, fee_symbol, is_maker, timestamp, broker_id, "
                            "via_api, fill_type, corrects, trade_id"),
        ("f-3", "accepted", None),
    ]


def test_a_body_over_the_limit_is_413_before_it_is_read_whether_or_not_it_says_its_length(
        api: Api, feed: dict[str, str]) -> None:
    """The fixture takes at most 1 MiB on /v1/fills; every other route 1 MiB too."""
    big = b"[" + b" " * (1 << 20) + b"]"

    def chunks() -> Any:
        yield big[: len(big) // 2]
        yield big[len(big) // 2:]

    declared = api.client.post("/v1/fills", content=big, headers={**feed, "Content-Type": "application/json"})
    streamed = api.client.post("/v1/fills", content=chunks(), headers={**feed, "Content-Type": "application/json"})
    enroll = api.client.post("/v1/admin/brokers", content=big, headers={**feed, "Content-Type": "application/json"})
    order = api.client.post("/api/v1/order", content=big, headers={"Content-Type": "application/json"})

    for answer in (declared, streamed, enroll):
        assert (answer.status_code, answer.json()["code"], answer.json()["field"]) == (413, "too_large", "body")
    assert (order.status_code, order.json()["code"]) == (413, "INVALID_CLIENT_REQUEST")
    assert "larger than 1,048,576 bytes" in declared.json()["message"]
    assert post_fills(api.client, feed, [fill("f-1")]).json()["accepted"] == 1


def test_json_nested_too_deeply_is_422_not_a_crash(api: Api, feed: dict[str, str]) -> None:
    nested = "[" * 100_000 + "]" * 100_000

    answer = api.client.post("/v1/fills", content=nested, headers={**feed, "Content-Type": "application/json"})

    assert (answer.status_code, answer.json()["message"]) == (
        422, "body: JSON nested too deeply to be a batch of fills")
