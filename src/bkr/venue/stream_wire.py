"""Backpack's WebSocket format: the stream names a client subscribes to, its SUBSCRIBE and
UNSUBSCRIBE requests, and the events (`bkr.venue.streams`) shaped as Backpack sends them, with
its one-letter fields (`e` event, `E` event time and `T` engine time in microseconds, `s` symbol…)
and decimals as strings.

A request is a JSON object `{"method": "SUBSCRIBE" | "UNSUBSCRIBE", "params": [stream, …],
"id"?: n, "signature"?: [verifyingKey, signature, timestamp, window]}`, read as bounded as a REST
body (`bkr.venue.wire.read_body`). Anything else is refused with a `StreamRefused`, whose
`ws_code` is the error code the client is answered with and whose message names what is wrong.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bkr.domain.errors import InvalidInput
from bkr.domain.money import canonical
from bkr.venue.history import Ticker
from bkr.venue.markets import VenueConfig
from bkr.venue.streams import INTERVALS, Candle, DepthChange, OrderEvent, PositionEvent, Trade
from bkr.venue.wire import read_body, shown

MAX_STREAMS = 100  # stream names one request may list
DEPTH_AGGREGATIONS = ("200ms", "600ms", "1000ms")

# the error codes a client is answered with
INVALID_REQUEST = 4000  # not a request: not JSON, not an object, an unknown method, params not names
INVALID_SIGNATURE = 4001  # a private stream without a valid signature of a known key
INVALID_STREAM = 4006  # a stream name the sandbox does not serve, or a market it does not list

PUBLIC_KINDS = ("depth", "trade", "ticker", "bookTicker", "kline")
PRIVATE_KINDS = ("account.orderUpdate", "account.positionUpdate", "account.rfqUpdate")
NOT_SERVED = ("markPrice", "openInterest", "liquidation", "account.balanceUpdate")
SERVED = ("depth.<symbol>, depth.<200ms|600ms|1000ms>.<symbol>, trade.<symbol>, ticker.<symbol>, "
          "bookTicker.<symbol>, kline.<interval>.<symbol>, account.orderUpdate[.<symbol>], "
          "account.positionUpdate[.<symbol>], account.rfqUpdate[.<symbol>]")
INSTRUCTION = "subscribe"  # what a private subscription's signature is made for


class StreamRefused(InvalidInput):
    """A request the stream endpoint refuses; nothing of it is applied."""

    code = "INVALID_STREAM_REQUEST"

    def __init__(self, message: str, ws_code: int, request_id: Any = None) -> None:
        super().__init__(message)
        self.ws_code = ws_code
        self.request_id = request_id  # the request's `id`, when it could be read


@dataclass(frozen=True, slots=True)
class Stream:
    """One stream as subscribed: its `name` (what its messages carry), what it streams (`kind`),
    the market (None: every market of the account) and a kline's interval."""

    name: str
    kind: str
    symbol: str | None = None
    interval: str | None = None

    @property
    def private(self) -> bool:
        return self.kind.startswith("account.")


@dataclass(frozen=True, slots=True)
class Signature:
    verifying_key: str
    signature: str
    timestamp: str
    window: str


@dataclass(frozen=True, slots=True)
class StreamRequest:
    method: str  # SUBSCRIBE | UNSUBSCRIBE
    streams: tuple[Stream, ...]
    signature: Signature | None
    request_id: Any  # echoed in the answer; None when the client sent none


