"""The venue's perpetual market data, at Backpack's paths and in its shapes: mark prices, open
interest and funding rates (public), an account's funding payments and position history
(signed). The rules behind the figures are `bkr.venue.perpetuals` and `bkr.venue.funding`.

Like the rest of the venue these routes follow Backpack's API document and are left out of bkr's
OpenAPI. Reads that show an account's money first apply the funding intervals that ended since
this process last looked (`Venue.settle_funding`), so they never show a balance without the
funding already due.
"""

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from bkr.api.deps import ServicesDep
from bkr.api.routers.venue import SignedUser, VenueDep, signed_by_user
from bkr.domain.errors import InvalidInput
from bkr.domain.money import canonical
from bkr.store import db
from bkr.venue import funding
from bkr.venue.errors import InvalidMarket
from bkr.venue.exchange import Venue
from bkr.venue.margin import MarketExposure
from bkr.venue.markets import Market
from bkr.venue.perpetuals import PositionLife, next_interval_end
from bkr.venue.wire import MAX_ID, millis, naive_iso, page, shown, symbol_of, text, whole_number

router = APIRouter(include_in_schema=False)


def _perpetual(venue: Venue, params: Mapping[str, Any], *, required: bool = False) -> Market | None:
    """The perpetual market `symbol` names (None when it is not given and not `required`)."""
    symbol = symbol_of(params)
    if symbol is None:
        if required:
            raise InvalidInput("symbol: missing", field="symbol")
        return None
    market = venue.config.market(symbol)
    if market is None:
        raise InvalidMarket(f"Invalid market: {shown(symbol)}", field="symbol")
    if not market.is_futures:
        raise InvalidMarket(f"Invalid market: {shown(symbol)} is a spot market; this is perpetual market data",
                            field="symbol")
    return market


def _perpetuals(venue: Venue, params: Mapping[str, Any]) -> list[Market]:
    chosen = _perpetual(venue, params)
    return [chosen] if chosen is not None else [m for m in venue.config.markets if m.is_futures]


def _interval_end(moment: datetime) -> str:
    """Backpack's `intervalEndTimestamp`: naive UTC ISO text to the second."""
    return naive_iso(moment)[:-4]


# --- public -----------------------------------------------------------------------------------------

@router.get("/api/v1/markPrices")
def mark_prices(venue: VenueDep, services: ServicesDep, request: Request) -> list[dict[str, Any]]:
    markets = _perpetuals(venue, request.query_params)
    marks = venue.mark_prices()
    now = services.clock()
    answer = []
    for market in markets:
        mark = marks.get(market.symbol)
        index = market.index_price if market.index_price is not None else mark  # no external index here
        answer.append({"fundingRate": canonical(market.funding_rate), "indexPrice": text(index),
                       "markPrice": text(mark),
                       "nextFundingTimestamp": millis(next_interval_end(now, market.funding_interval)),
                       "symbol": market.symbol})
    return answer


@router.get("/api/v1/openInterest")
def open_interest(venue: VenueDep, services: ServicesDep, request: Request) -> list[dict[str, Any]]:
    markets = _perpetuals(venue, request.query_params)
    now = millis(services.clock())
    with db.snapshot(services.engine) as connection:
        found = [funding.market_open_interest(connection, m.symbol) for m in markets]
    return [{"symbol": o.symbol, "openInterest": canonical(o.quantity), "timestamp": now} for o in found]


@router.get("/api/v1/fundingRates")
def funding_rates(venue: VenueDep, services: ServicesDep, request: Request) -> list[dict[str, Any]]:
    params = request.query_params
    market = _perpetual(venue, params, required=True)
    assert market is not None
    limit = whole_number(params, "limit", 1, funding.MAX_RATES_PAGE, 100)
    offset = whole_number(params, "offset", 0, MAX_ID, 0)
    assert limit is not None and offset is not None
    venue.settle_funding()
    with db.snapshot(services.engine) as connection:
        found = funding.funding_rates(connection, market.symbol, limit, offset)
    return [{"symbol": r.symbol, "intervalEndTimestamp": _interval_end(r.interval_end),
             "fundingRate": canonical(r.rate)} for r in found]


