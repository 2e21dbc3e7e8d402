"""Effective-dated history: a broker's status walk and a referral code's rate over time."""

import re
from datetime import UTC, datetime, timedelta

import pytest

from bkr.domain.errors import Conflict, InvalidInput
from bkr.domain.money import D
from bkr.domain.registry import (
    TEXT_PATTERN,
    BrokerStatus,
    RateChange,
    RateTimeline,
    StatusChange,
    StatusTimeline,
    check_rate,
    registry_text,
)

PENDING, ACTIVE, SUSPENDED, TERMINATED = (BrokerStatus.PENDING, BrokerStatus.ACTIVE, BrokerStatus.SUSPENDED,
                                          BrokerStatus.TERMINATED)
MICROSECOND = timedelta(microseconds=1)


def day(n: int) -> datetime:
    return datetime(2024, 1, n, tzinfo=UTC)


def timeline(*steps: tuple[BrokerStatus, int]) -> StatusTimeline:
    result = StatusTimeline(())
    for status, n in steps:
        result = result.with_change(StatusChange(status, day(n)))
    return result


def statuses(history: StatusTimeline) -> list[tuple[BrokerStatus, datetime]]:
    return [(change.status, change.effective_at) for change in history.changes]


# --- transitions ---------------------------------------------------------------------------------

@pytest.mark.parametrize("walk", [
    [ACTIVE],
    [TERMINATED],
    [ACTIVE, SUSPENDED],
    [ACTIVE, TERMINATED],
    [ACTIVE, SUSPENDED, ACTIVE],
    [ACTIVE, SUSPENDED, TERMINATED],
    [ACTIVE, SUSPENDED, ACTIVE, SUSPENDED, ACTIVE, TERMINATED],
])
def test_allowed_status_walks_are_recorded_in_order(walk: list[BrokerStatus]) -> None:
    history = timeline(*[(status, n + 1) for n, status in enumerate(walk)])
    assert statuses(history) == [(status, day(n + 1)) for n, status in enumerate(walk)]


@pytest.mark.parametrize(("walk", "forbidden"), [
    ([], SUSPENDED),
    ([], PENDING),
    ([ACTIVE], ACTIVE),
    ([ACTIVE], PENDING),
    ([ACTIVE, SUSPENDED], SUSPENDED),
    ([ACTIVE, SUSPENDED], PENDING),
    ([ACTIVE, TERMINATED], ACTIVE),
    ([ACTIVE, TERMINATED], SUSPENDED),
    ([ACTIVE, TERMINATED], TERMINATED),
    ([TERMINATED], ACTIVE),
])
def test_forbidden_transitions_raise_conflict(walk: list[BrokerStatus], forbidden: BrokerStatus) -> None:
    history = timeline(*[(status, n + 1) for n, status in enumerate(walk)])
    with pytest.raises(Conflict, match=f"cannot go from .* to {forbidden}"):
        history.with_change(StatusChange(forbidden, day(len(walk) + 1)))


def test_terminated_broker_cannot_become_active_again() -> None:
    history = timeline((ACTIVE, 1), (TERMINATED, 5))
    with pytest.raises(Conflict, match="cannot go from terminated to active"):
        history.with_change(StatusChange(ACTIVE, day(9)))


def test_a_refused_change_leaves_the_timeline_unchanged() -> None:
    history = timeline((ACTIVE, 1), (TERMINATED, 5))
    with pytest.raises(Conflict):
        history.with_change(StatusChange(ACTIVE, day(9)))
    assert statuses(history) == [(ACTIVE, day(1)), (TERMINATED, day(5))]


def test_a_change_can_be_inserted_into_the_past() -> None:
    history = timeline((ACTIVE, 1), (TERMINATED, 20))
    loaded = history.with_change(StatusChange(SUSPENDED, day(10)))
    assert statuses(loaded) == [(ACTIVE, day(1)), (SUSPENDED, day(10)), (TERMINATED, day(20))]
    assert loaded.status_at(day(15)) is SUSPENDED
    assert history.status_at(day(15)) is ACTIVE  # the original is immutable


def test_a_change_into_the_past_that_breaks_the_walk_raises_conflict() -> None:
    history = timeline((ACTIVE, 1), (SUSPENDED, 20))
    with pytest.raises(Conflict, match="cannot go from terminated to suspended"):
        history.with_change(StatusChange(TERMINATED, day(10)))


def test_a_change_before_the_first_that_breaks_the_walk_raises_conflict() -> None:
    history = timeline((ACTIVE, 10))
    with pytest.raises(Conflict, match="cannot go from pending to suspended"):
        history.with_change(StatusChange(SUSPENDED, day(5)))


