"""Backpack's requests as the venue reads them: bodies parsed only as deep as Backpack's go, amounts
that are plain decimals within the bounds, whole numbers in ASCII digits within theirs, and error
messages that never quote more than a few dozen characters of what was sent."""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from bkr.domain.errors import InvalidInput
from bkr.venue.wire import (
    MAX_CLIENT_ID,
    MAX_ID,
    MAX_MILLIS,
    SHOWN,
    batch_of,
    instant,
    order_target,
    page,
    params_of,
    parse_order,
    read_body,
    shown,
    whole_number,
)

LIMIT = {"symbol": "SOL_USDC", "side": "Bid", "orderType": "Limit", "price": "150.25", "quantity": "2"}
LONGEST_MESSAGE = 240  # a field's name, a value cut to SHOWN characters, and the explanation


def refusal(call: Any, *args: Any) -> str:
    with pytest.raises(InvalidInput) as refused:
        call(*args)
    message = str(refused.value)
    assert len(message) <= LONGEST_MESSAGE, message
    return message


# --- amounts ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    "1_0",  # Decimal("1_0") is 10
    " 1", "1 ", "\t1", "+1", "-1", "-0.5", "1e3", "1E3", "1e-3", "NaN", "nan", "sNaN", "Infinity", "-Infinity",
    "inf", "0x10", "١٢", "１", "²", "1.", ".5", "1,5", "1.2.3", "", "  ", "--1",
    True, False, 1.5, [1], {"a": 1}, -3, Decimal("-1"), Decimal("NaN"), Decimal("Infinity"), Decimal("1E+3"),
])
def test_an_amount_that_is_not_a_plain_decimal_is_refused_naming_its_field(value: Any) -> None:
    message = refusal(parse_order, LIMIT | {"price": value})

    assert message.startswith("price: ")


@pytest.mark.parametrize("value", ["0", "0.000", 0, Decimal("0.0")])
def test_a_zero_amount_is_refused(value: Any) -> None:
    assert refusal(parse_order, LIMIT | {"quantity": value}).startswith("quantity: ")


@pytest.mark.parametrize(("value", "why"), [
    ("1" + "0" * 15, "16 integer digits"),  # AMOUNT: at most 15 integer digits
    ("0." + "0" * 18 + "1", "19 decimal places"),  # and 18 decimal places
    ("9" * 5000, "5000 integer digits"),
    pytest.param(10**5000, "5001 integer digits", id="10**5000"),
])
def test_an_amount_outside_the_bounds_is_refused_without_quoting_all_of_it(value: Any, why: str) -> None:
    message = refusal(parse_order, LIMIT | {"price": value})

    assert message.startswith("price: ") and why in message


@pytest.mark.parametrize(("value", "amount"), [
    ("150.25", Decimal("150.25")), ("150.250", Decimal("150.25")), ("2", Decimal(2)), (2, Decimal(2)),
    (Decimal("0.5"), Decimal("0.5")),  # a JSON number, read exactly
    ("999999999999999.999999999999999999", Decimal("999999999999999.999999999999999999")),  # the bounds' edge
])
def test_a_plain_decimal_within_the_bounds_is_the_amount(value: Any, amount: Decimal) -> None:
    assert parse_order(LIMIT | {"price": value}).price == amount


def test_a_long_symbol_or_field_name_is_refused_without_being_echoed() -> None:
    long = "X" * 60_000

    for body, field in [(LIMIT | {"symbol": long}, "Invalid market"), (LIMIT | {long: "1"}, "'XXX"),
                        (LIMIT | {"side": long}, "side: "), (LIMIT | {"clientId": 10**4000}, "clientId: ")]:
        assert refusal(parse_order, body).startswith(field)


# --- whole numbers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    str(2**63), 2**63, 2**64, "99999999999999999999999999999999999999999999", "9" * 5000, "-1", -1, "+1", " 1",
    "1 ", "1_0", "١", "１", "²", "1.0", "1e3", "0x1", "", True, Decimal("1"), 1.0, "abc",
])
def test_an_order_id_that_is_not_a_non_negative_63_bit_number_is_refused(value: Any) -> None:
    if value == "":  # the empty string is the parameter left out: then clientId is needed
        assert refusal(order_target, {"orderId": value}).startswith("exactly one of orderId and clientId")
        return
    assert refusal(order_target, {"orderId": value}).startswith("orderId: ")


def test_the_largest_ids_are_accepted_and_one_more_is_not() -> None:
    assert order_target({"orderId": str(MAX_ID)}) == (MAX_ID, None)
    assert order_target({"clientId": MAX_CLIENT_ID}) == (None, MAX_CLIENT_ID)
    assert refusal(order_target, {"clientId": MAX_CLIENT_ID + 1}).startswith("clientId: ")


