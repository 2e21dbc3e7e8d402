"""The broker directory's reading of `X-Broker-Id`: ASCII digits within the registry's range name a
broker; anything else is a malformed header (not an active broker, with the reason), never an
error and never another spelling of an id."""

from datetime import UTC, datetime

import pytest

from bkr.domain.registry import BrokerStatus, StatusChange, StatusTimeline
from bkr.venue.directory import NO_BROKER, BrokerDirectory

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
    decision = directory.decide(header, NOW)

    assert (decision.broker_id, decision.active) == (None, None)
    assert decision.problem is not None and "is not a broker id (a whole number 1..65535" in decision.problem
    assert decision.header is not None and len(decision.header) <= 64
    assert len(decision.problem) < 200


@pytest.mark.parametrize(("header", "broker_id"), [("1400", 1400), (" 1400\t", 1400), ("01400", 1400), ("2", 2)])
def test_ascii_digits_name_the_broker(directory: BrokerDirectory, header: str, broker_id: int) -> None:
    decision = directory.decide(header, NOW)

    assert (decision.broker_id, decision.active, decision.problem) == (broker_id, True, None)


def test_an_absent_or_blank_header_is_no_broker(directory: BrokerDirectory) -> None:
    assert directory.decide(None, NOW) == NO_BROKER
    assert directory.decide(" \t", NOW) == NO_BROKER


def test_an_id_in_range_that_nobody_holds_is_not_enrolled(directory: BrokerDirectory) -> None:
    decision = directory.decide("65535", NOW)

    assert (decision.broker_id, decision.active, decision.problem) == (
        65535, None, "X-Broker-Id 65535 is not an enrolled broker")
