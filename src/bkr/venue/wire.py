"""Backpack's wire format: requests read from JSON and query parameters, each value bounded, and
the venue's records shaped as Backpack answers them (field names, strings for decimals, `null`
for what does not apply, epoch milliseconds for live orders and naive UTC ISO text in histories).

A request is read only as far as Backpack's requests go: a body is an object of scalar values or
an array of such objects (a batch), and nothing nested deeper is parsed at all; amounts are
plain decimals (`"150.25"`) within `bkr.domain.bounds.AMOUNT`; whole numbers are ASCII digits
within the bounds of what they count. Anything else is `InvalidInput` naming the field, and no
message quotes more than `SHOWN` characters of what was sent.
"""

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bkr.domain.bounds import AMOUNT, bounded
from bkr.domain.errors import InvalidInput
from bkr.domain.fills import Side
from bkr.domain.money import canonical
from bkr.venue.book import OrderStatus, OrderType, SelfTradePrevention, TimeInForce
from bkr.venue.directory import body_broker_id
from bkr.venue.errors import InvalidMarket
from bkr.venue.history import MAX_PAGE
from bkr.venue.klines import Kline, KlineInterval
from bkr.venue.markets import Market
from bkr.venue.orders import OrderInput, OrderView

SHOWN = 40  # characters of a sent value an error message quotes at most
MAX_DEPTH = 2  # an array (a batch) of objects; no Backpack body nests deeper
MAX_SYMBOL = 64  # characters of a market symbol (Backpack's are a few dozen at most)
MAX_ID = 2**63 - 1  # order ids are the database's signed 64-bit integers
MAX_CLIENT_ID = 2**32 - 1  # Backpack's clientId is an unsigned 32-bit integer
MAX_MILLIS = 253_402_300_799_999  # the last millisecond of the year 9999
MAX_SECONDS = MAX_MILLIS // 1000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Scalar = str | int | Decimal | bool | None
Params = Mapping[str, Any]

_PLAIN_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_DIGITS = re.compile(r"[0-9]+")
_STRUCTURE = re.compile(r'[\[\]{}"\\]')


# --- requests ---------------------------------------------------------------------------------------

