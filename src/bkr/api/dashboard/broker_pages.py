"""A broker's pages: where this month stands, and its statements with their lines and downloads.

Every figure comes from the use cases the broker API answers with (`bkr.program.reports`, the
stored statement and its exports), so a page and `GET /v1/broker/{id}/…` cannot disagree. An
operator opens the same pages, with the registry and the status actions added.
"""

import io
from collections import Counter
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from bkr.api.dashboard.charts import Bar, Series, progress_fraction, stacked_bars
from bkr.api.dashboard.web import PREFIX, PageRoute, SignedInDep, may_open_broker, render
from bkr.api.deps import ServicesDep
from bkr.api.schemas import BrokerIdPath
from bkr.domain.fill_audit import ZeroPayoutReason
from bkr.domain.periods import month_field
from bkr.program import fill_audit, reports
from bkr.program.close import issued_statement
from bkr.program.exports import StatementFormat, render_statement
from bkr.program.registry import broker_name
from bkr.store import db

router = APIRouter(prefix=f"{PREFIX}/brokers/{{broker_id}}", route_class=PageRoute, include_in_schema=False)

TOP_USERS = 10
LINES_PER_PAGE = 100
VOLUME_SERIES = (Series("Spot", "spot"), Series("Futures", "futures"))
ZERO_REASONS = {ZeroPayoutReason.AFFILIATE_RATE_AT_CAP: "affiliate rate at or above the cap",
                ZeroPayoutReason.REBATE_FEES_ONLY: "rebate fees only: no positive fee",
                ZeroPayoutReason.BROKER_RATE_ZERO: "the tier's rate is 0",
                ZeroPayoutReason.OFFSET_BY_CORRECTIONS: "corrections take back what it earned"}


@router.get("")
def broker_page(request: Request, broker_id: BrokerIdPath, session: SignedInDep, services: ServicesDep) -> Response:
    """This month so far: tier and progress to the next, daily volume, projected payout, top
    users, orders that carried the id while inactive; then the statements."""
    may_open_broker(session, broker_id)
    now = services.clock()
    with db.snapshot(services.engine) as connection:
        summary = reports.broker_summary(connection, broker_id, now)
        series = reports.daily_series(connection, broker_id, summary.month, now)
        users = reports.user_breakdown(connection, broker_id, summary.month, limit=TOP_USERS,
                                       offset=0)
        inactive = reports.inactive_orders(connection, broker_id, summary.month)
        statements = reports.broker_statements(connection, broker_id)
    chart = stacked_bars(
        "daily-volume", f"API volume by day, {summary.month}",
        f"Spot and futures volume counted for broker {broker_id} on each UTC day of {summary.month} so far; "
        "the table below lists the same figures.", VOLUME_SERIES,
        [Bar(day.day.strftime("%d"), (day.spot_volume, day.futures_volume)) for day in series.days],
        slots=(summary.month.end - summary.month.start).days, label_every=5)
    upper = summary.next_tier.min_volume if summary.next_tier else summary.volume_tier.min_volume
    progress = progress_fraction(summary.api_volume, summary.volume_tier.min_volume, upper)
    return render(request, "broker.html", title=f"{summary.broker.name} — {summary.month}", summary=summary,
                  series=series, chart=chart, progress_percent=f"{progress * 100:.1f}", users=users,
                  inactive=inactive, statements=statements, broker=summary.broker, zero_reasons=ZERO_REASONS)


@router.get("/statements/{month}")
def statement_page(request: Request, broker_id: BrokerIdPath, month: str, session: SignedInDep, services: ServicesDep,
                   offset: Annotated[int, Query(ge=0)] = 0) -> Response:
    """One statement: its figures and its lines (a page at a time), drawn with the printable
    statement's own body, and its downloads."""
    may_open_broker(session, broker_id)
    target = month_field(month)
    with db.snapshot(services.engine) as connection:
        statement = issued_statement(connection, broker_id, target)
        entry = next(e for e in reports.broker_statements(connection, broker_id)
                     if e.month == target)
        name = broker_name(connection, broker_id)
    lines = statement.lines
    return render(request, "statement.html", title=f"Statement {target} — {name}", statement=statement,
                  broker_id=broker_id, broker_name=name, month=target, entry=entry,
                  lines=lines[offset:offset + LINES_PER_PAGE], offset=offset, line_count=len(lines),
                  per_page=LINES_PER_PAGE, kinds=sorted(Counter(line.kind.value for line in lines).items()),
                  signed=services.statement_key is not None)


@router.get("/statements/{month}/download")
def download(broker_id: BrokerIdPath, month: str, session: SignedInDep, services: ServicesDep,
             output_format: Annotated[Literal["json", "csv", "signed", "html"], Query(alias="format")] = "json",
             ) -> Response:
    """The statement exactly as the broker API serves it: the stored JSON, its CSV, the signed
    envelope, or the printable page."""
    may_open_broker(session, broker_id)
    with db.snapshot(services.engine) as connection:
        rendered = render_statement(connection, broker_id, month_field(month), StatementFormat(output_format),
                                    services.statement_key)
    return Response(rendered.body, media_type=rendered.media_type, headers=rendered.headers)


@router.get("/statements/{month}/fills")
def fills_download(broker_id: BrokerIdPath, month: str, session: SignedInDep, services: ServicesDep,
                   output_format: Annotated[Literal["csv", "parquet"], Query(alias="format")] = "csv") -> Response:
    """The month's per-fill audit, the file the broker API's GET …/fills/export serves."""
    may_open_broker(session, broker_id)
    body = io.BytesIO()
    with db.snapshot(services.engine) as connection:
        exported = fill_audit.export_fills(connection, broker_id, month_field(month),
                                           fill_audit.ExportFormat(output_format), body)
    return Response(body.getvalue(), media_type=exported.media_type, headers={
        "Content-Disposition": f'attachment; filename="{exported.filename}"', "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store"})
