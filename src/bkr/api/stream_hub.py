"""The fan-out behind the venue's WebSocket streams: one poller per process, however many
clients are connected to it.

The poller reads what changed in the venue since its last look (`bkr.venue.streams.StreamReader`,
in a worker thread, in one database snapshot), every `POLL_SECONDS` while anyone subscribes, and
nothing while no one does. Each event is turned into Backpack's message once per stream name that
someone subscribes to, and that text is queued to each of its subscribers; a subscriber's own task
writes its queue to its socket, so a slow client holds no one up (one whose queue fills is
disconnected). Because every process reads the same stream from the database, a client sees
what any process behind the same database matched.

A subscription becomes live after the next read: it is answered then (when the request had an
`id`), and from then on it receives every change after that read, so a client that waits for the
answer misses nothing it does afterwards.
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import WebSocket
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine
from starlette.websockets import WebSocketDisconnect

from bkr.domain.clock import Clock
from bkr.venue import stream_wire as wire
from bkr.venue.markets import VenueConfig
from bkr.venue.stream_wire import Stream
from bkr.venue.streams import StreamReader, Wants, Window

log = logging.getLogger("bkr.api.streams")

POLL_SECONDS = 0.05  # how often a process with subscribers reads the venue's stream
RETRY_SECONDS = 1.0  # after a failed read
QUEUE_LIMIT = 10_000  # messages waiting for one client before it is disconnected as too slow

Key = tuple[str, str | None]  # a stream's name and, for a private stream, its user


@dataclass(eq=False)
class Subscriber:
    """One WebSocket connection: what it subscribes to and the messages waiting for it."""

    websocket: WebSocket
    queue: asyncio.Queue[str | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT + 1))
    keys: dict[Key, Stream] = field(default_factory=dict)
    too_slow: bool = False

    def send(self, text: str) -> None:
        if self.too_slow:
            return
        if self.queue.qsize() >= QUEUE_LIMIT:
            self.too_slow = True
            self.queue.put_nowait(None)  # the writer closes the socket
            return
        self.queue.put_nowait(text)

    async def write(self) -> None:
        """Send what is queued, in order, until told to stop (or the client is gone: the connection's
        reader then ends the subscription)."""
        try:
            while (text := await self.queue.get()) is not None:
                await self.websocket.send_text(text)
            if self.too_slow:
                await self.websocket.close(code=1008, reason=f"more than {QUEUE_LIMIT} messages waited: read faster")
        except (OSError, RuntimeError, WebSocketDisconnect):
            pass


@dataclass
class _Pending:
    subscriber: Subscriber
    streams: tuple[Stream, ...]
    user_id: str | None
    request_id: Any


class StreamHub:
    """The process's subscriptions and its one poller."""

    def __init__(self, engine: Engine, config: VenueConfig, clock: Clock, poll_seconds: float = POLL_SECONDS) -> None:
        self.config, self.clock, self.poll_seconds = config, clock, poll_seconds
        self.reader = StreamReader(engine, config, clock)
        self.subscriptions: dict[Key, set[Subscriber]] = {}
        self._pending: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    # --- subscriptions ----------------------------------------------------------------------------

    def subscribe(self, subscriber: Subscriber, streams: tuple[Stream, ...], user_id: str | None,
                  request_id: Any) -> None:
        """Make `streams` live for `subscriber` after the next read (see the module's docstring)."""
        self._pending.append(_Pending(subscriber, streams, user_id, request_id))
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def unsubscribe(self, subscriber: Subscriber, streams: Iterable[Stream]) -> None:
        names = {s.name for s in streams}
        for key in [k for k in subscriber.keys if k[0] in names]:
            self._drop(subscriber, key)
        for pending in self._pending:
            if pending.subscriber is subscriber:
                pending.streams = tuple(s for s in pending.streams if s.name not in names)

    def disconnect(self, subscriber: Subscriber) -> None:
        for key in list(subscriber.keys):
            self._drop(subscriber, key)
        self._pending = [p for p in self._pending if p.subscriber is not subscriber]

    def _drop(self, subscriber: Subscriber, key: Key) -> None:
        subscriber.keys.pop(key, None)
        holders = self.subscriptions.get(key)
        if holders is not None:
            holders.discard(subscriber)
            if not holders:
                del self.subscriptions[key]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # --- the poller -------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self.subscriptions and not self._pending:
                self.reader = StreamReader(self.reader.engine, self.config, self.clock)  # nothing kept for no one
                self._wake.clear()
                await self._wake.wait()
            pending, self._pending = self._pending, []
            try:
                window = await run_in_threadpool(self.reader.read, self._wants(pending))
            except Exception:
                log.exception("the venue's streams could not be read; trying again")
                self._pending = pending + self._pending
                await asyncio.sleep(RETRY_SECONDS)
                continue
            now = self.clock()
            self._dispatch(window, now)
            for p in pending:
                self._activate(p, window, now)
            await asyncio.sleep(self.poll_seconds)

    def _wants(self, pending: list[_Pending]) -> Wants:
        streams = [*self._all_streams(), *(s for p in pending for s in p.streams)]
        return Wants(
            books=frozenset(s.symbol for s in streams if s.kind in ("depth", "bookTicker") and s.symbol),
            tickers=frozenset(s.symbol for s in streams if s.kind == "ticker" and s.symbol),
            candles=frozenset((s.interval, s.symbol) for s in streams if s.kind == "kline" and s.interval and s.symbol),
            positions_of=frozenset(p.user_id for p in pending if p.user_id is not None
                                   and any(s.kind == "account.positionUpdate" for s in p.streams)))

    def _all_streams(self) -> Iterable[Stream]:
        for key, holders in self.subscriptions.items():
            yield next(iter(holders)).keys[key]  # every holder of a key subscribed to the same stream

    def _activate(self, pending: _Pending, window: Window, now: datetime) -> None:
        subscriber = pending.subscriber
        for stream in pending.streams:
            key = (stream.name, pending.user_id if stream.private else None)
            subscriber.keys[key] = stream
            self.subscriptions.setdefault(key, set()).add(subscriber)
        if pending.request_id is not None:
            subscriber.send(json.dumps({"id": pending.request_id, "result": None}))
        for stream in pending.streams:
            if stream.kind != "account.positionUpdate":
                continue
            for event in window.standing:
                if event.user_id == pending.user_id and stream.symbol in (None, event.position.symbol):
                    subscriber.send(_text(stream.name, wire.position_json(event, self.config, now)))

    def _publish(self, names: Iterable[str], user_id: str | None, data: dict[str, Any]) -> None:
        for name in names:
            holders = self.subscriptions.get((name, user_id))
            if not holders:
                continue
            text = _text(name, data)
            for subscriber in list(holders):
                subscriber.send(text)

    def _dispatch(self, window: Window, now: datetime) -> None:
        for change in window.depth:
            depth = ["depth." + change.symbol] + [f"depth.{a}.{change.symbol}" for a in wire.DEPTH_AGGREGATIONS]
            if any((name, None) in self.subscriptions for name in depth):
                self._publish(depth, None, wire.depth_json(change, now))
            if change.top_changed and ("bookTicker." + change.symbol, None) in self.subscriptions:
                self._publish(["bookTicker." + change.symbol], None, wire.book_ticker_json(change, now))
        for trade in window.trades:
            if ("trade." + trade.symbol, None) in self.subscriptions:
                self._publish(["trade." + trade.symbol], None, wire.trade_json(trade, now))
        for ticker in window.tickers:
            self._publish(["ticker." + ticker.symbol], None, wire.ticker_json(ticker, now))
        for candle in window.candles:
            self._publish([f"kline.{candle.interval}.{candle.symbol}"], None, wire.kline_json(candle, now))
        for order in window.orders:
            names = ["account.orderUpdate", "account.orderUpdate." + order.order.symbol]
            if any((name, order.order.user_id) in self.subscriptions for name in names):
                self._publish(names, order.order.user_id, wire.order_update_json(order, now))
        for position in window.positions:
            names = ["account.positionUpdate", "account.positionUpdate." + position.position.symbol]
            if any((name, position.user_id) in self.subscriptions for name in names):
                self._publish(names, position.user_id, wire.position_json(position, self.config, now))


def _text(stream: str, data: dict[str, Any]) -> str:
    return json.dumps(wire.envelope(stream, data), separators=(",", ":"))
