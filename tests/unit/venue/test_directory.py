"""The broker directory's reading of `X-Broker-Id` and of an order's `brokerId`: ASCII digits
within the registry's range name a broker in the header, a JSON integer in it in the body; anything
else is malformed (not an active broker, with the reason), never an error and never another
spelling of an id. The body's id wins; both given, they must name the same broker, or the order is
ambiguous and belongs to nobody."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from bkr.domain.registry import BrokerStatus, StatusChange, StatusTimeline
from bkr.venue.directory import NO_BROKER, BrokerDirectory, body_broker_id, header_broker_id

NOW = datetime(2026, 11, 10, tzinfo=UTC)


@pytest.fixture
def directory() -> BrokerDirectory:
    directory = BrokerDirectory()
    active = StatusTimeline((StatusChange(BrokerStatus.ACTIVE, datetime(2026, 1, 1, tzinfo=UTC)),))
    directory._timelines = {1400: active, 2: active}
    return directory


@pytest.mark.parametrize("header", [
    "²",  # str.isdigit() is true, int() raises: this was a 500
    "¹⁴⁰⁰", "１４００",  # full-width digits: int() reads them as 1400
    "٢", "१४००",  # Arabic-Indic, Devanagari
    "\xa01400",  # a no-break space is not HTTP whitespace
    "+1400", "-1400", "1_400", "1400.0", "0x578", "1e3", "14 00",
    "0", "65536", "9" * 64, "9" * 5000,
])
def test_a_header_that_is_not_ascii_digits_within_the_range_is_malformed(directory: BrokerDirectory,
                                                                        header: str) -> None:
    decision = directory.decide(header_broker_id(header), None, NOW)

    assert (decision.broker_id, decision.active) == (None, None)
    assert decision.problem is not None and "is not a broker id (a whole number 1..65535" in decision.problem
    assert decision.sent is not None and len(decision.sent.text) <= 64
    assert len(decision.problem) < 200


@pytest.mark.parametrize(("header", "broker_id"), [("1400", 1400), (" 1400\t", 1400), ("01400", 1400), ("2", 2)])
def test_ascii_digits_name_the_broker(directory: BrokerDirectory, header: str, broker_id: int) -> None:
    decision = directory.decide(header_broker_id(header), None, NOW)

    assert (decision.broker_id, decision.active, decision.problem) == (broker_id, True, None)


def test_an_absent_or_blank_header_is_no_broker(directory: BrokerDirectory) -> None:
    assert directory.decide(header_broker_id(None), None, NOW) == NO_BROKER
    assert directory.decide(header_broker_id(" \t"), None, NOW) == NO_BROKER


def test_an_id_in_range_that_nobody_holds_is_not_enrolled(directory: BrokerDirectory) -> None:
    decision = directory.decide(header_broker_id("65535"), None, NOW)

    assert (decision.broker_id, decision.active, decision.problem) == (
        65535, None, "X-Broker-Id 65535 is not an enrolled broker")


# --- the body's brokerId ------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "shown"), [
    ("1400", '"1400"'),  # a string, even of digits: Backpack documents a JSON integer
    (0, "0"), (65536, "65536"), (-1400, "-1400"), (True, "true"), (Decimal("1400.0"), "1400.0"),
    (2**80, str(2**80)), (2**5000, "a 5001-bit number"), ("x" * 5000, '"' + "x" * 62 + '"'),
])
def test_a_body_broker_id_that_is_not_an_integer_within_the_range_is_malformed(directory: BrokerDirectory,
                                                                              value: object, shown: str) -> None:
    decision = directory.decide(None, body_broker_id(value), NOW)

    assert (decision.broker_id, decision.active, decision.ambiguous) == (None, None, None)
    assert decision.sent is not None and decision.sent.text == shown and len(shown) <= 64
    assert decision.problem == f"brokerId {shown} is not a broker id (a whole number 1..65535, as a JSON integer)"


def test_an_absent_or_null_body_broker_id_leaves_the_header_to_decide(directory: BrokerDirectory) -> None:
    assert body_broker_id(None) is None
    assert directory.decide(header_broker_id("1400"), body_broker_id(None), NOW).broker_id == 1400


@pytest.mark.parametrize(("header", "body", "broker_id"), [
    (None, 1400, 1400), ("1400", 1400, 1400), (" 01400 ", 1400, 1400), (None, 65535, 65535)])
def test_the_body_names_the_broker_alone_or_with_a_header_that_agrees(directory: BrokerDirectory, header: str | None,
                                                                      body: int, broker_id: int) -> None:
    decision = directory.decide(header_broker_id(header), body_broker_id(body), NOW)

    assert decision.broker_id == broker_id and decision.ambiguous is None
    assert decision.sent is not None and decision.sent.source == "brokerId"


@pytest.mark.parametrize(("header", "body"), [("1400", 2), ("2", 1400), ("1400", 65535), ("abc", 1400),
                                              ("1400", "1400"), ("1400", 0)])
def test_a_header_and_a_body_that_disagree_make_the_order_ambiguous(directory: BrokerDirectory, header: str,
                                                                   body: object) -> None:
    decision = directory.decide(header_broker_id(header), body_broker_id(body), NOW)

    assert (decision.broker_id, decision.active, decision.sent) == (None, None, None)
    assert decision.ambiguous is not None
    assert [sent.source for sent in decision.ambiguous] == ["X-Broker-Id", "brokerId"]
    assert decision.problem is not None and "name different brokers" in decision.problem
    assert header in decision.problem and str(body) in decision.problem
