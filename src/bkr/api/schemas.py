"""Response models that more than one router answers with.

A statement is one document wherever it is downloaded (an operator's `/v1/admin/…` or a
broker's `/v1/broker/…`): the canonical JSON the close stored, described here once.
"""

from datetime import datetime
from typing import Annotated, Literal

from fastapi import Path
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from bkr.domain.config import TierBasis
from bkr.domain.errors import InvalidInput
from bkr.domain.periods import parse_instant
from bkr.domain.registry import BROKER_ID_RANGE, MAX_BROKER_ID, MIN_BROKER_ID


class RequestModel(BaseModel):
    """A request body: a field it does not declare is refused (422, naming it), never dropped."""

    model_config = ConfigDict(extra="forbid")


# A broker id in a route's path, for the API and the dashboard alike.
BrokerIdPath = Annotated[int, Path(ge=MIN_BROKER_ID, le=MAX_BROKER_ID,
                                   description=f"The broker's X-Broker-Id, {BROKER_ID_RANGE}.")]


class StatementLineDocument(BaseModel):
    user_id: str
    market_type: str
    kind: Literal["regular", "adjustment", "correction", "retroactive"] = Field(
        description="`adjustment`: late fills of an earlier, closed month, priced at that month's tier; "
                    "`correction`: corrections of fills an earlier statement paid (a bust is negative), "
                    "priced as those fills were; `retroactive`: what a registry change recorded as retroactive "
                    "moved of fills an earlier statement paid (taken back at their old rate, paid again at the new "
                    "one), at that month's tier.")
    fill_month: str = Field(description="The month the fills happened in, YYYY-MM.")
    tier: str
    affiliate_rate: str
    effective_rate: str = Field(description="min(broker rate, max(0, cap − affiliate rate)).")
    fills: int
    volume_usd: str
    fee_usd: str
    fee_base: str = Field(description="The positive fees: a maker rebate adds nothing. Negative on a "
                                      "correction that reduces a fee.")
    payout_exact: str


class StatementTierDocument(BaseModel):
    tier: str
    min_volume: str = Field(description="Monthly API volume (USD) from which the tier applies (inclusive).")
    rate: str = Field(description="The broker rebate rate.")


class StatementTierScheduleDocument(BaseModel):
    effective_from: str = Field(description="The month the schedule took effect, YYYY-MM.")
    tiers: list[StatementTierDocument]


class StatementPriorTierDocument(BaseModel):
    month: str = Field(description="An earlier month the statement has lines of (late fills, corrections, "
                                   "retroactive changes), YYYY-MM.")
    tier: str = Field(description="The tier that month was paid at: its own statement's tier.")
    rate: str = Field(description="That tier's rate, under the program version in force for that month.")


class StatementProgramDocument(BaseModel):
    """The program version a statement was computed under, and the terms of it that it used."""

    version: int = Field(description="The program version in force for the statement's month "
                                     "(GET /v1/admin/program/history).")
    tier_schedule: StatementTierScheduleDocument = Field(description="The tier schedule in force that month.")
    cap: str = Field(description="The cap on broker rate + affiliate rate.")
    rounding_quantum: str = Field(description="What the payout was rounded down to.")
    prior_tiers: list[StatementPriorTierDocument] | None = Field(
        None, description="The tier of each earlier month the statement has lines of, by month: those lines are "
                          "priced at it. Absent from statements issued before format_version 2.")


class StatementFigures(BaseModel):
    """A statement's figures without its lines; decimals are exact strings."""

    month: str
    broker_id: int
    tier: str
    tier_basis: TierBasis
    broker_rate: str
    spot_volume: str
    futures_volume: str
    api_volume: str
    fee_base: str
    adjustment_fee_base: str
    adjustment_payout_exact: str
    payout_exact: str = Field(description="Every line's payout, unrounded.")
    carried_in: str = Field("0", description="What the broker's previous statement left to recover (0 or "
                                             "negative): its `carried_out`. Absent from statements issued before "
                                             "carries existed.")
    carried_out: str = Field("0", description="min(0, payout_exact + carried_in): what corrections took beyond "
                                              "this statement's earnings, recovered from the next one.")
    payout: str = Field(description="max(0, payout_exact + carried_in) rounded down once to the rounding "
                                    "quantum: the amount paid.")
    format_version: int | None = Field(None, description="2: the statement carries everything it was computed "
                                                         "with (program, tier_volume, program.prior_tiers). Absent "
                                                         "from statements issued before.")
    tier_volume: str | None = Field(None, description="The API volume the tier was decided by: api_volume under "
                                                      "the same_month basis, the previous month's under "
                                                      "previous_month. Absent from statements issued before "
                                                      "format_version 2.")
    program: StatementProgramDocument | None = Field(None, description="The program version the statement was "
                                                                       "computed under and its terms. Absent from "
                                                                       "statements issued before program versions "
                                                                       "existed.")


class StatementDocument(StatementFigures):
    """A stored statement, with its lines per user and market type."""

    lines: list[StatementLineDocument]


class StatementSignature(BaseModel):
    algorithm: Literal["ed25519"]
    key_id: str = Field(description="The signing key: the first 16 hex digits of the SHA-256 of its raw public key, "
                                    "as listed at GET /v1/statement-keys.")
    public_key: str = Field(description="The raw 32-byte ED25519 public key, base64.")
    value: str = Field(description="The ED25519 signature, base64, over the statement's canonical bytes: UTF-8 of "
                                   "json.dumps(statement, sort_keys=True, separators=(\",\", \":\"), "
                                   "ensure_ascii=False), which is the stored document byte for byte.")


class SignedStatement(BaseModel):
    """A statement with the exchange's signature (docs/statements.md says how to check it)."""

    statement: StatementDocument
    signature: StatementSignature


def _instant(value: object) -> datetime:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("iso_time", "send an ISO 8601 time, such as 2026-10-01T00:00:00Z")
    try:
        return parse_instant(value)
    except InvalidInput as error:
        raise PydanticCustomError("iso_time", "{reason}", {"reason": str(error)}) from None


Instant = Annotated[datetime, BeforeValidator(_instant),
                    WithJsonSchema({"type": "string", "format": "date-time", "examples": ["2026-10-01T00:00:00Z"],
                                    "description": "ISO 8601; without an offset it is UTC."})]