def test_two_changes_at_the_same_instant_raise_conflict() -> None:
    history = timeline((ACTIVE, 1), (SUSPENDED, 10))
    with pytest.raises(Conflict, match="already recorded"):
        history.with_change(StatusChange(TERMINATED, day(10)))


# --- status at a moment --------------------------------------------------------------------------

def test_a_broker_without_changes_is_pending_and_not_active() -> None:
    assert StatusTimeline(()).status_at(day(1)) is PENDING
    assert not StatusTimeline(()).is_active_at(day(1))


def test_status_changes_take_effect_exactly_at_their_instant() -> None:
    history = timeline((ACTIVE, 10), (SUSPENDED, 20), (ACTIVE, 25), (TERMINATED, 30))
    expectations = [
        (day(10) - MICROSECOND, PENDING, False),
        (day(10), ACTIVE, True),
        (day(20) - MICROSECOND, ACTIVE, True),
        (day(20), SUSPENDED, False),
        (day(25) - MICROSECOND, SUSPENDED, False),
        (day(25), ACTIVE, True),
        (day(30) - MICROSECOND, ACTIVE, True),
        (day(30), TERMINATED, False),
        (day(31), TERMINATED, False),
    ]
    for moment, status, active in expectations:
        assert history.status_at(moment) is status, moment
        assert history.is_active_at(moment) is active, moment


# --- rates ---------------------------------------------------------------------------------------

def test_rate_is_zero_before_the_first_rate_takes_effect() -> None:
    rates = RateTimeline((RateChange(D("0.10"), day(10)),))
    assert rates.rate_at(day(10) - MICROSECOND) == 0
    assert RateTimeline(()).rate_at(day(10)) == 0


def test_rate_in_force_is_the_latest_that_took_effect_at_or_before_the_moment() -> None:
    rates = RateTimeline((RateChange(D("0.10"), day(10)), RateChange(D("0.25"), day(20)),
                          RateChange(D("0"), day(30))))
    assert rates.rate_at(day(10)) == D("0.10")
    assert rates.rate_at(day(20) - MICROSECOND) == D("0.10")
    assert rates.rate_at(day(20)) == D("0.25")
    assert rates.rate_at(day(29)) == D("0.25")
    assert rates.rate_at(day(30)) == 0
    assert rates.rate_at(day(31)) == 0


@pytest.mark.parametrize("rate", ["0", "0.1", "0.5", "1"])
def test_check_rate_accepts_fractions(rate: str) -> None:
    assert check_rate(D(rate)) == D(rate)


@pytest.mark.parametrize("rate", ["-0.01", "1.01", "10"])
def test_check_rate_refuses_values_outside_zero_to_one(rate: str) -> None:
    with pytest.raises(InvalidInput, match=r"^rate:"):
        check_rate(D(rate))


@pytest.mark.parametrize(("text", "kept"), [("ccxt", "ccxt"), ("  Hummingbot ", "Hummingbot"), ("café ☕", "café ☕"),
                                            ("x" * 256, "x" * 256), ("[/]", "[/]")])
def test_registry_text_keeps_printable_text_without_its_outer_spaces(text: str, kept: str) -> None:
    assert registry_text(text, "name") == kept


@pytest.mark.parametrize(("text", "reason"), [
    ("", "name: empty"), ("   ", "name: empty"), ("x" * 257, "name: 257 characters; at most 256 are accepted"),
    ("cc\x00xt", "name: a control character (U+0000) at character 3"),
    ("a\tb", "name: a control character (U+0009) at character 2"),
    (" a\n", "name: a control character (U+000A) at character 3"),  # refused, not stripped away
    ("a\x7f", "name: a control character (U+007F) at character 2"),
    ("a\x9b", "name: a control character (U+009B) at character 2"),
    ("a\u2029", "name: a control character (U+2029) at character 2"),
    ("\u2066evil", "name: a control character (U+2066) at character 1"),
    ("al\udcffce", "name: a byte that is not UTF-8 (U+DCFF) at character 3"),
])
def test_registry_text_refuses_what_is_not_printable_naming_the_field(text: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        registry_text(text, "name")
    assert str(raised.value).startswith(reason) and raised.value.field == "name"


def test_the_rule_as_a_pattern_agrees_with_the_rule() -> None:
    """The API publishes the rule as a pattern (its OpenAPI document): the same characters."""
    pattern = re.compile(TEXT_PATTERN)
    for code in [*range(0x00, 0x2100), *range(0x2100, 0x110000, 97)]:
        character = chr(code)
        if 0xD800 <= code <= 0xDFFF or (character.isspace() and not pattern.match(character)):
            continue  # surrogates cannot be sent in JSON text; a lone space is "empty" to both
        try:
            registry_text(f"a{character}b", "name")
            allowed = True
        except InvalidInput:
            allowed = False
        assert allowed == bool(pattern.match(f"a{character}b")), hex(code)
