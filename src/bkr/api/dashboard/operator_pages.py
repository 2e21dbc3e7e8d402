"""The operator's pages: the program at a glance, the brokers, the months with their closes and
settlement, what waits for review, and the program's settings version by version; with the
actions the operator API offers (suspend and reactivate a broker, approve a statement, settle a
month).

Figures come from the use cases behind `/v1/admin/…` (`bkr.program.overview`, `registry`,
`review`, `settlement`, `settings_versions`, the close and its dry run, the venue's broker ids),
and an action calls the same use case as its API endpoint, as the same operator key.
"""

from collections import Counter
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import Connection

from bkr.api.dashboard.charts import Bar, Series, stacked_bars
from bkr.api.dashboard.web import (
    PREFIX,
    ApproverDep,
    FormDep,
    OperatorChangeDep,
    OperatorReaderDep,
    PageRoute,
    back_to,
    redirect,
    render,
)
from bkr.api.deps import Services, ServicesDep
from bkr.api.schemas import BrokerIdPath
from bkr.api.wallet import WalletDep
from bkr.domain.errors import InvalidInput
from bkr.domain.money import D, total
from bkr.domain.periods import Month, month_field
from bkr.domain.program_versions import ProgramTimeline
from bkr.domain.registry import BrokerStatus
from bkr.domain.statements import BrokerStatement
from bkr.domain.tiers import TierSchedule
from bkr.program import audit, overview, registry, review, settings_versions, settlement, treasury
from bkr.program.close import close_month, compute_statements
from bkr.store import db
from bkr.venue import history

router = APIRouter(prefix=f"{PREFIX}/program", route_class=PageRoute, include_in_schema=False)

MONTHS_CHARTED = 12
REVIEW_PAGE = 50


def _projection(connection: Connection, services: Services, month: Month) -> list[BrokerStatement]:
    """The statements the close would write if `month` ended now: the close's own computation,
    with users merged (the same totals), as the broker summary uses it."""
    return compute_statements(connection, month, per_user=False)


@router.get("")
def program_page(request: Request, operator: OperatorReaderDep, services: ServicesDep) -> Response:
    """The program on one screen: brokers per tier, API volume and payouts by month, what waits."""
    now = services.clock()
    current = Month.of(now)
    with db.snapshot(services.engine) as connection:
        periods = overview.list_periods(connection)
        projection = _projection(connection, services, current)
        brokers = registry.list_brokers(connection, now)
        counts = review.review_counts(connection)
        unknown_ids = history.broker_ids_seen(connection)
        tiers = settings_versions.version_for(connection, current).config.schedule_for(current).tiers
    closed = [p for p in reversed(periods) if p.status == "closed"][-MONTHS_CHARTED:]
    per_tier = Counter(statement.tier_level for statement in projection)
    tier_rows = [(tier, per_tier.get(tier.level, 0)) for tier in tiers]
    month_rows = [(str(p.month), p.total_api_volume, p.total_payout, "statements") for p in closed]
    month_rows.append((f"{current} so far", total(s.api_volume for s in projection),
                       total(s.payout for s in projection), "projection"))
    charts = {
        "tiers": stacked_bars("brokers-per-tier", f"Brokers per tier, {current} if it ended now",
                              "How many brokers with volume this month would be paid at each tier; the table "
                              "beside it lists the same counts.", (Series("Brokers", "brokers"),),
                              [Bar(tier.name, (D(n),)) for tier, n in tier_rows], unit="brokers", places=0),
        "volume": stacked_bars("volume-by-month", "API volume by month",
                               "Closed months from their statements, the current month so far; the table below "
                               "lists the same figures.", (Series("API volume", "volume"),),
                               [Bar(label, (volume,)) for label, volume, _, _ in month_rows]),
        "payouts": stacked_bars("payouts-by-month", "Payouts by month",
                                "Payouts of closed months' statements, and the current month if it ended now; "
                                "the table below lists the same figures.", (Series("Payouts", "payout"),),
                                [Bar(label, (payout,)) for label, _, payout, _ in month_rows]),
    }
    statuses = Counter(view.status.value for view in brokers)
    return render(request, "program.html", title="Program", charts=charts, tier_rows=tier_rows,
                  month_rows=month_rows, statuses=sorted(statuses.items()), broker_count=len(brokers),
                  counts=counts, unknown_ids=unknown_ids, current=current)




# --- brokers ---------------------------------------------------------------------------------------