def shown(value: object) -> str:
    """`value` as an error message quotes it: its repr, cut to `SHOWN` characters."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 4 * SHOWN:
        return f"a whole number of {value.bit_length():,} bits"  # (its digits could not even be printed)
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}… ({len(text):,} characters)"


def read_body(raw: bytes) -> Any:
    """A request's JSON body (an empty body is `{}`). Its nesting is measured before anything is
    parsed; numbers stay exact `Decimal`s and are written out in digits (no `NaN`, no `1e5`);
    a key given twice is refused rather than one of its values silently dropped."""
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InvalidInput(f"body: not UTF-8 text ({error.reason} at byte {error.start})", field="body") from None
    _check_depth(text)
    try:
        return json.loads(text, parse_float=_json_decimal, parse_constant=_json_constant,
                          object_pairs_hook=_json_object)
    except json.JSONDecodeError as error:
        raise InvalidInput(f"body: not valid JSON: {error.msg} at line {error.lineno} column {error.colno}",
                           field="body") from None
    except ValueError:  # an integer of more digits than Python converts
        raise InvalidInput("body: a number has too many digits", field="body") from None


def _check_depth(text: str) -> None:
    """Refuse JSON nested deeper than `MAX_DEPTH`, by its brackets outside strings: a body of a
    million `[` costs one scan and no recursion."""
    depth, in_string, escaped_at = 0, False, -1
    for match in _STRUCTURE.finditer(text):
        char, at = match.group(), match.start()
        if in_string:
            if at == escaped_at:
                continue
            if char == "\\":
                escaped_at = at + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise InvalidInput(f"body: JSON nested more than {MAX_DEPTH} levels deep; a body is an object of "
                                   "values, or an array of such objects (a batch)", field="body")
        else:
            depth -= 1  # unbalanced brackets are the JSON parser's to report


def _json_decimal(text: str) -> Decimal:
    if "e" in text or "E" in text:
        raise InvalidInput(f"body: the number {shown(text)} is in exponent form; write it out in digits",
                           field="body")
    return Decimal(text)


def _json_constant(name: str) -> Any:
    raise InvalidInput(f"body: {name} is not a number JSON allows", field="body")


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise InvalidInput(f"{shown(key)}: given twice", field="body")
        found[key] = value
    return found


def params_of(body: Any, what: str = "body") -> dict[str, Scalar]:
    """A signed request's parameters: a JSON object whose values are strings, numbers, booleans
    or null (what Backpack's signing string can hold)."""
    if not isinstance(body, dict):
        raise InvalidInput(f"{what}: expected a JSON object, not {_json_kind(body)}", field="body")
    for key, value in body.items():
        if not isinstance(value, Scalar):
            raise InvalidInput(f"{shown(key)}: expected a string, number or boolean, not {_json_kind(value)}",
                               field=key[:SHOWN])
    return body


def batch_of(body: Any) -> list[dict[str, Scalar]]:
    """A batch (POST /api/v1/orders): a JSON array of order objects."""
    if not isinstance(body, list):
        raise InvalidInput(f"body: a batch is a JSON array of orders, not {_json_kind(body)}", field="body")
    return [params_of(item, f"body[{index}]") for index, item in enumerate(body)]


def _json_kind(value: Any) -> str:
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


def whole_number(params: Params, name: str, low: int, high: int, default: int | None = None) -> int | None:
    """A whole number in `low..high`, sent as a JSON integer or as ASCII digits (a query string's
    text): `None` or the empty string is `default`; a sign, a point, `1_000`, `٣` or `１` are refused."""
    value = params.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _DIGITS.fullmatch(value):
        number = int(value) if len(value) <= 40 else high + 1  # (more digits than any bound here)
    else:
        raise InvalidInput(f"{name}: {shown(value)} is not a whole number written in digits", field=name)
    if not low <= number <= high:
        raise InvalidInput(f"{name}: {shown(number)} is outside {low}..{high}", field=name)
    return number


def instant(params: Params, name: str) -> datetime | None:
    """A moment sent as milliseconds since the epoch (Backpack's `from`, `to`)."""
    millis_ = whole_number(params, name, 0, MAX_MILLIS)
    return None if millis_ is None else EPOCH + timedelta(milliseconds=millis_)


def instant_seconds(params: Params, name: str) -> datetime | None:
    """A moment sent as seconds since the epoch (the K-lines' `startTime`, `endTime`)."""
    seconds = whole_number(params, name, 0, MAX_SECONDS)
    return None if seconds is None else EPOCH + timedelta(seconds=seconds)


def kline_interval(params: Params) -> KlineInterval:
    """The K-lines' `interval`: one of Backpack's, as it spells them."""
    value = params.get("interval")
    if value is None or value == "":
        raise InvalidInput("interval: missing", field="interval")
    try:
        return KlineInterval(value)
    except ValueError:
        allowed = ", ".join(i.value for i in KlineInterval)
        raise InvalidInput(f"interval: {shown(value)} is not one of {allowed}", field="interval") from None


def page(params: Params) -> tuple[int, int, bool]:
    """A history page: `limit` (1..`MAX_PAGE`), `offset`, and whether `sortDirection` is `Asc`."""
    limit = whole_number(params, "limit", 1, MAX_PAGE, 100)
    offset = whole_number(params, "offset", 0, MAX_ID, 0)
    direction = params.get("sortDirection") or "Desc"
    if direction not in ("Asc", "Desc"):
        raise InvalidInput(f"sortDirection: {shown(direction)} is not Asc or Desc", field="sortDirection")
    assert limit is not None and offset is not None
    return limit, offset, direction == "Asc"


def order_target(params: Params) -> tuple[int | None, int | None]:
    """The order a cancel or a query names: exactly one of `orderId` and `clientId`."""
    order_id = whole_number(params, "orderId", 0, MAX_ID)
    client_id = whole_number(params, "clientId", 0, MAX_CLIENT_ID)
    if (order_id is None) == (client_id is None):
        raise InvalidInput("exactly one of orderId and clientId must be given", field="orderId")
    return order_id, client_id


def symbol_of(params: Params, name: str = "symbol") -> str | None:
    """A market symbol as sent (not yet looked up): text of at most `MAX_SYMBOL` characters."""
    value = params.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_SYMBOL:
        raise InvalidMarket(f"Invalid market: {shown(value)}", field=name)
    return value


_ORDER_FIELDS = {"symbol", "side", "orderType", "price", "quantity", "quoteQuantity", "timeInForce", "postOnly",
                 "selfTradePrevention", "clientId", "brokerId"}
# Backpack fields the sandbox does not implement: refused by name rather than silently ignored
_UNSUPPORTED = {"triggerPrice", "triggerQuantity", "triggerBy", "stopLossTriggerPrice", "stopLossLimitPrice",
                "stopLossTriggerBy", "takeProfitTriggerPrice", "takeProfitLimitPrice", "takeProfitTriggerBy",
                "reduceOnly", "autoLend", "autoLendRedeem", "autoBorrow", "autoBorrowRepay", "slippageTolerance",
                "slippageToleranceType"}


def _enum(kind: Any, body: Params, name: str, default: Any = None) -> Any:
    value = body.get(name)
    if value is None:
        if default is None:
            raise InvalidInput(f"{name}: missing", field=name)
        return default
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(v.value for v in kind)
        raise InvalidInput(f"{name}: {shown(value)} is not one of {allowed}", field=name) from None


def _amount(body: Params, name: str) -> Decimal | None:
    """A price or quantity as Backpack's clients send it: a string (or a JSON number) of plain
    digits with an optional point, positive, within `AMOUNT`. `Decimal` itself would also take
    `1_0`, ` 1`, `+1`, `1e3`, `NaN` and `Infinity`; none of them is a wire amount."""
    value = body.get(name)
    if value is None:
        return None
    plain = isinstance(value, (str, Decimal)) and _PLAIN_DECIMAL.fullmatch(str(value)) is not None
    if not (plain or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)):
        raise InvalidInput(f"{name}: {shown(value)} is not a positive decimal number written in digits, "
                           'such as "150.25"', field=name)
    amount = bounded(Decimal(value) if isinstance(value, int) else Decimal(str(value)), AMOUNT, name)
    if amount <= 0:
        raise InvalidInput(f"{name}: {shown(value)} must be a positive number", field=name)
    return amount


