"""Signed requests to the broker API: every refusal with its status and code, and a good request passing."""

from datetime import timedelta

import httpx
import pytest
from api_support import Api, signed_headers

from bkr.domain.registry import BrokerStatus
from bkr.domain.signing import new_key_pair
from bkr.program import registry

BROKER = 1400
SUMMARY = f"/v1/broker/{BROKER}/summary"


def refusal(response: httpx.Response) -> tuple[int, str, str | None]:
    body = response.json()
    return response.status_code, body["code"], body["field"]


def test_a_request_signed_as_backpack_signs_passes(api: Api) -> None:
    pair = api.broker(BROKER)

    response = api.signed_get(pair, SUMMARY, "brokerSummaryQuery")

    assert response.status_code == 200
    assert response.json()["broker_id"] == BROKER


def test_a_signature_by_another_secret_is_refused(api: Api) -> None:
    pair = api.broker(BROKER)
    headers = signed_headers(new_key_pair(), "brokerSummaryQuery", {}, timestamp=api.clock.ms())
    headers["X-API-Key"] = pair.api_key

    assert refusal(api.client.get(SUMMARY, headers=headers)) == (401, "signature_invalid", "X-Signature")


def test_query_parameters_are_signed(api: Api) -> None:
    pair = api.broker(BROKER)
    headers = signed_headers(pair, "brokerDailyVolumeQuery", {"month": "2026-09"}, timestamp=api.clock.ms())

    response = api.client.get(f"/v1/broker/{BROKER}/volume/daily", params={"month": "2026-10"}, headers=headers)

    assert refusal(response) == (401, "signature_invalid", "X-Signature")


def test_a_request_whose_window_has_passed_is_refused(api: Api) -> None:
    pair = api.broker(BROKER)

    response = api.signed_get(pair, SUMMARY, "brokerSummaryQuery", timestamp=api.clock.ms() - 5_000, window=5_000)

    assert refusal(response) == (401, "request_expired", "X-Timestamp")


def test_a_window_over_sixty_seconds_is_refused(api: Api) -> None:
    pair = api.broker(BROKER)

    response = api.signed_get(pair, SUMMARY, "brokerSummaryQuery", window=60_001)

    assert refusal(response) == (401, "window_too_large", "X-Window")


def test_a_window_of_sixty_seconds_is_accepted(api: Api) -> None:
    pair = api.broker(BROKER)

    assert api.signed_get(pair, SUMMARY, "brokerSummaryQuery", window=60_000).status_code == 200


def test_a_request_signed_for_another_instruction_is_refused_naming_it(api: Api) -> None:
    pair = api.broker(BROKER)
    headers = signed_headers(pair, "brokerStatementQueryAll", {}, timestamp=api.clock.ms())

    response = api.client.get(SUMMARY, headers=headers)

    assert refusal(response) == (401, "wrong_instruction", "X-Signature")
    assert "brokerSummaryQuery" in response.json()["message"]


def test_a_request_replayed_after_its_window_is_refused(api: Api) -> None:
    pair = api.broker(BROKER)
    headers = signed_headers(pair, "brokerSummaryQuery", {}, timestamp=api.clock.ms(), window=5_000)
    assert api.client.get(SUMMARY, headers=headers).status_code == 200

    api.clock.advance(timedelta(seconds=5))
    replayed = api.client.get(SUMMARY, headers=headers)

    assert refusal(replayed) == (401, "request_expired", "X-Timestamp")


def test_an_unknown_key_is_refused(api: Api) -> None:
    api.broker(BROKER)

    response = api.signed_get(new_key_pair(), SUMMARY, "brokerSummaryQuery")

    assert refusal(response) == (401, "unknown_key", "X-API-Key")


@pytest.mark.parametrize("status", [BrokerStatus.SUSPENDED, BrokerStatus.TERMINATED])
def test_the_key_of_a_broker_no_longer_active_still_reads_its_own_figures(api: Api, status: BrokerStatus) -> None:
    """Reads only: a write is refused with 403 broker_suspended / broker_terminated
    (test_broker_fills_api)."""
    pair = api.broker(BROKER)
    with api.engine.begin() as connection:
        registry.change_broker_status(connection, BROKER, status, api.clock() - timedelta(hours=1), api.clock(),
                                      actor="ops")

    response = api.signed_get(pair, SUMMARY, "brokerSummaryQuery")

    assert (response.status_code, response.json()["status"]) == (200, status.value)


def test_the_key_of_a_reactivated_broker_works_again(api: Api) -> None:
    pair = api.broker(BROKER)
    with api.engine.begin() as connection:
        registry.change_broker_status(connection, BROKER, BrokerStatus.SUSPENDED, api.clock() - timedelta(hours=2),
                                      api.clock(), actor="ops")
        registry.change_broker_status(connection, BROKER, BrokerStatus.ACTIVE, api.clock() - timedelta(hours=1),
                                      api.clock(), actor="ops")

    assert api.signed_get(pair, SUMMARY, "brokerSummaryQuery").status_code == 200


@pytest.mark.parametrize(("missing", "code"), [
    ("X-API-Key", "credentials_missing"),
    ("X-Signature", "signature_missing"),
    ("X-Timestamp", "timestamp_missing"),
])
def test_a_missing_header_is_refused_naming_it(api: Api, missing: str, code: str) -> None:
    pair = api.broker(BROKER)
    headers = signed_headers(pair, "brokerSummaryQuery", {}, timestamp=api.clock.ms())
    del headers[missing]

    assert refusal(api.client.get(SUMMARY, headers=headers)) == (401, code, missing)


def test_a_request_without_any_credentials_is_refused(api: Api) -> None:
    api.broker(BROKER)

    assert refusal(api.client.get(SUMMARY)) == (401, "credentials_missing", "X-API-Key")


def test_without_x_window_the_default_window_of_five_seconds_applies(api: Api) -> None:
    pair = api.broker(BROKER)
    headers = signed_headers(pair, "brokerSummaryQuery", {}, timestamp=api.clock.ms(), window=5_000)
    del headers["X-Window"]

    assert api.client.get(SUMMARY, headers=headers).status_code == 200
    api.clock.advance(timedelta(seconds=5))
    assert refusal(api.client.get(SUMMARY, headers=headers))[:2] == (401, "request_expired")
