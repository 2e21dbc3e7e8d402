"""The venue's HTTP face: Backpack's REST paths, parameters and answers under `/api/v1` and
`/wapi/v1`, signed exactly as Backpack documents (ED25519 over `instruction=…&<sorted
parameters>&timestamp=…&window=…`). Errors are Backpack's `{"code", "message"}`.

These routes follow Backpack's API document, not bkr's: they are left out of bkr's OpenAPI.
"""

import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse

from bkr.api.deps import ServicesDep, record_use
from bkr.api.errors import backpack_error
from bkr.api.observability import identify
from bkr.domain.errors import InvalidInput, Unauthenticated
from bkr.domain.money import canonical
from bkr.domain.signing import (
    batch_signing_string,
    check_timing,
    parse_timing,
    public_key,
    signing_string,
    verifies,
)
from bkr.program import keys
from bkr.store import db
from bkr.venue import accounts, funding, history, klines
from bkr.venue.errors import InvalidMarket
from bkr.venue.exchange import Venue
from bkr.venue.history import FillView
from bkr.venue.margin import MarketExposure
from bkr.venue.markets import Market
from bkr.venue.wire import (
    MAX_ID,
    batch_of,
    instant,
    instant_seconds,
    kline_interval,
    kline_json,
    market_json,
    millis,
    naive_iso,
    order_json,
    order_target,
    page,
    params_of,
    parse_order,
    read_body,
    shown,
    symbol_of,
    text,
    whole_number,
)

router = APIRouter(include_in_schema=False)
LISTED_AT = datetime(2026, 1, 1, tzinfo=UTC)  # the markets' `createdAt`
MAX_DEPTH_LEVELS = 5000  # price levels GET /api/v1/depth lists at most


def get_venue(request: Request) -> Venue:
    return request.app.state.venue  # type: ignore[no-any-return]


VenueDep = Annotated[Venue, Depends(get_venue)]


# --- signed requests ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SignedUser:
    user_id: str
    body: Any  # the signed parameters: a JSON object (a list of them for a batch) for POST and DELETE


QUOTED = 1_000  # characters of the expected signing string a refusal quotes at most


