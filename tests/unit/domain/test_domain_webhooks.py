"""Webhook signatures, bodies, URLs and the retry schedule, as a receiver and the deliverer see them."""

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bkr.domain.errors import Unauthenticated
from bkr.domain.webhooks import (
    GIVE_UP_AFTER,
    LONGEST_RETRY,
    EventType,
    event_body,
    gives_up,
    retry_delay,
    signature_header,
    verify_signature,
    webhook_url,
)

SECRET = "whsec_test"
BODY = '{"id":"evt_1"}'


def test_the_header_is_stripes_scheme_over_the_time_and_the_body() -> None:
    expected = hmac.new(SECRET.encode(), f"1700000000.{BODY}".encode(), hashlib.sha256).hexdigest()
    assert signature_header(SECRET, 1700000000, BODY) == f"t=1700000000,v1={expected}"


@pytest.mark.parametrize(("header", "now", "code"), [
    (None, 100, "signature_missing"),
    ("v1=abc", 100, "signature_malformed"),
    ("t=100", 100, "signature_malformed"),
    (signature_header(SECRET, 100, BODY), 401, "signature_expired"),
    (signature_header(SECRET, 401, BODY), 100, "signature_expired"),
    (signature_header("whsec_other", 100, BODY), 100, "signature_mismatch"),
])
def test_a_receiver_refuses_what_is_missing_old_or_signed_otherwise(header: str | None, now: int, code: str) -> None:
    with pytest.raises(Unauthenticated) as refused:
        verify_signature(SECRET, header, BODY, now)
    assert refused.value.code == code


def test_a_signature_at_the_edge_of_the_replay_window_passes_and_one_of_several_v1_may_match() -> None:
    header = signature_header(SECRET, 100, BODY)
    assert verify_signature(SECRET, header, BODY, 400) == 100
    assert verify_signature(SECRET, f"t=100,v1=00,{header.split(',')[1]}", BODY, 100) == 100


def test_a_body_is_compact_sorted_json_with_the_events_fields() -> None:
    body = event_body("evt_1", EventType.TIER_REACHED, datetime(2026, 11, 3, tzinfo=UTC), 1400,
                      {"tier": "BKR 1", "month": "2026-11"})
    assert body == ('{"broker_id":1400,"created":1793664000,"data":{"month":"2026-11","tier":"BKR 1"},'
                    '"id":"evt_1","type":"tier_reached"}')
    assert json.loads(body)["type"] == "tier_reached"


def test_retries_double_from_a_minute_up_to_six_hours_and_jitter_shortens_them_by_at_most_half() -> None:
    assert [retry_delay(n, lambda: 0.0) for n in (1, 2, 3)] == [timedelta(seconds=30), timedelta(minutes=1),
                                                                 timedelta(minutes=2)]
    assert retry_delay(1, lambda: 0.999999) < timedelta(minutes=1)
    assert retry_delay(40, lambda: 0.999999) <= LONGEST_RETRY


@given(st.integers(min_value=1, max_value=10_000), st.floats(min_value=0, max_value=1))
def test_every_retry_delay_is_positive_and_bounded(attempt: int, jitter: float) -> None:
    delay = retry_delay(attempt, lambda: jitter)
    assert timedelta(seconds=30) <= delay <= LONGEST_RETRY


def test_an_event_is_given_up_three_days_after_it_was_recorded() -> None:
    created = datetime(2026, 11, 1, tzinfo=UTC)
    assert not gives_up(created, created + GIVE_UP_AFTER)
    assert gives_up(created, created + GIVE_UP_AFTER + timedelta(seconds=1))


def test_a_valid_url_is_kept_trimmed() -> None:
    assert webhook_url("  https://broker.example:8443/hooks?x=1 ") == "https://broker.example:8443/hooks?x=1"
    assert webhook_url("http://127.0.0.1:9000/h") == "http://127.0.0.1:9000/h"
