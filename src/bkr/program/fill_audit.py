"""The per-fill audit of a broker's month: every counted fill (and correction) its statement pays,
with the line it is on and its exact share of that line's payout.

`audited_fills` is the one thing that makes the rows: the broker API's pages (`fill_audit_page`),
its download and `bkr fills export` (`export_fills`) all read them from it. A month is the
statement's month, as on the statement: its own fills, late fills of closed months (its
`adjustment` lines), corrections of fills an earlier statement paid (`correction`) and what a
retroactive registry change moved (`retroactive`); a fill's line is the statement line of the
same kind, fill month, user, market type and affiliate rate.

A closed month is priced by its stored statement: each fill gets its line's tier and effective
rate and the line's position, and a fill whose line the statement does not have is an error,
never a guess. A month not closed yet is priced by the close's own computation over the running
totals (`compute_statements`), as the projection is: the line it would be on if the month ended
now. Either way the contributions of a line's fills add up to the line's exact payout, and its
fills' volumes and fee bases to the line's (`bkr.domain.fill_audit`).

Rows come in `fill_id` order (the database's order of text: by code point on SQLite, and on
PostgreSQL under a C collation), read a batch at a time along the index (broker_id, period,
fill_id), so that an export of a large month is never held in memory whole and a page reads only
its own rows: the cursor is the last fill_id of the page, in an opaque token bound to its broker
and month.
"""

import base64
import binascii
import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, Select, select

from bkr.domain.errors import Conflict, InvalidInput, NotFound
from bkr.domain.fill_audit import AUDIT_COLUMNS, AuditedFill, line_kind
from bkr.domain.fills import Attribution
from bkr.domain.money import canonical
from bkr.domain.payout import fee_base, line_payout_at
from bkr.domain.periods import Month
from bkr.domain.statements import LineKind
from bkr.program.close import compute_statements, issued_statement
from bkr.program.exports import spreadsheet_safe
from bkr.program.fill_archives import archive_record
from bkr.program.periods import closed_months
from bkr.store.tables import fills

MAX_PAGE = 1000
_BATCH = 10_000
_LineKey = tuple[LineKind, Month, str, str, Decimal]  # kind, fill month, user ("*": merged), market, rate


class AuditSource(StrEnum):
    STATEMENT = "statement"  # a closed month: its stored statement's lines
    PROJECTION = "projection"  # a month not closed yet: the lines if it ended now


@dataclass(frozen=True, slots=True)
class _Line:
    position: int | None  # from 1 in the stored statement; None in a projection
    tier_level: int
    effective_rate: Decimal


@dataclass(frozen=True, slots=True)
class MonthPricing:
    """How a broker's month prices its lines: a closed month's stored statement, line by line,
    or the projection's lines with the users merged (the rate of a line does not depend on its user)."""

    broker_id: int
    month: Month
    source: AuditSource
    lines: dict[_LineKey, _Line]

    def line_of(self, key: _LineKey, fill_id: str) -> _Line:
        if self.source is AuditSource.PROJECTION:
            key = (key[0], key[1], "*", key[3], key[4])
        found = self.lines.get(key)
        if found is None:
            kind, fill_month, user, market, rate = key
            raise Conflict(f"fill {fill_id!r} is counted in broker {self.broker_id}'s {self.month}, but its "
                           f"{self.source.value} has no {kind.value} line of {fill_month} for user {user!r}, "
                           f"{market} at affiliate rate {canonical(rate)}: the month does not reconcile "
                           f"(bkr reconcile --month {self.month})", code="audit_line_missing")
        return found