def _urlencoded(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters as a client that percent-encodes values signs them (ccxt does)."""
    return {k: urllib.parse.quote(v if isinstance(v, str) else str(v), safe="") if not isinstance(v, bool) else v
            for k, v in params.items()}


def _expected(message: str) -> str:
    if len(message) <= QUOTED:
        return repr(message)
    return f"{message[:QUOTED]!r}… (the first {QUOTED:,} of {len(message):,} characters)"


def signed_by_user(instruction: str, *, batch: bool = False) -> Callable[..., Any]:
    """Backpack's request signing, checked in the order that reads least of what a stranger
    sends: the headers first (key, signature, timing), then whether the key is one of ours; only
    then is the body read (its size is bounded by `bkr.api.limits` before any of this runs), and
    parsed as far as Backpack's bodies go (`wire.read_body`), to build the string that was signed."""

    async def authenticate(request: Request, services: ServicesDep) -> SignedUser:
        headers = request.headers
        api_key = headers.get("x-api-key")
        if not api_key:
            raise Unauthenticated("X-API-Key is missing", code="UNAUTHORIZED", field="X-API-Key")
        key = public_key(api_key)
        signature = headers.get("x-signature")
        if not signature:
            raise Unauthenticated("X-Signature is missing", code="INVALID_SIGNATURE", field="X-Signature")
        timestamp, window = parse_timing(headers.get("x-timestamp"), headers.get("x-window"))
        check_timing(timestamp, window, int(services.clock().timestamp() * 1000))
        now = services.clock()
        with db.snapshot(services.engine) as connection:
            holder = keys.user_key(connection, api_key, now)
        if holder is None or holder.user_id is None:
            raise Unauthenticated("unknown, revoked or expired API key", code="UNAUTHORIZED", field="X-API-Key")
        user_id = holder.user_id
        body = await _json_body(request) if request.method in ("POST", "DELETE") else None
        if batch:
            items = batch_of(body)
            candidates = [batch_signing_string(instruction, items, timestamp, window),
                          batch_signing_string(instruction, [_urlencoded(i) for i in items], timestamp, window)]
        else:
            params = params_of(dict(request.query_params) if body is None else body)
            candidates = [signing_string(instruction, params, timestamp, window),
                          signing_string(instruction, _urlencoded(params), timestamp, window)]
            if request.method in ("POST", "DELETE"):
                body = params  # a JSON `null` body: what was signed is the query's parameters
        if not any(verifies(key, signature, message) for message in candidates):
            raise Unauthenticated(f"signature does not verify; sign {_expected(candidates[0])}",
                                  code="INVALID_SIGNATURE", field="X-Signature")
        identify(request, user_id=user_id)
        await run_in_threadpool(record_use, services, api_key, holder.last_used_at, now)  # a write: off the loop
        return SignedUser(user_id, body)

    return authenticate


async def _json_body(request: Request) -> Any:
    """The body as JSON, unless it says it is something else (an empty body is `{}`)."""
    declared = request.headers.get("content-type")
    raw = await request.body()
    if raw.strip() and declared is not None and declared.split(";")[0].strip().lower() != "application/json":
        raise InvalidInput(f"Content-Type: {shown(declared)} is not JSON; send the body as application/json",
                           field="Content-Type")
    return read_body(raw)


def _broker_header(request: Request) -> str | None:
    return request.headers.get("x-broker-id")  # Starlette's headers are case-insensitive


def _market(venue: Venue, params: Mapping[str, Any]) -> Market:
    symbol = symbol_of(params)
    market = venue.config.market(symbol or "")
    if market is None:
        raise InvalidMarket(f"Invalid market: {shown(symbol)}", field="symbol")
    return market


def _symbols(venue: Venue, params: Mapping[str, Any], market_types: Sequence[str] = ()) -> list[str] | None:
    if symbol_of(params):
        return [_market(venue, params).symbol]
    if market_types:
        return [m.symbol for m in venue.config.markets if m.market_type.value in market_types]
    return None


# --- public -----------------------------------------------------------------------------------------

@router.get("/api/v1/status")
def status() -> dict[str, Any]:
    return {"status": "Ok", "message": None}


@router.get("/api/v1/ping")
def ping() -> PlainTextResponse:
    return PlainTextResponse("pong")


@router.get("/api/v1/time")
def time(services: ServicesDep) -> PlainTextResponse:
    return PlainTextResponse(str(millis(services.clock())))


@router.get("/api/v1/assets")
def assets(venue: VenueDep) -> list[dict[str, Any]]:
    symbols = sorted({m.base for m in venue.config.markets} | {m.quote for m in venue.config.markets})
    return [{"symbol": s, "displayName": s, "coingeckoId": None, "tokens": []} for s in symbols]


@router.get("/api/v1/securities")
def securities() -> list[dict[str, Any]]:
    return []


@router.get("/api/v1/markets")
def markets(venue: VenueDep, request: Request) -> list[dict[str, Any]]:
    wanted = request.query_params.getlist("marketType")
    return [market_json(m, LISTED_AT) for m in venue.config.markets
            if not wanted or m.market_type.value in wanted]


@router.get("/api/v1/market")
def market(venue: VenueDep, request: Request) -> dict[str, Any]:
    return market_json(_market(venue, request.query_params), LISTED_AT)


def _ticker_json(t: history.Ticker) -> dict[str, Any]:
    change = (t.last_price - t.first_price) if t.last_price is not None and t.first_price is not None else None
    percent = (change / t.first_price).quantize(Decimal("0.000001")) if change is not None and t.first_price else None
    return {"symbol": t.symbol, "firstPrice": text(t.first_price) or "0", "lastPrice": text(t.last_price) or "0",
            "high": text(t.high) or "0", "low": text(t.low) or "0", "priceChange": text(change) or "0",
            "priceChangePercent": text(percent) or "0", "volume": canonical(t.volume),
            "quoteVolume": canonical(t.quote_volume), "trades": str(t.trades)}


@router.get("/api/v1/ticker")
def ticker(venue: VenueDep, services: ServicesDep, request: Request) -> dict[str, Any]:
    chosen = _market(venue, request.query_params)
    with db.snapshot(services.engine) as connection:
        return _ticker_json(history.ticker(connection, chosen, services.clock()))


@router.get("/api/v1/tickers")
def tickers(venue: VenueDep, services: ServicesDep) -> list[dict[str, Any]]:
    now = services.clock()
    with db.snapshot(services.engine) as connection:
        return [_ticker_json(history.ticker(connection, m, now)) for m in venue.config.markets]


@router.get("/api/v1/depth")
def depth(venue: VenueDep, services: ServicesDep, request: Request) -> dict[str, Any]:
    chosen = _market(venue, request.query_params)
    levels = whole_number(request.query_params, "limit", 1, MAX_DEPTH_LEVELS, 1000)
    bids, asks, sequence = venue.depth(chosen.symbol, levels)
    return {"asks": [[canonical(p), canonical(q)] for p, q in asks],
            "bids": [[canonical(p), canonical(q)] for p, q in reversed(bids)],  # ascending, as Backpack lists them
            "lastUpdateId": str(sequence), "timestamp": int(services.clock().timestamp() * 1_000_000)}


def _public_trade(fill: FillView) -> dict[str, Any]:
    return {"id": fill.trade_id, "price": canonical(fill.price), "quantity": canonical(fill.quantity),
            "quoteQuantity": canonical(fill.price * fill.quantity), "timestamp": millis(fill.timestamp),
            "isBuyerMaker": fill.side == "Ask"}  # the taker sold: the buyer was the maker


@router.get("/api/v1/trades")
def trades(venue: VenueDep, services: ServicesDep, request: Request) -> list[dict[str, Any]]:
    params = request.query_params
    chosen = _market(venue, params)
    limit = whole_number(params, "limit", 1, history.MAX_PAGE, 100)
    assert limit is not None
    with db.snapshot(services.engine) as connection:
        found = history.recent_trades(connection, chosen.symbol, limit)
    return [_public_trade(f) for f in found]


@router.get("/api/v1/trades/history")
def trades_history(venue: VenueDep, services: ServicesDep, request: Request) -> list[dict[str, Any]]:
    params = request.query_params
    chosen = _market(venue, params)
    limit = whole_number(params, "limit", 1, history.MAX_PAGE, 100)
    offset = whole_number(params, "offset", 0, MAX_ID, 0)
    assert limit is not None and offset is not None
    with db.snapshot(services.engine) as connection:
        found = history.recent_trades(connection, chosen.symbol, limit, offset)
    return [_public_trade(f) for f in found]


# --- private: orders --------------------------------------------------------------------------------

@router.post("/api/v1/order")
def execute_order(request: Request, venue: VenueDep,
                  user: Annotated[SignedUser, Depends(signed_by_user("orderExecute"))]) -> dict[str, Any]:
    order = parse_order(user.body)
    result = venue.execute(user.user_id, [order], _broker_header(request))[0]
    assert not isinstance(result, Exception)
    return order_json(result)


@router.post("/api/v1/orders")
def execute_orders(request: Request, venue: VenueDep,
                   user: Annotated[SignedUser, Depends(signed_by_user("orderExecute", batch=True))]
                   ) -> list[dict[str, Any]]:
    parsed: list[Any] = []
    for item in user.body:
        try:
            parsed.append(parse_order(item))
        except InvalidInput as error:
            parsed.append(error)
    valid = [p for p in parsed if not isinstance(p, Exception)]
    results = iter(venue.execute(user.user_id, valid, _broker_header(request), batch=True) if valid else [])
    answer = []
    for item in parsed:
        outcome = item if isinstance(item, Exception) else next(results)
        if isinstance(outcome, Exception):
            answer.append({"operation": "Err", "code": _backpack_code(outcome), "message": str(outcome)})
        else:
            answer.append({"operation": "Ok", **order_json(outcome)})
    return answer


def _backpack_code(error: Exception) -> str:
    return backpack_error(error)[1]


@router.delete("/api/v1/order")
def cancel_order(venue: VenueDep,
                 user: Annotated[SignedUser, Depends(signed_by_user("orderCancel"))]) -> dict[str, Any]:
    order_id, client_id = order_target(user.body)
    return order_json(venue.cancel(user.user_id, _market(venue, user.body).symbol, order_id, client_id))


@router.delete("/api/v1/orders")
def cancel_orders(venue: VenueDep,
                  user: Annotated[SignedUser, Depends(signed_by_user("orderCancelAll"))]) -> list[dict[str, Any]]:
    symbol = _market(venue, user.body).symbol
    return [order_json(o) for o in venue.cancel_all(user.user_id, symbol)]


@router.get("/api/v1/order")
def get_order(request: Request, venue: VenueDep, services: ServicesDep,
              user: Annotated[SignedUser, Depends(signed_by_user("orderQuery"))]) -> dict[str, Any]:
    params = request.query_params
    order_id, client_id = order_target(params)
    with db.snapshot(services.engine) as connection:
        found = history.open_order(connection, user.user_id, _market(venue, params).symbol,
                                   order_id, client_id)
    return order_json(found)


@router.get("/api/v1/orders")
def get_open_orders(request: Request, venue: VenueDep, services: ServicesDep,
                    user: Annotated[SignedUser, Depends(signed_by_user("orderQueryAll"))]) -> list[dict[str, Any]]:
    symbols = _symbols(venue, request.query_params, request.query_params.getlist("marketType"))
    with db.snapshot(services.engine) as connection:
        return [order_json(o) for o in history.open_orders(connection, user.user_id, symbols)]


# --- private: history, capital, account -------------------------------------------------------------

@router.get("/wapi/v1/history/fills")
def fills_history(request: Request, venue: VenueDep, services: ServicesDep,
                  user: Annotated[SignedUser, Depends(signed_by_user("fillHistoryQueryAll"))]
                  ) -> list[dict[str, Any]]:
    params = request.query_params
    fill_type = params.get("fillType")
    if fill_type not in (None, "", "User"):
        return []  # the sandbox has no liquidations or other system fills
    limit, offset, ascending = page(params)
    order_id, since, until = whole_number(params, "orderId", 0, MAX_ID), instant(params, "from"), instant(params, "to")
    with db.snapshot(services.engine) as connection:
        found = history.fill_history(
            connection, user.user_id, symbols=_symbols(venue, params, params.getlist("marketType")),
            order_id=order_id, since=since, until=until,
            limit=limit, offset=offset, ascending=ascending)
    return [{"clientId": None if f.client_id is None else str(f.client_id), "fee": canonical(f.fee),
             "feeSymbol": f.fee_symbol, "isMaker": f.is_maker, "orderId": str(f.order_id),
             "price": canonical(f.price), "quantity": canonical(f.quantity), "side": f.side, "symbol": f.symbol,
             "systemOrderType": None, "timestamp": naive_iso(f.timestamp), "tradeId": f.trade_id} for f in found]


@router.get("/wapi/v1/history/orders")
def orders_history(request: Request, venue: VenueDep, services: ServicesDep,
                   user: Annotated[SignedUser, Depends(signed_by_user("orderHistoryQueryAll"))]
                   ) -> list[dict[str, Any]]:
    params = request.query_params
    limit, offset, ascending = page(params)
    order_id = whole_number(params, "orderId", 0, MAX_ID)
    with db.snapshot(services.engine) as connection:
        found = history.order_history(connection, user.user_id,
                                      symbols=_symbols(venue, params, params.getlist("marketType")),
                                      order_id=order_id, limit=limit, offset=offset,
                                      ascending=ascending)
    return [order_json(o, history=True) for o in found]


@router.get("/api/v1/capital")
def capital(venue: VenueDep, services: ServicesDep,
            user: Annotated[SignedUser, Depends(signed_by_user("balanceQuery"))]) -> dict[str, Any]:
    venue.settle_funding()  # balances are shown with the funding already due
    with db.snapshot(services.engine) as connection:
        found = accounts.balances(connection, user.user_id)
    return {b.asset: {"available": canonical(b.available), "locked": canonical(b.locked), "staked": "0"}
            for b in found}


def _bps(rate: Decimal) -> str:
    return canonical(rate * 10_000)


@router.get("/api/v1/account")
def account(venue: VenueDep, services: ServicesDep,
            user: Annotated[SignedUser, Depends(signed_by_user("accountQuery"))]) -> dict[str, Any]:
    with db.snapshot(services.engine) as connection:
        fees = venue.config.fees(accounts.fee_tier(connection, user.user_id))
        open_count = len(history.open_orders(connection, user.user_id))
    return {"autoBorrowSettlements": False, "autoLend": False, "autoRealizePnl": True, "autoRepayBorrows": False,
            "borrowLimit": "0", "futuresMakerFee": _bps(fees.futures_maker),
            "futuresTakerFee": _bps(fees.futures_taker),
            "leverageLimit": canonical(1 / venue.config.initial_margin), "limitOrders": open_count,
            "liquidating": False, "positionLimit": "0", "spotMakerFee": _bps(fees.spot_maker),
            "spotTakerFee": _bps(fees.spot_taker), "triggerOrders": 0}


@router.get("/api/v1/position")
def position(request: Request, venue: VenueDep, services: ServicesDep,
             user: Annotated[SignedUser, Depends(signed_by_user("positionQuery"))]) -> list[dict[str, Any]]:
    params = request.query_params
    venue.settle_funding()  # a position is shown with the funding already due on it
    marks = venue.mark_prices()
    with db.snapshot(services.engine) as connection:
        found = accounts.positions(connection, user.user_id, _market(venue, params).symbol if symbol_of(params)
                                   else None)
        lives = {life.symbol: life for life in funding.position_history(connection, user.user_id,
                                                                        [p.symbol for p in found]) if life.is_open}
    answer = []
    for p in found:
        market_ = _market(venue, {"symbol": p.symbol})
        entry = (p.net_cost / p.net_quantity).quantize(market_.tick_size)
        mark = marks.get(p.symbol)
        exposure = MarketExposure(p.symbol, p.net_quantity, p.net_cost, mark)
        life = lives.get(p.symbol)
        answer.append({"symbol": p.symbol, "netQuantity": canonical(p.net_quantity),
                       "netCost": canonical(p.net_cost), "entryPrice": canonical(entry),
                       "breakEvenPrice": canonical(entry), "markPrice": canonical(mark if mark is not None else entry),
                       "estLiquidationPrice": "0", "imf": canonical(venue.config.initial_margin),
                       "imfFunction": None, "mmf": "0", "mmfFunction": None,
                       "netExposureQuantity": canonical(abs(p.net_quantity)),
                       "netExposureNotional": canonical(exposure.notional), "pnlRealized": canonical(p.realized_pnl),
                       "pnlUnrealized": canonical(exposure.unrealized_pnl),
                       "cumulativeFundingPayment": canonical(life.funding if life is not None else Decimal(0)),
                       "cumulativeInterest": "0",
                       "positionId": life.position_id if life is not None else p.symbol, "subaccountId": None,
                       "userId": 0})
    return answer


@router.get("/api/v1/klines")
def get_klines(venue: VenueDep, services: ServicesDep, request: Request) -> list[dict[str, Any]]:
    """Candles of the venue's own trades (`bkr.venue.klines`); `startTime` and `endTime` in
    seconds, `endTime` now by default. Only `Last` prices are kept: the sandbox has no index."""
    params = request.query_params
    chosen = _market(venue, params)
    interval = kline_interval(params)
    start = instant_seconds(params, "startTime")
    if start is None:
        raise InvalidInput("startTime: missing", field="startTime")
    end = instant_seconds(params, "endTime") or services.clock()
    price_type = params.get("priceType") or "Last"
    if price_type != "Last":
        raise InvalidInput(f"priceType: {shown(price_type)} is not served by this sandbox, which keeps Last "
                           "prices only", field="priceType")
    with db.snapshot(services.engine) as connection:
        found = klines.klines(connection, chosen.symbol, interval, start, end)
    return [kline_json(k) for k in found]

