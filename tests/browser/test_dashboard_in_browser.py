"""The dashboard in a real browser: a broker and an operator sign in, read their pages, act, and
find every figure equal to the API's answer for the same data."""

import subprocess
import sys
from pathlib import Path

import pytest
from browser_support import BROKER, OTHER_BROKER, Program, keep_for_docs, screenshot, sign_in
from playwright.sync_api import Browser, Page, expect

from bkr.domain.money import D

pytestmark = pytest.mark.slow

DOCS_IMAGES = Path(__file__).parents[2] / "docs" / "img"


def _figure(page: Page, name: str) -> str:
    value = page.locator(f'[data-figure="{name}"]').first.get_attribute("data-value")
    assert value is not None, name
    return value


def _column(page: Page, table: str, column: int) -> list[str]:
    """The exact values (`data-value`) of one column of a table, row by row."""
    cells = page.locator(f"#{table} tbody tr").locator(f"td:nth-of-type({column})")
    return [cell.get_attribute("data-value") or "" for cell in cells.all()]


def test_a_broker_reads_its_month_as_the_broker_api_reports_it(page: Page, program: Program) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    sign_in(page, program, program.brokers[BROKER].secret)
    assert page.url.endswith(f"/dashboard/brokers/{BROKER}")
    summary = program.broker_api(BROKER, "/summary", "brokerSummaryQuery").json()
    for name in ("api_volume", "spot_volume", "futures_volume", "fee_base", "payout", "payout_exact",
                 "volume_to_next_tier", "next_tier", "tier"):
        assert _figure(page, name) == summary[name], name
    expect(page.locator("#broker-status")).to_have_text(summary["status"])
    progress = page.get_by_role("progressbar")
    assert progress.get_attribute("aria-valuenow") == summary["api_volume"]
    assert summary["next_tier"] in (progress.get_attribute("aria-valuetext") or "")

    daily = program.broker_api(BROKER, "/volume/daily", "brokerDailyVolumeQuery").json()
    page.get_by_text("The figures by day").click()
    assert _column(page, "daily-table", 1) == [day["spot_volume"] for day in daily["days"]]
    assert _column(page, "daily-table", 2) == [day["futures_volume"] for day in daily["days"]]
    chart = page.get_by_role("img", name=f"API volume by day, {summary['month']}")
    expect(chart).to_be_visible()
    assert chart.locator("g.bar").count() == len(daily["days"])

    users = program.broker_api(BROKER, "/users", "brokerUsersQuery", {"limit": 10}).json()
    assert _column(page, "top-users", 3) == [user["fee_base"] for user in users["users"]]
    inactive = program.broker_api(BROKER, "/inactive-orders", "brokerInactiveOrdersQuery").json()
    assert (_figure(page, "inactive_orders"), _figure(page, "inactive_fills")) == (
        str(inactive["orders"]), str(inactive["fills"]))
    statements = program.broker_api(BROKER, "/statements", "brokerStatementQueryAll").json()["statements"]
    assert statements, "the demo closed last month"
    assert _column(page, "statements", 3) == [s["payout"] for s in statements]
    assert requested and all(url.startswith(program.base) for url in requested), "a page fetched from elsewhere"
    assert page.locator("script").count() == 0
    screenshot(page, "broker")
    keep_for_docs("broker", DOCS_IMAGES / "dashboard-broker.png")


def test_a_broker_opens_a_statement_and_downloads_it_as_the_api_serves_it(page: Page, program: Program) -> None:
    sign_in(page, program, program.brokers[BROKER].secret)
    month = program.broker_api(BROKER, "/statements", "brokerStatementQueryAll").json()["statements"][0]["month"]
    page.get_by_role("link", name=month, exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"Statement {month}")
    document = program.broker_api(BROKER, f"/statements/{month}", "brokerStatementQuery", {"format": "json"}).json()
    for name in ("api_volume", "fee_base", "payout", "payout_exact", "tier"):
        assert _figure(page, name) == document[name], name
    shown = page.locator("#lines tbody tr").count()
    assert shown == min(len(document["lines"]), 100)
    assert _column(page, "lines", 11)[:shown] == [line["payout_exact"] for line in document["lines"][:shown]]
    screenshot(page, "broker-statement")
    for kind in ("csv", "json"):
        downloaded = page.request.get(f"{program.base}/dashboard/brokers/{BROKER}/statements/{month}/download"
                                      f"?format={kind}")
        from_api = program.broker_api(BROKER, f"/statements/{month}", "brokerStatementQuery", {"format": kind})
        assert downloaded.status == 200 and downloaded.body() == from_api.content, kind
    page.get_by_role("link", name="Printable page").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"statement — {month}")