@router.get("/brokers")
def brokers_page(request: Request, operator: OperatorReaderDep, services: ServicesDep,
                 q: Annotated[str, Query(max_length=100)] = "", status: str = "") -> Response:
    """Every broker, searched by id, name or account, with this month's volume and tier so far."""
    now = services.clock()
    with db.snapshot(services.engine) as connection:
        views = registry.list_brokers(connection, now)
        projection = {s.broker_id: s for s in _projection(connection, services, Month.of(now))}
    needle = q.strip().casefold()
    shown = [view for view in views
             if (not needle or needle in f"{view.broker_id} {view.name} {view.account_id}".casefold())
             and (not status or view.status.value == status)]
    return render(request, "brokers.html", title="Brokers", brokers=shown, total_count=len(views), q=q,
                  status_filter=status, statuses=[s.value for s in BrokerStatus], projection=projection,
                  month=Month.of(now))


@router.post("/brokers/{broker_id}/status")
def change_status(broker_id: BrokerIdPath, operator: OperatorChangeDep, services: ServicesDep,
                  form: FormDep) -> Response:
    """Suspend, activate or reactivate a broker from now on, as `POST /v1/admin/brokers/{id}/suspend`
    and `…/activate` do."""
    try:
        wanted = BrokerStatus(form.get("status", ""))
    except ValueError:
        raise InvalidInput(f"status: {form.get('status')!r} is not a broker status", field="status") from None
    if wanted not in (BrokerStatus.ACTIVE, BrokerStatus.SUSPENDED):
        raise InvalidInput("status: the dashboard suspends and (re)activates; terminate with the API or the CLI",
                           field="status")
    now = services.clock()
    with services.engine.begin() as connection:
        registry.change_broker_status(connection, broker_id, wanted, now, now, actor=operator.name)
    return redirect(back_to(form.get("back", ""), f"{PREFIX}/brokers/{broker_id}"))


# --- months: closes and settlement ------------------------------------------------------------------


def _next_close(periods: list[overview.PeriodSummary], now: datetime) -> Month:
    """The month the next close is for: the oldest ended month still open, else the current one."""
    current = Month.of(now)
    ended_open = [p.month for p in periods if p.status == "open" and p.month < current]
    return min(ended_open) if ended_open else current


def _preview(services: Services, month: Month) -> tuple[str, list[BrokerStatement]]:
    """What closing `month` would issue: the close's dry run for an ended month; for the month in
    progress, which cannot be closed yet, the same computation over its running totals."""
    now = services.clock()
    if month < Month.of(now):
        result = close_month(services.engine, month, now=now, dry_run=True)
        return "dry_run", list(result.statements)
    with db.snapshot(services.engine) as connection:
        return "projection", _projection(connection, services, month)


@router.get("/months")
def months_page(request: Request, operator: OperatorReaderDep, services: ServicesDep) -> Response:
    """Every month: open or closed, its statements by settlement status, and the next close previewed."""
    now = services.clock()
    with db.snapshot(services.engine) as connection:
        periods = overview.list_periods(connection)
        names = {view.broker_id: view.name for view in registry.list_brokers(connection, now)}
    upcoming = _next_close(periods, now)
    mode, preview = _preview(services, upcoming)
    states = {str(p.month): sorted(Counter(s.status for s in p.statements).items()) for p in periods}
    return render(request, "months.html", title="Months", periods=periods, states=states, upcoming=upcoming,
                  preview_mode=mode, preview=preview, names=names, preview_total=total(
                      s.payout for s in preview))


@router.get("/months/{month}")
def month_page(request: Request, month: str, operator: OperatorReaderDep, services: ServicesDep) -> Response:
    """One month's statements with their settlement status and actions; an open month's preview."""
    target = month_field(month)
    now = services.clock()
    with db.snapshot(services.engine) as connection:
        period = overview.get_period(connection, target)
        names = {view.broker_id: view.name for view in registry.list_brokers(connection, now)}
        approvals_required = settlement.approvals_required(connection, target)
        approvers = settlement.approvers(connection, target)
        payouts = {row.broker_id: row for row in treasury.month_statements(connection, target)}
    mode, preview = ("", []) if period.status == "closed" else _preview(services, target)
    return render(request, "month.html", title=f"Month {target}", period=period, names=names, preview_mode=mode,
                  approvers=approvers, payouts=payouts,
                  preview=preview, preview_total=total(s.payout for s in preview),
                  approvals_required=approvals_required,
                  payable=any(s.status == settlement.FINAL for s in period.statements))


@router.get("/months/{month}/statements.{extension}")
def month_statements_download(month: str, extension: str, operator: OperatorReaderDep,
                              services: ServicesDep) -> Response:
    """The month's statements with their payouts, as CSV or JSON: the rows of
    GET /v1/admin/statements and `bkr statements --month`."""
    target = month_field(month)
    if extension not in ("csv", "json"):
        raise InvalidInput(f"statements.{extension}: download statements.csv or statements.json", field="format")
    with db.snapshot(services.engine) as connection:
        rows = treasury.month_statements(connection, target)
    if extension == "csv":
        body, media_type = treasury.rows_csv(rows), "text/csv; charset=utf-8"
    else:
        body, media_type = treasury.rows_json(target, rows), "application/json"
    return Response(body, media_type=media_type, headers={
        "Content-Disposition": f'attachment; filename="statements-{target}.{extension}"'})


