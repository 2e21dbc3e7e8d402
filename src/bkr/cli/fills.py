"""`bkr fills`: import fill files, review the rows that were not accepted, export a broker's
per-fill audit of a month, and archive a closed, settled month's fills to Parquet.

Importing and archiving need an operator key with the `operator` role (`--key` or
BKR_OPERATOR_KEY): the import's entry on the audit trail names its operator, the file's SHA-256
and the counts; an archive's names the file, its SHA-256, its rows and what they add up to."""

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from bkr.cli.common import (
    ConfigOption,
    DbOption,
    InputFile,
    JsonOption,
    KeyOption,
    checked_broker_id,
    err,
    open_program,
    operator_from_key,
    out,
    print_json,
    readable_file,
    transaction,
    within,
)
from bkr.domain.clock import system_clock
from bkr.domain.money import canonical
from bkr.domain.operators import Role
from bkr.domain.periods import Month
from bkr.ingest.readers import read_rows
from bkr.program import fill_audit, review
from bkr.program.archive import archive_month
from bkr.program.importer import import_file
from bkr.program.reports import requested_month
from bkr.program.writer import RowResult, Tally
from bkr.store import db

fills_app = typer.Typer(no_args_is_help=True, help="Import fills and review what was not accepted.")
MAX_BATCH_SIZE = 1_000_000  # fills per transaction: more holds the write lock for minutes


@fills_app.command("import")
def fills_import(
    file: InputFile,
    db_url: DbOption = db.DEFAULT_URL,
    config_path: ConfigOption = None,
    file_format: Annotated[str | None, typer.Option("--format", help="csv | ndjson | parquet (default: by name)")]
    = None,
    batch_size: Annotated[int | None, typer.Option(
        help="Fills per transaction (default: a block of about 120,000 for CSV, 5,000 for the others).")] = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Import fills from CSV, NDJSON or Parquet. Safe to repeat and to interrupt. Needs the
    operator role; the finished import is recorded on the audit trail with the file's SHA-256."""
    if batch_size is not None:
        within(batch_size, 1, MAX_BATCH_SIZE, "--batch-size")
    read_rows(readable_file(file), file_format)  # fail on a file that cannot be read before anything is done
    with transaction(db_url) as connection:
        actor = operator_from_key(connection, key, Role.OPERATOR).name
    engine = open_program(db_url, config_path)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[rate]}"),
                  TimeElapsedColumn(), console=err, disable=as_json or not err.is_terminal) as progress:
        task = progress.add_task(f"importing {file.name}", total=None, rate="")
        started = datetime.now()

        def report(tally: Tally, _results: list[RowResult]) -> None:
            seen = tally.accepted + tally.duplicates + tally.conflicts + tally.rejected
            seconds = max((datetime.now() - started).total_seconds(), 1e-9)
            progress.update(task, completed=seen, rate=f"{seen:,} rows, {seen / seconds:,.0f}/s")

        tally = import_file(engine, file, clock=system_clock, actor=actor, batch_size=batch_size,
                            file_format=file_format, on_batch=report)
    if as_json:
        print_json(tally.counts())
        return
    self_trades = f", {tally.self_trades:,} of self-trades" if tally.self_trades else ""
    out.print(f"{file.name}: {tally.accepted:,} accepted ({tally.counted:,} broker volume, "
              f"{tally.awaiting_user:,} awaiting their user{self_trades}), {tally.duplicates:,} duplicates, "
              f"{tally.conflicts:,} conflicts, {tally.rejected:,} rejected")
    if tally.rejected or tally.conflicts:
        out.print("See them with: bkr fills rejected")


@fills_app.command("rejected")
def fills_rejected(db_url: DbOption = db.DEFAULT_URL, limit: Annotated[int, typer.Option()] = 50,
                   as_json: JsonOption = False) -> None:
    """Rows that were rejected (with their reason), conflicting fills, fills awaiting their user, and
    how many fills are sides of self-trades."""
    with transaction(db_url) as connection:
        rejections = review.rejected_rows(connection, limit=limit)
        conflicts = review.conflict_rows(connection, limit=limit)
        counts = review.review_counts(connection).to_document()
    if as_json:
        print_json({"counts": counts,
                     "rejected": [{"source": r.source, "line": r.line, "fill_id": r.fill_id, "reason": r.reason,
                                   "raw": r.raw} for r in rejections],
                     "conflicts": [{"source": c.source, "line": c.line, "fill_id": c.fill_id, "raw": c.raw}
                                   for c in conflicts]})
        return
    table = Table("source", "line", "fill_id", "reason", title=f"rejected rows ({counts['rejected']:,})")
    for r in rejections:
        table.add_row(r.source, str(r.line or ""), r.fill_id or "", r.reason)
    out.print(table)
    table = Table("source", "line", "fill_id", "received", title=f"conflicts ({counts['conflicts']:,}): "
                  "same fill_id, other content; not applied")
    for c in conflicts:
        table.add_row(c.source, str(c.line or ""), c.fill_id, c.raw[:80])
    out.print(table)
    if counts["awaiting_user"]:
        out.print(f"{counts['awaiting_user']:,} broker fills wait for their user to be registered "
                  "(bkr user add / bkr user import); they are paid once it is. Which users: bkr fills awaiting")
    if counts["self_trades"]:
        out.print(f"{counts['self_trades']:,} fills are sides of self-trades (one user on both sides of a trade): "
                  "stored, counted for nobody.")


