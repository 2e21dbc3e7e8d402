"""The operator API, `/v1/admin/…`: brokers, affiliates, referral codes, users, the review of
fills that were not accepted, periods and their closes, and the program's configuration.

Reads need any operator key; changing the program needs the `operator` role, approving and
settling the `approver` role, and an `admin` may do everything (`bkr.domain.operators.Role`;
operators and keys themselves are `bkr.api.routers.operators`). Every change is recorded on the
audit trail as the key's operator. Each endpoint parses its input,
calls one use case of `bkr.program` and shapes the answer; decimals travel as strings.
"""

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, ValidationInfo, WithJsonSchema
from pydantic_core import PydanticCustomError

from bkr.api import observability
from bkr.api.deps import ApproverDep, ConnectionDep, OperatorDep, ServicesDep, SnapshotDep, ViewerDep
from bkr.api.errors import responses
from bkr.api.schemas import BrokerIdPath, Instant, RequestModel, StatementDocument, StatementFigures
from bkr.api.wallet import WalletDep
from bkr.domain.config import TierBasis, UnknownBrokerPolicy
from bkr.domain.errors import BkrError, InvalidInput, StatementNotIssued
from bkr.domain.money import D, canonical
from bkr.domain.periods import Month, month_field
from bkr.domain.registry import (
    MAX_BROKER_ID,
    MAX_TEXT_LENGTH,
    MIN_BROKER_ID,
    TEXT_PATTERN,
    BrokerStatus,
    BrokerType,
    RateTimeline,
    check_rate,
    registry_text,
)
from bkr.ledger import journal
from bkr.program import keys, overview, registry, review, settings_versions, settlement
from bkr.program.close import close_month
from bkr.program.exports import StatementFormat, render_statement
from bkr.venue import history

router = APIRouter(prefix="/v1/admin", tags=["operators"])

READ = responses(401, 422, 503)
WRITE = responses(401, 403, 422, 503)

# --- input types ---------------------------------------------------------------------------------


def _fraction(value: object) -> Decimal:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise PydanticCustomError("decimal_string", 'send the rate as a decimal string, such as "0.10"')
    try:
        return check_rate(D(value))
    except InvalidInput as error:
        raise PydanticCustomError("invalid_rate", "{reason}", {"reason": str(error).removeprefix("rate: ")}) from None


Fraction = Annotated[Decimal, BeforeValidator(_fraction),
                     WithJsonSchema({"type": "string", "pattern": r"^\d+(\.\d+)?$", "examples": ["0.10"],
                                     "description": "A fraction in [0, 1] as a decimal string."})]


def _registry_text(value: str, info: ValidationInfo) -> str:
    try:
        return registry_text(value, info.field_name or "text")
    except InvalidInput as error:
        raise PydanticCustomError("printable_text", "{reason}",
                                  {"reason": str(error).removeprefix(f"{info.field_name}: ")}) from None


# Names, accounts, codes and ids are printable text, by the registry's one rule (the command line
# applies it too): refused at the door with the field named.
Text = Annotated[str, AfterValidator(_registry_text),
                 WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_TEXT_LENGTH,
                                 "pattern": TEXT_PATTERN})]
TextPath = Annotated[str, Path(min_length=1, max_length=MAX_TEXT_LENGTH, pattern=TEXT_PATTERN)]


def _month(month: Annotated[str, Path(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$", description="A month, YYYY-MM (UTC).",
                                      examples=["2026-09"])]) -> Month:
    return month_field(month)


MonthPath = Annotated[Month, Depends(_month)]

RETROACTIVE = ("Record a change that reaches into a closed month (needs `reason`); without it such a change is a "
               "409 `retroactive_change`. The closed month's statements stand: what the change moves of the fills "
               "they paid is paid in the next open month, as `retroactive` lines.")
REASON = "Why the change is made, kept on the audit trail; required when `retroactive` is true."

# --- brokers -------------------------------------------------------------------------------------


class BrokerIn(RequestModel):
    broker_id: int = Field(ge=MIN_BROKER_ID, le=MAX_BROKER_ID,
                           description="The X-Broker-Id the broker sends; never reused.")
    account: Text = Field(description="The broker's business account.")
    name: Text
    type: BrokerType


class StatusChangeIn(RequestModel):
    effective_at: Instant | None = Field(None, description="When the change takes effect (default: now). "
                                                           "A time in the past re-applies the rules to open months.")
    retroactive: bool = Field(False, description=RETROACTIVE)
    reason: Text | None = Field(None, description=REASON)


class StatusChangeOut(BaseModel):
    status: BrokerStatus
    effective_at: datetime