def parse_stream(name: object, config: VenueConfig) -> Stream:
    """A stream name as Backpack spells them (see `SERVED`), its market one the venue lists."""
    if not isinstance(name, str) or not name:
        raise StreamRefused(f"Invalid stream: {shown(name)} is not a stream name", INVALID_STREAM)
    parts = name.split(".")
    private = name.startswith("account.")
    kind = ".".join(parts[:2]) if private else parts[0]
    rest = parts[2:] if private else parts[1:]
    if kind in NOT_SERVED or (kind.split(".")[0] in NOT_SERVED):
        raise StreamRefused(f"Invalid stream: {shown(name)}: the sandbox does not serve {kind} streams; it serves "
                            f"{SERVED} (docs/api.md, WebSocket streams)", INVALID_STREAM)
    interval = None
    if kind == "kline" and len(rest) == 2:
        interval, rest = rest[0], rest[1:]
        if interval not in INTERVALS:
            raise StreamRefused(f"Invalid stream: {shown(name)}: no kline interval {shown(interval)}; intervals: "
                                f"{', '.join(INTERVALS)}", INVALID_STREAM)
    elif kind == "depth" and len(rest) == 2 and rest[0] in DEPTH_AGGREGATIONS:
        rest = rest[1:]
    if kind not in PUBLIC_KINDS + PRIVATE_KINDS or len(rest) > 1 or (not private and len(rest) != 1) \
            or (kind == "kline" and interval is None):
        raise StreamRefused(f"Invalid stream: {shown(name)}; the sandbox serves {SERVED}", INVALID_STREAM)
    symbol = rest[0] if rest else None
    if symbol is not None and config.market(symbol) is None:
        raise StreamRefused(f"Invalid stream: {shown(name)}: no market {shown(symbol)}", INVALID_STREAM)
    return Stream(name, kind, symbol, interval)


def parse_request(raw: bytes | str, config: VenueConfig) -> StreamRequest:
    """One request as a client sent it (a text frame)."""
    try:
        body = read_body(raw.encode() if isinstance(raw, str) else raw)
    except InvalidInput as error:
        raise StreamRefused(f"Invalid request: {error}", INVALID_REQUEST) from None
    if not isinstance(body, dict):
        raise StreamRefused("Invalid request: send a JSON object {\"method\": \"SUBSCRIBE\", \"params\": [stream, …]}",
                            INVALID_REQUEST)
    request_id = _json_id(body.get("id"))
    try:
        return _request(body, config, request_id)
    except StreamRefused as refused:
        refused.request_id = request_id
        raise


def _request(body: dict[str, Any], config: VenueConfig, request_id: Any) -> StreamRequest:
    method = body.get("method")
    if method not in ("SUBSCRIBE", "UNSUBSCRIBE"):
        raise StreamRefused(f"Invalid request: method {shown(method)} is not SUBSCRIBE or UNSUBSCRIBE",
                            INVALID_REQUEST)
    params = body.get("params")
    if not isinstance(params, list) or not params or len(params) > MAX_STREAMS:
        raise StreamRefused(f"Invalid request: params must list 1 to {MAX_STREAMS} stream names", INVALID_REQUEST)
    streams = tuple(parse_stream(p, config) for p in params)
    signature = body.get("signature")
    if signature is not None:
        if not isinstance(signature, list) or len(signature) != 4 \
                or not all(isinstance(s, str | int) and not isinstance(s, bool) for s in signature):
            raise StreamRefused("Invalid signature: send [verifyingKey, signature, timestamp, window], four strings",
                                INVALID_SIGNATURE)
        signature = Signature(*(str(s) for s in signature))
    return StreamRequest(method, streams, signature, request_id)


def _json_id(value: Any) -> Any:
    if isinstance(value, Decimal):  # read_body keeps numbers exact; an id goes back as it came
        return int(value) if value == value.to_integral_value() else str(value)
    return value if value is None or isinstance(value, int | str) else shown(value)


# --- events, as Backpack sends them ------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(moment: datetime) -> int:
    return (moment.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1)


def _levels(levels: Sequence[tuple[Decimal, Decimal]]) -> list[list[str]]:
    return [[canonical(p), canonical(q)] for p, q in levels]


def depth_json(change: DepthChange, now: datetime) -> dict[str, Any]:
    return {"e": "depth", "E": micros(now), "s": change.symbol, "a": _levels(change.asks), "b": _levels(change.bids),
            "U": change.first_id, "u": change.last_id, "T": micros(change.at)}