def month_pricing(connection: Connection, broker_id: int, month: Month) -> MonthPricing:
    """The lines that price a broker's fills paid in `month`. An archived month's fills are no
    longer in the database: refused, naming the archive."""
    record = archive_record(connection, month)
    if record is not None:
        raise Conflict(f"the fills of {month} were archived on {record.archived_at:%Y-%m-%d} (bkr fills archive): "
                       "its per-fill audit is no longer kept in the database; its statement stands",
                       code="month_archived", field="month")
    if month in closed_months(connection):
        try:
            statement = issued_statement(connection, broker_id, month)
        except NotFound:  # nothing paid that month: no line, and no counted fill to price
            return MonthPricing(broker_id, month, AuditSource.STATEMENT, {})
        lines = {(line.kind, line.fill_month, line.user_id, line.market_type.value, line.affiliate_rate):
                 _Line(position, line.tier_level, line.effective_rate)
                 for position, line in enumerate(statement.lines, start=1)}
        return MonthPricing(broker_id, month, AuditSource.STATEMENT, lines)
    projected = compute_statements(connection, month, broker_id, per_user=False)
    merged = projected[0].lines if projected else ()
    return MonthPricing(broker_id, month, AuditSource.PROJECTION, {
        (line.kind, line.fill_month, "*", line.market_type.value, line.affiliate_rate):
        _Line(None, line.tier_level, line.effective_rate) for line in merged})


_COLUMNS = (fills.c.fill_id, fills.c.order_id, fills.c.user_id, fills.c.symbol, fills.c.market_type, fills.c.side,
            fills.c.is_maker, fills.c.price, fills.c.quantity, fills.c.fee, fills.c.fee_symbol, fills.c.ts,
            fills.c.volume_usd, fills.c.fee_usd, fills.c.affiliate_rate, fills.c.fill_month, fills.c.corrects,
            fills.c.fee_base_usd)


def _query(broker_id: int, month: Month, user_id: str | None, symbol: str | None, after: str | None,
           size: int) -> Select[Any]:
    # in the database's order of text, which its index (broker_id, period, fill_id) keeps, so that a
    # page reads only its own rows (by code point on SQLite, and on PostgreSQL under a C collation)
    fill_id = fills.c.fill_id
    query = select(*_COLUMNS).where((fills.c.broker_id == broker_id) & (fills.c.period == month)
                                    & (fills.c.attribution == Attribution.COUNTED.value))
    if user_id is not None:
        query = query.where(fills.c.user_id == user_id)
    if symbol is not None:
        query = query.where(fills.c.symbol == symbol)
    if after is not None:
        query = query.where(fill_id > after)
    return query.order_by(fill_id).limit(size)


def _audited(row: Any, pricing: MonthPricing) -> AuditedFill:
    fill_month = row.fill_month
    kind = line_kind(row.fill_id, row.corrects, fill_month, pricing.month)
    rate = row.affiliate_rate
    line = pricing.line_of((kind, fill_month, row.user_id, row.market_type, rate), row.fill_id)
    base = fee_base(row.fee_usd) if row.fee_base_usd is None else row.fee_base_usd
    return AuditedFill(
        fill_id=row.fill_id, order_id=row.order_id, timestamp=row.ts, user_id=row.user_id, symbol=row.symbol,
        market_type=row.market_type, side=row.side, is_maker=row.is_maker, price=row.price, quantity=row.quantity,
        fee=row.fee, fee_symbol=row.fee_symbol, volume_usd=row.volume_usd, fee_usd=row.fee_usd, fee_base=base,
        affiliate_rate=rate, tier_level=line.tier_level, effective_rate=line.effective_rate,
        payout_exact=line_payout_at(base, line.effective_rate), corrects=row.corrects, fill_month=fill_month,
        statement_month=pricing.month, line_kind=kind, statement_line=line.position)


