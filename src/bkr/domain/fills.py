"""Fills: validation of a raw row, USD normalization, identity, and attribution.

`parse_fill` turns one row of a file or an HTTP batch (a mapping of field name to text or
number) into a `Fill`, or raises `InvalidInput` naming the field. `price_in_usd` prices it in
USD. `content_key` is what makes a re-sent fill a duplicate rather than a conflict.

A row whose `corrects` names an earlier fill is a *correction* of that fill: it restates the
trade (the same user, market, side, price, time, broker) with the signed amounts to add to it,
negative to reduce; a bust negates the original's quantity and fee. Corrections are stored as
rows of their own, so nothing stored, and nothing already paid, is ever edited.

A row may name its trade (`trade_id`): both sides of one trade carry the same id, within one
symbol, and `bkr.domain.trades` says when two sides make a self-trade, which is never broker volume.
"""

import difflib
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from bkr.domain.bounds import AMOUNT, bounded
from bkr.domain.errors import InvalidInput
from bkr.domain.money import D, canonical, magnitude, mul
from bkr.domain.periods import Month, as_utc, parse_instant
from bkr.domain.registry import BrokerId, as_broker_id


class MarketType(StrEnum):
    SPOT = "SPOT"
    PERP = "PERP"
    IPERP = "IPERP"
    DATED = "DATED"

    @property
    def is_futures(self) -> bool:
        return self is not MarketType.SPOT


class Side(StrEnum):
    BID = "Bid"
    ASK = "Ask"


# Backpack's fill types. Everything but `User` is a system fill and never broker volume.
USER_FILL = "User"
SYSTEM_FILL_TYPES = frozenset({
    "Liquidation", "Adl", "Backstop", "CollateralConversion", "AutoClose", "Settlement",
    "BackstopLiquidityProvider", "PositionTransfer", "Expiry",
})
FILL_TYPES = SYSTEM_FILL_TYPES | {USER_FILL}

FIELDS = ("fill_id", "order_id", "user_id", "symbol", "market_type", "side", "price", "quantity",
          "fee", "fee_symbol", "is_maker", "timestamp", "broker_id", "via_api", "fill_type", "corrects", "trade_id")
_FIELD_SET = frozenset(FIELDS)
REQUIRED = ("fill_id", "order_id", "user_id", "symbol", "market_type", "side", "price", "quantity",
            "fee", "fee_symbol", "is_maker", "timestamp")

_TRUE = {"true", "1", "t", "yes", "y"}
_FALSE = {"false", "0", "f", "no", "n"}


_MARKET_TYPES = {m.value: m for m in MarketType}
_SIDES = {s.value.lower(): s for s in Side}


class Attribution(StrEnum):
    """Why a stored fill does or does not count as broker volume."""

    COUNTED = "counted"  # attributed to an active broker; in the aggregates
    AWAITING_USER = "awaiting_user"  # would count, but its user (and so affiliate rate) is unknown
    NO_BROKER = "no_broker"
    WEB = "web"  # carried a broker id but did not arrive through the API
    SYSTEM = "system"
    BROKER_INACTIVE = "broker_inactive"
    BROKER_UNKNOWN = "broker_unknown"
    SELF_TRADE = "self_trade"  # one side of a trade whose two sides belong to one user: counted for nobody


@dataclass(frozen=True, slots=True)
class Fill:
    fill_id: str
    order_id: str
    user_id: str
    symbol: str
    market_type: MarketType
    side: Side
    price: Decimal
    quantity: Decimal
    fee: Decimal
    fee_symbol: str
    is_maker: bool
    timestamp: datetime
    broker_id: BrokerId | None
    via_api: bool
    fill_type: str
    corrects: str | None = None  # the fill this row corrects; quantity and fee are then differences
    trade_id: str | None = None  # the trade this fill is one side of (both sides carry it), within its symbol

    @property
    def month(self) -> Month:
        return Month.of(self.timestamp)

    @property
    def base_asset(self) -> str:
        return self.symbol.split("_")[0]

    @property
    def quote_asset(self) -> str:
        return self.symbol.split("_")[1]

    def content_key(self) -> str:
        """A digest of every field in canonical form: equal digests mean the same fill."""
        parts: tuple[str, ...] = (self.fill_id, self.order_id, self.user_id, self.symbol, self.market_type.value,
                 self.side.value, canonical(self.price), canonical(self.quantity), canonical(self.fee),
                 self.fee_symbol, "1" if self.is_maker else "0",
                 self.timestamp.isoformat(timespec="microseconds"),
                 "" if self.broker_id is None else str(self.broker_id),
                 "1" if self.via_api else "0", self.fill_type)
        if self.corrects is not None:  # an ordinary fill's key is unchanged by the field's existence
            parts += (self.corrects,)
        if self.trade_id is not None:  # likewise; after the `corrects` slot, empty or not, so never read as one
            parts += ("", self.trade_id) if self.corrects is None else (self.trade_id,)
        return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