def book_ticker_json(change: DepthChange, now: datetime) -> dict[str, Any]:
    bid, ask = change.best_bid, change.best_ask
    return {"e": "bookTicker", "E": micros(now), "s": change.symbol,
            "a": None if ask is None else canonical(ask[0]), "A": None if ask is None else canonical(ask[1]),
            "b": None if bid is None else canonical(bid[0]), "B": None if bid is None else canonical(bid[1]),
            "u": str(change.last_id), "T": micros(change.at)}


def trade_json(trade: Trade, now: datetime) -> dict[str, Any]:
    return {"e": "trade", "E": micros(now), "s": trade.symbol, "p": canonical(trade.price),
            "q": canonical(trade.quantity), "b": str(trade.buyer_order_id), "a": str(trade.seller_order_id),
            "t": trade.trade_id, "T": micros(trade.at), "m": trade.buyer_is_maker}


def ticker_json(t: Ticker, now: datetime) -> dict[str, Any]:
    def text(value: Decimal | None) -> str:
        return "0" if value is None else canonical(value)

    return {"e": "ticker", "E": micros(now), "s": t.symbol, "o": text(t.first_price), "c": text(t.last_price),
            "h": text(t.high), "l": text(t.low), "v": canonical(t.volume), "V": canonical(t.quote_volume),
            "n": t.trades}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds")


def kline_json(c: Candle, now: datetime) -> dict[str, Any]:
    return {"e": "kline", "E": micros(now), "s": c.symbol, "t": _iso(c.start), "T": _iso(c.end),
            "o": canonical(c.open), "c": canonical(c.close), "h": canonical(c.high), "l": canonical(c.low),
            "v": canonical(c.volume), "n": c.trades, "X": c.end <= now}


def order_update_json(event: OrderEvent, now: datetime) -> dict[str, Any]:
    order = event.order
    data: dict[str, Any] = {"e": event.kind, "E": micros(now), "s": order.symbol}
    if order.client_id is not None:
        data["c"] = order.client_id
    data.update({"S": order.side.value, "o": order.order_type.value.upper(), "f": order.time_in_force.value})
    if order.quantity is not None:
        data["q"] = canonical(order.quantity)
    if order.quote_quantity is not None:
        data["Q"] = canonical(order.quote_quantity)
    if order.price is not None:
        data["p"] = canonical(order.price)
    data.update({"X": event.status.value, "i": str(order.order_id), "z": canonical(event.executed),
                 "Z": canonical(event.executed_quote), "V": order.self_trade_prevention.value,
                 "T": micros(event.at), "O": "USER", "y": order.post_only})
    if event.kind == "orderExpired" and order.expiry_reason:
        data["R"] = order.expiry_reason
    if event.fill is not None:
        fill = event.fill
        data.update({"t": fill.trade_id, "l": canonical(fill.quantity), "L": canonical(fill.price),
                     "m": fill.is_maker, "n": canonical(fill.fee), "N": fill.fee_symbol})
    return data


def position_json(event: PositionEvent, config: VenueConfig, now: datetime) -> dict[str, Any]:
    """A position as the REST `GET /api/v1/position` shows it: its entry price (net cost over net
    quantity, to the market's tick) is also its break-even and mark price; nothing is unrealized."""
    p = event.position
    market = config.market(p.symbol)
    entry = "0"
    if p.net_quantity and market is not None:
        entry = canonical((p.net_cost / p.net_quantity).quantize(market.tick_size))
    data: dict[str, Any] = {}
    if event.kind is not None:
        data["e"] = event.kind
    data.update({"E": micros(now), "s": p.symbol, "b": entry, "B": entry, "f": canonical(config.initial_margin),
                 "M": entry, "m": canonical(config.maintenance_margin), "q": canonical(p.net_quantity),
                 "Q": canonical(abs(p.net_quantity)), "n": canonical(abs(p.net_cost)), "i": p.symbol,
                 "p": canonical(p.realized_pnl), "P": "0", "T": micros(event.at)})
    return data


def envelope(stream: str, data: Mapping[str, Any]) -> dict[str, Any]:
    return {"stream": stream, "data": data}
