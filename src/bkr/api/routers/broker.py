"""The broker endpoints, `/v1/broker/{broker_id}/…`: a broker's own figures, and only its own.

Each request is signed with the broker's ED25519 key as Backpack's API is signed; the
instruction to sign is each operation's `x-instruction`, the signed parameters are the query
parameters (the path is not signed). A key may read only its own broker: another broker id
in the path is refused with 403 `not_your_broker`, whether that broker exists or not.
"""

import io
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import Connection

from bkr.api.deps import (
    BrokerAccess,
    BrokerSignature,
    Services,
    ServicesDep,
    SignedBroker,
    broker_signature,
    in_read_thread,
    instruction,
    record_use,
    signed_broker,
)
from bkr.api.errors import responses
from bkr.api.schemas import BrokerIdPath, SignedStatement, StatementDocument
from bkr.domain.errors import Forbidden, StatementNotIssued
from bkr.domain.periods import Month, month_field
from bkr.program import fill_audit, reports
from bkr.program.exports import StatementFormat, render_statement
from bkr.store import db

router = APIRouter(prefix="/v1/broker/{broker_id}", tags=["broker"])

SUMMARY = "brokerSummaryQuery"
DAILY_VOLUME = "brokerDailyVolumeQuery"
STATEMENTS = "brokerStatementQueryAll"
STATEMENT = "brokerStatementQuery"
USERS = "brokerUsersQuery"
INACTIVE_ORDERS = "brokerInactiveOrdersQuery"
FILLS = "brokerFillsQuery"
FILLS_EXPORT = "brokerFillsExport"

# each endpoint's signature check, declared once (a request signed for another instruction is refused)
SummarySignature = Annotated[BrokerSignature, Depends(broker_signature(SUMMARY))]
DailyVolumeSignature = Annotated[BrokerSignature, Depends(broker_signature(DAILY_VOLUME))]
StatementsSignature = Annotated[BrokerSignature, Depends(broker_signature(STATEMENTS))]
StatementSignature = Annotated[BrokerSignature, Depends(broker_signature(STATEMENT))]
UsersSignature = Annotated[BrokerSignature, Depends(broker_signature(USERS))]
InactiveOrdersSignature = Annotated[BrokerSignature, Depends(broker_signature(INACTIVE_ORDERS))]
FillsSignature = Annotated[BrokerSignature, Depends(broker_signature(FILLS))]
FillsExportSignature = Annotated[BrokerSignature, Depends(broker_signature(FILLS_EXPORT))]

Amount = Annotated[str, Field(description="An exact decimal as a string (amounts in USD, rates as fractions).",
                               examples=["5000000", "1234.5678"])]
MonthText = Annotated[str, Field(description="A calendar month in UTC, YYYY-MM.", examples=["2026-10"])]


async def _as_broker(request: Request, services: Services, signature: BrokerSignature, broker_id: int,
                     read: Callable[[Connection, SignedBroker], Response], *,
                     access: BrokerAccess = BrokerAccess.WRITE) -> Response:
    """Answer with `read`, in one snapshot with the signing key and its broker, once that key is
    found to be the path's broker's and its standing allows `access` (a suspended or terminated
    broker may only read: `BrokerAccess`): one worker thread and one snapshot per request, the
    response's JSON made there too."""

    def work() -> Response:
        caller: SignedBroker | None = None
        try:
            with db.snapshot(services.engine) as connection:
                caller = signed_broker(connection, request, signature)
                caller.check_standing(access)
                if broker_id != caller.broker_id:
                    raise Forbidden(f"this key belongs to broker {caller.broker_id}; it cannot read broker {broker_id}",
                                    code="not_your_broker", field="broker_id")
                return read(connection, caller)
        finally:
            if caller is not None:
                record_use(services, caller.api_key, caller.key_last_used_at, signature.now)

    return await in_read_thread(work)


def _json(model: BaseModel) -> Response:
    """A response model as JSON, made in the read's thread (FastAPI would validate it again and
    serialize it in the event loop)."""
    return Response(model.model_dump_json(), media_type="application/json")


def _requested_month(text: str | None, now: datetime) -> Month:
    return reports.requested_month(None if text is None else month_field(text), now)


MonthQuery = Annotated[str | None, Query(description="YYYY-MM (UTC); default: the current month.",
                                         examples=["2026-10"])]
