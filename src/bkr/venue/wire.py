"""Backpack's wire format: order requests parsed from JSON, and the venue's records shaped as
Backpack answers them (field names, strings for decimals, `null` for what does not apply,
epoch milliseconds for live orders and naive UTC ISO text in histories)."""

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bkr.domain.errors import InvalidInput
from bkr.domain.fills import Side
from bkr.domain.money import canonical
from bkr.venue.book import OrderStatus, OrderType, SelfTradePrevention, TimeInForce
from bkr.venue.markets import Market
from bkr.venue.orders import OrderInput, OrderView

_ORDER_FIELDS = {"symbol", "side", "orderType", "price", "quantity", "quoteQuantity", "timeInForce", "postOnly",
                 "selfTradePrevention", "clientId", "brokerId"}
# Backpack fields the sandbox does not implement: refused by name rather than silently ignored
_UNSUPPORTED = {"triggerPrice", "triggerQuantity", "triggerBy", "stopLossTriggerPrice", "stopLossLimitPrice",
                "stopLossTriggerBy", "takeProfitTriggerPrice", "takeProfitLimitPrice", "takeProfitTriggerBy",
                "reduceOnly", "autoLend", "autoLendRedeem", "autoBorrow", "autoBorrowRepay", "slippageTolerance",
                "slippageToleranceType"}


def _enum(kind: Any, body: Mapping[str, Any], name: str, default: Any = None) -> Any:
    value = body.get(name)
    if value is None:
        if default is None:
            raise InvalidInput(f"{name}: missing", field=name)
        return default
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(v.value for v in kind)
        raise InvalidInput(f"{name}: {value!r} is not one of {allowed}", field=name) from None


def _amount(body: Mapping[str, Any], name: str) -> Decimal | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise InvalidInput(f"{name}: {value!r} is not a decimal", field=name)
    try:
        amount = Decimal(str(value).strip())
    except ArithmeticError:
        raise InvalidInput(f"{name}: {value!r} is not a decimal", field=name) from None
    if not amount.is_finite() or amount <= 0:
        raise InvalidInput(f"{name}: {value!r} must be a positive number", field=name)
    return amount


def parse_order(body: Any) -> OrderInput:
    """An `OrderExecutePayload`; unknown fields and features the sandbox lacks are refused."""
    if not isinstance(body, dict):
        raise InvalidInput("body: an order must be a JSON object", field="body")
    unsupported = sorted(set(body) & _UNSUPPORTED)
    if unsupported:
        raise InvalidInput(f"{unsupported[0]}: not supported by this sandbox (limit and market orders only)",
                           field=unsupported[0])
    unknown = sorted(set(body) - _ORDER_FIELDS)
    if unknown:
        raise InvalidInput(f"{unknown[0]}: unknown field", field=unknown[0])
    symbol = body.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise InvalidInput("symbol: missing", field="symbol")
    post_only = body.get("postOnly", False)
    if not isinstance(post_only, bool):
        raise InvalidInput(f"postOnly: {post_only!r} is not true or false", field="postOnly")
    client_id = body.get("clientId")
    if client_id is not None and (isinstance(client_id, bool) or not isinstance(client_id, int)
                                  or not 0 <= client_id < 2**32):
        raise InvalidInput(f"clientId: {client_id!r} is not an unsigned 32-bit integer", field="clientId")
    order_type = _enum(OrderType, body, "orderType")
    order = OrderInput(
        symbol=symbol, side=_enum(Side, body, "side"), order_type=order_type, price=_amount(body, "price"),
        quantity=_amount(body, "quantity"), quote_quantity=_amount(body, "quoteQuantity"),
        time_in_force=_enum(TimeInForce, body, "timeInForce", TimeInForce.GTC), post_only=post_only,
        self_trade_prevention=_enum(SelfTradePrevention, body, "selfTradePrevention",
                                    SelfTradePrevention.REJECT_TAKER),
        client_id=client_id)
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


def market_json(market: Market, created_at: datetime) -> dict[str, Any]:
    futures = market.is_futures
    return {
        "symbol": market.symbol, "baseSymbol": market.base, "quoteSymbol": market.quote,
        "marketType": market.market_type.value,
        "filters": {"price": {"minPrice": canonical(market.tick_size), "maxPrice": None,
                              "tickSize": canonical(market.tick_size)},
                    "quantity": {"minQuantity": canonical(market.step_size), "maxQuantity": None,
                                 "stepSize": canonical(market.step_size)}},
        "imfFunction": None, "mmfFunction": None, "fundingInterval": 28_800_000 if futures else None,
        "fundingRateUpperBound": None, "fundingRateLowerBound": None,
        "openInterestLimit": "0", "orderBookState": "Open", "createdAt": naive_iso(created_at), "visible": True,
    }
