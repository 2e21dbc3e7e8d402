"""Fuzzing the venue's request parsing: whatever the bytes of a body, the values of an order's
fields, the text of a query parameter or of an `X-Broker-Id` header, the parsers either return
values within their bounds or refuse with `InvalidInput` whose message names the field and
quotes at most a few dozen characters of what was sent. Any other exception would be a 500:
hypothesis searches for one within a bounded budget (`EXAMPLES` cases per parser, every `make
test`). The search over the whole app, signed, is in tests/integration/test_venue_input.py, and
every crash either found is a test there or in tests/unit/venue/."""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bkr.domain.bounds import AMOUNT, digits_of
from bkr.domain.errors import InvalidInput
from bkr.venue.directory import BrokerDirectory, body_broker_id, header_broker_id
from bkr.venue.wire import MAX_ID, MAX_MILLIS, instant, order_target, page, parse_order, read_body

EXAMPLES = 200
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
LONGEST_MESSAGE = 300
ORDER = {"symbol": "SOL_USDC", "side": "Bid", "orderType": "Limit", "price": "150.25", "quantity": "2"}
FIELDS = ["symbol", "side", "orderType", "price", "quantity", "quoteQuantity", "timeInForce", "postOnly",
          "selfTradePrevention", "clientId", "brokerId", "reduceOnly", "orderId", "limit", "offset", "from", "to",
          "sortDirection"]

# What a field may hold once JSON is read: every JSON type, numbers far past every bound, text of
# every kind, and the spellings that Decimal() and int() accept but a wire format does not.
values = st.one_of(
    st.none(), st.booleans(), st.text(max_size=40), st.integers(min_value=-(2**100), max_value=2**100),
    st.decimals(allow_nan=True, allow_infinity=True), st.floats(),
    st.sampled_from(["1_0", " 1", "+1", "-1", "1e3", "NaN", "Infinity", "0x10", "１", "²", "٣", "1.", ".5", "",
                     "0", "150.25", str(2**63), str(2**64), "9" * 50, "Bid", "Limit", "Market", "IOC", "SOL_USDC",
                     "Asc", "X" * 5_000]),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
params = st.dictionaries(st.sampled_from(FIELDS), values, max_size=6)


def check_refusal(error: InvalidInput) -> None:
    assert len(str(error)) <= LONGEST_MESSAGE, str(error)


@FUZZ
@given(raw=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode),
                     st.sampled_from([b"[" * 3000, b'{"a":' * 3000, b'{"a": 1e999}', b'{"a": -Infinity}'])))
def test_any_body_is_json_within_two_levels_or_refused(raw: bytes) -> None:
    try:
        body = read_body(raw)
    except InvalidInput as error:
        check_refusal(error)
        return

    def depth(value: Any) -> int:
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
        return 1 + max(map(depth, children), default=0) if isinstance(value, (dict, list)) else 0

    assert depth(body) <= 2
    assert not any(isinstance(v, float) for v in (body.values() if isinstance(body, dict) else []))


@FUZZ
@given(extra=params)
def test_any_order_is_parsed_within_the_bounds_or_refused_naming_a_field(extra: dict[str, Any]) -> None:
    try:
        order = parse_order(ORDER | extra)
    except InvalidInput as error:
        check_refusal(error)
        assert str(error).split(":", 1)[0].strip("'") in [*FIELDS, "A limit order needs a price and a quantity",
                                                            "A market order needs exactly one of quantity and "
                                                            "quoteQuantity", "Invalid market",
                                                            "price and postOnly apply to limit orders only"], str(error)
        return
    for amount in (order.price, order.quantity, order.quote_quantity):
        if amount is not None:
            integer, places = digits_of(amount)
            assert isinstance(amount, Decimal) and amount > 0
            assert integer <= AMOUNT.integer_digits and places <= AMOUNT.decimal_places
    assert order.client_id is None or 0 <= order.client_id < 2**32


@FUZZ
@given(query=params)
def test_any_query_is_a_page_an_order_and_instants_within_bounds_or_refused(query: dict[str, Any]) -> None:
    try:
        limit, offset, _ = page(query)
        order_id, client_id = order_target(query)
        since, until = instant(query, "from"), instant(query, "to")
    except InvalidInput as error:
        check_refusal(error)
        return
    assert 1 <= limit <= 1000 and 0 <= offset <= MAX_ID
    assert order_id is None or 0 <= order_id <= MAX_ID
    assert client_id is None or 0 <= client_id < 2**32
    for moment in (since, until):
        assert moment is None or moment <= datetime.fromtimestamp(MAX_MILLIS // 1000, UTC).replace(microsecond=999_000)


@FUZZ
@given(header=st.one_of(st.text(max_size=80), st.binary(max_size=12).map(lambda b: b.decode("latin-1")),
                        st.from_regex(r"\s*[0-9０-９٠-٩²³¹]{1,8}\s*", fullmatch=True)))
def test_any_broker_header_is_decided_never_raised(header: str) -> None:
    decision = BrokerDirectory().decide(header_broker_id(header), None, datetime(2026, 11, 10, tzinfo=UTC))

    sent = decision.sent.text if decision.sent is not None else None
    if decision.broker_id is not None:  # an id in the range, in ASCII digits: not enrolled in an empty directory
        assert 1 <= decision.broker_id <= 65535 and sent is not None and sent.isascii()
    assert sent is None or len(sent) <= 64
    assert decision.problem is None or len(decision.problem) <= 100 + len(repr(sent))


@FUZZ
@given(body=st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5000),
                      st.decimals(allow_nan=False, allow_infinity=False)),
       header=st.one_of(st.none(), st.text(max_size=80)))
def test_any_body_broker_id_is_decided_never_raised(body: Any, header: str | None) -> None:
    decision = BrokerDirectory().decide(header_broker_id(header), body_broker_id(body),
                                        datetime(2026, 11, 10, tzinfo=UTC))

    shown = [s for s in (decision.sent, *(decision.ambiguous or ())) if s is not None]
    assert all(len(s.text) <= 64 for s in shown)
    assert decision.problem is None or len(decision.problem) <= 240
    if decision.broker_id is not None:  # only a JSON integer in the range, or a header agreeing with none
        assert 1 <= decision.broker_id <= 65535 and (body is None or body == decision.broker_id)
