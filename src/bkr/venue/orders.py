"""Orders as the venue's clients send and see them: `OrderInput` (a request, parsed by
`bkr.venue.wire.parse_order`), `OrderView` (an order as stored), and which statuses are open.

Order entry (`bkr.venue.exchange`), the read side (`bkr.venue.history`) and the wire format
(`bkr.venue.wire`) all speak in these, so they live apart from each of them.
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from bkr.domain.fills import Side
from bkr.venue.book import OrderStatus, OrderType, SelfTradePrevention, TimeInForce
from bkr.venue.directory import SentBrokerId

OPEN_STATUSES = (OrderStatus.NEW.value, OrderStatus.PARTIALLY_FILLED.value)


@dataclass(frozen=True, slots=True)
class OrderInput:
    """One order as a client sent it, parsed."""

    symbol: str
    side: Side
    order_type: OrderType
    price: Decimal | None = None
    quantity: Decimal | None = None
    quote_quantity: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    post_only: bool = False
    self_trade_prevention: SelfTradePrevention = SelfTradePrevention.REJECT_TAKER
    client_id: int | None = None
    broker_id: SentBrokerId | None = None  # the body's `brokerId`, as sent (the header is the request's)


@dataclass(frozen=True, slots=True)
class OrderView:
    order_id: int
    user_id: str
    symbol: str
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    post_only: bool
    self_trade_prevention: SelfTradePrevention
    price: Decimal | None
    quantity: Decimal | None
    quote_quantity: Decimal | None
    executed_quantity: Decimal
    executed_quote_quantity: Decimal
    status: OrderStatus
    expiry_reason: str | None
    client_id: int | None
    broker_id: int | None
    created_at: datetime


def order_view(row: Any) -> OrderView:
    """An order as stored (a row of `venue_orders`)."""
    return OrderView(int(row.order_id), row.user_id, row.symbol, Side(row.side), OrderType(row.order_type),
                     TimeInForce(row.time_in_force), bool(row.post_only),
                     SelfTradePrevention(row.self_trade_prevention), row.price, row.quantity, row.quote_quantity,
                     row.executed_quantity, row.executed_quote_quantity, OrderStatus(row.status), row.expiry_reason,
                     row.client_id, row.broker_id, row.created_at)
