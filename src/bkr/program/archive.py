"""`bkr fills archive`: move the fills of a closed, settled month to a Parquet file.

Only a month whose statements nothing can change any more is archived: closed, every statement
paid, no fill of it waiting for its user (registering that user would move the fill to an open
month and pay it), and reconciling cleanly. The steps, so that nothing is deleted before its copy
is safe:

1. In one read-only snapshot: the refusals, then every row of the period written to a new file
   beside the target (`FILE.partial`), flushed to disk, with what the rows add up to.
2. The file is read back from disk: its rows must add up to the same, row count and each
   broker's counted fills, volume and fee base. Its SHA-256 and size are taken. It is then
   linked to its name, which fails if that name exists (no file is ever overwritten).
3. One transaction: the month's row locked and the refusals checked again, the database's rows of
   the period counted and summed once more and compared with the file's, the archive recorded
   (`fill_archives`) with an audit entry `fills.archive`, and the rows removed: on PostgreSQL
   the month's partition is detached and dropped, on SQLite they are deleted. If anything in it
   fails, it rolls back and the file is removed again.

What stays in the database: the aggregates, statements and ledger the month's close made (so the
operator's and brokers' views of it are unchanged), and every fill_id in `fill_keys` (a fill of
the month sent again is still a duplicate, or a conflict). What an archived month refuses
afterwards: a correction of one of its fills (the writer says so), a retroactive registry
change that would re-judge its fills (`bkr.program.retroactive`).
"""

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
from sqlalchemy import Connection, Engine, delete, func, insert, select

from bkr.domain.errors import Conflict
from bkr.domain.fills import Attribution
from bkr.domain.periods import Month
from bkr.program import audit
from bkr.program.fill_archives import (
    SCHEMA,
    ArchiveRecord,
    Figures,
    Tally,
    archive_record,
    arrow_batch,
    counted_by_broker,
    file_metadata,
    read_tally,
    stored_rows,
)
from bkr.program.importer import file_facts
from bkr.program.periods import closed_months
from bkr.program.reconcile import reconcile_month
from bkr.program.settlement import PAID
from bkr.store import db
from bkr.store.dialect import locked
from bkr.store.partitions import drop_partition, fill_partitions, partitioned
from bkr.store.tables import fill_archives, fills, periods, statements

ACTION = "fills.archive"
_ROWS_PER_BATCH = 50_000


@dataclass(frozen=True, slots=True)
class _Written:
    tally: Tally
    sha256: str
    size: int


def archive_month(engine: Engine, month: Month, out: Path, *, actor: str, now: datetime) -> ArchiveRecord:
    """Archive `month`'s fills to the new Parquet file `out` and remove them from the database."""
    out = out.absolute()
    _refuse_existing(out)
    partial = out.with_name(out.name + ".partial")
    _refuse_existing(partial)
    try:
        with db.snapshot(engine) as connection:
            _refusals(connection, month)
            problems = reconcile_month(connection, month).differences
            if problems:
                raise Conflict(f"{month} does not reconcile ({len(problems)} difference(s), the first: {problems[0]}): "
                               f"an archive must hold a month that adds up; see bkr reconcile --month {month}",
                               code="month_unreconciled")
            written = _write(connection, month, partial)
        os.link(partial, out)  # fails if `out` appeared meanwhile: nothing is overwritten
    finally:
        partial.unlink(missing_ok=True)
    try:
        with engine.begin() as connection:
            return _record_and_remove(connection, month, out, written, actor=actor, now=now)
    except BaseException:
        out.unlink(missing_ok=True)  # the month is not archived: the file we made is no archive
        raise


def _refuse_existing(path: Path) -> None:
    if path.exists():
        raise Conflict(f"{path} exists: an archive is written only to a new file", code="archive_file_exists")


