"""The venue's WebSocket API at Backpack's path (`/`, as `wss://ws.backpack.exchange/`): a client
subscribes and unsubscribes with JSON requests (`bkr.venue.stream_wire`) and receives each
stream's events as `{"stream": name, "data": {...}}` from the process's fan-out
(`bkr.api.stream_hub`).

A private stream (`account.…`) is subscribed with Backpack's signature: `[verifyingKey,
signature, timestamp, window]`, the signature ED25519 over `instruction=subscribe&timestamp=…&
window=…`, by the key of a venue user; its events are that user's. A request that is refused
changes nothing, and is answered `{"id": …, "error": {"code": …, "message": …}}`; an accepted
request with an `id` is answered `{"id": …, "result": null}` once its streams are live.
"""

import asyncio
import json

from fastapi import APIRouter, WebSocket
from fastapi.concurrency import run_in_threadpool
from starlette.websockets import WebSocketDisconnect

from bkr.api.deps import Services
from bkr.api.stream_hub import StreamHub, Subscriber
from bkr.domain.errors import Unauthenticated
from bkr.domain.signing import check_timing, parse_timing, public_key, signing_string, verifies
from bkr.program import keys
from bkr.store import db
from bkr.venue.stream_wire import (
    INSTRUCTION,
    INVALID_REQUEST,
    INVALID_SIGNATURE,
    Signature,
    StreamRefused,
    StreamRequest,
    parse_request,
)

router = APIRouter(include_in_schema=False)
MAX_FRAME = 16_384  # characters of one request; Backpack's are a few hundred


@router.websocket("/")
async def streams(websocket: WebSocket) -> None:
    hub: StreamHub = websocket.app.state.streams
    services: Services = websocket.app.state.services
    await websocket.accept()
    subscriber = Subscriber(websocket)
    writer = asyncio.get_running_loop().create_task(subscriber.write())
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            raw = message.get("text")
            if raw is None:
                raw = (message.get("bytes") or b"").decode("utf-8", "replace")
            await _handle(raw, hub, services, subscriber)
    except WebSocketDisconnect:
        pass
    finally:
        hub.disconnect(subscriber)
        subscriber.queue.put_nowait(None)
        writer.cancel()


async def _handle(raw: str, hub: StreamHub, services: Services, subscriber: Subscriber) -> None:
    request: StreamRequest | None = None
    try:
        if len(raw) > MAX_FRAME:
            raise StreamRefused(f"Invalid request: {len(raw):,} characters; at most {MAX_FRAME:,}", INVALID_REQUEST)
        request = parse_request(raw, hub.config)
        if request.method == "UNSUBSCRIBE":
            hub.unsubscribe(subscriber, request.streams)
            if request.request_id is not None:
                subscriber.send(json.dumps({"id": request.request_id, "result": None}))
            return
        user_id = None
        if any(s.private for s in request.streams):
            user_id = await _signer(request.signature, services)
        hub.subscribe(subscriber, request.streams, user_id, request.request_id)
    except StreamRefused as refused:
        subscriber.send(json.dumps({"id": refused.request_id if request is None else request.request_id,
                                    "error": {"code": refused.ws_code, "message": str(refused)}}))


async def _signer(signature: Signature | None, services: Services) -> str:
    """The venue user whose key signed the subscription, as Backpack checks it."""
    if signature is None:
        raise StreamRefused("Invalid signature: account.* streams need \"signature\": [verifyingKey, signature, "
                            "timestamp, window], signed for instruction=subscribe", INVALID_SIGNATURE)
    now = services.clock()
    try:
        key = public_key(signature.verifying_key)
        timestamp, window = parse_timing(signature.timestamp, signature.window)
        check_timing(timestamp, window, int(now.timestamp() * 1000))
    except Unauthenticated as error:
        raise StreamRefused(f"Invalid signature: {error}", INVALID_SIGNATURE) from None
    message = signing_string(INSTRUCTION, {}, timestamp, window)
    if not verifies(key, signature.signature, message):
        raise StreamRefused(f"Invalid signature: it does not verify; sign {message!r}", INVALID_SIGNATURE)

    def holder() -> keys.KeyHolder | None:
        with db.snapshot(services.engine) as connection:
            return keys.user_key(connection, signature.verifying_key, now)

    found = await run_in_threadpool(holder)
    if found is None or found.user_id is None:
        raise StreamRefused("Invalid signature: unknown, revoked or expired API key", INVALID_SIGNATURE)
    return found.user_id
