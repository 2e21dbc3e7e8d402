"""Webhooks over the API: a broker's own endpoint and delivery log (`/v1/broker/{broker_id}/webhook…`,
signed with its ED25519 key like every broker endpoint, each with its own instruction), and the
operators' view of every delivery and event (`/v1/admin/webhooks/…`, any operator key).

A broker that registers or rotates through the API is recorded on the audit trail as
`broker <id>`. The signed parameters are the query parameters, so `url` travels in the query.
"""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from bkr.api.deps import (
    BrokerAccess,
    BrokerSignature,
    Services,
    ServicesDep,
    SignedBroker,
    SnapshotDep,
    ViewerDep,
    broker_signature,
    in_read_thread,
    instruction,
    record_use,
    signed_broker,
)
from bkr.api.errors import responses
from bkr.api.schemas import BrokerIdPath
from bkr.domain.errors import Forbidden
from bkr.domain.webhooks import MAX_URL_LENGTH, EventStatus
from bkr.program import webhooks
from bkr.store import db

router = APIRouter(tags=["broker"])
admin_router = APIRouter(prefix="/v1/admin/webhooks", tags=["operators"])

WEBHOOK = "brokerWebhookQuery"
WEBHOOK_SET = "brokerWebhookSet"
WEBHOOK_ROTATE = "brokerWebhookRotate"
WEBHOOK_REMOVE = "brokerWebhookRemove"
DELIVERIES = "brokerWebhookDeliveryQueryAll"

WebhookSignature = Annotated[BrokerSignature, Depends(broker_signature(WEBHOOK))]
WebhookSetSignature = Annotated[BrokerSignature, Depends(broker_signature(WEBHOOK_SET))]
WebhookRotateSignature = Annotated[BrokerSignature, Depends(broker_signature(WEBHOOK_ROTATE))]
WebhookRemoveSignature = Annotated[BrokerSignature, Depends(broker_signature(WEBHOOK_REMOVE))]
DeliveriesSignature = Annotated[BrokerSignature, Depends(broker_signature(DELIVERIES))]

PATH = "/v1/broker/{broker_id}/webhook"
MAX_CURSOR = 2**31 - 1


async def _as_broker(request: Request, services: Services, signature: BrokerSignature, broker_id: int,
                     work: Callable[[Any, SignedBroker], BaseModel], *, writes: bool) -> Response:
    """`work` as the path's broker, once the signing key is found to be its own and the broker's
    standing allows it (a suspended or terminated broker may only read: `BrokerAccess`): in a
    read-only snapshot, or (`writes`) in a transaction committed on success."""

    def run() -> Response:
        caller: SignedBroker | None = None
        try:
            opened = services.engine.begin() if writes else db.snapshot(services.engine)
            with opened as connection:
                caller = signed_broker(connection, request, signature)
                caller.check_standing(BrokerAccess.WRITE if writes else BrokerAccess.READ)
                if broker_id != caller.broker_id:
                    raise Forbidden(f"this key belongs to broker {caller.broker_id}; it cannot act for broker "
                                    f"{broker_id}", code="not_your_broker", field="broker_id")
                answer = work(connection, caller)
            return Response(answer.model_dump_json(), media_type="application/json")
        finally:
            if caller is not None:
                record_use(services, caller.api_key, caller.key_last_used_at, signature.now)

    return await in_read_thread(run)


class EndpointOut(BaseModel):
    broker_id: int
    url: str
    created_at: str
    secret_created_at: str
    secret_hint: str = Field(description="The secret's first characters: the secret itself is shown once.")
    secret: str | None = Field(default=None, description="The signing secret (`whsec_…`), only in the answer that "
                                                         "made it: keep it, it is not shown again.")


def _endpoint(found: webhooks.Endpoint | webhooks.EndpointWithSecret) -> EndpointOut:
    if isinstance(found, webhooks.EndpointWithSecret):
        return EndpointOut.model_validate(found.endpoint.to_document() | {"secret": found.secret})
    return EndpointOut.model_validate(found.to_document())


def _actor(caller: SignedBroker) -> str:
    return f"broker {caller.broker_id}"


@router.get(PATH, response_model=EndpointOut, summary="Your webhook endpoint",
            responses=responses(401, 403, 404, 422, 503), openapi_extra=instruction(WEBHOOK))
async def get_webhook(broker_id: BrokerIdPath, request: Request, services: ServicesDep,
                      signature: WebhookSignature) -> Response:
    return await _as_broker(request, services, signature, broker_id,
                            lambda connection, _: _endpoint(webhooks.get_endpoint(connection, broker_id)),
                            writes=False)


@router.put(PATH, response_model=EndpointOut, summary="Register your webhook endpoint",
            description="Register the URL bkr posts your events to (http or https, at most 2048 characters), or "
                        "move it. A new endpoint's answer carries its signing secret, once; a moved one keeps its "
                        "secret. Events are signed in the `Bkr-Signature` header (docs/brokers.md).",
            responses=responses(401, 403, 404, 422, 503), openapi_extra=instruction(WEBHOOK_SET))
