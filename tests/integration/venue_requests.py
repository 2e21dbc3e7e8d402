"""Requests to the venue as a client of any kind could send them: raw bytes in the headers, the
query and the body, through the real ASGI app (its middleware, error handlers and routers), and
signed as Backpack signs them when the test wants to get past the signature.

`TestClient` re-encodes header values as UTF-8 text, so a header byte such as 0xB2 (`²` as an
HTTP server decodes it, in Latin-1) cannot be sent through it; `send` calls the app directly.
"""

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from fastapi import FastAPI

from bkr.domain.signing import KeyPair, batch_signing_string, sign, signing_string

# What a venue error looks like, and how long its message may be: a field's name, a few dozen
# characters of a value, an explanation, and at most 1,000 characters of the expected signing
# string (the one message that quotes a request, cut to that length).
LONGEST_MESSAGE = 1_300
BACKPACK_CODES = {"INVALID_CLIENT_REQUEST", "INVALID_ORDER", "INVALID_MARKET", "INSUFFICIENT_FUNDS",
                  "INVALID_SIGNATURE", "UNAUTHORIZED", "FORBIDDEN", "RESOURCE_NOT_FOUND", "NOT_IMPLEMENTED"}


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    size: int

    @property
    def code(self) -> str | None:
        return self.body.get("code") if isinstance(self.body, dict) else None


def send(app: FastAPI, method: str, path: str, *, query: bytes = b"", headers: Sequence[tuple[bytes, bytes]] = (),
         body: bytes = b"") -> Answer:
    """One request through the ASGI app, every byte as given."""

    async def exchange() -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []
        pending = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return pending.pop(0) if pending else {"type": "http.disconnect"}

        async def reply(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query, "root_path": "",
                 "headers": [(b"host", b"testserver"), (b"content-length", str(len(body)).encode()), *headers],
                 "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}
        with contextlib.suppress(Exception):  # the error middleware answered 500 first: the status says so
            await app(scope, receive, reply)  # type: ignore[arg-type]
        return sent

    # in a thread of its own: a test earlier in the process may have left an event loop running
    # in this one (Playwright's sync API does), where asyncio.run() refuses to start
    with ThreadPoolExecutor(max_workers=1) as thread:
        sent = thread.submit(asyncio.run, exchange()).result()
    start = next(m for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    try:
        parsed = json.loads(content) if content else None
    except ValueError:
        parsed = content.decode("utf-8", "replace")
    return Answer(start["status"], parsed, len(content))


def signed_headers(key: KeyPair, instruction: str, params: Mapping[str, Any] | Sequence[Mapping[str, Any]],
                   *, now_ms: int | None = None, window: int = 60_000) -> list[tuple[bytes, bytes]]:
    """Backpack's four headers, signed over `params` (a batch's items if a sequence), for the
    longest window Backpack allows: a busy test machine may take seconds to answer."""
    stamp = now_ms if now_ms is not None else int(time.time() * 1000)
    if isinstance(params, Mapping):
        message = signing_string(instruction, params, stamp, window)
    else:
        message = batch_signing_string(instruction, params, stamp, window)
    return [(b"x-api-key", key.api_key.encode()), (b"x-timestamp", str(stamp).encode()),
            (b"x-window", str(window).encode()), (b"x-signature", sign(key.secret, message).encode())]


def as_signed(body: bytes) -> Any:
    """What a client signs for this body: its parameters as JSON reads them, numbers exact (a
    body that is not an object or a list of objects is signed as no parameters)."""
    try:
        parsed = json.loads(body, parse_float=Decimal) if body.strip() else {}
    except (ValueError, RecursionError):
        return {}
    if isinstance(parsed, dict) or (isinstance(parsed, list) and all(isinstance(i, dict) for i in parsed)):
        return parsed
    return {}


def is_backpack_refusal(answer: Answer) -> bool:
    """A 4xx whose body is Backpack's `{"code", "message"}`, with a known code and a short message."""
    body = answer.body
    return (400 <= answer.status < 500 and isinstance(body, dict) and set(body) == {"code", "message"}
            and body["code"] in BACKPACK_CODES and isinstance(body["message"], str) and bool(body["message"])
            and len(body["message"]) <= LONGEST_MESSAGE)
