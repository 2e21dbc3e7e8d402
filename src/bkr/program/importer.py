"""Import a fill file: stream it in batches, each batch one transaction, and tally the outcome.

Memory stays flat in the file's size (only one batch is held). Interrupting an import (a crash,
Ctrl-C) keeps the batches already committed and nothing of the one in flight; importing the
same file again finds the committed rows as duplicates and writes the rest. Each batch reads the
program's versions in its own transaction, and holds them until it commits
(`settings_versions.hold_timeline`): every fill is priced under the version in force for its month.

An import that finishes appends one `fills.import` entry to the audit trail, naming `actor`, with
its counts and, for a file, the file's name, size and SHA-256 (taken before its rows are read), so
that the trail says which bytes were loaded. An interrupted import has no entry; its batches are
in `imports`, as are the small batches the HTTP feed posts (`bkr.program.feed`), which the trail
does not list one by one.
"""

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path

from sqlalchemy import Engine, insert, update

from bkr.domain.clock import Clock
from bkr.ingest.blocks import Block, ParquetBlock, PlainBlock, csv_blocks, parquet_blocks
from bkr.ingest.readers import RawRow, detect_format, read_rows
from bkr.program import audit
from bkr.program.set_import import write_block
from bkr.program.settings_versions import hold_timeline, load_timeline
from bkr.program.writer import RowResult, Tally, write_batch
from bkr.store.tables import imports

DEFAULT_BATCH = 5_000
_DIGEST_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class FileFacts:
    """What the audit trail records of an imported file: its bytes' SHA-256 and their number."""

    sha256: str
    size: int


def file_facts(path: Path) -> FileFacts:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(_DIGEST_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return FileFacts(digest.hexdigest(), size)


def batches(rows: Iterable[RawRow], size: int) -> Iterator[list[RawRow]]:
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        yield batch


def import_rows(engine: Engine, rows: Iterable[RawRow], *, source: str, clock: Clock, actor: str,
                batch_size: int = DEFAULT_BATCH, file: FileFacts | None = None,
                on_batch: Callable[[Tally, list[RowResult]], None] | None = None) -> Tally:
    """Import `rows` as `actor`, from `source` (the file's name, if `file` describes one), by the row path."""
    return _import(engine, batches(rows, batch_size), source=source, clock=clock, actor=actor, file=file,
                   on_batch=on_batch)


def _import(engine: Engine, units: Iterable[Block], *, source: str, clock: Clock, actor: str,
            file: FileFacts | None, on_batch: Callable[[Tally, list[RowResult]], None] | None) -> Tally:
    """Import `units` one transaction each: a list of rows by the row path, a block of columns by
    the set path (`bkr.program.set_import`)."""
    tally = Tally()
    # Read the first unit before recording the import: a file refused as a whole (a CSV header
    # without the fill columns, Parquet money columns in floating point) then leaves no trace.
    pending = iter(units)
    first = next(pending, None)
    with engine.begin() as connection:
        load_timeline(connection)  # a program without settings takes no fills: refused before it is recorded
        import_id = connection.execute(
            insert(imports).values(source=source, started_at=clock()).returning(imports.c.import_id)).scalar_one()
    for unit in chain([first] if first is not None else [], pending):
        with engine.begin() as connection:
            program = hold_timeline(connection)
            if isinstance(unit, (PlainBlock, ParquetBlock)):
                outcome = write_block(connection, unit, program, source=source, now=clock(), import_id=import_id)
                unit_tally, results = outcome.tally, outcome.results
            else:
                results = write_batch(connection, unit, program, source=source, now=clock(), import_id=import_id)
                unit_tally = Tally()
                unit_tally.add(results)
            connection.execute(update(imports).where(imports.c.import_id == import_id).values(
                accepted=imports.c.accepted + unit_tally.accepted,
                duplicates=imports.c.duplicates + unit_tally.duplicates,
                conflicts=imports.c.conflicts + unit_tally.conflicts,
                rejected=imports.c.rejected + unit_tally.rejected))
        tally.merge(unit_tally)
        if on_batch is not None:
            on_batch(tally, results)
    with engine.begin() as connection:
        finished = clock()
        connection.execute(update(imports).where(imports.c.import_id == import_id).values(finished_at=finished))
        described = {"file": source, "sha256": file.sha256, "bytes": file.size} if file else {"source": source}
        audit.record(connection, actor=actor, action="fills.import", subject=f"import {import_id}", at=finished,
                     after={**described, "import_id": import_id, **tally.counts()})
    return tally


def import_file(engine: Engine, path: Path, *, clock: Clock, actor: str,
                batch_size: int | None = None, file_format: str | None = None,
                on_batch: Callable[[Tally, list[RowResult]], None] | None = None,
                set_based: bool = True) -> Tally:
    """Import a fill file. A CSV or Parquet file goes by the set path (`set_based=False`: the row path, the
    reference it is checked against): blocks that Arrow reads are decided mostly in SQL, and
    whatever the set path leaves, and any block it cannot read as columns, by the row path. Both
    store the same; `on_batch` gets the row path's results only. Each transaction holds
    `batch_size` records, by default `DEFAULT_BATCH` on the row path and a block
    (`bkr.ingest.blocks.BLOCK_BYTES` of a CSV file, about 120,000 records; `PARQUET_RECORDS` of
    a Parquet file) on the set path."""
    # the file's name as text a database stores: a byte that is not UTF-8 is written as \xff
    source = os.fsencode(path.name).decode("utf-8", "backslashreplace")
    rows = read_rows(path, file_format)  # a missing file or an unknown format is refused before hashing
    facts = file_facts(path)
    file_format = file_format or detect_format(path)
    if set_based and file_format in ("csv", "parquet"):
        blocks = csv_blocks(path) if file_format == "csv" else parquet_blocks(path)
        return _import(engine, _pieces(blocks, batch_size), source=source, clock=clock, actor=actor,
                       file=facts, on_batch=on_batch)
    return import_rows(engine, rows, source=source, clock=clock, actor=actor, batch_size=batch_size or DEFAULT_BATCH,
                       file=facts, on_batch=on_batch)


def _pieces(blocks: Iterable[Block], batch_size: int | None) -> Iterator[Block]:
    """The blocks cut to at most `batch_size` records each (None: plain blocks whole, rows by `DEFAULT_BATCH`)."""
    for block in blocks:
        if isinstance(block, (PlainBlock, ParquetBlock)):
            size = batch_size or block.records
            for start in range(0, block.records, size):
                yield block if size >= block.records else block.part(start, size)
        else:
            yield from batches(block, batch_size or DEFAULT_BATCH)
