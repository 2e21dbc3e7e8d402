"""The ingest endpoint: the exchange's fill feed posts batches of fills (`POST /v1/fills`)."""

import time
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from bkr.api import observability
from bkr.api.deps import OperatorDep, ServicesDep
from bkr.api.errors import ApiError, ErrorBody, responses
from bkr.api.schemas import RequestModel
from bkr.domain.registry import MAX_BROKER_ID, MIN_BROKER_ID
from bkr.program.feed import BatchFormat, BatchTooLarge, ingest_batch, read_batch, reason_field

router = APIRouter(tags=["ingest"])
PATH = "/v1/fills"

_JSON_TYPES = {"application/json"}
_NDJSON_TYPES = {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}


class FillIn(RequestModel):
    """One fill, as in a fill file (docs/fills.md). Documents the request body; items are read
    by the same rules as a file's rows, so a bad item is a rejection in the answer, not a 422."""

    fill_id: str = Field(description="Unique id of this fill (one side of one trade)", examples=["f-000001"])
    order_id: str = Field(description="The order the fill belongs to")
    user_id: str = Field(description="The exchange account that traded")
    symbol: str = Field(description="`BASE_QUOTE` or `BASE_QUOTE_KIND`", examples=["SOL_USDC", "SOL_USDC_PERP"])
    market_type: Literal["SPOT", "PERP", "IPERP", "DATED"] = Field(
        description="`SPOT`; `PERP`, `IPERP` and `DATED` count as futures")
    side: Literal["Bid", "Ask"]
    price: str = Field(description="Decimal (a string; a JSON number is read exactly too), > 0, in the quote asset",
                       examples=["142.35"])
    quantity: str = Field(description="Decimal, > 0, in the base asset; on a correction, the signed change",
                          examples=["3.5"])
    fee: str = Field(description="Decimal, in `fee_symbol`; negative for a maker rebate", examples=["0.4982"])
    fee_symbol: str = Field(description="The asset the fee was charged in", examples=["USDC"])
    is_maker: bool
    timestamp: datetime = Field(description="ISO 8601; without an offset it is UTC",
                                examples=["2026-10-15T12:00:00Z"])
    broker_id: int | None = Field(None, ge=MIN_BROKER_ID, le=MAX_BROKER_ID,
                                  description="The `X-Broker-Id` the order carried")
    via_api: bool = Field(True, description="`false` if the order came from the web UI")
    fill_type: str = Field("User", description="`User`, or a system type (`Liquidation`, `Adl`, `Backstop`, …)")
    corrects: str | None = Field(None, description="The `fill_id` of an earlier fill this item corrects: it restates "
                                 "that trade with the signed change of `quantity` and `fee` (a bust negates both); "
                                 "see docs/fills.md")
    trade_id: str | None = Field(None, description="The trade this fill is one side of (Backpack's `tradeId`; a JSON "
                                 "integer is read too): both sides carry it, within one symbol. Two sides of one "
                                 "user make a self-trade, which counts for nobody; see docs/fills.md",
                                 examples=["4242"])


class ItemResult(BaseModel):
    index: int = Field(description="The item's position in the batch, from 1 (for NDJSON, its line number)")
    fill_id: str | None = Field(description="The item's fill_id, when it has one")
    outcome: Literal["accepted", "duplicate", "conflict", "rejected"]
    reason: str | None = Field(description="Why it was rejected or conflicts; a rejection's reason starts with "
                                           "the field to blame, e.g. `price: not a number: 'abc'`")
    attribution: str | None = Field(None, description="For an accepted item: `counted` if it is broker volume, else "
                                    "why not (`self_trade`, `no_broker`, `awaiting_user`, `broker_unknown`, "
                                    "`broker_inactive`, `web`, `system`)")


class BatchResult(BaseModel):
    accepted: int = Field(description="Stored now (and counted as broker volume if attributable)")
    duplicates: int = Field(description="Already stored with the same content: nothing changed")
    conflicts: int = Field(description="The same fill_id with other content: kept for an operator, not applied")
    rejected: int = Field(description="Invalid: see each item's reason")
    results: list[ItemResult] = Field(description="One per item, in the batch's order")


_FILL_SCHEMA = FillIn.model_json_schema()
_NDJSON_EXAMPLE = ('{"fill_id":"f-1","order_id":"o-1","user_id":"u-1","symbol":"SOL_USDC","market_type":"SPOT",'
                   '"side":"Bid","price":"142.35","quantity":"3.5","fee":"0.4982","fee_symbol":"USDC",'
                   '"is_maker":false,"timestamp":"2026-10-15T12:00:00Z","broker_id":1400}\n')
_REQUEST_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "array", "items": _FILL_SCHEMA,
                                    "description": "An array of fill objects"}},
    "application/x-ndjson": {"schema": {"type": "string", "description": "One fill object (as an item of the "
                                        "application/json array) per line; blank lines are skipped"},
                             "example": _NDJSON_EXAMPLE},
}}}


async def _body(request: Request) -> bytes:
    return await request.body()


def _batch_format(request: Request) -> BatchFormat:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media in _NDJSON_TYPES:
        return BatchFormat.NDJSON
    if not media or media in _JSON_TYPES or media.endswith("+json"):
        return BatchFormat.JSON
    raise ApiError(415, "unsupported_media_type", f"Content-Type {media!r}: send application/json (an array of "
                   "fills) or application/x-ndjson (one fill per line)", field="Content-Type")


@router.post(
    PATH, response_model=BatchResult, summary="Post a batch of fills",
    description="The exchange's fill feed: post fills as they happen, with an operator key of the `operator` "
                "role (`bkr operator add NAME --role operator`). The body is a JSON array of fill objects "
                "(`application/json`) or NDJSON (`application/x-ndjson`, one object per line). Each item is read "
                "by the same rules as a fill file's row and answered on its own: accepted, duplicate (already "
                "stored, nothing changes), conflict (same fill_id, other content: kept for an operator) or "
                "rejected (the reason names the field). The batch is written in one transaction, so retrying a "
                "post, or posting overlapping batches at once, stores each fill once. A fill of a month already "
                "closed is accepted and paid in the next open month as a prior-period adjustment. Only a body "
                "that is not JSON at all is refused as a whole (422); more fills than the service's `max_batch` "
                "is 413.",
    responses=responses(401, 403, 413, 422, 503)
    | {415: {"model": ErrorBody, "description": "Content-Type is neither JSON nor NDJSON"}},
    openapi_extra=_REQUEST_BODY,
)
def post_fills(request: Request, services: ServicesDep, key: OperatorDep,
               body: Annotated[bytes, Depends(_body)]) -> BatchResult:
    started = time.perf_counter()
    try:
        rows = read_batch(body, _batch_format(request), services.settings.max_batch)
    except BatchTooLarge as error:
        raise ApiError(413, error.code, str(error), field=error.field) from None
    fed = ingest_batch(services.engine, rows, source=f"POST /v1/fills ({key.name}, key {key.key_id})",
                       clock=services.clock)
    for result in fed.results:
        observability.FILLS.labels(result.outcome.value, reason_field(result)).inc()
    observability.INGEST_SECONDS.observe(time.perf_counter() - started)
    return BatchResult(**fed.tally.counts(), results=[
        ItemResult(index=result.line or 0, fill_id=result.fill_id, outcome=result.outcome.value, reason=result.reason,
                   attribution=None if result.attribution is None else result.attribution.value)
        for result in fed.results])