class BrokerOut(BaseModel):
    broker_id: int
    account: str
    name: str
    type: BrokerType
    status: BrokerStatus = Field(description="The status now.")


class BrokerStatementOut(BaseModel):
    month: str
    tier_level: int
    broker_rate: str
    api_volume: str
    payout_exact: str
    payout: str
    status: str


class BrokerDetailOut(BrokerOut):
    history: list[StatusChangeOut] = Field(description="Status changes, oldest first; pending before the first.")
    statements: list[BrokerStatementOut] = Field(description="The broker's issued statements, oldest first.")


class BrokerKeyOut(BaseModel):
    broker_id: int
    api_key: str = Field(description="The ED25519 public key, base64: the broker's X-API-Key.")
    secret: str = Field(description="The private seed, base64. Shown once: bkr does not keep it.")


def _broker_out(view: registry.BrokerView) -> BrokerOut:
    return BrokerOut(broker_id=view.broker_id, account=view.account_id, name=view.name, type=view.type,
                     status=view.status)


def _statement_out(summary: overview.StatementSummary) -> BrokerStatementOut:
    return BrokerStatementOut(month=str(summary.month), tier_level=summary.tier_level,
                              broker_rate=canonical(summary.broker_rate), api_volume=canonical(summary.api_volume),
                              payout_exact=canonical(summary.payout_exact), payout=format(summary.payout, "f"),
                              status=summary.status)


@router.post("/brokers", status_code=201, response_model=BrokerOut, summary="Enroll a broker",
             responses=responses(401, 403, 409, 422, 503))
def enroll_broker(body: BrokerIn, key: OperatorDep, services: ServicesDep, connection: ConnectionDep) -> BrokerOut:
    """Enroll a business account as a broker; it starts `pending`. An account enrolled in the
    affiliate program, or a broker id already taken, is a 409."""
    now = services.clock()
    registry.enroll_broker(connection, body.broker_id, body.account, body.name, body.type.value, now, actor=key.name)
    return _broker_out(registry.get_broker(connection, body.broker_id, now))


@router.get("/brokers", response_model=list[BrokerOut], summary="List brokers", responses=READ)
def list_brokers(_key: ViewerDep, services: ServicesDep, connection: SnapshotDep,
                 status: Annotated[BrokerStatus | None, Query(description="Only brokers with this status now.")]
                 = None) -> list[BrokerOut]:
    """Every broker with its status now, by broker id."""
    views = registry.list_brokers(connection, services.clock())
    return [_broker_out(view) for view in views if status is None or view.status is status]


@router.get("/brokers/{broker_id}", response_model=BrokerDetailOut, summary="Show a broker",
            responses=responses(401, 404, 422, 503))
def show_broker(broker_id: BrokerIdPath, _key: ViewerDep, services: ServicesDep,
                connection: SnapshotDep) -> BrokerDetailOut:
    """A broker's registry data, its status history and its issued statements."""
    view = registry.get_broker(connection, broker_id, services.clock())
    return BrokerDetailOut(
        **_broker_out(view).model_dump(),
        history=[StatusChangeOut(status=c.status, effective_at=c.effective_at) for c in view.timeline.changes],
        statements=[_statement_out(s) for s in overview.broker_statements(connection, broker_id)])


def _change_status(connection: ConnectionDep, services: ServicesDep, key: keys.Operator, broker_id: int,
                   status: BrokerStatus, body: StatusChangeIn | None) -> BrokerOut:
    now = services.clock()
    if body is None:  # no body: now, not retroactive
        return _broker_out(registry.change_broker_status(connection, broker_id, status, now, now, actor=key.name))
    return _broker_out(registry.change_broker_status(
        connection, broker_id, status, body.effective_at or now, now, actor=key.name,
        is_retroactive=body.retroactive, reason=body.reason))


_STATUS_ERRORS = responses(401, 403, 404, 409, 422, 503)


@router.post("/brokers/{broker_id}/activate", response_model=BrokerOut, summary="Activate a broker",
             responses=_STATUS_ERRORS)
def activate_broker(broker_id: BrokerIdPath, key: OperatorDep, services: ServicesDep, connection: ConnectionDep,
                    body: StatusChangeIn | None = None) -> BrokerOut:
    """Make a broker active from `effective_at` (default now): its API fills count from then on.
    A transition the lifecycle forbids (from terminated) is a 409; so is a time inside a closed
    month, unless `retroactive` (code `retroactive_change`)."""
    return _change_status(connection, services, key, broker_id, BrokerStatus.ACTIVE, body)


@router.post("/brokers/{broker_id}/suspend", response_model=BrokerOut, summary="Suspend a broker",
             responses=_STATUS_ERRORS)
