"""The venue under hostile input, on both databases, through the real ASGI app: credentials are
checked before the body is parsed, a body is bounded and parsed only as deep as Backpack's go, no
error quotes more than a bounded part of the request, and every malformed request (odd query
parameters, wrong JSON types, arrays for objects, empty bodies, wrong content types, very long
strings, numbers past every bound, header bytes outside ASCII) is a 4xx in Backpack's
`{"code", "message"}`, never a 5xx. A hypothesis search over signed and unsigned requests to
every route closes the file; each crash it found is a case of `HOSTILE` or a test of its own."""

import json
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select
from venue_requests import Answer, as_signed, is_backpack_refusal, send, signed_headers

from bkr.api.app import create_app
from bkr.domain.config import ProgramConfig, UnknownBrokerPolicy
from bkr.domain.signing import KeyPair, new_key_pair, signing_string
from bkr.settings import ServiceSettings
from bkr.store.tables import venue_broker_ids_seen, venue_orders
from bkr.venue.accounts import create_user_key
from bkr.venue.client import INSTRUCTIONS
from bkr.venue.markets import VenueConfig

JSON = (b"content-type", b"application/json")
ORDER = {"symbol": "SOL_USDC", "side": "Bid", "orderType": "Limit", "price": "10", "quantity": "1"}


@dataclass
class Sandbox:
    engine: Engine
    app: FastAPI
    key: KeyPair  # alice's, funded with the configured play money

    def signed(self, method: str, path: str, body: Any = None, *, query: dict[str, str] | None = None,
               raw: bytes | None = None, headers: tuple[tuple[bytes, bytes], ...] = (JSON,),
               key: KeyPair | None = None) -> Answer:
        """A request signed by `key` (alice's) over `body` (or `query`); `raw` replaces the body's bytes."""
        sent = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        params = query if query is not None else (body if body is not None else {})
        return send(self.app, method, path, query=urllib.parse.urlencode(query or {}).encode(), body=sent,
                    headers=[*signed_headers(key or self.key, INSTRUCTIONS[(method, path)], params), *headers])


def _sandbox(engine: Engine, program: ProgramConfig) -> Iterator[Sandbox]:
    app = create_app(engine, program, ServiceSettings(), venue_config=VenueConfig())
    with TestClient(app):  # the app's lifespan, as a server runs it
        with engine.begin() as connection:
            key = create_user_key(connection, VenueConfig(), "alice", datetime.now(UTC), actor="ops")
        yield Sandbox(engine, app, key)


@pytest.fixture
def sandbox(engine: Engine) -> Iterator[Sandbox]:
    yield from _sandbox(engine, ProgramConfig())


def refused(answer: Answer, status: int, code: str) -> str:
    assert is_backpack_refusal(answer), answer
    assert (answer.status, answer.code) == (status, code), answer
    return str(answer.body["message"])


# --- the signature before the body -------------------------------------------------------------------

NESTED = b"[" * 30_000 + b"]" * 30_000  # under the venue's 64 KiB; json.loads would hit its recursion limit


def test_a_body_from_an_unknown_key_is_refused_unread(sandbox: Sandbox) -> None:
    stranger = new_key_pair()

    for body in (b"{not json", NESTED, json.dumps({"symbol": "A" * 60_000}).encode()):
        message = refused(sandbox.signed("POST", "/api/v1/order", raw=body, key=stranger), 401, "UNAUTHORIZED")
        assert message == "unknown, revoked or expired API key"


@pytest.mark.parametrize("headers", [
    [],  # no credentials at all
    [(b"x-api-key", b"not base64 at all")],
    "expired",
], ids=["none", "malformed key", "expired"])
def test_deep_nesting_without_valid_credentials_is_a_401(sandbox: Sandbox, headers: Any) -> None:
    if headers == "expired":
        headers = signed_headers(sandbox.key, "orderExecute", {}, now_ms=int(time.time() * 1000) - 120_000)

    answer = send(sandbox.app, "POST", "/api/v1/order", body=NESTED, headers=[JSON, *headers])

    refused(answer, 401, "UNAUTHORIZED")


def test_deep_nesting_from_a_known_key_is_a_400_never_a_500(sandbox: Sandbox) -> None:
    for path in ("/api/v1/order", "/api/v1/orders"):
        message = refused(sandbox.signed("POST", path, raw=NESTED), 400, "INVALID_CLIENT_REQUEST")
        assert message.startswith("body: JSON nested more than 2 levels deep")