def retroactive_id(fill_id: str, entry_id: int, *, taken_back: bool) -> str:
    """The fill_id of a row bkr writes when a retroactive registry change (audit entry
    `entry_id`) changes what a fill paid on an issued statement: `-out` takes back what it was
    paid as, `-in` pays it as the change decides. Only bkr writes corrections so named."""
    return f"{fill_id}#retroactive-{entry_id}-{'out' if taken_back else 'in'}"


def retroactive_part(fill_id: str, corrects: str | None) -> tuple[int, bool] | None:
    """(audit entry id, taken back) of a row `retroactive_id` names after the fill it corrects,
    else None."""
    if corrects is None or not fill_id.startswith(f"{corrects}#retroactive-"):
        return None
    entry, _, part = fill_id[len(corrects) + len("#retroactive-"):].partition("-")
    if not entry.isascii() or not entry.isdigit() or part not in ("out", "in"):
        return None
    return int(entry), part == "out"


@dataclass(frozen=True, slots=True)
class PricedFill:
    """A fill with its volume and fee in USD."""

    fill: Fill
    volume_usd: Decimal
    fee_usd: Decimal


def _text(row: Mapping[str, object], name: str) -> str:
    value = row.get(name)
    if value is None:
        raise InvalidInput(f"{name}: missing")
    text = str(value).strip()
    if not text:
        raise InvalidInput(f"{name}: missing")
    if "\x00" in text:  # no database stores it in text (PostgreSQL refuses it), and no id contains it
        raise InvalidInput(f"{name}: contains a NUL character")
    return text


def _optional_text(row: Mapping[str, object], name: str) -> str | None:
    value = row.get(name)
    if value is None or not str(value).strip():
        return None
    return _text(row, name)


def _decimal(row: Mapping[str, object], name: str) -> Decimal:
    value = row.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InvalidInput(f"{name}: missing")
    if isinstance(value, float):
        raise InvalidInput(f"{name}: a float ({value!r}) is not exact; send a decimal string")
    try:
        amount = D(value)  # type: ignore[arg-type]
    except InvalidInput as error:
        raise InvalidInput(f"{name}: {error}") from None
    return bounded(amount, AMOUNT, name)


def _bool(row: Mapping[str, object], name: str, default: bool | None = None) -> bool:
    value = row.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if default is None:
            raise InvalidInput(f"{name}: missing")
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidInput(f"{name}: not a boolean: {value!r}")


def _timestamp(row: Mapping[str, object], name: str) -> datetime:
    value = row.get(name)
    if isinstance(value, datetime):
        return as_utc(value)
    try:
        return parse_instant(_text(row, name))
    except InvalidInput as error:
        raise InvalidInput(f"{name}: {error}") from None


def _broker_id(row: Mapping[str, object]) -> BrokerId | None:
    value = row.get("broker_id")
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, (bool, float)):
        raise InvalidInput(f"broker_id: not an integer: {value!r}")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise InvalidInput(f"broker_id: not an integer: {value!r}") from None
    return as_broker_id(number)


def _trade_id(row: Mapping[str, object]) -> str | None:
    """An exchange's trade id is text or an integer (Backpack's `tradeId`); a boolean is neither."""
    if isinstance(row.get("trade_id"), bool):
        raise InvalidInput(f"trade_id: not an id: {row.get('trade_id')!r}")
    return _optional_text(row, "trade_id")


def unknown_field(names: Iterable[str]) -> str | None:
    """The reason to refuse a record or a header with a name that is not a fill field (a misspelled
    `brokerId` would otherwise lose the fill's attribution without a word), or None."""
    unknown = sorted(str(name) for name in names if name and name not in _FIELD_SET)
    if not unknown:
        return None
    name = unknown[0]
    close = difflib.get_close_matches(name.lower().replace("-", "_"), FIELDS, n=1, cutoff=0.7)
    hint = f"; did you mean {close[0]}?" if close else f"; the fields are {', '.join(FIELDS)}"
    others = f" (and {', '.join(unknown[1:])})" if len(unknown) > 1 else ""
    return f"{name[:64]}: not a fill field{others[:200]}{hint}"