MAX_OFFSET = 2**31 - 1  # as every page cursor of the API: beyond any number of users

# --- summary -----------------------------------------------------------------------------------------


class BrokerSummaryOut(BaseModel):
    broker_id: int
    name: str
    status: str = Field(description="pending | active | suspended | terminated")
    month: MonthText = Field(description="The current month (UTC).")
    tier_basis: str = Field(description="same_month | previous_month: which month's volume sets the tier paid.")
    spot_volume: Amount
    futures_volume: Amount
    api_volume: Amount = Field(description="Spot + futures volume of the month so far.")
    tier: str = Field(description="The tier this month would be paid at if it ended now, e.g. `BKR 1`.")
    broker_rate: Amount = Field(description="That tier's broker rebate rate, a fraction.")
    fee_base: Amount = Field(description="Positive fees of the month's attributed fills so far.")
    adjustment_fee_base: Amount = Field(description="Fee base of late fills of closed months paid this month.")
    payout_exact: Amount = Field(description="The payout if the month ended now, unrounded.")
    payout: Amount = Field(description="`payout_exact` rounded down once, as the statement would pay it.")
    volume_tier: str = Field(description="The tier this month's own volume reaches (the tier paid under "
                                         "`same_month`; next month's tier under `previous_month`).")
    next_tier: str | None = Field(description="The tier above `volume_tier`; null at the top tier.")
    next_tier_rate: Amount | None
    volume_to_next_tier: Amount | None = Field(description="API volume still needed this month to reach "
                                                            "`next_tier`; null at the top tier.")
    last_closed_month: MonthText | None = Field(description="The latest closed month; null before any close.")
    last_closed_tier: str | None = Field(description="The tier paid for `last_closed_month` (BKR 0 without "
                                                     "volume that month).")


@router.get("/summary", response_model=BrokerSummaryOut, summary="This month so far",
            description="Month-to-date spot, futures and API volume, the tier the month would be paid at if it "
                        "ended now, the projected payout, and the volume still needed for the next tier. The "
                        "projection is the close's own computation over the running totals.",
            responses=responses(401, 403, 422, 503), openapi_extra=instruction(SUMMARY))
async def summary(broker_id: BrokerIdPath, request: Request, services: ServicesDep,
                  signature: SummarySignature) -> Response:
    def read(connection: Connection, caller: SignedBroker) -> Response:
        found = reports.broker_summary(connection, broker_id, signature.now, broker=caller.broker)
        return _json(BrokerSummaryOut.model_validate(found.to_document()))

    return await _as_broker(request, services, signature, broker_id, read, access=BrokerAccess.READ)


# --- daily volume ------------------------------------------------------------------------------------


class BrokerDayOut(BaseModel):
    day: str = Field(description="YYYY-MM-DD (UTC).")
    spot_volume: Amount
    futures_volume: Amount
    api_volume: Amount
    fills: int
    fee_base: Amount


class BrokerDailyVolumeOut(BaseModel):
    broker_id: int
    month: MonthText
    spot_volume: Amount
    futures_volume: Amount
    api_volume: Amount
    fills: int
    fee_base: Amount
    days: list[BrokerDayOut]


@router.get("/volume/daily", response_model=BrokerDailyVolumeOut, summary="Volume per day",
            description="Counted volume, fills and fee base on each UTC day of the month, up to today for the "
                        "current month (days without fills are zeros). Days are the fills' own days: a fill of "
                        "a closed month that arrived late shows on its day although it is paid in a later "
                        "statement as an adjustment, so a closed month's series can exceed its statement's API "
                        "volume by such fills.",
            responses=responses(401, 403, 422, 503), openapi_extra=instruction(DAILY_VOLUME))
async def daily_volume(broker_id: BrokerIdPath, request: Request, services: ServicesDep,
                       signature: DailyVolumeSignature, month: MonthQuery = None) -> Response:
    def read(connection: Connection, _: SignedBroker) -> Response:
        series = reports.daily_series(connection, broker_id, _requested_month(month, signature.now), signature.now)
        return _json(BrokerDailyVolumeOut.model_validate(series.to_document()))

    return await _as_broker(request, services, signature, broker_id, read, access=BrokerAccess.READ)


# --- statements ----------------------------------------------------------------------------------------