def test_a_refused_signature_quotes_at_most_a_thousand_characters_of_what_was_expected(sandbox: Sandbox) -> None:
    sent = ORDER | {"symbol": "A" * 60_000}
    headers = signed_headers(sandbox.key, "orderExecute", ORDER)  # signed over another body
    stamp = int(dict(headers)[b"x-timestamp"])

    answer = send(sandbox.app, "POST", "/api/v1/order", body=json.dumps(sent).encode(), headers=[JSON, *headers])

    expected = signing_string("orderExecute", sent, stamp, 60_000)
    message = refused(answer, 401, "INVALID_SIGNATURE")
    assert message == (f"signature does not verify; sign {expected[:1_000]!r}… "
                       f"(the first 1,000 of {len(expected):,} characters)")
    assert answer.size < 1_200


def test_a_short_refused_signature_still_quotes_the_whole_string_to_sign(sandbox: Sandbox) -> None:
    headers = signed_headers(sandbox.key, "orderExecute", ORDER | {"price": "11"})

    answer = send(sandbox.app, "POST", "/api/v1/order", body=json.dumps(ORDER).encode(), headers=[JSON, *headers])

    stamp = dict(headers)[b"x-timestamp"].decode()
    assert refused(answer, 401, "INVALID_SIGNATURE") == (
        "signature does not verify; sign 'instruction=orderExecute&orderType=Limit&price=10&quantity=1&side=Bid"
        f"&symbol=SOL_USDC&timestamp={stamp}&window=60000'")


def test_a_body_over_the_venue_s_limit_is_413_before_its_credentials_are_looked_at(sandbox: Sandbox) -> None:
    body = json.dumps(ORDER | {"symbol": "A" * 70_000}).encode()

    for headers in ([JSON], [JSON, *signed_headers(sandbox.key, "orderExecute", ORDER)]):
        answer = send(sandbox.app, "POST", "/api/v1/order", body=body, headers=headers)
        message = refused(answer, 413, "INVALID_CLIENT_REQUEST")
        assert message == "body: the request body is larger than 65,536 bytes, the most this route accepts"


def test_a_content_length_that_is_not_a_number_is_a_400_not_a_413(sandbox: Sandbox) -> None:
    answer = send(sandbox.app, "POST", "/api/v1/order", headers=[(b"content-length", b"abc")])

    assert refused(answer, 400, "INVALID_CLIENT_REQUEST") == "Content-Length: not a number of bytes"


# --- amounts, integers and X-Broker-Id ----------------------------------------------------------------

@pytest.mark.parametrize("price", ["1_0", " 10", "+10", "1e1", "NaN", "Infinity", "１０", "10.", "-10"])
def test_an_order_whose_price_is_not_a_plain_decimal_is_refused_and_places_nothing(sandbox: Sandbox,
                                                                                   price: str) -> None:
    message = refused(sandbox.signed("POST", "/api/v1/order", ORDER | {"price": price}), 400,
                      "INVALID_CLIENT_REQUEST")

    assert message.startswith("price: ")
    with sandbox.engine.connect() as connection:
        assert connection.execute(select(venue_orders)).all() == []


@pytest.mark.parametrize("order_id", [str(2**63), 2**63, 2**64, "-1", -1, "１", "1_0"])
def test_a_cancel_of_an_order_id_past_63_bits_or_negative_is_a_400(sandbox: Sandbox, order_id: Any) -> None:
    body = {"symbol": "SOL_USDC", "orderId": order_id}

    message = refused(sandbox.signed("DELETE", "/api/v1/order", body), 400, "INVALID_CLIENT_REQUEST")

    assert message.startswith("orderId: ")