def _refusals(connection: Connection, month: Month) -> None:
    """Why `month` cannot be archived now, as an error; nothing if it can."""
    record = archive_record(connection, month)
    if record is not None:
        raise Conflict(f"{month} is archived already: {record.rows:,} fills to {record.path} "
                       f"(SHA-256 {record.sha256}) on {record.archived_at:%Y-%m-%d} by {record.archived_by}",
                       code="month_archived")
    if month not in closed_months(connection):
        raise Conflict(f"{month} is not closed: only a closed, settled month is archived "
                       f"(bkr close --month {month}, then bkr settle)", code="month_open")
    unpaid = connection.execute(select(statements.c.broker_id, statements.c.status)
                                .where((statements.c.month == month) & (statements.c.status != PAID))
                                .order_by(statements.c.broker_id)).all()
    if unpaid:
        shown = ", ".join(f"broker {broker} {status}" for broker, status in unpaid[:5])
        raise Conflict(f"{month} is not settled: {len(unpaid)} statement(s) not paid ({shown}); "
                       f"only a settled month is archived (bkr approve / bkr settle --month {month})",
                       code="month_unsettled")
    waiting = connection.execute(select(func.count()).select_from(fills).where(
        (fills.c.period == month) & (fills.c.attribution == Attribution.AWAITING_USER.value))).scalar_one()
    if waiting:
        raise Conflict(f"{waiting:,} fill(s) of {month} wait for their user, who may still be registered and "
                       "paid: register them first (bkr fills awaiting)", code="fills_awaiting_user")


def _write(connection: Connection, month: Month, path: Path) -> _Written:
    """Every row of the period, in fill_id order, to the Parquet file `path`; then the file read
    back from disk and checked to hold what was written."""
    tally = Tally()
    rows = connection.execution_options(yield_per=_ROWS_PER_BATCH).execute(
        select(fills).where(fills.c.period == month).order_by(fills.c.fill_id))
    with pq.ParquetWriter(str(path), SCHEMA.with_metadata(file_metadata(month)), compression="zstd") as writer:
        for chunk in rows.mappings().partitions():
            for row in chunk:
                tally.add(row)
            writer.write_batch(arrow_batch(chunk))
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)  # on disk before anything it copies is removed
    finally:
        os.close(descriptor)
    again = read_tally(path)
    if (again.rows, again.by_broker) != (tally.rows, tally.by_broker):
        raise Conflict(f"the archive written to {path} does not read back as written "
                       f"({again.rows:,} rows read, {tally.rows:,} written): nothing was removed",
                       code="archive_unreadable")
    facts = file_facts(path)
    return _Written(tally, facts.sha256, facts.size)


def _record_and_remove(connection: Connection, month: Month, out: Path, written: _Written, *, actor: str,
                       now: datetime) -> ArchiveRecord:
    connection.execute(locked(select(periods.c.month).where(periods.c.month == month)))
    _refusals(connection, month)
    stored: tuple[int, Figures] = (stored_rows(connection, month), counted_by_broker(connection, month))
    if stored != (written.tally.rows, written.tally.by_broker):
        raise Conflict(f"the fills of {month} changed while the archive was written ({stored[0]:,} rows stored, "
                       f"{written.tally.rows:,} written): nothing was removed; archive again to a new file",
                       code="archive_stale")
    tally = written.tally
    record = ArchiveRecord(month, str(out), written.sha256, written.size, tally.rows, tally.counted,
                           tally.total("volume_usd"), tally.total("fee_base"), now, actor)
    connection.execute(insert(fill_archives).values(
        month=month, path=record.path, sha256=record.sha256, bytes=record.bytes, rows=record.rows,
        counted_fills=record.counted_fills, volume_usd=record.volume_usd, fee_base_usd=record.fee_base_usd,
        archived_at=now, archived_by=actor))
    audit.record(connection, actor=actor, action=ACTION, subject=str(month), at=now,
                 after={"file": record.path, "sha256": record.sha256, "bytes": record.bytes, "rows": record.rows,
                        "counted_fills": record.counted_fills, "volume_usd": record.volume_usd,
                        "fee_base_usd": record.fee_base_usd})
    if partitioned(connection):
        if month in fill_partitions(connection):  # a month without rows may have none
            drop_partition(connection, month)
    else:
        connection.execute(delete(fills).where(fills.c.period == month))
    return record