class BrokerStatementEntryOut(BaseModel):
    month: MonthText
    tier: str
    broker_rate: Amount
    api_volume: Amount
    payout_exact: Amount
    payout: Amount
    status: str


class BrokerStatementListOut(BaseModel):
    broker_id: int
    statements: list[BrokerStatementEntryOut] = Field(description="Newest month first.")


@router.get("/statements", response_model=BrokerStatementListOut, summary="Statements",
            description="Every statement issued to the broker, newest month first.",
            responses=responses(401, 403, 422, 503), openapi_extra=instruction(STATEMENTS))
async def statements(broker_id: BrokerIdPath, request: Request, services: ServicesDep,
                     signature: StatementsSignature) -> Response:
    def read(connection: Connection, _: SignedBroker) -> Response:
        entries = reports.broker_statements(connection, broker_id)
        return _json(BrokerStatementListOut(
            broker_id=broker_id, statements=[BrokerStatementEntryOut.model_validate(e.to_document()) for e in entries]))

    return await _as_broker(request, services, signature, broker_id, read, access=BrokerAccess.READ)


_FORMATS: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}, "text/html": {"schema": {"type": "string"}}},
          "description": "The statement: canonical JSON (byte for byte as stored), the same with the exchange's "
                         "signature (`format=signed`), CSV (`format=csv`) or a printable page (`format=html`)."}}
_UNSIGNED: dict[int | str, dict[str, Any]] = {503: {
    **responses(503)[503],
    "description": "Database unavailable or schema behind; for `format=signed`, no current statement key is "
                   "configured on the server"}}


@router.get("/statements/{month}", response_model=StatementDocument | SignedStatement, summary="One statement",
            description="The stored statement of a closed month, with its lines per user and market type: the "
                        "canonical JSON document exactly as the close wrote it; with `format=signed` the envelope "
                        "`{\"statement\", \"signature\"}`, signed by the exchange's statement key over the "
                        "stored bytes (check it against GET /v1/statement-keys; docs/statements.md); its CSV "
                        "(`format=csv`); or a printable HTML page with the signature block (`format=html`; marked "
                        "unsigned while the server has no statement key).",
            responses=_FORMATS | responses(401, 403, 404, 422) | _UNSIGNED, openapi_extra=instruction(STATEMENT))
async def statement(broker_id: BrokerIdPath, request: Request,
                    month: Annotated[str, Path(description="YYYY-MM (UTC).", examples=["2026-09"])],
                    services: ServicesDep, signature: StatementSignature,
                    output_format: Annotated[Literal["json", "csv", "signed", "html"], Query(alias="format")] = "json",
                    ) -> Response:
    def read(connection: Connection, _: SignedBroker) -> Response:
        target = month_field(month)
        try:
            rendered = render_statement(connection, broker_id, target, StatementFormat(output_format),
                                        services.statement_key)
        except StatementNotIssued as error:
            if not error.month_open:
                raise
            where = (f"the month so far: GET /v1/broker/{broker_id}/summary" if target == Month.of(signature.now)
                     else "it closes after its end, from the 1st of the next month")
            raise StatementNotIssued(f"{error}; {where}", month_open=True) from None
        return Response(rendered.body, media_type=rendered.media_type, headers=rendered.headers)

    return await _as_broker(request, services, signature, broker_id, read, access=BrokerAccess.READ)


# --- users ----------------------------------------------------------------------------------------------


class BrokerUserOut(BaseModel):
    user_id: str
    spot_volume: Amount = Field(description="Of the month's own fills (as are fee and fee_base).")
    futures_volume: Amount
    fee: Amount
    fee_base: Amount
    adjustment_fee_base: Amount = Field(description="Late fills of earlier months paid in this one.")
    payout_exact: Amount = Field(description="The user's contribution to the statement's exact payout.")
    affiliate_rates: list[Amount] = Field(
        description="The affiliate rates of the user's lines, ascending: one, unless the user's referral rate "
                    "changed during the month or a late fill's month had another.")
    zero_payout_reason: Literal["affiliate_rate_at_cap", "rebate_fees_only", "broker_rate_zero",
                                "offset_by_corrections"] | None = Field(
        description="Why the user's lines pay 0 together; null when they pay something. `affiliate_rate_at_cap`: "
                    "the affiliate rate is at or above the cap, so the effective rate "
                    "min(broker_rate, max(0, cap − affiliate_rate)) is 0; `rebate_fees_only`: no positive fee, the "
                    "fee base is 0 or less; `broker_rate_zero`: the tier paid has a rate of 0; "
                    "`offset_by_corrections`: corrections take back exactly what the fills earn.")


