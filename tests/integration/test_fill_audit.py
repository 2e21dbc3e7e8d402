"""The per-fill audit, on both databases: every counted fill a statement pays, with its line and
its exact share of the line's payout, over a May closed with corrections, a June that pays late
May fills (adjustment lines), a bust of a paid fill (a correction line) and a retroactive rate
change (retroactive lines), and a July not closed yet. Summed per line, the export's rows (CSV and
Parquet) are the statement's lines exactly; pages return every row once."""

import csv
import io
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from integration_support import (
    BROKER,
    JUNE,
    MAY,
    NOW,
    add_broker,
    add_code,
    add_users,
    close,
    correction,
    fill,
    import_rows,
    preview,
)
from sqlalchemy import Engine

from bkr.domain.errors import InvalidInput
from bkr.domain.fill_audit import ZeroPayoutReason
from bkr.domain.money import total
from bkr.domain.periods import parse_instant
from bkr.program import registry
from bkr.program.fill_audit import (
    AuditSource,
    ExportFormat,
    audited_fills,
    encode_cursor,
    export_fills,
    fill_audit_page,
    month_pricing,
)
from bkr.program.reports import user_breakdown

OTHER = 2200
JULY = JUNE.next()
LINE_KEY = ("line_kind", "fill_month", "user_id", "market_type", "affiliate_rate")
SUMMED = ("volume_usd", "fee_usd", "fee_base", "payout_exact")

F1 = fill("f-1", user="alice", at="2024-05-10T12:00:00Z", fee="0.1")
F6 = fill("f-6", user="bob", at="2024-05-28T12:00:00Z", price="50", quantity="2", fee="0.05")
MAY_FILLS = [
    F1,
    fill("f-2", user="bob", at="2024-05-11T12:00:00Z", market="PERP", price="2000", quantity="3", fee="0.2"),
    fill("f-3", user="alice", at="2024-05-25T12:00:00Z", fee="0.3"),
    fill("f-4", user="dave", at="2024-05-12T12:00:00Z", fee="0.5"),  # an affiliate at the cap: pays 0
    fill("f-5", user="erin", at="2024-05-13T12:00:00Z", fee="-0.02", is_maker=True),  # a rebate: pays 0
    F6,
    correction(F6, "f-6c", quantity="-0.5", fee="-0.02"),  # within May: it joins f-6's line
    fill("x-1", broker=OTHER, user="bob", at="2024-05-14T12:00:00Z", fee="9"),
]
JUNE_FILLS = [
    fill("late-1", user="bob", at="2024-05-30T12:00:00Z", fee="0.07"),  # May's, after May closed
    fill("late-2", user="dave", at="2024-05-31T23:59:59Z", fee="0.4"),
    fill("j-1", user="alice", at="2024-06-02T12:00:00Z", price="30", quantity="3", fee="0.09"),
    fill("j-2", user="bob", at="2024-06-03T12:00:00Z", market="PERP", price="1000", quantity="1", fee="0.25"),
    fill("j-3", user="bob", at="2024-06-04T12:00:00Z", symbol="BTC_USDC", price="60000", quantity="0.01",
         fee="0.6"),
    correction(F1, "f-1-bust", quantity="-1", fee="-0.1"),  # a bust of a fill May paid
]
JULY_FILLS = [
    fill("late-3", user="erin", at="2024-06-30T12:00:00Z", fee="0.11"),  # June's, after June closed
    fill("u-1", user="alice", at="2024-07-01T00:00:00Z", fee="0.2"),
    fill("u-2", user="dave", at="2024-07-02T00:00:00Z", fee="0.2", market="DATED"),
]