def suspend_broker(broker_id: BrokerIdPath, key: OperatorDep, services: ServicesDep, connection: ConnectionDep,
                   body: StatusChangeIn | None = None) -> BrokerOut:
    """Suspend an active broker from `effective_at` (default now): its fills stop counting."""
    return _change_status(connection, services, key, broker_id, BrokerStatus.SUSPENDED, body)


@router.post("/brokers/{broker_id}/terminate", response_model=BrokerOut, summary="Terminate a broker",
             responses=_STATUS_ERRORS)
def terminate_broker(broker_id: BrokerIdPath, key: OperatorDep, services: ServicesDep, connection: ConnectionDep,
                     body: StatusChangeIn | None = None) -> BrokerOut:
    """End a broker's enrollment for good from `effective_at` (default now); its id is never reused."""
    return _change_status(connection, services, key, broker_id, BrokerStatus.TERMINATED, body)


class ScheduledChangeIn(RequestModel):
    effective_at: Instant = Field(description="The effective time of the scheduled change to cancel.")


@router.post("/brokers/{broker_id}/cancel-change", response_model=BrokerOut, summary="Cancel a scheduled change",
             responses=_STATUS_ERRORS)
def cancel_status_change(broker_id: BrokerIdPath, body: ScheduledChangeIn, key: OperatorDep,
                         services: ServicesDep, connection: ConnectionDep) -> BrokerOut:
    """Take back a status change that has not taken effect yet. One already in effect is a 409;
    so is a cancellation that would leave the lifecycle broken (an activation a suspension follows)."""
    return _broker_out(registry.cancel_status_change(connection, broker_id, body.effective_at, services.clock(),
                                                     actor=key.name))


@router.post("/brokers/{broker_id}/keys", status_code=201, response_model=BrokerKeyOut,
             summary="Create a broker key pair", responses=responses(401, 403, 404, 422, 503))
def create_broker_key(broker_id: BrokerIdPath, key: OperatorDep, services: ServicesDep,
                      connection: ConnectionDep) -> BrokerKeyOut:
    """A new ED25519 key pair for the broker API. The secret is in this answer only: hand it to
    the broker now."""
    pair = keys.create_broker_key(connection, broker_id, services.clock(), actor=key.name)
    return BrokerKeyOut(broker_id=broker_id, api_key=pair.api_key, secret=pair.secret)


# --- affiliates and referral codes ----------------------------------------------------------------


class AffiliateIn(RequestModel):
    account: Text = Field(description="The affiliate's business account.")
    name: Text


class AffiliateOut(BaseModel):
    account: str
    name: str
    codes: list[str]


class ReferralRateIn(RequestModel):
    affiliate: Text = Field(description="The account of the affiliate that owns the code.")
    code: Text
    rate: Fraction = Field(description="The affiliate rebate rate, e.g. \"0.10\".")
    effective_from: Instant | None = Field(None, description="From when the rate applies (default: now). "
                                                             "A later time on an existing code records a change.")
    retroactive: bool = Field(False, description=RETROACTIVE)
    reason: Text | None = Field(None, description=REASON)


class RateOut(BaseModel):
    rate: str
    effective_from: datetime


class ReferralCodeOut(BaseModel):
    code: str
    affiliate: str
    rate_now: str = Field(description="The rate in force now (0 before the first rate).")
    rates: list[RateOut] = Field(description="The rate history, oldest first.")


def _code_out(code: str, affiliate: str, timeline: RateTimeline, now: datetime) -> ReferralCodeOut:
    return ReferralCodeOut(code=code, affiliate=affiliate, rate_now=canonical(timeline.rate_at(now)),
                           rates=[RateOut(rate=canonical(c.rate), effective_from=c.effective_from)
                                  for c in timeline.changes])


@router.post("/affiliates", status_code=201, response_model=AffiliateOut, summary="Enroll an affiliate",
             responses=responses(401, 403, 409, 422, 503))
def enroll_affiliate(body: AffiliateIn, key: OperatorDep, services: ServicesDep,
                     connection: ConnectionDep) -> AffiliateOut:
    """Enroll a business account as an affiliate. An account enrolled as a broker is a 409
    `already_enrolled`: the two programs are mutually exclusive."""
    registry.enroll_affiliate(connection, body.account, body.name, services.clock(), actor=key.name)
    return AffiliateOut(account=body.account.strip(), name=body.name.strip(), codes=[])


@router.get("/affiliates", response_model=list[AffiliateOut], summary="List affiliates", responses=READ)
def list_affiliates(_key: ViewerDep, connection: SnapshotDep) -> list[AffiliateOut]:
    """Every affiliate with its referral codes."""
    return [AffiliateOut(account=account, name=name, codes=codes)
            for account, name, codes in registry.list_affiliates(connection)]