@router.post("/months/{month}/statements/{broker_id}/approve")
def approve(month: str, broker_id: BrokerIdPath, operator: ApproverDep, services: ServicesDep,
            form: FormDep) -> Response:
    """Approve a draft as this session's operator, the approver its keys are over the API: one
    operator approving from both counts once."""
    target = month_field(month)
    with services.engine.begin() as connection:
        settlement.approve(connection, broker_id, target, operator.name, services.clock())
    return redirect(back_to(form.get("back", ""), f"{PREFIX}/program/months/{target}"))


@router.post("/months/{month}/settle")
def settle(month: str, operator: ApproverDep, services: ServicesDep, form: FormDep, wallet: WalletDep) -> Response:
    """Pay the month's final statements through the ledger, each exactly once, writing their
    payout instructions (with a program that pays to the venue: transferred there too)."""
    target = month_field(month)
    settlement.settle_month(services.engine, target, services.clock(), actor=operator.name, wallet=wallet)
    return redirect(back_to(form.get("back", ""), f"{PREFIX}/program/months/{target}"))


# --- settings ---------------------------------------------------------------------------------------


@router.get("/settings")
def settings_page(request: Request, session: OperatorReaderDep, services: ServicesDep,
                  month: Annotated[str, Query(max_length=7)] = "") -> Response:
    """The program version in force (this month, or `month`) with its settings, and every version."""
    target = month_field(month) if month else Month.of(services.clock())
    with db.snapshot(services.engine) as connection:
        versions = settings_versions.history(connection)
    version = ProgramTimeline(tuple(versions)).in_force(target)
    try:
        schedule: TierSchedule | None = version.config.schedule_for(target)
    except InvalidInput:  # before every tier schedule: no program that month
        schedule = None
    history = [(v, settings_versions.changes(versions[i - 1] if i else None, v)) for i, v in enumerate(versions)]
    return render(request, "settings.html", title="Program settings", month=target, version=version,
                  config=version.config, schedule=schedule, rates=sorted(version.config.usd_rates.items()),
                  later=[v for v in versions if v.from_month > target], history=list(reversed(history)))


# --- review ---------------------------------------------------------------------------------------------


@router.get("/review")
def review_page(request: Request, operator: OperatorReaderDep, services: ServicesDep,
                rejected_after: Annotated[int | None, Query(ge=0, le=review.MAX_ROW_ID)] = None,
                conflicts_after: Annotated[int | None, Query(ge=0, le=review.MAX_ROW_ID)] = None,
                awaiting_after: Annotated[str | None, Query(min_length=1, max_length=256)] = None) -> Response:
    """Rejected rows, conflicting fills and the users fills wait for, a page at a time, and the
    broker ids the venue could not count."""
    with db.snapshot(services.engine) as connection:
        counts = review.review_counts(connection)
        rejected = review.rejected_rows(connection, limit=REVIEW_PAGE, after=rejected_after)
        conflicts = review.conflict_rows(connection, limit=REVIEW_PAGE, after=conflicts_after)
        awaiting = review.awaiting_users(connection, limit=REVIEW_PAGE, after=awaiting_after)
        unknown_ids = history.broker_ids_seen(connection)
    return render(request, "review.html", title="Review", counts=counts, rejected=rejected, conflicts=conflicts,
                  awaiting=awaiting, unknown_ids=unknown_ids, page=REVIEW_PAGE, rejected_after=rejected_after,
                  conflicts_after=conflicts_after, awaiting_after=awaiting_after)


# --- audit trail --------------------------------------------------------------------------------------


@router.get("/audit")
def audit_page(request: Request, session: OperatorReaderDep, services: ServicesDep,
               actor: Annotated[str | None, Query(max_length=256)] = None,  # empty: every actor
               action: Annotated[str | None, Query(max_length=256)] = None,
               after: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None) -> Response:
    """The audit trail, newest changes last, a page at a time, with whether its chain holds."""
    with db.snapshot(services.engine) as connection:
        entries = audit.entries(connection, audit.AuditQuery(actor=actor or None, action=action or None, after=after,
                                                             limit=REVIEW_PAGE))
        head, problems = audit.verify(connection)
    return render(request, "audit.html", title="Audit trail", entries=entries, head=head, problems=problems,
                  page=REVIEW_PAGE, actor=actor or "", action=action or "", after=after)
