"""A WebSocket client of the venue's streams for tests, written from Backpack's documents with the
`websockets` library: it subscribes (signed, for `account.` streams), and a background task
records every message with the moment it arrived, so that a test can ask how soon after an
order a message came."""

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from bkr.domain.signing import sign, signing_string

WINDOW_MS = 5_000


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://", 1) + "/"


def subscription_signature(api_key: str, secret: str, *, instruction: str = "subscribe",
                           timestamp: int | None = None) -> list[str]:
    """Backpack's `[verifyingKey, signature, timestamp, window]` for a private subscription."""
    stamp = int(time.time() * 1000) if timestamp is None else timestamp
    return [api_key, sign(secret, signing_string(instruction, {}, stamp, WINDOW_MS)), str(stamp), str(WINDOW_MS)]


@dataclass
class Received:
    at: float  # time.monotonic() when it arrived
    message: dict[str, Any]


@dataclass
class Listener:
    connection: ClientConnection
    received: list[Received] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _next_id: int = 1

    @classmethod
    async def open(cls, base: str) -> "Listener":
        listener = cls(await connect(ws_url(base), open_timeout=10))
        listener._task = asyncio.get_running_loop().create_task(listener._read())
        return listener

    async def _read(self) -> None:
        async for frame in self.connection:
            self.received.append(Received(time.monotonic(), json.loads(frame)))
            self._arrived.set()

    async def close(self) -> None:
        await self.connection.close()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def request(self, method: str, streams: list[str], signature: list[str] | None = None,
                      timeout: float = 10) -> dict[str, Any]:
        """Send a request with an id and return its answer (`result` or `error`)."""
        request_id, self._next_id = self._next_id, self._next_id + 1
        body: dict[str, Any] = {"method": method, "params": streams, "id": request_id}
        if signature is not None:
            body["signature"] = signature
        await self.connection.send(json.dumps(body))
        return (await self.first(lambda m: m.get("id") == request_id and ("result" in m or "error" in m),
                                 timeout)).message

    async def send_raw(self, text: str) -> None:
        await self.connection.send(text)

    async def first(self, wanted: Callable[[dict[str, Any]], bool], timeout: float = 5) -> Received:
        """The first message (received so far or within `timeout` seconds) that is `wanted`."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for item in self.received[seen:]:
                if wanted(item.message):
                    return item
            seen = len(self.received)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no such message in {timeout} s; received: {[r.message for r in self.received]}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)

    def on(self, stream: str) -> list[dict[str, Any]]:
        """The data of every message received on `stream` so far."""
        return [r.message["data"] for r in self.received if r.message.get("stream") == stream]