# --- private ----------------------------------------------------------------------------------------

@router.get("/wapi/v1/history/funding")
def funding_history(request: Request, venue: VenueDep, services: ServicesDep,
                    user: Annotated[SignedUser, Depends(signed_by_user("fundingHistoryQueryAll"))]
                    ) -> list[dict[str, Any]]:
    params = request.query_params
    whole_number(params, "subaccountId", 0, 65_535)  # the sandbox has no subaccounts: checked, then all of them
    chosen = _perpetual(venue, params)
    limit, offset, ascending = page(params)
    venue.settle_funding()
    with db.snapshot(services.engine) as connection:
        found = funding.funding_history(connection, user.user_id, None if chosen is None else [chosen.symbol],
                                        limit, offset, ascending)
    return [{"userId": 0, "subaccountId": 0, "symbol": p.symbol, "quantity": canonical(p.quantity),
             "intervalEndTimestamp": _interval_end(p.interval_end), "fundingRate": canonical(p.rate)}
            for p in found]


POSITION_STATES = ("Open", "Closed")


@router.get("/wapi/v1/history/position")
def position_history(request: Request, venue: VenueDep, services: ServicesDep,
                     user: Annotated[SignedUser, Depends(signed_by_user("positionHistoryQueryAll"))]
                     ) -> list[dict[str, Any]]:
    params = request.query_params
    state = params.get("state") or None
    if state not in (None, *POSITION_STATES):
        raise InvalidInput(f"state: {shown(state)} is not Open or Closed", field="state")
    wanted_types = params.getlist("marketType")
    markets = [m for m in _perpetuals(venue, params) if not wanted_types or m.market_type.value in wanted_types]
    limit, offset, ascending = page(params)
    venue.settle_funding()
    marks = venue.mark_prices()
    with db.snapshot(services.engine) as connection:
        lives = funding.position_history(connection, user.user_id, [m.symbol for m in markets])
    lives = [life for life in lives if state is None or (state == "Open") == life.is_open]
    lives.sort(key=lambda life: (life.opened_at, int(life.position_id), life.symbol), reverse=not ascending)
    by_symbol = {m.symbol: m for m in markets}
    return [_position_row(life, by_symbol[life.symbol], marks.get(life.symbol), venue.config.initial_margin)
            for life in lives[offset:offset + limit]]


def _position_row(life: PositionLife, market: Market, mark: Decimal | None, initial_margin: Decimal
                  ) -> dict[str, Any]:
    shown_mark = mark if life.is_open else None
    exposure = MarketExposure(life.symbol, life.net_quantity, life.net_cost, shown_mark)
    return {
        "id": life.position_id, "symbol": life.symbol, "state": "Open" if life.is_open else "Closed",
        "netQuantity": canonical(life.net_quantity), "netExposureQuantity": canonical(life.net_quantity.copy_abs()),
        "netExposureNotional": canonical(exposure.notional), "netCost": canonical(life.net_cost),
        "markPrice": text(shown_mark), "entryPrice": canonical(life.entry_price(market.tick_size)),
        "cumulativePnlRealized": canonical(life.realized_pnl), "unrealizedPnl": canonical(exposure.unrealized_pnl),
        "fundingQuantity": canonical(life.funding), "interest": "0", "liquidated": False,
        "imf": canonical(initial_margin), "fees": canonical(life.fees), "closedVolume": canonical(life.closed_volume),
        "liquidationFees": "0", "closingPrice": text(life.closing_price),
        "accountLeverage": canonical(Decimal(1) / initial_margin),
        "openedAt": naive_iso(life.opened_at),
        "closedAt": None if life.closed_at is None else naive_iso(life.closed_at),
    }