def audited_fills(connection: Connection, pricing: MonthPricing, *, user_id: str | None = None,
                  symbol: str | None = None, after: str | None = None, limit: int | None = None
                  ) -> Iterator[AuditedFill]:
    """The counted fills `pricing`'s broker is paid for in its month, in fill_id order, each
    priced by its line: those of one user or symbol if given, after the fill_id `after`, at most
    `limit` (all without). Read `_BATCH` rows at a time."""
    remaining = limit
    while remaining is None or remaining > 0:
        size = _BATCH if remaining is None else min(_BATCH, remaining)
        rows = connection.execute(_query(pricing.broker_id, pricing.month, user_id, symbol, after, size)).all()
        for row in rows:
            yield _audited(row, pricing)
        if len(rows) < size:
            return
        after = rows[-1].fill_id
        if remaining is not None:
            remaining -= len(rows)


# --- pages ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FillAuditPage:
    broker_id: int
    month: Month
    source: AuditSource
    fills: tuple[AuditedFill, ...]
    next_cursor: str | None  # None: this is the last page

    def to_document(self) -> dict[str, Any]:
        return {"broker_id": self.broker_id, "month": str(self.month), "source": self.source.value,
                "fills": [f.to_document() for f in self.fills], "next_cursor": self.next_cursor}


def fill_audit_page(connection: Connection, broker_id: int, month: Month, *, limit: int, cursor: str | None = None,
                    user_id: str | None = None, symbol: str | None = None) -> FillAuditPage:
    """One page of `audited_fills`: `limit` rows after the `cursor` of the previous page."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit: {limit} is not between 1 and {MAX_PAGE}", field="limit")
    after = None if cursor is None else decode_cursor(cursor, broker_id, month)
    pricing = month_pricing(connection, broker_id, month)
    rows = tuple(audited_fills(connection, pricing, user_id=user_id, symbol=symbol, after=after, limit=limit + 1))
    more = len(rows) > limit
    page = rows[:limit]
    return FillAuditPage(broker_id, month, pricing.source, page,
                         encode_cursor(broker_id, month, page[-1].fill_id) if more else None)


_CURSOR_VERSION = "f1"


def encode_cursor(broker_id: int, month: Month, fill_id: str) -> str:
    """An opaque token for "after `fill_id`", valid for this broker and month only."""
    text = f"{_CURSOR_VERSION}\x1f{broker_id}\x1f{month}\x1f{fill_id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(token: str, broker_id: int, month: Month) -> str:
    """The fill_id a cursor continues after; refused unless made by `encode_cursor` for this broker
    and month."""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    parts = text.split("\x1f", 3)
    if len(parts) != 4 or parts[0] != _CURSOR_VERSION:
        raise InvalidInput("cursor: not a cursor of this endpoint; pass `next_cursor` of the previous page as it is",
                           field="cursor")
    if (parts[1], parts[2]) != (str(broker_id), str(month)):
        raise InvalidInput(f"cursor: it continues another listing (broker {parts[1]}, {parts[2]}), not broker "
                           f"{broker_id}'s {month}", field="cursor")
    return parts[3]


# --- exports -------------------------------------------------------------------------------------------


class ExportFormat(StrEnum):
    CSV = "csv"
    PARQUET = "parquet"


EXPORT_COLUMNS = AUDIT_COLUMNS
# text from outside (ids, symbols), made safe for spreadsheets in CSV, by position in a row's cells
_TEXT_FROM_OUTSIDE = tuple(EXPORT_COLUMNS.index(name)
                           for name in ("fill_id", "order_id", "user_id", "symbol", "fee_symbol", "corrects"))
_IS_MAKER = EXPORT_COLUMNS.index("is_maker")
_TIMESTAMP = EXPORT_COLUMNS.index("timestamp")
EXPORT_FORMAT = "bkr-fill-audit/1"
_MEDIA = {ExportFormat.CSV: ("text/csv; charset=utf-8", ".csv"),
          ExportFormat.PARQUET: ("application/vnd.apache.parquet", ".parquet")}


@dataclass(frozen=True, slots=True)
class ExportedFills:
    rows: int
    source: AuditSource
    media_type: str
    filename: str


def export_fills(connection: Connection, broker_id: int, month: Month, fmt: ExportFormat,
                 sink: IO[bytes]) -> ExportedFills:
    """Every row of `audited_fills` for the broker's month, written to `sink` as CSV or Parquet.

    Both hold the same columns (`EXPORT_COLUMNS`). In CSV, amounts are canonical decimal text
    and text from outside (ids, symbols) is made safe for spreadsheets as statements' CSV is. In
    Parquet, amounts are exact decimal text too (string columns: an amount keeps every digit it
    has, whatever its scale, and is read back with `Decimal`), the instant a UTC microsecond
    timestamp, `is_maker` a boolean and `statement_line` an integer (null in a projection); the
    file's metadata names the format, broker, month and source."""
    pricing = month_pricing(connection, broker_id, month)
    rows = audited_fills(connection, pricing)
    count = (_write_csv(rows, sink) if fmt is ExportFormat.CSV
             else _write_parquet(rows, sink, _metadata(pricing)))
    media_type, suffix = _MEDIA[fmt]
    return ExportedFills(count, pricing.source, media_type, f"fills-{broker_id}-{month}{suffix}")