@router.post("/referral-codes", status_code=201, response_model=ReferralCodeOut,
             summary="Create a referral code or change its rate", responses=responses(401, 403, 404, 409, 422, 503))
def set_referral_rate(body: ReferralRateIn, key: OperatorDep, services: ServicesDep,
                      connection: ConnectionDep) -> ReferralCodeOut:
    """Create a referral code of an affiliate with its rate, or record a new rate for an existing
    code from `effective_from` on (the history is kept). A code owned by another affiliate, or a
    different rate at the same time, is a 409; so is a new rate of an existing code from a time
    inside a closed month, unless `retroactive` (code `retroactive_change`)."""
    now = services.clock()
    effective_from = body.effective_from or now
    timeline = registry.set_referral_rate(connection, body.affiliate, body.code, body.rate, effective_from, now,
                                          actor=key.name, is_retroactive=body.retroactive, reason=body.reason)
    return _code_out(body.code.strip(), body.affiliate, timeline, now)


class ScheduledRateIn(RequestModel):
    effective_from: Instant = Field(description="The start of the scheduled rate to cancel.")


@router.post("/referral-codes/{code}/cancel-rate", response_model=ReferralCodeOut, summary="Cancel a scheduled rate",
             responses=responses(401, 403, 404, 409, 422, 503))
def cancel_referral_rate(code: TextPath, body: ScheduledRateIn, key: OperatorDep, services: ServicesDep,
                         connection: ConnectionDep) -> ReferralCodeOut:
    """Take back a referral rate that has not taken effect yet; one in effect is a 409."""
    now = services.clock()
    registry.cancel_rate_change(connection, code, body.effective_from, now, actor=key.name)
    view = overview.get_referral_code(connection, code)
    return _code_out(view.code, view.affiliate_account_id, view.timeline, now)


@router.get("/referral-codes/{code}", response_model=ReferralCodeOut, summary="Show a referral code",
            responses=responses(401, 404, 422, 503))
def show_referral_code(code: TextPath, _key: ViewerDep, services: ServicesDep,
                       connection: SnapshotDep) -> ReferralCodeOut:
    """A referral code's owner and its rate history."""
    view = overview.get_referral_code(connection, code)
    return _code_out(view.code, view.affiliate_account_id, view.timeline, services.clock())


# --- users -----------------------------------------------------------------------------------------


class UserIn(RequestModel):
    user_id: Text
    referral_code: Text | None = Field(None, description="The code the user signed up with; it never changes.")


class UsersAddedOut(BaseModel):
    users: int = Field(description="Users in the request.")
    new: int = Field(description="Users bkr did not know before.")


class UserOut(BaseModel):
    user_id: str
    referral_code: str | None
    affiliate: str | None = Field(description="The account of the affiliate that owns the referral code.")
    registered_at: datetime


MAX_USERS = 100_000


def _one_or_many(value: object) -> object:
    return [value] if isinstance(value, dict) else value


def _one_or_many_schema(schema: dict[str, Any]) -> None:
    array = dict(schema)
    schema.clear()
    schema["oneOf"] = [array["items"], array]


# One object is read as a list of one, so that an error names its place the same way in both
# forms ("0.user_id", "3.referral_code"); the OpenAPI schema says both are accepted.
UsersIn = Annotated[list[UserIn], BeforeValidator(_one_or_many),
                    Field(min_length=1, max_length=MAX_USERS, json_schema_extra=_one_or_many_schema)]


@router.post("/users", response_model=UsersAddedOut, summary="Register users",
             responses=responses(401, 403, 404, 409, 422, 503))
def add_users(body: UsersIn, key: OperatorDep, services: ServicesDep, connection: ConnectionDep,
              retroactive: Annotated[bool, Query(description=RETROACTIVE)] = False,
              reason: Annotated[str | None, Query(min_length=1, max_length=MAX_TEXT_LENGTH, pattern=TEXT_PATTERN,
                                                  description=REASON)] = None) -> UsersAddedOut:
    """Register one user (an object) or many (a list), each with the referral code it signed up
    with. A user already known with the same code is left alone; with another code it is a 409;
    an unknown code is a 404. Broker fills that were waiting for these users are attributed now;
    if some belong to a closed month, the registration is a 409 `retroactive_change` unless it is
    declared with the query parameters `retroactive=true` and `reason` (they apply to the whole
    request, whose body is the users themselves)."""
    new = registry.add_users(connection, [(u.user_id, u.referral_code) for u in body], services.clock(),
                             actor=key.name, is_retroactive=retroactive, reason=reason)
    return UsersAddedOut(users=len(body), new=new)