def parse_fill(row: Mapping[str, object]) -> Fill:
    """Validate one raw row. Raises `InvalidInput` whose message starts with the field's name."""
    unknown = unknown_field(row)
    if unknown is not None:
        raise InvalidInput(unknown)
    symbol = _text(row, "symbol").upper()
    parts = symbol.split("_")
    if len(parts) < 2 or not all(parts):
        raise InvalidInput(f"symbol: not BASE_QUOTE[_KIND]: {symbol!r}")
    market_type = _MARKET_TYPES.get(_text(row, "market_type").upper())
    if market_type is None:
        raise InvalidInput(f"market_type: not one of SPOT, PERP, IPERP, DATED: {row.get('market_type')!r}")
    side = _SIDES.get(_text(row, "side").lower())
    if side is None:
        raise InvalidInput(f"side: not Bid or Ask: {row.get('side')!r}")
    price = _decimal(row, "price")
    if price <= 0:
        raise InvalidInput(f"price: must be positive, got {canonical(price)}")
    corrects = _optional_text(row, "corrects")
    quantity = _decimal(row, "quantity")
    fee = _decimal(row, "fee")
    if corrects is None and quantity <= 0:
        raise InvalidInput(f"quantity: must be positive, got {canonical(quantity)}")
    if corrects is not None and quantity.is_zero() and fee.is_zero():
        raise InvalidInput("corrects: a correction must change the quantity or the fee; both are 0")
    fill_id = _text(row, "fill_id")
    if corrects == fill_id:
        raise InvalidInput(f"corrects: a fill cannot correct itself ({fill_id!r})")
    fill_type = str(row.get("fill_type") or "").strip() or USER_FILL
    if fill_type not in FILL_TYPES:
        raise InvalidInput(f"fill_type: unknown: {fill_type!r}")
    return Fill(
        fill_id=fill_id,
        order_id=_text(row, "order_id"),
        user_id=_text(row, "user_id"),
        symbol=symbol,
        market_type=market_type,
        side=side,
        price=price,
        quantity=quantity,
        fee=fee,
        fee_symbol=_text(row, "fee_symbol").upper(),
        is_maker=_bool(row, "is_maker"),
        timestamp=_timestamp(row, "timestamp"),
        broker_id=_broker_id(row),
        via_api=_bool(row, "via_api", default=True),
        fill_type=fill_type,
        corrects=corrects,
        trade_id=_trade_id(row),
    )


def price_in_usd(fill: Fill, usd_rates: Mapping[str, Decimal]) -> PricedFill:
    """Volume = price × quantity in the quote asset, in USD; the fee in USD by its asset.

    A fee in the quote asset uses the quote's rate; in the base asset, `price ×` that; in any
    other asset, that asset's configured rate. A missing rate rejects the fill.
    """
    quote_rate = usd_rates.get(fill.quote_asset)
    if quote_rate is None:
        raise InvalidInput(f"symbol: no USD rate configured for quote asset {fill.quote_asset}")
    volume = mul(mul(fill.price, fill.quantity), quote_rate)
    if fill.fee_symbol == fill.quote_asset:
        fee = mul(fill.fee, quote_rate)
    elif fill.fee_symbol == fill.base_asset:
        fee = mul(mul(fill.fee, fill.price), quote_rate)
    else:
        fee_rate = usd_rates.get(fill.fee_symbol)
        if fee_rate is None:
            raise InvalidInput(f"fee_symbol: no USD rate configured for fee asset {fill.fee_symbol}")
        fee = mul(fill.fee, fee_rate)
    return PricedFill(fill, volume, fee)


@dataclass(frozen=True, slots=True)
class Plausibility:
    """What a fill's time and fee may be: not before the program started, at most
    `future_tolerance` ahead of bkr's clock (the exchange's clocks and bkr's differ a little), and a
    fee (or rebate) of at most `max_fee_share` of the fill's notional, both in USD."""

    earliest: datetime
    future_tolerance: timedelta
    max_fee_share: Decimal


def check_plausible(priced: PricedFill, now: datetime, rules: Plausibility) -> None:
    """Refuse a fill no exchange could have made, with the field to blame: bounds (in the parser)
    keep the arithmetic safe; this keeps a typo in a year or a fee from being paid."""
    moment = priced.fill.timestamp
    if moment > now + rules.future_tolerance:
        raise InvalidInput(f"timestamp: {moment.isoformat()} is in the future (bkr's clock says {now.isoformat()}; "
                           f"at most {_duration(rules.future_tolerance)} ahead is accepted)", field="timestamp")
    if moment < rules.earliest:
        raise InvalidInput(f"timestamp: {moment.isoformat()} is before the program's start "
                           f"({rules.earliest.isoformat()})", field="timestamp")
    fee = magnitude(priced.fee_usd)
    if priced.fill.corrects is None and fee_exceeds_share(priced.fee_usd, rules.max_fee_share, priced.volume_usd):
        raise InvalidInput(f"fee: {canonical(fee)} USD is more than {canonical(rules.max_fee_share)} "
                           f"× the fill's notional of {canonical(priced.volume_usd)} USD", field="fee")


def fee_exceeds_share(fee_usd: Decimal, share: Decimal, volume_usd: Decimal) -> bool:
    """Whether a fee (or a rebate) in USD is more than `share` of a notional of `volume_usd`."""
    return magnitude(fee_usd) > mul(share, volume_usd)


def _duration(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    return f"{seconds // 60} minutes" if seconds % 60 == 0 else f"{seconds} seconds"


def attribute(broker_id: int | None, fill_type: str, via_api: bool, broker_active: bool | None,
              user_known: bool, self_trade: bool = False) -> Attribution:
    """Whether a fill is broker volume. `broker_active` is None when the broker id is not enrolled.
    A side of a self-trade is that before anything else: no broker, status or user changes it."""
    if self_trade:
        return Attribution.SELF_TRADE
    if broker_id is None:
        return Attribution.NO_BROKER
    if fill_type != USER_FILL:
        return Attribution.SYSTEM
    if not via_api:
        return Attribution.WEB
    if broker_active is None:
        return Attribution.BROKER_UNKNOWN
    if not broker_active:
        return Attribution.BROKER_INACTIVE
    if not user_known:
        return Attribution.AWAITING_USER
    return Attribution.COUNTED