def test_a_broker_cannot_open_another_brokers_pages(page: Page, program: Program) -> None:
    sign_in(page, program, program.brokers[BROKER].secret)
    for path in (f"/dashboard/brokers/{OTHER_BROKER}", "/dashboard/program", "/dashboard/program/brokers"):
        answer = page.goto(f"{program.base}{path}")
        assert answer is not None and answer.status == 403, path
        expect(page.get_by_role("alert")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("operator")
    screenshot(page, "broker-refused")


def test_the_operator_overview_matches_the_operator_api(page: Page, program: Program) -> None:
    sign_in(page, program, program.operator_token)
    assert page.url.endswith("/dashboard/program")
    closed = [p for p in program.admin("/v1/admin/periods") if p["status"] == "closed"]
    assert closed
    for period in closed:
        row = page.locator(f'#months-table tr[data-month="{period["month"]}"]')
        statements = program.admin(f"/v1/admin/periods/{period['month']}")["statements"]
        volume = sum((D(s["api_volume"]) for s in statements), D(0))
        assert D(row.locator("td").nth(0).get_attribute("data-value") or "") == volume
        assert D(row.locator("td").nth(1).get_attribute("data-value") or "") == D(period["total_payout"])
    counts = program.admin("/v1/admin/fills/rejected?limit=1")["counts"]
    for name in ("rejected", "conflicts", "awaiting_user"):
        assert _figure(page, name) == str(counts[name]), name
    assert _figure(page, "unknown_ids") == str(len(program.admin("/v1/admin/venue/broker-ids")))
    for name in ("Brokers per tier", "API volume by month", "Payouts by month"):
        expect(page.get_by_role("img", name=name)).to_be_visible()
    screenshot(page, "operator-program")
    keep_for_docs("operator-program", DOCS_IMAGES / "dashboard-operator.png")

    page.get_by_role("link", name="Review").click()
    rejected = program.admin("/v1/admin/fills/rejected?limit=50")["items"]
    assert page.locator("#rejected-table tbody tr").count() == len(rejected)
    expect(page.locator("#rejected-table tbody tr").first).to_contain_text(rejected[0]["reason"])
    awaiting = program.admin("/v1/admin/fills/awaiting?limit=50")["items"]
    assert awaiting, "the demo month has fills of users bkr does not know"
    assert page.locator("#awaiting-table tbody tr").count() == len(awaiting)
    expect(page.locator("#awaiting-table tbody tr").first).to_contain_text(awaiting[0]["user_id"])
    screenshot(page, "operator-review")

    page.get_by_role("link", name="Months").click()
    expect(page.get_by_role("heading", name="Next close: ")).to_be_visible()
    screenshot(page, "operator-months")

    page.get_by_role("link", name="Settings").click()
    in_force = program.admin("/v1/admin/program")
    expect(page.get_by_role("heading", name=f"Version {in_force['version']}, in force for {in_force['month']}")) \
        .to_be_visible()
    assert page.locator('[data-setting="cap"]').get_attribute("data-value") == in_force["settings"]["program"]["cap"]
    screenshot(page, "operator-settings")


def test_an_operator_suspends_and_reactivates_a_broker(page: Page, program: Program) -> None:
    sign_in(page, program, program.operator_token)
    page.get_by_role("link", name="Brokers", exact=True).click()
    page.get_by_label("Search").fill("Hummingway")
    page.get_by_role("button", name="Search").click()
    rows = page.locator("#brokers tbody tr")
    expect(rows).to_have_count(1)
    screenshot(page, "operator-brokers")
    page.get_by_role("button", name=f"Suspend broker {OTHER_BROKER}").click()
    expect(rows.first.locator("[data-status]")).to_have_text("suspended")
    assert program.admin(f"/v1/admin/brokers/{OTHER_BROKER}")["status"] == "suspended"
    read = program.broker_api(OTHER_BROKER, "/summary", "brokerSummaryQuery")  # a suspended broker still reads
    assert (read.status_code, read.json()["status"]) == (200, "suspended")

    page.get_by_role("link", name=str(OTHER_BROKER), exact=True).click()
    expect(page.locator("#broker-status")).to_have_text("suspended")
    page.get_by_role("button", name=f"Reactivate broker {OTHER_BROKER}").click()
    expect(page.locator("#broker-status")).to_have_text("active")
    screenshot(page, "operator-broker")
    assert program.admin(f"/v1/admin/brokers/{OTHER_BROKER}")["status"] == "active"
    assert program.broker_api(OTHER_BROKER, "/summary", "brokerSummaryQuery").status_code == 200


def test_an_operator_approves_a_statement(page: Page, program: Program) -> None:
    month = next(p["month"] for p in program.admin("/v1/admin/periods") if p["status"] == "closed")
    drafts = [s["broker_id"] for s in program.admin(f"/v1/admin/periods/{month}")["statements"]
              if s["status"] == "draft"]
    broker_id = drafts[-1]
    sign_in(page, program, program.operator_token)
    page.goto(f"{program.base}/dashboard/program/months/{month}")
    row = page.locator(f'#month-statements tr[data-broker="{broker_id}"]')
    expect(row.locator("[data-status]")).to_have_text("draft")
    row.get_by_role("button", name=f"Approve the statement of broker {broker_id}").click()
    expect(row.locator("[data-status]")).to_have_text("final")
    screenshot(page, "operator-month")
    statuses = {s["broker_id"]: s["status"] for s in program.admin(f"/v1/admin/periods/{month}")["statements"]}
    assert statuses[broker_id] == "final"
    assert row.get_by_role("button").count() == 0  # nothing left to approve


def test_an_action_without_its_csrf_token_is_refused(page: Page, program: Program) -> None:
    sign_in(page, program, program.operator_token)
    answer = page.request.post(f"{program.base}/dashboard/program/brokers/{OTHER_BROKER}/status",
                               form={"status": "suspended"})
    assert answer.status == 403 and "security token" in answer.text()
    assert program.admin(f"/v1/admin/brokers/{OTHER_BROKER}")["status"] == "active"


def test_pages_fit_a_phone(browser: Browser, program: Program) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    try:
        sign_in(page, program, program.brokers[BROKER].secret)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways: {width}px"
        screenshot(page, "broker-phone")
    finally:
        context.close()


def test_the_month_moves_on_an_open_page_while_the_venue_trades(page: Page, program: Program, tmp_path: Path) -> None:
    """`bkr simulate --live` trades on the served venue while the operator's overview is open with
    auto-refresh on: the page reloads by itself and shows the month grown."""
    sign_in(page, program, program.operator_token)
    page.get_by_role("link", name="Turn on auto-refresh (every 5 s)").click()
    so_far = page.locator('#months-table tr[data-source="projection"] td').first
    before = D(so_far.get_attribute("data-value") or "")

    traded = subprocess.run([sys.executable, "-m", "bkr.cli", "simulate", "--live", "--duration", "3", "--rate", "20",
                             "--seed", "5", "--url", program.base, "--db", program.db_url],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)

    assert traded.returncode == 0, traded.stderr
    expect(so_far).not_to_have_attribute("data-value", str(before), timeout=15_000)  # the meta refresh
    assert D(so_far.get_attribute("data-value") or "") > before
    expect(page.get_by_role("link", name="Auto-refresh is on (every 5 s): turn off")).to_be_visible()