@pytest.mark.parametrize(("method", "path", "query", "field"), [
    ("GET", "/wapi/v1/history/fills", {"from": "9" * 20}, "from"),
    ("GET", "/wapi/v1/history/fills", {"to": str(2**63)}, "to"),
    ("GET", "/wapi/v1/history/fills", {"orderId": str(2**64)}, "orderId"),
    ("GET", "/wapi/v1/history/orders", {"offset": str(2**63)}, "offset"),
    ("GET", "/wapi/v1/history/orders", {"offset": "-1"}, "offset"),
    ("GET", "/wapi/v1/history/orders", {"limit": "１０"}, "limit"),
    ("GET", "/api/v1/order", {"symbol": "SOL_USDC", "clientId": str(2**32)}, "clientId"),
    ("GET", "/api/v1/order", {"symbol": "SOL_USDC", "orderId": str(2**63)}, "orderId"),
])
def test_a_signed_query_with_a_number_past_its_bounds_is_a_400(sandbox: Sandbox, method: str, path: str,
                                                                query: dict[str, str], field: str) -> None:
    message = refused(sandbox.signed(method, path, query=query), 400, "INVALID_CLIENT_REQUEST")

    assert message.startswith(f"{field}: ")


@pytest.mark.parametrize("query", [{"limit": "-5"}, {"limit": "0"}, {"offset": "-1"}, {"offset": str(2**63)},
                                   {"limit": "9" * 30}])
def test_public_trades_with_a_limit_or_offset_past_its_bounds_are_a_400(sandbox: Sandbox,
                                                                        query: dict[str, str]) -> None:
    for path in ("/api/v1/trades", "/api/v1/trades/history"):
        if path == "/api/v1/trades" and "offset" in query:
            continue
        answer = send(sandbox.app, "GET", path, query=urllib.parse.urlencode({"symbol": "SOL_USDC", **query}).encode())
        assert refused(answer, 400, "INVALID_CLIENT_REQUEST").startswith(next(iter(query)) + ": ")


def _order_with_broker_header(sandbox: Sandbox, header: bytes) -> Answer:
    headers = signed_headers(sandbox.key, "orderExecute", ORDER)
    return send(sandbox.app, "POST", "/api/v1/order", body=json.dumps(ORDER).encode(),
                headers=[JSON, *headers, (b"x-broker-id", header)])


# Header bytes as a client could send them; an HTTP server decodes them as Latin-1: 0xB2 is "²",
# which str.isdigit() accepts and int() refuses (this was a 500); full-width digits arrive as UTF-8.
MALFORMED_IDS = [b"\xb2", b"\xb9\xb2", "１４００".encode(), b"\xa01400", b"+1400", b"1_400", b"99999999999999999999"]


@pytest.mark.parametrize("header", MALFORMED_IDS)
def test_a_malformed_x_broker_id_trades_unattributed_and_is_counted_under_ignore(sandbox: Sandbox,
                                                                               header: bytes) -> None:
    answer = _order_with_broker_header(sandbox, header)

    assert answer.status == 200, answer
    with sandbox.engine.connect() as connection:
        order = connection.execute(select(venue_orders)).one()
        seen = connection.execute(select(venue_broker_ids_seen)).one()
    assert order.broker_id is None
    assert seen.header == header.decode("latin-1").strip(" \t") and seen.orders == 1
    assert "is not a broker id" in seen.reason


@pytest.mark.parametrize("header", MALFORMED_IDS)
def test_a_malformed_x_broker_id_is_refused_under_reject(engine: Engine, header: bytes) -> None:
    for sandbox in _sandbox(engine, ProgramConfig(unknown_broker_policy=UnknownBrokerPolicy.REJECT)):
        message = refused(_order_with_broker_header(sandbox, header), 400, "INVALID_CLIENT_REQUEST")
        assert "is not a broker id (a whole number 1..65535 in the digits 0-9)" in message
        with engine.connect() as connection:
            assert connection.execute(select(venue_orders)).all() == []


# --- the sweep -------------------------------------------------------------------------------------------

LONG = "S" * 50_000


@dataclass(frozen=True)
class Hostile:
    """One hostile request: `signed` sends it with alice's valid signature over what it carries."""

    method: str
    path: str
    query: dict[str, str] | None = None
    body: Any = None
    raw: bytes | None = None
    content_type: bytes | None = b"application/json"
    signed: bool = True