@router.get("/users/{user_id}", response_model=UserOut, summary="Show a user", responses=responses(401, 404, 422, 503))
def show_user(user_id: TextPath, _key: ViewerDep, connection: SnapshotDep) -> UserOut:
    """A user, the referral code it signed up with and that code's affiliate."""
    view = overview.get_user(connection, user_id)
    return UserOut(user_id=view.user_id, referral_code=view.referral_code, affiliate=view.affiliate_account_id,
                   registered_at=view.registered_at)


# --- review of fills ---------------------------------------------------------------------------------


class ReviewCountsOut(BaseModel):
    rejected: int
    conflicts: int
    awaiting_user: int = Field(description="Accepted broker fills that are paid only once their user is registered.")
    self_trades: int = Field(description="Fills that are one side of a trade of one user with itself (matched by "
                                         "`trade_id`): stored, counted for nobody.")


class ReviewRowOut(BaseModel):
    id: int = Field(description="The row id; pass the last one as `after` for the next page.")
    source: str = Field(description="The file or batch the row came in.")
    line: int | None
    fill_id: str | None
    reason: str
    raw: str = Field(description="The row as received.")
    seen_at: datetime


class ReviewPageOut(BaseModel):
    items: list[ReviewRowOut]
    next_after: int | None = Field(description="The `after` of the next page; null on the last page.")
    counts: ReviewCountsOut


Limit = Annotated[int, Query(ge=1, le=1000, description="Rows per page, at most 1000.")]
After = Annotated[int | None, Query(ge=0, le=review.MAX_ROW_ID, description="Return rows after this row id.")]


def _page(rows: list[review.RejectedRow] | list[review.ConflictRow], limit: int,
          counts: review.ReviewCounts) -> ReviewPageOut:
    items = [ReviewRowOut(id=r.row_id, source=r.source, line=r.line, fill_id=r.fill_id, reason=r.reason, raw=r.raw,
                          seen_at=r.seen_at) for r in rows]
    return ReviewPageOut(items=items, next_after=items[-1].id if len(items) == limit else None,
                         counts=ReviewCountsOut(**counts.to_document()))


@router.get("/fills/rejected", response_model=ReviewPageOut, summary="Rejected fill rows", responses=READ)
def rejected_fills(_key: ViewerDep, connection: SnapshotDep, limit: Limit = 100,
                   after: After = None) -> ReviewPageOut:
    """Rows that were rejected, each with its source, line and reason, in the order they were seen;
    with the counts of rejected rows, conflicts and fills awaiting their user."""
    return _page(review.rejected_rows(connection, limit=limit, after=after), limit, review.review_counts(connection))


@router.get("/fills/conflicts", response_model=ReviewPageOut, summary="Conflicting fills", responses=READ)
def conflicting_fills(_key: ViewerDep, connection: SnapshotDep, limit: Limit = 100,
                      after: After = None) -> ReviewPageOut:
    """Fills whose `fill_id` was already stored with other content. They were not applied: the
    stored fill keeps its first content until an operator acts."""
    return _page(review.conflict_rows(connection, limit=limit, after=after), limit, review.review_counts(connection))


class AwaitingUserOut(BaseModel):
    user_id: str = Field(description="A user id that broker fills carry and the registry does not know.")
    fills: int
    volume_usd: str = Field(description="Exact USD volume of its waiting fills, a decimal string.")
    fee_usd: str = Field(description="Exact USD fees of its waiting fills, a decimal string.")
    brokers: list[int] = Field(description="The brokers whose orders these fills are.")
    first_month: str = Field(description="The month of its earliest waiting fill, YYYY-MM.")
    last_seen: datetime = Field(description="The time of its latest waiting fill.")


class AwaitingPageOut(BaseModel):
    items: list[AwaitingUserOut]
    next_after: str | None = Field(description="The `after` of the next page; null on the last page.")
    awaiting_user_fills: int = Field(description="Broker fills waiting for any user.")


@router.get("/fills/awaiting", response_model=AwaitingPageOut, summary="Users that fills wait for", responses=READ)
def awaiting_users(_key: ViewerDep, connection: SnapshotDep, limit: Limit = 100,
                   after: Annotated[str | None, Query(min_length=1, max_length=256,
                                                      description="Return users after this user id.")] = None,
                   ) -> AwaitingPageOut:
    """The user ids of accepted broker fills that bkr does not know, by user id: what registering
    each (with its referral code) would make payable."""
    users = review.awaiting_users(connection, limit=limit, after=after)
    items = [AwaitingUserOut(user_id=u.user_id, fills=u.fills, volume_usd=canonical(u.volume_usd),
                             fee_usd=canonical(u.fee_usd),
                             brokers=list(u.brokers), first_month=str(u.first_month), last_seen=u.last_seen)
             for u in users]
    return AwaitingPageOut(items=items, next_after=users[-1].user_id if len(users) == limit else None,
                           awaiting_user_fills=review.review_counts(connection).awaiting_user)