@pytest.fixture
def months(engine: Engine, tmp_path: Path) -> Engine:
    """May and June closed as the module says; July's fills in, July open."""
    add_broker(engine)
    add_broker(engine, OTHER)
    add_code(engine, "C", "0.40")
    add_code(engine, "CAP", "0.50")
    add_users(engine, "alice", code="C")
    add_users(engine, "dave", code="CAP")
    add_users(engine, "bob", "erin")
    import_rows(engine, tmp_path / "may.csv", MAY_FILLS)
    close(engine, MAY)
    import_rows(engine, tmp_path / "june.csv", JUNE_FILLS)
    with engine.begin() as connection:  # alice's code from 0.40 to 0.10 from 20 May: f-3 was paid at 0.40
        registry.set_referral_rate(connection, "acct-aff", "C", Decimal("0.10"), parse_instant("2024-05-20T00:00:00Z"),
                                   NOW, actor="ops", is_retroactive=True, reason="contract amended")
    close(engine, JUNE)
    import_rows(engine, tmp_path / "july.csv", JULY_FILLS)
    return engine


def _every_row(engine: Engine, month: Any, broker: int = BROKER, **filters: Any) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        pricing = month_pricing(connection, broker, month)
        return [row.to_document() for row in audited_fills(connection, pricing, **filters)]


def _export(engine: Engine, month: Any, fmt: ExportFormat) -> list[dict[str, Any]]:
    """The export's rows read back as text, the way a broker's script reads the file."""
    sink = io.BytesIO()
    with engine.connect() as connection:
        exported = export_fills(connection, BROKER, month, fmt, sink)
    if fmt is ExportFormat.CSV:
        rows = list(csv.DictReader(io.StringIO(sink.getvalue().decode())))
    else:
        table = pq.read_table(io.BytesIO(sink.getvalue()))
        assert all(str(field.type) in ("string", "bool", "int64", "timestamp[us, tz=UTC]") for field in table.schema)
        rows = [{name: "" if value is None else str(value) for name, value in row.items()}
                for row in table.to_pylist()]
    assert exported.rows == len(rows)
    return rows


def _summed_per_line(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, ...], dict[str, Any]]:
    lines: dict[tuple[str, ...], dict[str, Any]] = {}
    for row in rows:
        key = tuple(str(Decimal(row[k])) if k == "affiliate_rate" else row[k] for k in LINE_KEY)
        sums = lines.setdefault(key, {"fills": 0, **{name: Decimal(0) for name in SUMMED}, "positions": set(),
                                      "rates": set(), "tiers": set()})
        sums["fills"] += 1
        for name in SUMMED:
            sums[name] = total([sums[name], Decimal(row[name])])
        sums["positions"].add("" if row["statement_line"] is None else str(row["statement_line"]))
        sums["rates"].add(Decimal(row["effective_rate"]))
        sums["tiers"].add(row["tier"])
    return lines


def _statement_lines(statement: dict[str, Any]) -> dict[tuple[str, ...], dict[str, Any]]:
    return {(line["kind"], line["fill_month"], line["user_id"], line["market_type"],
             str(Decimal(line["affiliate_rate"]))): line | {"position": position}
            for position, line in enumerate(statement["lines"], start=1)}


def _assert_rows_make_the_lines(rows: list[dict[str, Any]], statement: dict[str, Any], *, closed: bool) -> None:
    summed = _summed_per_line(rows)
    lines = _statement_lines(statement)
    assert set(summed) == set(lines)
    for key, line in lines.items():
        sums = summed[key]
        assert sums["fills"] == line["fills"], key
        assert sums["volume_usd"] == Decimal(line["volume_usd"]), key
        assert sums["fee_usd"] == Decimal(line["fee_usd"]), key
        assert sums["fee_base"] == Decimal(line["fee_base"]), key
        assert sums["payout_exact"] == Decimal(line["payout_exact"]), key  # exactly: nothing is rounded
        assert sums["rates"] == {Decimal(line["effective_rate"])} and sums["tiers"] == {line["tier"]}, key
        assert sums["positions"] == ({str(line["position"])} if closed else {""}), key
    assert total(Decimal(row["payout_exact"]) for row in rows) == Decimal(statement["payout_exact"])


