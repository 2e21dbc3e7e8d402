"""`bkr lake aggregate`: snapshot the rules, run the month's Spark job, load what it found.

`aggregate_month` takes the snapshot (`bkr.lake.snapshot`) and runs the job (`bkr.lake.job`)
outside any transaction, then loads the result in one transaction:

1. the registry, the program and the claimed fill ids are what the snapshot says (else the run is
   refused: the job judged against rules that no longer hold; run it again);
2. the month is routed to its paying period under the periods' shared lock, as a fill is: the
   month itself while open, the next open month once it is closed;
3. the counted fills' sums are compared with what earlier runs of the month added (`lake_lines`,
   `lake_days`), and only the difference goes into the running totals, in that period: so a
   rerun on an open month replaces its lake results, and a rerun after the close adds the fills
   that reached the lake since as adjustments of the next open month, as late fills are. After a
   close only additions are taken: fills gone from the lake, or changed, are refused;
4. every record the job left is read from its file with bkr's own Parquet reader and goes through
   bkr's row path (`bkr.program.writer.write_batch`), file by file in the order of the records,
   which stores, rejects, keeps conflicts and keeps aside fills of unknown users exactly as an
   import of the file would;
5. the run is recorded (`lake_runs`: the files' digest and count, the snapshot's path and digest,
   the counts), with an `imports` row for what the row path kept, and on the audit trail.
"""

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyspark.sql import SparkSession
from sqlalchemy import Connection, Engine, and_, delete, exists, insert, update

from bkr.domain.clock import Clock
from bkr.domain.errors import InvalidInput
from bkr.domain.fills import FIELDS
from bkr.domain.money import ZERO, sub
from bkr.domain.periods import Month
from bkr.ingest.readers import RawRow, parquet_row
from bkr.lake.job import JobResult, file_digests, run_job
from bkr.lake.snapshot import Snapshot, take_snapshot, write_snapshot
from bkr.program import audit
from bkr.program.attribution import add_sums
from bkr.program.periods import lock_open_periods
from bkr.program.settings_versions import hold_timeline
from bkr.program.writer import Tally, write_batch
from bkr.store import lake
from bkr.store.tables import aggregate_totals, aggregates, daily_volumes, imports, lake_runs, user_totals

_VOLATILE = ("now", "now_micros")  # what a snapshot taken again at load time may differ in


@dataclass(frozen=True, slots=True)
class LakeRun:
    run_id: int
    month: Month
    period: Month  # where this run's changes were paid
    files: int
    files_sha256: str
    snapshot: Path
    records: int
    decided_in_lake: int
    tally: Tally


def aggregate_month(engine: Engine, spark: SparkSession, *, month: Month, uri: str, work: Path, clock: Clock,
                    actor: str, master: str = "", on_step: Callable[[str], None] | None = None) -> LakeRun:
    """Compute `month`'s aggregates from the Parquet fills under `uri` with Spark and load them."""
    step = on_step or (lambda _: None)
    started = clock()
    with engine.connect() as connection:
        snapshot = write_snapshot(take_snapshot(connection, month, started), work)
    step(f"snapshot written: {snapshot.path}")
    files = file_digests(spark, uri)
    if not files:
        raise InvalidInput(f"{uri}: no Parquet file there", field="fills")
    step(f"{len(files)} file(s) under {uri}")
    result = run_job(spark, uri, snapshot.document)
    step(f"{result.records} records read, {result.decided_total} decided in the lake")
    with engine.begin() as connection:
        return _load(connection, snapshot, result, files, uri=uri, master=master, started=started, clock=clock,
                     actor=actor)


def files_digest(files: list[tuple[str, int, str]]) -> str:
    """One SHA-256 over every file's path, size and SHA-256, in path order."""
    digest = hashlib.sha256()
    for path, size, sha256 in sorted(files):
        digest.update(f"{path}\t{size}\t{sha256}\n".encode())
    return digest.hexdigest()