# --- periods, closes and statements -------------------------------------------------------------------


class PeriodStatementOut(BaseModel):
    broker_id: int
    tier_level: int
    broker_rate: str
    api_volume: str
    payout_exact: str
    payout: str
    status: str
    approved_by: list[str] = Field(description="The operators who approved it, in order.")


class PeriodOut(BaseModel):
    month: str
    status: Literal["open", "closed"]
    closed_at: datetime | None
    closed_by: str | None = Field(description="Who closed it: an operator, or `system` (the scheduled close); null "
                                              "while open, or for a close earlier versions did not record.")
    statement_count: int
    total_payout: str = Field(description="Sum of the statements' rounded payouts.")
    total_payout_exact: str


class PeriodDetailOut(PeriodOut):
    statements: list[PeriodStatementOut] = Field(description="The issued statements (none while open).")


class CloseStatementOut(StatementFigures):
    line_count: int


class CloseOut(BaseModel):
    month: str
    already_closed: bool
    dry_run: bool
    projection: bool = Field(description="True for the month in progress: the statements it would issue if it "
                                         "ended now, which change as fills arrive.")
    awaiting_user_fills: int = Field(description="Broker fills of the month not in these statements: "
                                                 "their user is not registered yet.")
    statements: list[CloseStatementOut]


def _period_out(summary: overview.PeriodSummary) -> dict[str, Any]:
    return {"month": str(summary.month), "status": summary.status, "closed_at": summary.closed_at,
            "closed_by": summary.closed_by,
            "statement_count": summary.statement_count, "total_payout": format(summary.total_payout, "f"),
            "total_payout_exact": canonical(summary.total_payout_exact)}


@router.get("/periods", response_model=list[PeriodOut], summary="List periods", responses=READ)
def list_periods(_key: ViewerDep, connection: SnapshotDep) -> list[PeriodOut]:
    """Every month bkr has seen, newest first: open or closed, when it closed, how many
    statements it issued and their total payout."""
    return [PeriodOut(**_period_out(summary)) for summary in overview.list_periods(connection)]


@router.get("/periods/{month}", response_model=PeriodDetailOut, summary="Show a period",
            responses=responses(401, 404, 422, 503))
def show_period(month: MonthPath, _key: ViewerDep, connection: SnapshotDep) -> PeriodDetailOut:
    """A month's status, who closed it, and its issued statements by broker with their approvers."""
    summary = overview.get_period(connection, month)
    approvers = settlement.approvers(connection, month)
    return PeriodDetailOut(**_period_out(summary), statements=[
        PeriodStatementOut(broker_id=s.broker_id, tier_level=s.tier_level, broker_rate=canonical(s.broker_rate),
                           api_volume=canonical(s.api_volume), payout_exact=canonical(s.payout_exact),
                           payout=format(s.payout, "f"), status=s.status, approved_by=approvers.get(s.broker_id, []))
        for s in summary.statements])


def _close(services: ServicesDep, month: Month, actor: str, *, dry_run: bool) -> CloseOut:
    try:
        result = close_month(services.engine, month, now=services.clock(), dry_run=dry_run, actor=actor)
    except BkrError:
        observability.CLOSES.labels(trigger="api", result="error").inc()
        raise
    outcome = ("projection" if result.projection else "preview" if dry_run
               else "already_closed" if result.already_closed else "closed")
    observability.CLOSES.labels(trigger="api", result=outcome).inc()
    return CloseOut.model_validate(result.to_document())


# These two take no request transaction: the close runs in its own, and on SQLite a second
# writer in the same request would wait on the first.
@router.post("/periods/{month}/preview", response_model=CloseOut, summary="Preview a close",
             responses=responses(401, 403, 409, 422, 503))
def preview_close(month: MonthPath, key: OperatorDep, services: ServicesDep) -> CloseOut:
    """Run the month's close to the end and write nothing: the statements a close would issue
    now. On a closed month, the statements it issued. On the month in progress, the statements
    it would issue if it ended now, marked `projection`; a later month is a 409 `period_not_ended`."""
    return _close(services, month, key.name, dry_run=True)


@router.post("/periods/{month}/close", response_model=CloseOut, summary="Close a period",
             responses=responses(401, 403, 409, 422, 503))
