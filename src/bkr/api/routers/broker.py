"""The broker endpoints, `/v1/broker/{broker_id}/…`: a broker's own figures, and only its own.

Each request is signed with the broker's ED25519 key as Backpack's API is signed; the
instruction to sign is each operation's `x-instruction`, the signed parameters are the query
parameters (the path is not signed). A key may read only its own broker: another broker id
in the path is refused with 403 `not_your_broker`, whether that broker exists or not.
"""

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import Connection

from bkr.api.deps import (
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
from bkr.program import reports
from bkr.program.exports import StatementFormat, render_statement
from bkr.store import db

router = APIRouter(prefix="/v1/broker/{broker_id}", tags=["broker"])

SUMMARY = "brokerSummaryQuery"
DAILY_VOLUME = "brokerDailyVolumeQuery"
STATEMENTS = "brokerStatementQueryAll"
STATEMENT = "brokerStatementQuery"
USERS = "brokerUsersQuery"
INACTIVE_ORDERS = "brokerInactiveOrdersQuery"

# each endpoint's signature check, declared once (a request signed for another instruction is refused)
SummarySignature = Annotated[BrokerSignature, Depends(broker_signature(SUMMARY))]
DailyVolumeSignature = Annotated[BrokerSignature, Depends(broker_signature(DAILY_VOLUME))]
StatementsSignature = Annotated[BrokerSignature, Depends(broker_signature(STATEMENTS))]
StatementSignature = Annotated[BrokerSignature, Depends(broker_signature(STATEMENT))]
UsersSignature = Annotated[BrokerSignature, Depends(broker_signature(USERS))]
InactiveOrdersSignature = Annotated[BrokerSignature, Depends(broker_signature(INACTIVE_ORDERS))]

Amount = Annotated[str, Field(description="An exact decimal as a string (amounts in USD, rates as fractions).",
                               examples=["5000000", "1234.5678"])]
MonthText = Annotated[str, Field(description="A calendar month in UTC, YYYY-MM.", examples=["2026-10"])]


async def _as_broker(request: Request, services: Services, signature: BrokerSignature, broker_id: int,
                     read: Callable[[Connection, SignedBroker], Response]) -> Response:
    """Answer with `read`, in one snapshot with the signing key and its broker, once that key is
    found to be the path's broker's: one worker thread and one snapshot per request, the
    response's JSON made there too."""

    def work() -> Response:
        caller: SignedBroker | None = None
        try:
            with db.snapshot(services.engine) as connection:
                caller = signed_broker(connection, request, signature)
                caller.check_standing()
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

    return await _as_broker(request, services, signature, broker_id, read)


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

    return await _as_broker(request, services, signature, broker_id, read)


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

    return await _as_broker(request, services, signature, broker_id, read)


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

    return await _as_broker(request, services, signature, broker_id, read)


# --- users ----------------------------------------------------------------------------------------------


class BrokerUserOut(BaseModel):
    user_id: str
    spot_volume: Amount = Field(description="Of the month's own fills (as are fee and fee_base).")
    futures_volume: Amount
    fee: Amount
    fee_base: Amount
    adjustment_fee_base: Amount = Field(description="Late fills of earlier months paid in this one.")
    payout_exact: Amount = Field(description="The user's contribution to the statement's exact payout.")


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
                        "base first. A closed month is read from its statement; an open one from the projection. "
                        "Summed over all pages the figures equal the statement's.",
            responses=responses(401, 403, 422, 503), openapi_extra=instruction(USERS))
async def users(broker_id: BrokerIdPath, request: Request, services: ServicesDep, signature: UsersSignature,
                month: MonthQuery = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Users to skip, largest fee base "
                                                                              "first.")] = 0) -> Response:
    def read(connection: Connection, _: SignedBroker) -> Response:
        target = _requested_month(month, signature.now)
        found = reports.user_breakdown(connection, broker_id, target, limit=limit, offset=offset)
        return _json(BrokerUsersOut.model_validate(found.to_document()))

    return await _as_broker(request, services, signature, broker_id, read)


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

    return await _as_broker(request, services, signature, broker_id, read)