def _load(connection: Connection, snapshot: Snapshot, result: JobResult, files: list[tuple[str, int, str]], *,
          uri: str, master: str, started: Any, clock: Clock, actor: str) -> LakeRun:
    month = snapshot.month
    program = hold_timeline(connection)
    now = clock()
    current = take_snapshot(connection, month, now)
    if any(current[key] != value for key, value in snapshot.document.items() if key not in _VOLATILE):
        raise InvalidInput(f"the registry, the program or the stored fills changed while the job over {month} ran; "
                           "run it again", field="month")
    period = lock_open_periods(connection, {month})[month]
    line_change, day_change = _changes(connection, month, result)
    if period != month:
        _refuse_changed(month, line_change, day_change)
    add_sums(connection,
             {(b, period, month, u, m, r, "fill"): sums for (b, u, m, r), sums in sorted(line_change.items())},
             {(b, period, d, m): sums for (b, d, m), sums in sorted(day_change.items())})
    lake.add_to_period(connection, month, period, line_change, day_change)
    _drop_emptied(connection, period)
    source = f"lake {uri}"
    import_id = connection.execute(insert(imports).values(source=source, started_at=started)
                                   .returning(imports.c.import_id)).scalar_one()
    tally = Tally(accepted=result.decided_total, counted=result.decided.get("counted", 0))
    for file, rows in result.left.items():
        name, records = _records(file, rows)
        tally.add(write_batch(connection, records, program, source=name, now=now, import_id=import_id))
    finished = clock()
    connection.execute(update(imports).where(imports.c.import_id == import_id).values(
        finished_at=finished, accepted=tally.accepted, duplicates=tally.duplicates, conflicts=tally.conflicts,
        rejected=tally.rejected))
    digest = files_digest(files)
    run_id = connection.execute(insert(lake_runs).values(
        month=month, period=period, fills_uri=uri, files=len(files), files_sha256=digest,
        snapshot_path=str(snapshot.path), snapshot_sha256=snapshot.sha256, master=master, records=result.records,
        decided_in_lake=result.decided_total, accepted=tally.accepted, duplicates=tally.duplicates,
        conflicts=tally.conflicts, rejected=tally.rejected, counted=tally.counted, import_id=import_id,
        started_at=started, finished_at=finished, actor=actor).returning(lake_runs.c.run_id)).scalar_one()
    audit.record(connection, actor=actor, action="lake.aggregate", subject=f"lake run {run_id}", at=finished,
                 after={"month": str(month), "period": str(period), "fills": uri, "files": len(files),
                        "files_sha256": digest, "snapshot_sha256": snapshot.sha256, "records": result.records,
                        "decided_in_lake": result.decided_total, "import_id": import_id, **tally.counts()})
    return LakeRun(run_id, month, period, len(files), digest, snapshot.path, result.records, result.decided_total,
                   tally)


def _changes(connection: Connection, month: Month, result: JobResult,
             ) -> tuple[dict[lake.LineKey, list[Any]], dict[lake.DayKey, list[Any]]]:
    """What this run found minus what earlier runs of the month added: the lines that differ."""
    lines, days = lake.month_lines(connection, month)
    line_change: dict[lake.LineKey, list[Any]] = {}
    for key in set(lines) | set(result.lines):
        new, old = result.lines.get(key, [0, ZERO, ZERO, ZERO]), lines.get(key, [0, ZERO, ZERO, ZERO])
        change = [new[0] - old[0], *(sub(a, b) for a, b in zip(new[1:], old[1:], strict=True))]
        if any(change):
            line_change[key] = change
    day_change: dict[lake.DayKey, list[Any]] = {}
    for day in set(days) | set(result.days):
        new, old = result.days.get(day, [0, ZERO, ZERO]), days.get(day, [0, ZERO, ZERO])
        change = [new[0] - old[0], *(sub(a, b) for a, b in zip(new[1:], old[1:], strict=True))]
        if any(change):
            day_change[day] = change
    return line_change, day_change


def _refuse_changed(month: Month, lines: dict[lake.LineKey, list[Any]], days: dict[lake.DayKey, list[Any]]) -> None:
    """After a close, the lake's fills of the month may only have grown: a line with fewer fills,
    or the same fills and other sums, means a fill on an issued statement changed or went away."""
    for key, change in (*lines.items(), *days.items()):
        if change[0] <= 0:
            raise InvalidInput(f"{month} is closed and the lake's fills of it no longer add up to what its statements "
                               f"were made from ({key}: {change[0]:+d} fills): a fill was removed or changed in the "
                               "lake; send a correction instead", field="month")


def _drop_emptied(connection: Connection, period: Month) -> None:
    """Lines a rerun emptied (their fills gone from the lake), which no fill of the row path leaves."""
    for table in (aggregates, aggregate_totals, daily_volumes):
        connection.execute(delete(table).where(and_(table.c.period == period, table.c.fills == 0)))
    connection.execute(delete(user_totals).where(and_(user_totals.c.period == period, ~exists().where(and_(
        aggregates.c.broker_id == user_totals.c.broker_id, aggregates.c.period == user_totals.c.period,
        aggregates.c.user_id == user_totals.c.user_id)))))


def _records(file: str, rows: list[int]) -> tuple[str, list[RawRow]]:
    """The records at `rows` (from 0) of a Parquet file, as bkr's reader gives them to the row path
    (numbered from 1), and the file's name as an import of it records it."""
    parsed = urlparse(file)
    if parsed.scheme in ("", "file"):
        filesystem: pafs.FileSystem = pafs.LocalFileSystem()
        path = unquote(parsed.path)
    else:
        filesystem, path = pafs.FileSystem.from_uri(file)
    name = os.fsencode(Path(path).name).decode("utf-8", "backslashreplace")
    wanted = iter(rows)
    target = next(wanted, None)
    records: list[RawRow] = []
    with filesystem.open_input_file(path) as handle:
        parquet = pq.ParquetFile(handle)
        columns = [c for c in parquet.schema_arrow.names if c in FIELDS]
        first = 0
        for batch in parquet.iter_batches(batch_size=100_000, columns=columns):
            while target is not None and target < first + batch.num_rows:
                records.append(parquet_row(target + 1, batch.slice(target - first, 1).to_pylist()[0]))
                target = next(wanted, None)
            first += batch.num_rows
            if target is None:
                break
    return name, records

