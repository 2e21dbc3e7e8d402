"""Payouts over HTTP: the exchange's wallet system takes pending payout instructions from
`GET /v1/admin/payouts` and acknowledges each with its transfer reference
(`POST /v1/admin/payouts/{key or id}/ack`); the treasury downloads a month's statements with their
payouts (`GET /v1/admin/statements?month=…`, JSON or CSV); a broker reads its own payouts
(`GET /v1/broker/{id}/payouts`, signed like every broker read).

Reads need any operator key, acknowledging the `approver` role (as settling does); every
acknowledgement is recorded on the audit trail as the key's operator. The use cases are
`bkr.program.payouts` and `bkr.program.treasury`.
"""

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import Connection

from bkr.api.deps import (
    ApproverDep,
    BrokerAccess,
    BrokerSignature,
    ConnectionDep,
    ServicesDep,
    SignedBroker,
    SnapshotDep,
    ViewerDep,
    broker_signature,
    instruction,
)
from bkr.api.errors import responses
from bkr.api.routers.broker import _as_broker, _json
from bkr.api.schemas import BrokerIdPath, RequestModel
from bkr.domain.periods import Month, month_field
from bkr.program import payouts, treasury

router = APIRouter(tags=["payouts"])

PAYOUTS = "brokerPayoutQueryAll"
PayoutsSignature = Annotated[BrokerSignature, Depends(broker_signature(PAYOUTS))]


class PayoutOut(BaseModel):
    id: int
    key: str = Field(description="The idempotency key, `payout/<broker>/<month>`: the payout's ledger group too.",
                     examples=["payout/1400/2026-10"])
    broker_id: int
    month: str = Field(description="The statement's month, YYYY-MM.")
    account_id: str = Field(description="The broker's business account, to credit.")
    amount: str = Field(description="An exact decimal.", examples=["1234.56"])
    currency: str = Field(examples=["USD"])
    state: Literal["pending", "acknowledged"]
    created_at: datetime = Field(description="When settling wrote it.")
    reference: str | None = Field(description="The wallet's transfer reference, once acknowledged.")
    acknowledged_by: str | None = Field(description="Who acknowledged it (an operator's name).")
    acknowledged_at: datetime | None


class PayoutListOut(BaseModel):
    payouts: list[PayoutOut] = Field(description="Oldest month first, by broker.")


class BrokerPayoutOut(BaseModel):
    key: str = Field(description="`payout/<broker>/<month>`.", examples=["payout/1400/2026-10"])
    month: str = Field(description="The statement's month, YYYY-MM.")
    account_id: str = Field(description="The business account credited.")
    amount: str = Field(description="An exact decimal.", examples=["1234.56"])
    currency: str = Field(examples=["USD"])
    state: Literal["pending", "acknowledged"] = Field(description="pending: handed to the exchange's wallet; "
                                                                  "acknowledged: transferred to the account.")
    created_at: datetime
    reference: str | None = Field(description="The wallet's transfer reference, once acknowledged.")
    acknowledged_at: datetime | None


class BrokerPayoutListOut(BaseModel):
    broker_id: int
    payouts: list[BrokerPayoutOut] = Field(description="Oldest month first.")


class AcknowledgementIn(RequestModel):
    reference: str = Field(min_length=1, max_length=payouts.MAX_REFERENCE,
                           description="The wallet's own reference of the transfer that paid the instruction.")


class AcknowledgementOut(PayoutOut):
    already_acknowledged: bool = Field(description="The same reference was recorded before: nothing changed.")


def _month_query(month: Annotated[str | None, Query(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$",
                                                    description="YYYY-MM (UTC).")] = None) -> Month | None:
    return None if month is None else month_field(month)


MonthFilter = Annotated[Month | None, Depends(_month_query)]
StateFilter = Annotated[Literal["pending", "acknowledged"] | None, Query(description="pending | acknowledged")]


@router.get("/v1/admin/payouts", response_model=PayoutListOut, summary="Payout instructions",
            responses=responses(401, 422, 503))