def close_period(month: MonthPath, key: OperatorDep, services: ServicesDep) -> CloseOut:
    """Close a month: tiers, payouts, one statement per broker. Idempotent: closing a closed
    month answers with the statements it issued (`already_closed`), byte for byte the same. A
    month not yet ended is a 409 `period_not_ended`. The key's operator is recorded as the one
    who closed it: with two approvals or more required, it may not approve the statements."""
    return _close(services, month, key.name, dry_run=False)


@router.get("/periods/{month}/statements/{broker_id}", response_model=StatementDocument, summary="Download a statement",
            responses={**responses(401, 404, 422, 503),
                       200: {"description": "The stored statement: canonical JSON, or CSV with `format=csv`.",
                             "content": {"text/csv": {"schema": {"type": "string"}}}}})
def get_statement(month: MonthPath, broker_id: BrokerIdPath, _key: ViewerDep, connection: SnapshotDep,
                  output_format: Annotated[Literal["json", "csv"], Query(alias="format")] = "json") -> Response:
    """One broker's statement of a closed month, with its lines per user and market type: the
    stored canonical JSON byte for byte, or CSV (the lines and a total row)."""
    try:
        rendered = render_statement(connection, broker_id, month, StatementFormat(output_format), None)
    except StatementNotIssued as error:
        if not error.month_open:
            raise
        raise StatementNotIssued(f"{error}; preview: POST /v1/admin/periods/{month}/preview",
                                 month_open=True) from None
    return Response(rendered.body, media_type=rendered.media_type, headers=rendered.headers)


# --- configuration --------------------------------------------------------------------------------------


class TierOut(BaseModel):
    level: int
    name: str
    min_volume: str = Field(description="Monthly API volume (USD) from which the tier applies (inclusive).")
    rate: str = Field(description="The broker rebate rate.")


class ScheduleOut(BaseModel):
    effective_from: str = Field(description="The first month the schedule applies to, YYYY-MM.")
    tiers: list[TierOut]


class ConfigOut(BaseModel):
    schedules: list[ScheduleOut]
    cap: str = Field(description="The cap on broker rate + affiliate rate.")
    tier_basis: TierBasis
    unknown_broker_policy: UnknownBrokerPolicy
    rounding_quantum: str
    usd_rates: dict[str, str] = Field(description="USD value of one unit of each configured asset.")


@router.get("/config", response_model=ConfigOut, summary="The program's configuration in force now",
            responses=READ)
def show_config(_key: ViewerDep, services: ServicesDep, connection: SnapshotDep) -> ConfigOut:
    """The program version in force this month (read-only): tier schedules by the month they take
    effect, the cap, the tier basis, the unknown-broker policy, the rounding quantum and USD rates.
    `GET /v1/admin/program` gives the whole version, for any month, and its history."""
    config = settings_versions.version_for(connection, Month.of(services.clock())).config
    return ConfigOut(
        schedules=[ScheduleOut(effective_from=str(s.effective_from),
                               tiers=[TierOut(level=t.level, name=t.name, min_volume=canonical(t.min_volume),
                                              rate=canonical(t.rate)) for t in s.tiers])
                   for s in sorted(config.schedules, key=lambda s: s.effective_from)],
        cap=canonical(config.cap), tier_basis=config.tier_basis, unknown_broker_policy=config.unknown_broker_policy,
        rounding_quantum=canonical(config.rounding_quantum),
        usd_rates={asset: canonical(rate) for asset, rate in sorted(config.usd_rates.items())})


class BrokerIdSeenOut(BaseModel):
    header: str = Field(description="The broker id as orders sent it, in X-Broker-Id or in their body's brokerId "
                                    "(it may not even be a number; a body's string is quoted).")
    reason: str = Field(description="Why it is not an active broker: unknown, pending, suspended, terminated, "
                                    "malformed (the latest reason seen).")
    orders: int = Field(description="Orders that traded with it, unattributed (policy `ignore`).")
    rejected: int = Field(description="Orders refused for it (policy `reject`).")
    first_seen_at: datetime
    last_seen_at: datetime


@router.get("/venue/broker-ids", response_model=list[BrokerIdSeenOut], summary="Broker ids the venue could not count",
            responses=READ)
def venue_broker_ids(_key: ViewerDep, connection: SnapshotDep) -> list[BrokerIdSeenOut]:
    """The `X-Broker-Id` values the sandbox venue's orders carried that were not an active broker,
    most orders first: misconfigured integrations, or brokers trading before their activation."""
    return [BrokerIdSeenOut(header=seen.header, reason=seen.reason, orders=seen.orders, rejected=seen.rejected,
                            first_seen_at=seen.first_seen_at, last_seen_at=seen.last_seen_at)
            for seen in history.broker_ids_seen(connection)]