def parse_order(body: Any) -> OrderInput:
    """An `OrderExecutePayload`; unknown fields and features the sandbox lacks are refused. Its
    `brokerId` is kept as sent: a malformed one is the broker policy's to judge, as a malformed
    `X-Broker-Id` is (`bkr.venue.directory`), not an invalid order."""
    if not isinstance(body, dict):
        raise InvalidInput("body: an order must be a JSON object", field="body")
    unsupported = sorted(set(body) & _UNSUPPORTED)
    if unsupported:
        raise InvalidInput(f"{unsupported[0]}: not supported by this sandbox (limit and market orders only)",
                           field=unsupported[0])
    unknown = sorted(set(body) - _ORDER_FIELDS)
    if unknown:
        raise InvalidInput(f"{shown(unknown[0])}: unknown field", field=unknown[0][:SHOWN])
    symbol = symbol_of(body)
    if symbol is None:
        raise InvalidInput("symbol: missing", field="symbol")
    post_only = body.get("postOnly", False)
    if not isinstance(post_only, bool):
        raise InvalidInput(f"postOnly: {shown(post_only)} is not true or false", field="postOnly")
    client_id = body.get("clientId")
    if client_id is not None and (isinstance(client_id, bool) or not isinstance(client_id, int)
                                  or not 0 <= client_id <= MAX_CLIENT_ID):
        raise InvalidInput(f"clientId: {shown(client_id)} is not an unsigned 32-bit integer", field="clientId")
    order_type = _enum(OrderType, body, "orderType")
    order = OrderInput(
        symbol=symbol, side=_enum(Side, body, "side"), order_type=order_type, price=_amount(body, "price"),
        quantity=_amount(body, "quantity"), quote_quantity=_amount(body, "quoteQuantity"),
        time_in_force=_enum(TimeInForce, body, "timeInForce", TimeInForce.GTC), post_only=post_only,
        self_trade_prevention=_enum(SelfTradePrevention, body, "selfTradePrevention",
                                    SelfTradePrevention.REJECT_TAKER),
        client_id=client_id, broker_id=body_broker_id(body.get("brokerId")))
    if order_type is OrderType.LIMIT and (order.price is None or order.quantity is None):
        raise InvalidInput("A limit order needs a price and a quantity", field="price")
    if order_type is OrderType.LIMIT and order.quote_quantity is not None:
        raise InvalidInput("quoteQuantity: only for market orders", field="quoteQuantity")
    if order_type is OrderType.MARKET:
        if (order.quantity is None) == (order.quote_quantity is None):
            raise InvalidInput("A market order needs exactly one of quantity and quoteQuantity", field="quantity")
        if order.price is not None or order.post_only:
            raise InvalidInput("price and postOnly apply to limit orders only", field="price")
    return order