@pytest.mark.parametrize("fmt", [ExportFormat.CSV, ExportFormat.PARQUET])
def test_the_export_of_a_closed_month_sums_to_its_statements_lines_exactly(months: Engine, fmt: ExportFormat) -> None:
    statements = {month: preview(months, month)[BROKER] for month in (MAY, JUNE)}  # a closed month: as stored

    for month, statement in statements.items():
        rows = _export(months, month, fmt)

        _assert_rows_make_the_lines(rows, statement, closed=True)
        assert {row["statement_month"] for row in rows} == {str(month)}
    june_kinds = {row["line_kind"] for row in _export(months, JUNE, fmt)}
    assert june_kinds == {"regular", "adjustment", "correction", "retroactive"}


def test_the_rows_of_each_kind_of_line_are_the_fills_that_make_it(months: Engine) -> None:
    june = {row["fill_id"]: row for row in _every_row(months, JUNE)}

    late = june["late-2"]  # dave's late May fill: May's tier, an affiliate at the cap
    assert (late["line_kind"], late["fill_month"], late["affiliate_rate"], late["effective_rate"],
            late["payout_exact"]) == ("adjustment", "2024-05", "0.5", "0", "0")
    bust = june["f-1-bust"]  # takes back what May paid for f-1
    assert (bust["line_kind"], bust["corrects"], bust["fee_base"], bust["payout_exact"], bust["quantity"]) == (
        "correction", "f-1", "-0.1", "-0.01", "-1")
    retro = sorted((fill_id, row["affiliate_rate"], row["fee_base"], row["payout_exact"])
                   for fill_id, row in june.items() if row["line_kind"] == "retroactive")
    assert [(rate, base, payout) for _, rate, base, payout in retro] == [
        ("0.1", "0.3", "0.06"), ("0.4", "-0.3", "-0.03")]  # f-3 paid again at 0.10, taken back at 0.40
    assert all(fill_id.startswith("f-3#retroactive-") for fill_id, *_ in retro)
    may = {row["fill_id"]: row for row in _every_row(months, MAY)}
    assert may["f-6c"]["line_kind"] == "regular" and may["f-6c"]["fee_base"] == "-0.02"
    assert may["f-5"]["fee_base"] == "0" and may["f-5"]["fee"] == "-0.02"
    assert "x-1" not in may  # another broker's


def test_an_open_months_rows_are_the_lines_it_would_have_if_it_ended_now(months: Engine) -> None:
    projected = preview(months, JULY)[BROKER]

    rows = _every_row(months, JULY)

    _assert_rows_make_the_lines(rows, projected, closed=False)
    assert {row["statement_line"] for row in rows} == {None}
    assert {(row["fill_id"], row["line_kind"], row["fill_month"]) for row in rows} == {
        ("late-3", "adjustment", "2024-06"), ("u-1", "regular", "2024-07"), ("u-2", "regular", "2024-07")}
    with months.connect() as connection:
        assert month_pricing(connection, BROKER, JULY).source is AuditSource.PROJECTION
        assert month_pricing(connection, BROKER, JUNE).source is AuditSource.STATEMENT


@pytest.mark.parametrize("limit", [1, 2, 5, 1000])
def test_pages_return_every_row_once_in_fill_id_order(months: Engine, limit: int) -> None:
    every = _every_row(months, JUNE)
    seen: list[dict[str, Any]] = []
    cursor = None
    with months.connect() as connection:
        while True:
            page = fill_audit_page(connection, BROKER, JUNE, limit=limit, cursor=cursor)
            assert len(page.fills) <= limit
            seen += [row.to_document() for row in page.fills]
            cursor = page.next_cursor
            if cursor is None:
                break
    assert seen == every
    assert [row["fill_id"] for row in seen] == sorted(row["fill_id"] for row in seen)
    assert len({row["fill_id"] for row in seen}) == len(seen) == 8


