"""The size of a request body, bounded before any endpoint reads it.

Every number that enters bkr has a bound, and so does a body: the fill feed takes up to
`max_body_bytes` (64 MiB by default, room for `max_batch` fills of any realistic size); the
venue's routes 64 KiB (an order is a few hundred bytes: a batch of some two hundred orders fits);
every other route 1 MiB, far above any form or registry request. A larger body is answered 413
at once, in the route's own error format, whether it announces its length or streams in chunks
(those are read up to the limit and no further), and before its sender's credentials are checked.
"""

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bkr.api.errors import VENUE_PREFIXES

DEFAULT_LIMIT = 1 << 20  # 1 MiB
VENUE_LIMIT = 64 << 10  # 64 KiB
_LENGTH_DIGITS = 18  # a Content-Length of more digits is over every limit (and need not be converted)


def route_limits(ingest_path: str, ingest_limit: int) -> Callable[[str], int]:
    """The limit of each path: the fill feed's own, the venue's, or the default."""

    def limit_of(path: str) -> int:
        if path == ingest_path:
            return ingest_limit
        return VENUE_LIMIT if path.startswith(VENUE_PREFIXES) else DEFAULT_LIMIT

    return limit_of


class BodyLimit:
    def __init__(self, app: ASGIApp, limit_of: Callable[[str], int]) -> None:
        self.app = app
        self.limit_of = limit_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_of(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _refuse(scope, send, 400, "Content-Length", "not a number of bytes")
                return
            if len(declared) > _LENGTH_DIGITS or int(declared) > limit:
                await _too_large(scope, send, limit)
                return
            await self.app(scope, receive, send)
            return
        # no length given: read the chunks up to the limit, then hand them on as they came
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > limit:
                await _too_large(scope, send, limit)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


async def _too_large(scope: Scope, send: Send, limit: int) -> None:
    await _refuse(scope, send, 413, "body", f"the request body is larger than {limit:,} bytes, the most this route "
                                            "accepts")


async def _refuse(scope: Scope, send: Send, status: int, field: str, message: str) -> None:
    """The route's own error format: Backpack's on the venue, bkr's elsewhere."""
    body: dict[str, str | None]
    if str(scope["path"]).startswith(VENUE_PREFIXES):
        body = {"code": "INVALID_CLIENT_REQUEST", "message": f"{field}: {message}"}
    else:
        code = "too_large" if status == 413 else "bad_request"
        body = {"code": code, "message": f"{field}: {message}", "field": field, "request_id": None}
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})