HOSTILE: dict[str, tuple[Hostile, int, str]] = {
    # routes and methods the venue does not have
    "an unknown route": (Hostile("GET", "/api/v1/nope", signed=False), 404, "NOT_IMPLEMENTED"),
    "PUT on an order": (Hostile("PUT", "/api/v1/order", body=ORDER, signed=False), 404, "NOT_IMPLEMENTED"),
    # public routes
    "market without a symbol": (Hostile("GET", "/api/v1/market", signed=False), 400, "INVALID_MARKET"),
    "market of a 50,000-character symbol": (Hostile("GET", "/api/v1/market", {"symbol": LONG}, signed=False), 400,
                                            "INVALID_MARKET"),
    "ticker of a NUL symbol": (Hostile("GET", "/api/v1/ticker", {"symbol": "\x00"}, signed=False), 400,
                               "INVALID_MARKET"),
    "depth limit of 30 digits": (Hostile("GET", "/api/v1/depth", {"symbol": "SOL_USDC", "limit": "9" * 30},
                                         signed=False), 400, "INVALID_CLIENT_REQUEST"),
    "depth limit -1": (Hostile("GET", "/api/v1/depth", {"symbol": "SOL_USDC", "limit": "-1"}, signed=False), 400,
                       "INVALID_CLIENT_REQUEST"),
    "depth limit 1e3": (Hostile("GET", "/api/v1/depth", {"symbol": "SOL_USDC", "limit": "1e3"}, signed=False), 400,
                        "INVALID_CLIENT_REQUEST"),
    "trades of no market": (Hostile("GET", "/api/v1/trades", {"symbol": "DOGE_USDC"}, signed=False), 400,
                            "INVALID_MARKET"),
    # signed reads
    "fills of a 50,000-character sortDirection": (Hostile("GET", "/wapi/v1/history/fills", {"sortDirection": LONG}),
                                                  400, "INVALID_CLIENT_REQUEST"),
    "fills from a negative instant": (Hostile("GET", "/wapi/v1/history/fills", {"from": "-1"}), 400,
                                      "INVALID_CLIENT_REQUEST"),
    "fills of a 50,000-character symbol": (Hostile("GET", "/wapi/v1/history/fills", {"symbol": LONG}), 400,
                                           "INVALID_MARKET"),
    "order query with neither id": (Hostile("GET", "/api/v1/order", {"symbol": "SOL_USDC"}), 400,
                                    "INVALID_CLIENT_REQUEST"),
    "order query with both ids": (Hostile("GET", "/api/v1/order", {"symbol": "SOL_USDC", "orderId": "1",
                                                                    "clientId": "1"}), 400, "INVALID_CLIENT_REQUEST"),
    "position of no market": (Hostile("GET", "/api/v1/position", {"symbol": "NOPE"}), 400, "INVALID_MARKET"),
    # order bodies of the wrong shape or type
    "order body an array": (Hostile("POST", "/api/v1/order", body=[ORDER]), 400, "INVALID_CLIENT_REQUEST"),
    "order body a string": (Hostile("POST", "/api/v1/order", raw=b'"SOL_USDC"'), 400, "INVALID_CLIENT_REQUEST"),
    "order body a number": (Hostile("POST", "/api/v1/order", raw=b"5"), 400, "INVALID_CLIENT_REQUEST"),
    "order body null": (Hostile("POST", "/api/v1/order", raw=b"null"), 400, "INVALID_CLIENT_REQUEST"),
    "cancel body null": (Hostile("DELETE", "/api/v1/order", raw=b"null"), 400, "INVALID_CLIENT_REQUEST"),
    "order body empty": (Hostile("POST", "/api/v1/order", raw=b""), 400, "INVALID_CLIENT_REQUEST"),
    "order body not JSON": (Hostile("POST", "/api/v1/order", raw=b"{'symbol': 'SOL_USDC'}"), 400,
                            "INVALID_CLIENT_REQUEST"),
    "order body not UTF-8": (Hostile("POST", "/api/v1/order", raw=b'{"symbol": "\xff"}'), 400,
                             "INVALID_CLIENT_REQUEST"),
    "order body with NaN": (Hostile("POST", "/api/v1/order", raw=b'{"price": NaN}'), 400, "INVALID_CLIENT_REQUEST"),
    "order with a key twice": (Hostile("POST", "/api/v1/order",
                                       raw=b'{"symbol": "SOL_USDC", "symbol": "BTC_USDC"}'), 400,
                               "INVALID_CLIENT_REQUEST"),
    "order as text/plain": (Hostile("POST", "/api/v1/order", body=ORDER, content_type=b"text/plain"), 400,
                            "INVALID_CLIENT_REQUEST"),
    "order as a form": (Hostile("POST", "/api/v1/order", body=ORDER,
                                content_type=b"application/x-www-form-urlencoded"), 400, "INVALID_CLIENT_REQUEST"),
    "order with a symbol array": (Hostile("POST", "/api/v1/order", body=ORDER | {"symbol": ["SOL_USDC"]}), 400,
                                  "INVALID_CLIENT_REQUEST"),
    "order with a price object": (Hostile("POST", "/api/v1/order", body=ORDER | {"price": {"v": "1"}}), 400,
                                  "INVALID_CLIENT_REQUEST"),
    "order with a price true": (Hostile("POST", "/api/v1/order", body=ORDER | {"price": True}), 400,
                                "INVALID_CLIENT_REQUEST"),
    "order with a float price": (Hostile("POST", "/api/v1/order", body=ORDER | {"price": 1.5e300}), 400,
                                 "INVALID_CLIENT_REQUEST"),
    "order with a 16-digit price": (Hostile("POST", "/api/v1/order", body=ORDER | {"price": "1" + "0" * 15}), 400,
                                    "INVALID_CLIENT_REQUEST"),
    "order with a clientId of 2^64": (Hostile("POST", "/api/v1/order", body=ORDER | {"clientId": 2**64}), 400,
                                      "INVALID_CLIENT_REQUEST"),
    "order with a clientId string": (Hostile("POST", "/api/v1/order", body=ORDER | {"clientId": "7"}), 400,
                                     "INVALID_CLIENT_REQUEST"),
    "order with a 50,000-character side": (Hostile("POST", "/api/v1/order", body=ORDER | {"side": LONG}), 400,
                                           "INVALID_CLIENT_REQUEST"),
    "order with a 50,000-character field": (Hostile("POST", "/api/v1/order", body=ORDER | {LONG: "1"}), 400,
                                            "INVALID_CLIENT_REQUEST"),
    "order of a 50,000-character symbol": (Hostile("POST", "/api/v1/order", body=ORDER | {"symbol": LONG}), 400,
                                           "INVALID_MARKET"),
    "order with reduceOnly": (Hostile("POST", "/api/v1/order", body=ORDER | {"reduceOnly": True}), 400,
                              "INVALID_CLIENT_REQUEST"),
    # batches
    "batch an object": (Hostile("POST", "/api/v1/orders", body=ORDER), 400, "INVALID_CLIENT_REQUEST"),
    "batch of numbers": (Hostile("POST", "/api/v1/orders", body=[1, 2]), 400, "INVALID_CLIENT_REQUEST"),
    "batch of arrays": (Hostile("POST", "/api/v1/orders", raw=b"[[1]]"), 400, "INVALID_CLIENT_REQUEST"),
    "batch empty body": (Hostile("POST", "/api/v1/orders", raw=b""), 400, "INVALID_CLIENT_REQUEST"),
    # cancels
    "cancel body an array": (Hostile("DELETE", "/api/v1/order", body=[{"orderId": "1"}]), 400,
                             "INVALID_CLIENT_REQUEST"),
    "cancel with an orderId of 10^40": (Hostile("DELETE", "/api/v1/order",
                                                body={"symbol": "SOL_USDC", "orderId": 10**40}), 400,
                                        "INVALID_CLIENT_REQUEST"),
    "cancel with an orderId 1.5": (Hostile("DELETE", "/api/v1/order", raw=b'{"symbol": "SOL_USDC", "orderId": 1.5}'),
                                   400, "INVALID_CLIENT_REQUEST"),
    "cancel-all with an empty body": (Hostile("DELETE", "/api/v1/orders", raw=b""), 400, "INVALID_MARKET"),
    "cancel-all of a numeric symbol": (Hostile("DELETE", "/api/v1/orders", body={"symbol": 5}), 400,
                                       "INVALID_MARKET"),
    "cancel-all of a symbol list": (Hostile("DELETE", "/api/v1/orders", body={"symbol": ["SOL_USDC"]}), 400,
                                    "INVALID_CLIENT_REQUEST"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_every_hostile_request_is_a_4xx_in_backpack_s_shape(sandbox: Sandbox, case: str) -> None:
    hostile, status, code = HOSTILE[case]
    raw = hostile.raw if hostile.raw is not None else (json.dumps(hostile.body).encode()
                                                       if hostile.body is not None else b"")
    headers = [(b"content-type", hostile.content_type)] if hostile.content_type else []
    if hostile.signed:
        params = hostile.query if hostile.query is not None else as_signed(raw)
        headers += signed_headers(sandbox.key, INSTRUCTIONS[(hostile.method, hostile.path)], params)

    answer = send(sandbox.app, hostile.method, hostile.path, body=raw, headers=headers,
                  query=urllib.parse.urlencode(hostile.query or {}).encode())

    refused(answer, status, code)
    assert answer.size < 1_200
    with sandbox.engine.connect() as connection:
        assert connection.execute(select(venue_orders)).all() == []


# --- the search ------------------------------------------------------------------------------------------

ROUTES = [("GET", "/api/v1/market"), ("GET", "/api/v1/ticker"), ("GET", "/api/v1/depth"), ("GET", "/api/v1/trades"),
          ("GET", "/api/v1/trades/history"), ("GET", "/api/v1/markets"), *INSTRUCTIONS]
FIELD_NAMES = ["symbol", "side", "orderType", "price", "quantity", "quoteQuantity", "timeInForce", "postOnly",
               "selfTradePrevention", "clientId", "orderId", "limit", "offset", "from", "to", "sortDirection",
               "marketType", "fillType", "reduceOnly", "brokerId"]
WORDS = ["SOL_USDC", "SOL_USDC_PERP", "BTC_USDC", "Bid", "Ask", "Limit", "Market", "GTC", "IOC", "FOK", "Asc",
         "RejectTaker", "User", "SPOT", "PERP", "150.25", "1", "0", "-1", "1_0", "1e3", "NaN", "Infinity", " 1",
         "+1", "１", "²", "٣", str(2**63), str(2**64), "9" * 40, "", "\x00", "S" * 3_000]
texts = st.one_of(st.sampled_from(WORDS), st.text(max_size=30))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), texts, st.integers(min_value=-(2**80), max_value=2**80),
              st.decimals(allow_nan=False, allow_infinity=False)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(FIELD_NAMES), inner,
                                                                          max_size=4)),
    max_leaves=8)