def list_payouts(_key: ViewerDep, connection: SnapshotDep, month: MonthFilter, state: StateFilter = None,
                 ) -> PayoutListOut:
    """The payout instructions settling wrote, for the exchange's wallet system: take the
    `pending` ones of a month, transfer each `amount` to its `account_id`, and acknowledge it."""
    found = payouts.instructions(connection, month=month, state=state)
    return PayoutListOut(payouts=[PayoutOut.model_validate(i.to_document()) for i in found])


@router.post("/v1/admin/payouts/{instruction_key:path}/ack", response_model=AcknowledgementOut,
             summary="Acknowledge a payout's transfer", responses=responses(401, 403, 404, 409, 422, 503))
def acknowledge(instruction_key: Annotated[str, Path(description="The instruction's key (`payout/1400/2026-10`) "
                                                                 "or its id.")],
                body: AcknowledgementIn, key: ApproverDep, services: ServicesDep,
                connection: ConnectionDep) -> AcknowledgementOut:
    """Record that the wallet transferred the instruction's payout, under its own reference (role
    `approver` or `admin`): the ledger moves the amount from the broker's payable account to its
    account, and the audit trail names the key's operator. The same reference again changes
    nothing and answers the same (`already_acknowledged`); another reference, or a reference that
    acknowledged another instruction, is a 409 `payout_reference_conflict`."""
    done = payouts.acknowledge_payout(connection, instruction_key, body.reference, key.name, services.clock())
    return AcknowledgementOut.model_validate({**done.instruction.to_document(),
                                              "already_acknowledged": done.already_acknowledged})


_LIST_FORMATS: dict[int | str, dict[str, Any]] = {200: {
    "description": "The month's statements with their payouts: JSON, or CSV with `format=csv`.",
    "content": {"text/csv": {"schema": {"type": "string"}}}}}


class StatementPayoutOut(BaseModel):
    month: str
    broker_id: int
    name: str
    account_id: str
    status: str = Field(description="draft | final | paid (settled: owed in the ledger, instruction written).")
    tier: str
    api_volume: str
    payout_exact: str
    payout: str
    instruction_key: str | None = Field(description="None before it is paid, for a payout of 0, and for a "
                                                    "statement paid before instructions existed.")
    instruction_state: Literal["pending", "acknowledged"] | None
    reference: str | None
    acknowledged_at: str | None


class MonthStatementsOut(BaseModel):
    month: str
    statements: list[StatementPayoutOut]


@router.get("/v1/admin/statements", response_model=MonthStatementsOut, summary="A month's statements and payouts",
            responses={**responses(401, 422, 503), **_LIST_FORMATS})
def month_statements(_key: ViewerDep, connection: SnapshotDep,
                     month: Annotated[str, Query(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$", description="YYYY-MM.")],
                     output_format: Annotated[Literal["json", "csv"], Query(alias="format")] = "json") -> Response:
    """Every statement of the month, by broker: status, payout, and its payout instruction's key,
    state and transfer reference; what `bkr statements --month` prints."""
    target = month_field(month)
    rows = treasury.month_statements(connection, target)
    if output_format == "csv":
        return Response(treasury.rows_csv(rows), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="statements-{target}.csv"'})
    return Response(treasury.rows_json(target, rows), media_type="application/json")


@router.get("/v1/broker/{broker_id}/payouts", response_model=BrokerPayoutListOut, summary="Payouts", tags=["broker"],
            description="The broker's payouts, oldest month first: one per paid statement with a payout, with its "
                        "state (`pending`: handed to the exchange's wallet; `acknowledged`: transferred to the "
                        "broker's account, with the wallet's `reference`).",
            responses=responses(401, 403, 422, 503), openapi_extra=instruction(PAYOUTS))
async def broker_payouts(broker_id: BrokerIdPath, request: Request, services: ServicesDep,
                         signature: PayoutsSignature) -> Response:
    def read(connection: Connection, _: SignedBroker) -> Response:
        found = payouts.instructions(connection, broker_id=broker_id)
        return _json(BrokerPayoutListOut(broker_id=broker_id, payouts=[
            BrokerPayoutOut.model_validate(i.to_document()) for i in found]))

    return await _as_broker(request, services, signature, broker_id, read, access=BrokerAccess.READ)