def text(amount: Decimal | None) -> str | None:
    return None if amount is None else canonical(amount)


def millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def naive_iso(moment: datetime) -> str:
    """Backpack's history timestamps: UTC, no offset, milliseconds."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds")


def order_json(order: OrderView, *, history: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(order.order_id), "clientId": order.client_id,
        "createdAt": naive_iso(order.created_at) if history else millis(order.created_at),
        "executedQuantity": canonical(order.executed_quantity),
        "executedQuoteQuantity": canonical(order.executed_quote_quantity),
        "orderType": order.order_type.value, "quantity": text(order.quantity),
        "selfTradePrevention": order.self_trade_prevention.value, "side": order.side.value,
        "status": order.status.value, "symbol": order.symbol, "timeInForce": order.time_in_force.value,
        "stopLossLimitPrice": None, "stopLossTriggerBy": None, "stopLossTriggerPrice": None, "strategyId": None,
        "takeProfitLimitPrice": None, "takeProfitTriggerBy": None, "takeProfitTriggerPrice": None,
        "triggerBy": None, "triggerPrice": None, "triggerQuantity": None, "systemOrderType": None,
    }
    if order.order_type is OrderType.LIMIT:
        body.update(price=text(order.price), postOnly=order.post_only)
    else:
        body.update(quoteQuantity=text(order.quote_quantity))
    if history:
        body["expiryReason"] = order.expiry_reason
        if order.order_type is OrderType.MARKET:
            body.update(price=None, postOnly=False)
    else:
        body.update(reduceOnly=None, relatedOrderId=None, triggeredAt=None)
    return body


def is_open(order: OrderView) -> bool:
    return order.status in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)


def kline_json(kline: Kline) -> dict[str, Any]:
    """A candle as Backpack's `Kline`: its interval as UTC `YYYY-MM-DD HH:MM:SS` text, every
    figure a string (the trade count too)."""
    return {"start": kline.start.strftime("%Y-%m-%d %H:%M:%S"), "end": kline.end.strftime("%Y-%m-%d %H:%M:%S"),
            "open": canonical(kline.open), "high": canonical(kline.high), "low": canonical(kline.low),
            "close": canonical(kline.close), "volume": canonical(kline.volume),
            "quoteVolume": canonical(kline.quote_volume), "trades": str(kline.trades)}


def market_json(market: Market, created_at: datetime) -> dict[str, Any]:
    futures = market.is_futures
    return {
        "symbol": market.symbol, "baseSymbol": market.base, "quoteSymbol": market.quote,
        "marketType": market.market_type.value,
        "filters": {"price": {"minPrice": canonical(market.tick_size), "maxPrice": None,
                              "tickSize": canonical(market.tick_size)},
                    "quantity": {"minQuantity": canonical(market.step_size), "maxQuantity": None,
                                 "stepSize": canonical(market.step_size)}},
        "imfFunction": None, "mmfFunction": None, "fundingInterval": (
            int(market.funding_interval.total_seconds()) * 1000 if futures else None),
        "fundingRateUpperBound": None, "fundingRateLowerBound": None,
        "openInterestLimit": "0", "orderBookState": "Open", "createdAt": naive_iso(created_at), "visible": True,
    }