orders = st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=8).map(lambda extra: ORDER | extra)


def _json_text(value: Any) -> bytes:
    """JSON as a client writes it; a `Decimal` as a JSON number in its own digits (`1.50`, `1E+3`)."""
    if isinstance(value, Decimal):
        return str(value).encode()
    if isinstance(value, dict):
        return b"{" + b",".join(json.dumps(k).encode() + b":" + _json_text(v) for k, v in value.items()) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(_json_text(v) for v in value) + b"]"
    return json.dumps(value).encode()


bodies = st.one_of(
    orders.map(_json_text), st.lists(orders, max_size=3).map(_json_text), json_values.map(_json_text),
    st.binary(max_size=200), st.sampled_from([b"", b"[" * 5000, b'{"a":' * 5000, b"{}", b"[]", b"null"]))
queries = st.dictionaries(st.sampled_from(FIELD_NAMES), texts, max_size=5)
broker_headers = st.one_of(st.none(), st.binary(max_size=12).filter(lambda b: b"\r" not in b and b"\n" not in b),
                           st.sampled_from([b"1400", b"\xb2", b"0", b"65536"]))
content_types = st.sampled_from([b"application/json", b"application/json; charset=utf-8", b"text/plain", None])
SEARCH = settings(max_examples=200, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@SEARCH
@given(route=st.sampled_from(ROUTES), query=queries, body=bodies, sign=st.integers(0, 4).map(bool),
       broker=broker_headers, content_type=content_types)
def test_no_request_to_any_route_gets_a_5xx_or_an_unbounded_answer(
        sandbox: Sandbox, route: tuple[str, str], query: dict[str, str], body: bytes, sign: bool,
        broker: bytes | None, content_type: bytes | None) -> None:
    method, path = route
    sent = body if method in ("POST", "DELETE") else b""
    headers = [(b"content-type", content_type)] if content_type else []
    if broker is not None:
        headers.append((b"x-broker-id", broker))
    if sign and route in INSTRUCTIONS:
        headers += signed_headers(sandbox.key, INSTRUCTIONS[route], as_signed(sent) if sent else query)

    answer = send(sandbox.app, method, path, query=urllib.parse.urlencode(query).encode(), body=sent,
                  headers=headers)

    event(f"{answer.status} {answer.code or ''}")  # what the search reached (--hypothesis-show-statistics)
    assert answer.status < 500, (route, query, sent[:200], answer)
    if answer.status >= 400:
        assert is_backpack_refusal(answer), (route, query, sent[:200], answer)