@fills_app.command("awaiting")
def fills_awaiting(db_url: DbOption = db.DEFAULT_URL,
                   limit: Annotated[int, typer.Option(min=1, max=100_000, help="Users per page.")] = 50,
                   after: Annotated[str | None, typer.Option(help="Users after this user id (the next page).")] = None,
                   as_json: JsonOption = False) -> None:
    """The user ids broker fills carry that bkr does not know: each with its fills, their volume
    and fees, and the brokers they came through. Registering the user makes its fills payable."""
    with transaction(db_url) as connection:
        users = review.awaiting_users(connection, limit=limit, after=after)
        counts = review.review_counts(connection)
    if as_json:
        print_json({"awaiting_user_fills": counts.awaiting_user,
                    "users": [{"user_id": u.user_id, "fills": u.fills, "volume_usd": canonical(u.volume_usd),
                               "fee_usd": canonical(u.fee_usd), "brokers": list(u.brokers),
                               "first_month": str(u.first_month), "last_seen": u.last_seen.isoformat()}
                              for u in users],
                    "next_after": users[-1].user_id if len(users) == limit else None})
        return
    table = Table("user_id", "fills", "volume USD", "fees USD", "brokers", "since", "last fill (UTC)",
                  title=f"users bkr does not know ({counts.awaiting_user:,} broker fills wait for them)")
    for u in users:
        table.add_row(u.user_id, f"{u.fills:,}", canonical(u.volume_usd), canonical(u.fee_usd),
                      ", ".join(map(str, u.brokers)), str(u.first_month), f"{u.last_seen:%Y-%m-%d %H:%M}")
    out.print(table)
    if len(users) == limit:
        out.print(f"More: bkr fills awaiting --after {users[-1].user_id}", markup=False, highlight=False)
    if users:
        out.print("Register them with their referral code (bkr user add / bkr user import); their fills are then paid.")


@fills_app.command("archive")
def fills_archive(
    month: Annotated[str, typer.Option(help="YYYY-MM: a closed month whose statements are all paid.")],
    out_file: Annotated[Path, typer.Option("--out", help="The Parquet file to write (must not exist).",
                                           show_default=False)],
    db_url: DbOption = db.DEFAULT_URL,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Move a closed, settled month's fills to a new Parquet file and out of the database. The
    file's SHA-256, rows and sums are recorded (and on the audit trail); `bkr reconcile` then
    proves the month from the file. Needs the operator role."""
    target = Month.parse(month)
    with transaction(db_url) as connection:
        actor = operator_from_key(connection, key, Role.OPERATOR).name
    record = archive_month(db.open_engine(db_url), target, out_file, actor=actor, now=system_clock())
    if as_json:
        print_json({"month": str(record.month), "file": record.path, "sha256": record.sha256, "bytes": record.bytes,
                    "rows": record.rows, "counted_fills": record.counted_fills,
                    "volume_usd": canonical(record.volume_usd), "fee_base_usd": canonical(record.fee_base_usd)})
        return
    out.print(f"{record.month}: {record.rows:,} fills ({record.counted_fills:,} counted) archived to {record.path}, "
              f"{record.bytes:,} bytes, SHA-256 {record.sha256}; removed from the database. "
              f"Reconcile it with: bkr reconcile --month {record.month}", markup=False, highlight=False)


@fills_app.command("export")
def fills_export(
    broker: Annotated[int, typer.Option("--broker", help="Broker id.", show_default=False,
                                        callback=checked_broker_id)],
    month: Annotated[str, typer.Option(help="YYYY-MM: the statement month (closed, or the projection of one "
                                            "not closed yet).", show_default=False)],
    out_file: Annotated[Path, typer.Option("--out", help="The file to write (replaced whole if it exists).",
                                           show_default=False)],
    output_format: Annotated[fill_audit.ExportFormat, typer.Option("--format", help="csv | parquet")]
    = fill_audit.ExportFormat.CSV,
    db_url: DbOption = db.DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """A broker's per-fill audit of a month: every counted fill its statement pays, with its
    user's affiliate rate, the effective rate, its exact payout contribution and its statement
    line (late fills' adjustment lines and corrections included). Summed per line, the rows
    equal the statement's lines exactly. The same file as the broker API's
    GET /v1/broker/{id}/fills/export."""
    target = requested_month(Month.parse(month), system_clock())
    with transaction(db_url) as connection:
        exported = fill_audit.export_fills_to_file(connection, broker, target, output_format, out_file)
    if as_json:
        print_json({"broker_id": broker, "month": str(target), "file": str(out_file), "rows": exported.rows,
                    "source": exported.source.value, "format": output_format.value})
        return
    priced_by = ("its statement" if exported.source is fill_audit.AuditSource.STATEMENT
                 else "the projection (the month is not closed)")
    out.print(f"broker {broker}, {target}: {exported.rows:,} fills, priced by {priced_by}, written to {out_file}",
              markup=False, highlight=False)