class BrokerIdConflictOut(BaseModel):
    header: str = Field(description="The X-Broker-Id value the request sent.")
    body: str = Field(description="The order's brokerId as sent (a string quoted, as JSON writes it).")
    orders: int = Field(description="Orders that traded, counted for no broker (policy `ignore`).")
    rejected: int = Field(description="Orders refused (policy `reject`).")
    first_seen_at: datetime
    last_seen_at: datetime


@router.get("/venue/broker-id-conflicts", response_model=list[BrokerIdConflictOut],
            summary="Orders whose two broker ids disagreed", responses=READ)
def venue_broker_id_conflicts(_key: ViewerDep, connection: SnapshotDep) -> list[BrokerIdConflictOut]:
    """The sandbox venue's orders that named one broker in `X-Broker-Id` and another in their body's
    `brokerId`, by the two values, most orders first: such an order counts for neither broker."""
    return [BrokerIdConflictOut(header=c.header, body=c.body, orders=c.orders, rejected=c.rejected,
                                first_seen_at=c.first_seen_at, last_seen_at=c.last_seen_at)
            for c in history.broker_id_conflicts(connection)]


# --- settlement -----------------------------------------------------------------------------------

class ApprovalOut(BaseModel):
    broker_id: int
    month: str
    status: str = Field(description="The statement's status after this approval: draft or final.")
    approvals: int = Field(description="Distinct approvers so far (operators).")
    approvals_required: int = Field(description="Distinct approvers the program requires.")
    already_approved: bool = Field(description="This operator had approved the statement before: this request "
                                               "changed nothing, and the statement waits for another operator.")


class SettleOut(BaseModel):
    month: str
    paid: list[int] = Field(description="Brokers whose statement this request paid.")
    already_paid: list[int] = Field(description="Brokers whose statement was paid before: nothing was posted.")
    not_final: list[int] = Field(description="Brokers whose statement is still a draft in review.")
    transferred: list[int] = Field(default_factory=list, description="Brokers whose payout this request credited "
                                   "on the venue and acknowledged (a program whose `payout_target` is `venue`).")


class LedgerBalanceOut(BaseModel):
    account: str = Field(description="`program:rebate_expense`, or `broker:<id>` (the broker's account).")
    currency: str
    balance: str = Field(description="The sum of the account's entries, an exact decimal: debits positive, "
                                     "credits negative.", examples=["-1234.56"])


@router.post("/periods/{month}/statements/{broker_id}/approve", response_model=ApprovalOut,
             summary="Approve a draft statement", responses=responses(401, 403, 404, 409, 422, 503))
def approve_statement(month: MonthPath, broker_id: BrokerIdPath, key: ApproverDep, services: ServicesDep,
                      connection: ConnectionDep) -> ApprovalOut:
    """Approve a draft as the key's operator (role `approver` or `admin`); with `approvals_required`
    distinct operators it becomes final (payable). The same operator approving again changes
    nothing (`already_approved`). With two approvals or more required, the operator who closed the
    month is refused (403 `separation_of_duties`). A statement already final or paid is a 409."""
    done = settlement.approve(connection, broker_id, month, key.name, services.clock())
    return ApprovalOut(broker_id=broker_id, month=str(month), status=done.status, approvals=done.approvals,
                       approvals_required=done.required, already_approved=done.already_approved)


@router.post("/periods/{month}/settle", response_model=SettleOut, summary="Pay a month's final statements",
             responses=responses(401, 403, 404, 422, 503))
def settle_period(month: MonthPath, key: ApproverDep, services: ServicesDep, wallet: WalletDep) -> SettleOut:
    """Pay every final statement of the month through the ledger, each exactly once: safe to
    repeat, to run concurrently and to rerun after a failure. Drafts past their review window
    become final first. Each payout is owed in the ledger and written as a payout instruction for
    the wallet (`GET /v1/admin/payouts`). Needs the `approver` (or `admin`) role."""
    result = settlement.settle_month(services.engine, month, services.clock(), actor=key.name, wallet=wallet)
    return SettleOut(month=str(month), paid=result.paid, already_paid=result.already_paid,
                     not_final=result.not_final, transferred=result.transferred)


@router.get("/ledger/balances", response_model=list[LedgerBalanceOut], summary="Ledger balances",
            responses=READ)
def ledger_balances(_key: ViewerDep, connection: SnapshotDep) -> list[LedgerBalanceOut]:
    """Every account's balance, summed exactly from its entries."""
    return [LedgerBalanceOut(account=account, currency=currency, balance=canonical(balance))
            for (account, currency), balance in journal.balances(connection).items()]
