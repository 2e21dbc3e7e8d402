"""The webhook endpoints: a broker registers, reads, rotates and removes its endpoint with signed
requests, and reads its delivery log; operators read every broker's log and the outbox."""

from collections.abc import Iterable, Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
from api_support import Api, error, ok, signed_headers
from fastapi.routing import APIRoute
from sqlalchemy import select

from bkr.domain.periods import Month
from bkr.domain.registry import BrokerStatus
from bkr.domain.signing import KeyPair
from bkr.program import audit, registry, webhooks
from bkr.program.webhook_delivery import Answer, deliver_all_due
from bkr.store.tables import webhook_endpoints

BROKER = 1400
WEBHOOK = f"/v1/broker/{BROKER}/webhook"


def signed(api: Api, method: str, pair: KeyPair, path: str, instruction: str,
           params: dict[str, Any] | None = None) -> httpx.Response:
    params = params or {}
    headers = signed_headers(pair, instruction, params, timestamp=api.clock.ms())
    return api.client.request(method, path, params=params, headers=headers)


def test_a_broker_registers_its_endpoint_and_gets_its_secret_once(api: Api) -> None:
    pair = api.broker(BROKER)
    assert error(signed(api, "GET", pair, WEBHOOK, "brokerWebhookQuery"), 404) == ("no_webhook_endpoint", None)

    made = ok(signed(api, "PUT", pair, WEBHOOK, "brokerWebhookSet", {"url": "https://broker.example/hooks"}))
    assert made["url"] == "https://broker.example/hooks" and made["secret"].startswith("whsec_")
    shown = ok(signed(api, "GET", pair, WEBHOOK, "brokerWebhookQuery"))
    assert shown["secret"] is None and made["secret"].startswith(shown["secret_hint"].rstrip("…"))
    with api.engine.connect() as connection:
        assert connection.execute(select(webhook_endpoints.c.secret)).scalar() == made["secret"]
        entries = audit.entries(connection, audit.AuditQuery(action="webhook"))
    assert [(e.actor, e.action) for e in entries] == [(f"broker {BROKER}", "webhook.set")]

    moved = ok(signed(api, "PUT", pair, WEBHOOK, "brokerWebhookSet", {"url": "https://broker.example/v2"}))
    assert moved["secret"] is None and moved["secret_hint"] == shown["secret_hint"]
    rotated = ok(signed(api, "POST", pair, f"{WEBHOOK}/rotate", "brokerWebhookRotate"))
    assert rotated["secret"] not in (None, made["secret"])
    assert ok(signed(api, "DELETE", pair, WEBHOOK, "brokerWebhookRemove")) == {"broker_id": BROKER,
                                                                                "cancelled_events": 0}
    assert error(signed(api, "GET", pair, WEBHOOK, "brokerWebhookQuery"), 404)[0] == "no_webhook_endpoint"


def test_a_bad_url_a_wrong_instruction_and_another_broker_are_refused(api: Api) -> None:
    pair = api.broker(BROKER)
    api.broker(2200)
    assert error(signed(api, "PUT", pair, WEBHOOK, "brokerWebhookSet", {"url": "ftp://x.example"}), 422) == (
        "invalid_input", "url")
    assert error(signed(api, "PUT", pair, WEBHOOK, "brokerWebhookQuery", {"url": "https://x.example"}), 401)[0] == (
        "wrong_instruction")
    assert error(signed(api, "PUT", pair, "/v1/broker/2200/webhook", "brokerWebhookSet",
                        {"url": "https://x.example"}), 403) == ("not_your_broker", "broker_id")
    with api.engine.begin() as connection:
        registry.change_broker_status(connection, BROKER, BrokerStatus.SUSPENDED, api.clock(), api.clock(),
                                      actor="ops")
    assert error(signed(api, "PUT", pair, WEBHOOK, "brokerWebhookSet", {"url": "https://x.example"}), 403)[0] == (
        "broker_suspended")