def test_filters_by_user_and_symbol(months: Engine) -> None:
    every = _every_row(months, JUNE)

    bob = _every_row(months, JUNE, user_id="bob")
    btc = _every_row(months, JUNE, symbol="BTC_USDC")
    bob_spot = _every_row(months, JUNE, user_id="bob", symbol="SOL_USDC")

    assert bob == [row for row in every if row["user_id"] == "bob"] and len(bob) == 3
    assert [row["fill_id"] for row in btc] == ["j-3"]
    assert [row["fill_id"] for row in bob_spot] == ["late-1"]
    assert _every_row(months, JUNE, user_id="nobody") == []
    with months.connect() as connection:
        first = fill_audit_page(connection, BROKER, JUNE, limit=1, user_id="bob")
        second = fill_audit_page(connection, BROKER, JUNE, limit=5, user_id="bob", cursor=first.next_cursor)
    assert [f.fill_id for f in first.fills + second.fills] == [row["fill_id"] for row in bob]
    assert second.next_cursor is None


@pytest.mark.parametrize("cursor", ["", "garbage", "!!", encode_cursor(BROKER, MAY, "f-1"),
                                    encode_cursor(OTHER, JUNE, "f-1")])
def test_a_cursor_of_another_listing_or_none_at_all_is_refused(months: Engine, cursor: str) -> None:
    with months.connect() as connection, pytest.raises(InvalidInput) as refused:
        fill_audit_page(connection, BROKER, JUNE, limit=10, cursor=cursor)
    assert refused.value.field == "cursor"


def test_the_users_view_names_each_users_affiliate_rates_and_why_a_user_is_paid_nothing(months: Engine) -> None:
    with months.connect() as connection:
        may = {u.user_id: u for u in user_breakdown(connection, BROKER, MAY, limit=100, offset=0).users}
        june = {u.user_id: u for u in user_breakdown(connection, BROKER, JUNE, limit=100, offset=0).users}
        july = {u.user_id: u for u in user_breakdown(connection, BROKER, JULY, limit=100, offset=0).users}

    assert (may["dave"].affiliate_rates, may["dave"].fee_base, may["dave"].payout_exact,
            may["dave"].zero_payout_reason) == ((Decimal("0.5"),), Decimal("0.5"), 0,
                                                ZeroPayoutReason.AFFILIATE_RATE_AT_CAP)
    assert (may["erin"].affiliate_rates, may["erin"].zero_payout_reason) == (
        (Decimal(0),), ZeroPayoutReason.REBATE_FEES_ONLY)
    assert (may["alice"].affiliate_rates, may["alice"].zero_payout_reason) == ((Decimal("0.4"),), None)
    assert may["bob"].zero_payout_reason is None
    # June: alice's lines carry both rates (the retroactive change), and the late fill of dave's pays 0 too
    assert june["alice"].affiliate_rates == (Decimal("0.1"), Decimal("0.4"))
    assert june["dave"].zero_payout_reason is ZeroPayoutReason.AFFILIATE_RATE_AT_CAP
    # an open month: the projection's lines
    assert (july["dave"].zero_payout_reason, july["erin"].zero_payout_reason) == (
        ZeroPayoutReason.AFFILIATE_RATE_AT_CAP, None)
    assert july["alice"].affiliate_rates == (Decimal("0.1"),)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_bkr_fills_export_writes_the_rows_of_the_audit(months: Engine, bkr: Any, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"june.{fmt}"

    done = bkr("fills", "export", "--broker", str(BROKER), "--month", "2024-06", "--format", fmt, "--out", str(out),
               "--db", months.url.render_as_string(hide_password=False), "--json")

    assert done.code == 0, done.err
    assert '"rows": 8' in done.out and '"source": "statement"' in done.out
    sink = io.BytesIO()
    with months.connect() as connection:
        export_fills(connection, BROKER, JUNE, ExportFormat(fmt), sink)
    if fmt == "csv":
        assert out.read_bytes() == sink.getvalue()
    else:
        assert pq.read_table(out).equals(pq.read_table(io.BytesIO(sink.getvalue())))
        assert pq.read_schema(out).metadata[b"bkr"] == (
            b'{"broker_id":1400,"format":"bkr-fill-audit/1","month":"2024-06","source":"statement"}')