def export_fills_to_file(connection: Connection, broker_id: int, month: Month, fmt: ExportFormat,
                         out: Path) -> ExportedFills:
    """`export_fills` to the file `out`, written beside it first and moved into place whole."""
    partial = out.with_name(out.name + ".partial")
    try:
        with partial.open("wb") as sink:
            exported = export_fills(connection, broker_id, month, fmt, sink)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return exported


def _write_csv(rows: Iterable[AuditedFill], sink: IO[bytes]) -> int:
    text = io.TextIOWrapper(sink, encoding="utf-8", newline="", write_through=True)
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    count = 0
    for fill in rows:
        cells = list(fill.cells())
        for index in _TEXT_FROM_OUTSIDE:
            if cells[index] is not None:
                cells[index] = spreadsheet_safe(cells[index])
        cells[_IS_MAKER] = "true" if fill.is_maker else "false"
        writer.writerow(cells)  # None (no `corrects`, no line position yet) is written as an empty cell
        count += 1
    text.flush()
    text.detach()  # the sink stays open: it is the caller's
    return count


def _metadata(pricing: MonthPricing) -> dict[bytes, bytes]:
    return {b"bkr": (f'{{"broker_id":{pricing.broker_id},"format":"{EXPORT_FORMAT}","month":"{pricing.month}",'
                     f'"source":"{pricing.source.value}"}}').encode()}


def _write_parquet(rows: Iterable[AuditedFill], sink: IO[bytes], metadata: dict[bytes, bytes]) -> int:
    import pyarrow as pa  # lazy: only an export in Parquet needs it
    import pyarrow.parquet as pq

    types = {name: pa.string() for name in EXPORT_COLUMNS}
    types |= {"timestamp": pa.timestamp("us", tz="UTC"), "is_maker": pa.bool_(), "statement_line": pa.int64()}
    nullable = {"corrects", "statement_line"}
    schema = pa.schema([pa.field(name, types[name], nullable=name in nullable) for name in EXPORT_COLUMNS],
                       metadata=metadata)
    count = 0
    with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
        batch: list[AuditedFill] = []
        for fill in rows:
            batch.append(fill)
            if len(batch) == _BATCH:
                writer.write_batch(_arrow_batch(batch, schema))
                count += len(batch)
                batch = []
        if batch or not count:
            writer.write_batch(_arrow_batch(batch, schema))
            count += len(batch)
    return count


def _arrow_batch(batch: list[AuditedFill], schema: Any) -> Any:
    import pyarrow as pa

    columns: list[list[Any]] = [[] for _ in EXPORT_COLUMNS]
    for fill in batch:
        cells = fill.cells()
        for index, value in enumerate(cells):
            columns[index].append(fill.timestamp if index == _TIMESTAMP else value)
    return pa.RecordBatch.from_arrays([pa.array(values, type=schema.field(index).type)
                                       for index, values in enumerate(columns)], schema=schema)
