"""Backpack's signing string, and signatures made and checked over it."""

import pytest

from bkr.domain.errors import Unauthenticated
from bkr.domain.signing import (
    check_timing,
    new_key_pair,
    parse_timing,
    public_key,
    sign,
    signing_string,
    verifies,
    verify_request,
)

TIMESTAMP = 1_750_793_021_519


def test_the_signing_string_has_backpacks_documented_shape() -> None:
    # Backpack's order example: parameters sorted by name between the instruction and the timing
    params = {"symbol": "SOL_USDC_PERP", "side": "Bid", "orderType": "Limit", "quantity": "12", "price": "141",
              "timeInForce": "GTC", "postOnly": True, "reduceOnly": False}

    text = signing_string("orderExecute", params, TIMESTAMP, 5000)

    assert text == ("instruction=orderExecute&orderType=Limit&postOnly=true&price=141&quantity=12&reduceOnly=false"
                    "&side=Bid&symbol=SOL_USDC_PERP&timeInForce=GTC&timestamp=1750793021519&window=5000")


def test_a_request_without_parameters_signs_only_the_instruction_and_the_timing() -> None:
    assert signing_string("brokerSummaryQuery", {}, TIMESTAMP, 60_000) == (
        "instruction=brokerSummaryQuery&timestamp=1750793021519&window=60000")


def test_a_signature_verifies_with_the_public_key_of_its_secret() -> None:
    pair = new_key_pair()
    message = signing_string("brokerUsersQuery", {"month": "2026-10", "limit": 10}, TIMESTAMP, 5000)

    assert verifies(public_key(pair.api_key), sign(pair.secret, message), message)


@pytest.mark.parametrize("changed", ["month=2026-11", "limit=11", "timestamp=1750793021518", "window=5001"])
def test_a_signature_fails_when_one_character_of_the_message_changes(changed: str) -> None:
    pair = new_key_pair()
    message = signing_string("brokerUsersQuery", {"month": "2026-10", "limit": 10}, TIMESTAMP, 5000)
    signature = sign(pair.secret, message)
    name = changed.split("=")[0]
    tampered = "&".join(changed if part.startswith(name + "=") else part for part in message.split("&"))

    assert tampered != message
    assert not verifies(public_key(pair.api_key), signature, tampered)


def test_a_signature_fails_with_another_brokers_key() -> None:
    signer, other = new_key_pair(), new_key_pair()
    message = signing_string("brokerSummaryQuery", {}, TIMESTAMP, 5000)

    assert not verifies(public_key(other.api_key), sign(signer.secret, message), message)


def test_a_signature_for_another_instruction_is_named_as_such() -> None:
    pair = new_key_pair()
    signature = sign(pair.secret, signing_string("brokerSummaryQuery", {}, TIMESTAMP, 5000))

    with pytest.raises(Unauthenticated) as refused:
        verify_request(public_key(pair.api_key), signature, "brokerStatementQueryAll", {}, TIMESTAMP, 5000,
                       other_instructions=["brokerSummaryQuery", "brokerStatementQueryAll"])

    assert (refused.value.code, refused.value.field) == ("wrong_instruction", "X-Signature")


@pytest.mark.parametrize(("window", "now", "code"), [
    (60_001, TIMESTAMP, "window_too_large"),
    (0, TIMESTAMP, "window_too_large"),
    (5000, TIMESTAMP + 5000, "request_expired"),  # the window's end is excluded
    (5000, TIMESTAMP - 5001, "timestamp_in_future"),
])
def test_timing_outside_the_window_is_refused(window: int, now: int, code: str) -> None:
    with pytest.raises(Unauthenticated) as refused:
        check_timing(TIMESTAMP, window, now)

    assert refused.value.code == code


def test_timing_inside_the_window_is_accepted() -> None:
    check_timing(TIMESTAMP, 60_000, TIMESTAMP + 59_999)


@pytest.mark.parametrize(("timestamp", "window", "code"), [
    ("１７００００００００００", "5000", "timestamp_malformed"),  # full-width digits: int() reads them
    ("١٧٠٠٠٠٠٠٠٠٠٠٠", "5000", "timestamp_malformed"),
    (" 1700000000000", "5000", "timestamp_malformed"),
    ("+1700000000000", "5000", "timestamp_malformed"),
    ("1_700_000_000_000", "5000", "timestamp_malformed"),
    ("-1", "5000", "timestamp_malformed"),
    ("9" * 20, "5000", "timestamp_malformed"),
    ("9" * 100_000, "5000", "timestamp_malformed"),
    ("1700000000000", "5_000", "window_malformed"),
    ("1700000000000", "５０００", "window_malformed"),
    ("1700000000000", "-5000", "window_malformed"),
    ("1700000000000", "5" * 100_000, "window_malformed"),
])
def test_timing_headers_are_ascii_digits_and_are_not_echoed_whole(timestamp: str, window: str, code: str) -> None:
    with pytest.raises(Unauthenticated) as refused:
        parse_timing(timestamp, window)

    assert refused.value.code == code
    assert len(str(refused.value)) < 120


def test_timing_headers_in_ascii_digits_are_read() -> None:
    assert parse_timing("1700000000000", "60000") == (1_700_000_000_000, 60_000)
    assert parse_timing("1700000000000", None) == (1_700_000_000_000, 5_000)