class BrokerUsersOut(BaseModel):
    broker_id: int
    month: MonthText
    source: Literal["statement", "projection"] = Field(
        description="`statement` for a closed month, `projection` (if the month ended now) for an open one.")
    total: int = Field(description="Users in the month, before paging.")
    limit: int
    offset: int
    users: list[BrokerUserOut] = Field(description="Largest fee base first.")


@router.get("/users", response_model=BrokerUsersOut, summary="Users of the month",
            description="The broker's month per user: volume, fee, fee base and payout contribution, largest fee "
                        "base first, with the user's affiliate rates and, for a user paid nothing, why. A closed "
                        "month is read from its statement; an open one from the projection. Summed over all pages "
                        "the figures equal the statement's.",
            responses=responses(401, 403, 422, 503), openapi_extra=instruction(USERS))
async def users(broker_id: BrokerIdPath, request: Request, services: ServicesDep, signature: UsersSignature,
                month: MonthQuery = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Users to skip, largest fee base "
                                                                              "first.")] = 0) -> Response:
    def read(connection: Connection, _: SignedBroker) -> Response:
        target = _requested_month(month, signature.now)
        found = reports.user_breakdown(connection, broker_id, target, limit=limit, offset=offset)
        return _json(BrokerUsersOut.model_validate(found.to_document()))

    return await _as_broker(request, services, signature, broker_id, read, access=BrokerAccess.READ)


# --- orders while inactive ----------------------------------------------------------------------------


class BrokerInactiveOrdersOut(BaseModel):
    broker_id: int
    month: MonthText
    orders: int = Field(description="Distinct orders that carried the broker id while it was not active.")
    fills: int = Field(description="Their fills: they traded, but earn nothing.")


@router.get("/inactive-orders", response_model=BrokerInactiveOrdersOut, summary="Orders while not active",
            description="How many orders (and fills) of the month carried the broker's id while the broker was "
                        "not active (before its activation, while suspended, after termination). They traded "
                        "unattributed; a large number points at a misconfiguration or a status to review.",
            responses=responses(401, 403, 422, 503), openapi_extra=instruction(INACTIVE_ORDERS))
async def inactive_orders(broker_id: BrokerIdPath, request: Request, services: ServicesDep,
                          signature: InactiveOrdersSignature, month: MonthQuery = None) -> Response:
    def read(connection: Connection, _: SignedBroker) -> Response:
        target = _requested_month(month, signature.now)
        found = reports.inactive_orders(connection, broker_id, target)
        return _json(BrokerInactiveOrdersOut.model_validate(found.to_document()))

    return await _as_broker(request, services, signature, broker_id, read, access=BrokerAccess.READ)


# --- per-fill audit -------------------------------------------------------------------------------------


class AuditedFillOut(BaseModel):
    fill_id: str
    order_id: str
    timestamp: str = Field(description="The fill's time, ISO 8601 UTC.")
    user_id: str
    symbol: str
    market_type: str = Field(description="SPOT | PERP | IPERP | DATED")
    side: str = Field(description="Bid | Ask")
    is_maker: bool
    price: Amount
    quantity: Amount = Field(description="Negative for a correction that takes quantity back.")
    fee: Amount = Field(description="In `fee_symbol`, as charged (negative: a maker rebate).")
    fee_symbol: str
    volume_usd: Amount
    fee_usd: Amount
    fee_base: Amount = Field(description="What the fill adds to its line's fee base: its fee if positive, else 0; "
                                         "for a correction, the change it makes to its fill's fee base.")
    affiliate_rate: Amount = Field(description="The rate of the user's referral code at the fill's time (0 without).")
    tier: str = Field(description="The tier its line is priced at (a late fill's: its own month's).")
    effective_rate: Amount = Field(description="min(broker_rate, max(0, cap − affiliate_rate)) of its line.")
    payout_exact: Amount = Field(description="fee_base × effective_rate, exact and unrounded: the fill's part of "
                                             "its line's payout_exact.")
    corrects: str | None = Field(description="The fill a correction corrects; null for a fill.")
    fill_month: MonthText = Field(description="The month the fill happened in.")
    statement_month: MonthText = Field(description="The month whose statement pays it.")
    line_kind: Literal["regular", "adjustment", "correction", "retroactive"] = Field(
        description="The kind of its statement line: the month's own fills; a late fill of a closed month; a "
                    "correction of a fill an earlier statement paid; what a retroactive registry change moved.")
    statement_line: int | None = Field(
        description="Its line's position (from 1) in the statement's `lines`; null for a month not closed yet, "
                    "whose line is the one of the same kind, fill month, user, market type and affiliate rate.")