async def set_webhook(broker_id: BrokerIdPath, request: Request, services: ServicesDep,
                      signature: WebhookSetSignature,
                      url: Annotated[str, Query(min_length=1, max_length=MAX_URL_LENGTH)]) -> Response:
    return await _as_broker(request, services, signature, broker_id, lambda connection, caller: _endpoint(
        webhooks.set_endpoint(connection, broker_id, url, signature.now, actor=_actor(caller))), writes=True)


@router.post(f"{PATH}/rotate", response_model=EndpointOut, summary="Rotate your webhook secret",
             description="A new signing secret, in this answer only; events are signed with it from now on.",
             responses=responses(401, 403, 404, 422, 503), openapi_extra=instruction(WEBHOOK_ROTATE))
async def rotate_webhook(broker_id: BrokerIdPath, request: Request, services: ServicesDep,
                         signature: WebhookRotateSignature) -> Response:
    return await _as_broker(request, services, signature, broker_id, lambda connection, caller: _endpoint(
        webhooks.rotate_secret(connection, broker_id, signature.now, actor=_actor(caller))), writes=True)


class RemovedOut(BaseModel):
    broker_id: int
    cancelled_events: int = Field(description="Events not delivered yet, now cancelled.")


@router.delete(PATH, response_model=RemovedOut, summary="Remove your webhook endpoint",
               responses=responses(401, 403, 404, 422, 503), openapi_extra=instruction(WEBHOOK_REMOVE))
async def remove_webhook(broker_id: BrokerIdPath, request: Request, services: ServicesDep,
                         signature: WebhookRemoveSignature) -> Response:
    return await _as_broker(request, services, signature, broker_id, lambda connection, caller: RemovedOut(
        broker_id=broker_id,
        cancelled_events=webhooks.remove_endpoint(connection, broker_id, signature.now, actor=_actor(caller))),
        writes=True)


class DeliveryOut(BaseModel):
    delivery_id: int
    event_id: str
    event_type: str
    broker_id: int
    attempt: int = Field(description="1 for the first attempt of the event, then 2, 3, …")
    attempted_at: str
    url: str
    status_code: int | None = Field(description="The receiver's HTTP status; null when none came (see `error`).")
    error: str | None = Field(description="Why no status came: refused, timed out, …")
    duration_ms: int
    event_status: str = Field(description="Where the event stands now: pending | delivered | failed | cancelled.")


class DeliveriesOut(BaseModel):
    deliveries: list[DeliveryOut] = Field(description="Newest first.")
    next_before: int | None = Field(description="For the next page: pass it as `before`; null on the last page.")


Limit = Annotated[int, Query(ge=1, le=webhooks.MAX_LOG_PAGE)]
Before = Annotated[int | None, Query(ge=1, le=MAX_CURSOR, description="Attempts before this delivery id.")]


def _deliveries(found: list[webhooks.DeliveryRecord], limit: int) -> DeliveriesOut:
    return DeliveriesOut(deliveries=[DeliveryOut.model_validate(r.to_document()) for r in found],
                         next_before=found[-1].delivery_id if len(found) == limit else None)


@router.get(f"{PATH}/deliveries", response_model=DeliveriesOut, summary="Your webhook delivery log",
            description="Every attempt to deliver your events, newest first: the event, the attempt, the time, "
                        "your endpoint's HTTP status or the error, and how long it took.",
            responses=responses(401, 403, 422, 503), openapi_extra=instruction(DELIVERIES))
async def broker_deliveries(broker_id: BrokerIdPath, request: Request, services: ServicesDep,
                            signature: DeliveriesSignature, limit: Limit = 100, before: Before = None) -> Response:
    return await _as_broker(request, services, signature, broker_id, lambda connection, _: _deliveries(
        webhooks.delivery_log(connection, broker_id=broker_id, before=before, limit=limit), limit), writes=False)


@admin_router.get("/deliveries", response_model=DeliveriesOut, summary="Webhook delivery log",
                  description="Delivery attempts of every broker's events (or one broker's, one event's), newest "
                              "first.", responses=responses(401, 422, 503))
def admin_deliveries(_: ViewerDep, connection: SnapshotDep, limit: Limit = 100, before: Before = None,
                     broker_id: Annotated[int | None, Query(ge=1, le=65535)] = None,
                     event_id: Annotated[str | None, Query(max_length=64)] = None) -> DeliveriesOut:
    return _deliveries(webhooks.delivery_log(connection, broker_id=broker_id, event_id=event_id, before=before,
                                             limit=limit), limit)


class EventOut(BaseModel):
    event_id: str
    broker_id: int
    type: str
    created_at: str
    status: str
    attempts: int
    next_attempt_at: str | None
    delivered_at: str | None


class EventsOut(BaseModel):
    events: list[EventOut] = Field(description="Newest first.")


@admin_router.get("/events", response_model=EventsOut, summary="Webhook events (the outbox)",
                  description="Recorded events, newest first, with where their delivery stands.",
                  responses=responses(401, 422, 503))
def admin_events(_: ViewerDep, connection: SnapshotDep, limit: Limit = 100,
                 broker_id: Annotated[int | None, Query(ge=1, le=65535)] = None,
                 status: EventStatus | None = None) -> EventsOut:
    return EventsOut(events=[EventOut.model_validate(e.to_document())
                             for e in webhooks.events(connection, broker_id=broker_id, status=status, limit=limit)])