@pytest.mark.parametrize(("params", "field"), [
    ({"limit": "0"}, "limit"), ({"limit": "1001"}, "limit"), ({"limit": "-5"}, "limit"), ({"limit": "1e2"}, "limit"),
    ({"offset": "-1"}, "offset"), ({"offset": str(2**63)}, "offset"), ({"offset": "１"}, "offset"),
    ({"sortDirection": "asc" * 10_000}, "sortDirection"),
])
def test_a_page_outside_its_bounds_is_refused(params: dict[str, str], field: str) -> None:
    assert refusal(page, params).startswith(f"{field}: ")


def test_a_page_within_its_bounds_is_read() -> None:
    assert page({}) == (100, 0, False)
    assert page({"limit": "1000", "offset": str(MAX_ID), "sortDirection": "Asc"}) == (1000, MAX_ID, True)


@pytest.mark.parametrize("value", [str(MAX_MILLIS + 1), "9" * 30, "-1", "1.5", "１"])
def test_an_instant_outside_the_years_0_to_9999_or_not_in_digits_is_refused(value: str) -> None:
    assert refusal(instant, {"from": value}, "from").startswith("from: ")


def test_an_instant_is_exact_to_the_millisecond() -> None:
    assert instant({"to": "1764547200123"}, "to") == datetime(2025, 12, 1, 0, 0, 0, 123_000, tzinfo=UTC)
    assert instant({"to": str(MAX_MILLIS)}, "to") == datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC)
    assert instant({"to": ""}, "to") is None


def test_whole_number_takes_json_integers_and_ascii_digits_only() -> None:
    assert whole_number({"n": 7}, "n", 0, 10) == 7
    assert whole_number({"n": "007"}, "n", 0, 10) == 7
    assert whole_number({}, "n", 0, 10, 3) == 3


# --- bodies ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    b"[" * 100_000 + b"]" * 100_000,  # json.loads would raise RecursionError
    b"{" * 50_000,
    b'{"a": [[1]]}',  # three levels: no Backpack body nests that deep
    b"[[{}]]",
])
def test_a_body_nested_deeper_than_backpack_s_is_refused_before_it_is_parsed(raw: bytes) -> None:
    assert refusal(read_body, raw).startswith("body: JSON nested more than 2 levels deep")


def test_brackets_inside_strings_are_not_nesting() -> None:
    body = read_body(b'[{"symbol": "[[[{{{", "side": "\\"[[[\\\\", "note": "\\\\"}]')

    assert body == [{"symbol": "[[[{{{", "side": '"[[[\\', "note": "\\"}]


@pytest.mark.parametrize(("raw", "reason"), [
    (b'{"price": NaN}', "NaN is not a number JSON allows"),
    (b'{"price": Infinity}', "Infinity is not a number JSON allows"),
    (b'{"price": 1e5}', "exponent form"),
    (b'{"price": 1.5E-3}', "exponent form"),
    (b'{"symbol": "A", "symbol": "B"}', "'symbol': given twice"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b'{"clientId": ' + b"1" * 5000 + b"}", "too many digits"),
    (b"{'symbol': 1}", "not valid JSON"),
    (b'{"symbol": "' + b"A" * 60_000, "not valid JSON"),  # unterminated: the message does not quote it
])
def test_a_body_that_is_not_backpack_s_json_is_refused_with_the_reason(raw: bytes, reason: str) -> None:
    message = refusal(read_body, raw)

    assert message.startswith(("body: ", "'symbol'")) and reason in message


def test_a_body_is_read_with_exact_numbers() -> None:
    assert read_body(b'{"price": 150.250, "clientId": 7}') == {"price": Decimal("150.250"), "clientId": 7}
    assert read_body(b"  ") == {}
    assert read_body(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}  # a UTF-8 byte-order mark is not the body


@pytest.mark.parametrize(("body", "reason"), [
    ([], "body: expected a JSON object, not an array"),
    ("text", "body: expected a JSON object, not a string"),
    (5, "body: expected a JSON object, not a number"),
    (None, "body: expected a JSON object, not null"),
    ({"symbol": ["SOL_USDC"]}, "'symbol': expected a string, number or boolean, not an array"),
    ({"symbol": {"a": 1}}, "'symbol': expected a string, number or boolean, not an object"),
])
def test_signed_parameters_are_an_object_of_scalars(body: Any, reason: str) -> None:
    assert refusal(params_of, body) == reason


@pytest.mark.parametrize(("body", "reason"), [
    ({"symbol": "SOL_USDC"}, "body: a batch is a JSON array of orders, not an object"),
    ([{"a": 1}, 5], "body[1]: expected a JSON object, not a number"),
    ([{"a": [1]}], "'a': expected a string, number or boolean, not an array"),
])
def test_a_batch_is_an_array_of_objects_of_scalars(body: Any, reason: str) -> None:
    assert refusal(batch_of, body) == reason


def test_shown_cuts_any_value_to_a_few_dozen_characters() -> None:
    assert shown("abc") == "'abc'"
    assert len(shown("x" * 1_000_000)) <= SHOWN + 30
    assert len(shown(10**4000)) <= SHOWN + 30  # its digits could not even be printed (int's 4,300-digit limit)
    assert shown(Decimal("1.50")) == "1.50"