def test_the_delivery_log_pages_for_the_broker_and_the_operator(api: Api) -> None:
    pair = api.broker(BROKER)
    other = api.broker(2200)
    ok(signed(api, "PUT", pair, WEBHOOK, "brokerWebhookSet", {"url": "https://broker.example/hooks"}))
    ok(signed(api, "PUT", other, "/v1/broker/2200/webhook", "brokerWebhookSet", {"url": "https://o.example/h"}))
    with api.engine.begin() as connection:
        for broker_id in (BROKER, 2200):
            webhooks.payout_sent(connection, broker_id, Month(2026, 9), Decimal("12.5"), f"payout/{broker_id}/2026-09",
                                 api.clock())
    answers = iter([Answer(None, "ConnectError: refused"), Answer(503), Answer(200), Answer(200)])
    sent: list[str] = []

    def sender(url: str, headers: dict[str, str], body: bytes) -> Answer:
        sent.append(url)
        return next(answers)

    assert deliver_all_due(api.engine, api.clock, sender).attempted == 2
    api.clock.advance(timedelta(hours=1))
    assert deliver_all_due(api.engine, api.clock, sender).attempted == 2

    mine = ok(signed(api, "GET", pair, f"{WEBHOOK}/deliveries", "brokerWebhookDeliveryQueryAll", {"limit": "1"}))
    assert [d["broker_id"] for d in mine["deliveries"]] == [BROKER] and mine["next_before"] is not None
    rest = ok(signed(api, "GET", pair, f"{WEBHOOK}/deliveries", "brokerWebhookDeliveryQueryAll",
                     {"limit": "1", "before": str(mine["next_before"])}))
    attempts = mine["deliveries"] + rest["deliveries"]
    assert [(d["attempt"], d["status_code"], d["event_status"]) for d in attempts] == [
        (2, 200, "delivered"), (1, None, "delivered")]
    assert attempts[1]["error"] == "ConnectError: refused"

    viewer = api.operator_key("viewer")
    everything = ok(api.client.get("/v1/admin/webhooks/deliveries", headers=viewer))
    assert len(everything["deliveries"]) == 4
    theirs = ok(api.client.get("/v1/admin/webhooks/deliveries", params={"broker_id": 2200}, headers=viewer))
    assert {d["broker_id"] for d in theirs["deliveries"]} == {2200}
    outbox = ok(api.client.get("/v1/admin/webhooks/events", params={"status": "delivered"}, headers=viewer))
    assert sorted(e["broker_id"] for e in outbox["events"]) == [BROKER, 2200]
    assert error(api.client.get("/v1/admin/webhooks/events"), 401)[0] == "credentials_missing"


def _endpoints(routes: Iterable[Any]) -> Iterator[APIRoute]:
    """Every endpoint of `app.routes`, also those of included routers that FastAPI keeps nested."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):
            yield from _endpoints(route.original_router.routes)


def webhook_routes(api: Api) -> list[tuple[str, str]]:
    """(method, path) of every broker webhook endpoint."""
    app: Any = api.client.app
    return [(method, route.path) for route in _endpoints(app.routes)
            if route.path.startswith("/v1/broker/{broker_id}/webhook") for method in sorted(route.methods)]


def test_every_webhook_endpoint_documents_its_instruction_and_refuses_another_brokers_key(api: Api) -> None:
    api.broker(BROKER)
    other = api.broker(2200)
    document = api.client.get("/openapi.json").json()
    routes = webhook_routes(api)
    instructions = {}
    for method, path in routes:
        operation = document["paths"][path][method.lower()]
        assert {"401", "403"} <= set(operation["responses"]), operation["operationId"]
        instructions[(method, path)] = operation["x-instruction"]
    assert sorted(instructions.values()) == ["brokerWebhookDeliveryQueryAll", "brokerWebhookQuery",
                                             "brokerWebhookRemove", "brokerWebhookRotate", "brokerWebhookSet"]
    for (method, path), instruction in instructions.items():
        params = {"url": "https://x.example/h"} if method == "PUT" else {}
        for target in (BROKER, 9999):  # another broker, and a broker that does not exist
            response = signed(api, method, other, path.format(broker_id=target), instruction, params)
            assert error(response, 403) == ("not_your_broker", "broker_id"), (method, path)
    with api.engine.connect() as connection:
        assert connection.execute(select(webhook_endpoints.c.broker_id)).first() is None  # nothing was changed