class BrokerFillsOut(BaseModel):
    broker_id: int
    month: MonthText = Field(description="The statement month: its fills, and the late fills and corrections it pays.")
    source: Literal["statement", "projection"] = Field(
        description="`statement`: priced by the closed month's stored statement; `projection`: by the lines the "
                    "month would have if it ended now.")
    fills: list[AuditedFillOut] = Field(description="By fill_id (code point order).")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


@router.get("/fills", response_model=BrokerFillsOut, summary="Per-fill audit",
            description="Every counted fill the month's statement pays, one by one: the fill, its volume and fee "
                        "in USD, its user's affiliate rate, the effective rate and its exact payout contribution, "
                        "and the statement line it is on (adjustment lines for late fills of closed months, "
                        "correction and retroactive lines included). Over all pages, a line's fills add up to the "
                        "line exactly: fills, volume, fee base and payout_exact. Pages follow `next_cursor`; a "
                        "cursor is good for its broker and month only. The whole month as one file: "
                        "GET …/fills/export.",
            responses=responses(401, 403, 409, 422, 503), openapi_extra=instruction(FILLS))
async def fills(broker_id: BrokerIdPath, request: Request, services: ServicesDep, signature: FillsSignature,
                month: MonthQuery = None,
                user_id: Annotated[str | None, Query(max_length=200, description="Only this user's fills.")] = None,
                symbol: Annotated[str | None, Query(max_length=200, description="Only this market's fills, "
                                                                                "e.g. SOL_USDC.")] = None,
                limit: Annotated[int, Query(ge=1, le=fill_audit.MAX_PAGE)] = 100,
                cursor: Annotated[str | None, Query(max_length=1000, description="`next_cursor` of the previous "
                                                                                 "page.")] = None) -> Response:
    def read(connection: Connection, _: SignedBroker) -> Response:
        target = _requested_month(month, signature.now)
        page = fill_audit.fill_audit_page(connection, broker_id, target, limit=limit, cursor=cursor,
                                          user_id=user_id, symbol=symbol)
        return _json(BrokerFillsOut.model_validate(page.to_document()))

    return await _as_broker(request, services, signature, broker_id, read, access=BrokerAccess.READ)


_EXPORT_FORMATS: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}},
                      "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}}},
          "description": "Every row of GET …/fills for the month, as CSV or Parquet (amounts as exact decimal "
                         "text in both), the same file as `bkr fills export`."}}


@router.get("/fills/export", summary="Per-fill audit, one file",
            description="The month's per-fill audit as one file: CSV (`format=csv`) or Parquet (`format=parquet`), "
                        "with the columns of GET …/fills. Summed per statement line (line_kind, fill_month, "
                        "user_id, market_type, affiliate_rate), its rows equal the statement's lines exactly.",
            responses=_EXPORT_FORMATS | responses(401, 403, 409, 422, 503), openapi_extra=instruction(FILLS_EXPORT))
async def fills_export(broker_id: BrokerIdPath, request: Request, services: ServicesDep,
                       signature: FillsExportSignature, month: MonthQuery = None,
                       output_format: Annotated[Literal["csv", "parquet"], Query(alias="format")] = "csv",
                       ) -> Response:
    def read(connection: Connection, _: SignedBroker) -> Response:
        target = _requested_month(month, signature.now)
        body = io.BytesIO()
        exported = fill_audit.export_fills(connection, broker_id, target, fill_audit.ExportFormat(output_format),
                                           body)
        return Response(body.getvalue(), media_type=exported.media_type, headers={
            "Content-Disposition": f'attachment; filename="{exported.filename}"',
            "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})

    return await _as_broker(request, services, signature, broker_id, read, access=BrokerAccess.READ)
