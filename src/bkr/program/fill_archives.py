"""What reconcile proves a month from: the fills of its period, stored or archived.

A closed, settled month can have its fills moved to a Parquet file (`bkr.program.archive`). The
file holds every row `fills` held for the period, one Parquet column per column of `fills`, with
the same names: money (and the affiliate rate) as bkr's canonical decimal text (`canonical`:
exact, whatever its scale, and read back with `Decimal`), instants as UTC microsecond
timestamps, months as `YYYY-MM` text, flags as booleans, ids as text or 64-bit integers. Its
key-value metadata names the format and the month. `fill_archives` records the file's path,
SHA-256, size, row count and what its counted fills add up to.

`counted_by_broker` sums the counted fills paid in a month from the database, `archived_by_broker`
from its archive once the file's SHA-256 is the one recorded: reconcile compares either with
the aggregates, and the archive checks with both that the file holds exactly what it removes.
"""

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Boolean, Connection, case, func, literal, select
from sqlalchemy.types import TypeEngine

from bkr.domain.errors import Conflict, NotFound
from bkr.domain.fills import Attribution
from bkr.domain.money import ZERO, add, canonical
from bkr.domain.payout import fee_base
from bkr.domain.periods import Month
from bkr.program.importer import file_facts
from bkr.store.dialect import exact_sum
from bkr.store.tables import fill_archives, fills
from bkr.store.types import Money, MonthText, UtcTimestamp

FORMAT = "bkr-fills-archive/1"
METADATA_KEY = b"bkr"
COLUMNS: tuple[str, ...] = tuple(column.name for column in fills.columns)
_MONEY = frozenset(column.name for column in fills.columns if isinstance(column.type, Money))
_MONTHS = frozenset(column.name for column in fills.columns if isinstance(column.type, MonthText))
_READ = ("broker_id", "attribution", "corrects", "volume_usd", "fee_usd", "fee_base_usd")


def _arrow_type(kind: TypeEngine[Any]) -> pa.DataType:
    if isinstance(kind, UtcTimestamp):
        return pa.timestamp("us", tz="UTC")
    if isinstance(kind, Boolean):
        return pa.bool_()
    if kind.python_type is int:
        return pa.int64()
    return pa.string()  # text, money (canonical text), months (YYYY-MM)


SCHEMA = pa.schema([pa.field(column.name, _arrow_type(column.type), nullable=bool(column.nullable))
                    for column in fills.columns])


@dataclass(frozen=True, slots=True)
class ArchiveRecord:
    month: Month
    path: str
    sha256: str
    bytes: int
    rows: int
    counted_fills: int
    volume_usd: Decimal
    fee_base_usd: Decimal
    archived_at: datetime
    archived_by: str


def archive_record(connection: Connection, month: Month) -> ArchiveRecord | None:
    row = connection.execute(select(fill_archives).where(fill_archives.c.month == month)).first()
    return None if row is None else ArchiveRecord(**row._mapping)


def archived_months(connection: Connection) -> set[Month]:
    return set(connection.execute(select(fill_archives.c.month)).scalars())


Figures = dict[int, dict[str, Decimal]]  # broker -> {"fills", "volume_usd", "fee_base"}, as reconcile compares


@dataclass
class Tally:
    """What a month's rows add up to: all of them, and the counted ones per broker."""

    rows: int = 0
    by_broker: Figures = field(default_factory=dict)

    def add(self, row: Mapping[Any, Any]) -> None:
        """One row, as `fills` stores it (money as Decimal or its canonical text)."""
        self.rows += 1
        if row["attribution"] != Attribution.COUNTED.value:
            return
        volume, fee = Decimal(row["volume_usd"]), Decimal(row["fee_usd"])
        base = Decimal(row["fee_base_usd"]) if row["corrects"] is not None else fee_base(fee)
        figures = self.by_broker.setdefault(int(row["broker_id"]), {"fills": ZERO, "volume_usd": ZERO,
                                                                    "fee_base": ZERO})
        figures["fills"] = add(figures["fills"], Decimal(1))
        figures["volume_usd"] = add(figures["volume_usd"], volume)
        figures["fee_base"] = add(figures["fee_base"], base)

    @property
    def counted(self) -> int:
        return sum(int(f["fills"]) for f in self.by_broker.values())

    def total(self, name: str) -> Decimal:
        result = ZERO
        for figures in self.by_broker.values():
            result = add(result, figures[name])
        return result


def counted_by_broker(connection: Connection, month: Month) -> Figures:
    """Counted fills paid in `month`, summed per broker by the database in one pass. The fee base
    is the positive fees of the fills and the stored fee-base change of each correction."""
    counted = (fills.c.period == month) & (fills.c.attribution == Attribution.COUNTED.value)
    postgresql = connection.dialect.name == "postgresql"
    positive = fills.c.fee_usd > 0 if postgresql else ~fills.c.fee_usd.startswith("-")
    zero = literal(0) if postgresql else literal("0")  # SQLite sums decimal text
    base = case((fills.c.corrects.is_not(None), fills.c.fee_base_usd), (positive, fills.c.fee_usd), else_=zero)
    rows = connection.execute(
        select(fills.c.broker_id, func.count(), exact_sum(connection, fills.c.volume_usd),
               exact_sum(connection, base)).where(counted).group_by(fills.c.broker_id))
    return {int(broker): {"fills": Decimal(count), "volume_usd": Decimal(volume), "fee_base": Decimal(fee_base)}
            for broker, count, volume, fee_base in rows}


def stored_rows(connection: Connection, month: Month) -> int:
    return int(connection.execute(select(func.count()).select_from(fills).where(fills.c.period == month)).scalar_one())


def archived_by_broker(record: ArchiveRecord, path: Path | None = None) -> Figures:
    """The counted fills of an archived month per broker, read from its archive (at `path`, else
    where it was written), once the file is shown to be the one archived: its SHA-256 must be
    the recorded one, else it is refused, naming both."""
    path = Path(record.path) if path is None else path
    if not path.is_file():
        raise NotFound(f"the archive of {record.month} is not at {path}: point to it with --archive FILE "
                       f"(SHA-256 {record.sha256})", code="archive_missing")
    facts = file_facts(path)
    if facts.sha256 != record.sha256:
        raise Conflict(f"{path} is not the archive of {record.month}: its SHA-256 is {facts.sha256} "
                       f"({facts.size:,} bytes), the archive recorded {record.sha256} ({record.bytes:,} bytes); "
                       "reconcile refuses a file that is not the one archived", code="archive_digest_mismatch")
    tally = read_tally(path)
    return tally.by_broker


def read_tally(path: Path) -> Tally:
    """What the rows of an archive file add up to, read a batch at a time."""
    tally = Tally()
    for rows in _batches(path, _READ):
        for row in rows:
            tally.add(row)
    return tally


def file_month(path: Path) -> Month:
    """The month an archive file says it holds, from its metadata."""
    metadata = pq.read_schema(path).metadata or {}
    document = json.loads(metadata.get(METADATA_KEY, b"{}"))
    if document.get("format") != FORMAT:
        raise Conflict(f"{path} is not a bkr fills archive ({FORMAT})", code="archive_format")
    return Month.parse(document["month"])


def _batches(path: Path, columns: Iterable[str]) -> Iterator[list[dict[str, Any]]]:
    for batch in pq.ParquetFile(path).iter_batches(batch_size=65_536, columns=list(columns)):
        yield batch.to_pylist()


def arrow_batch(rows: Iterable[Mapping[Any, Any]]) -> pa.RecordBatch:
    """Rows of `fills` (as SQLAlchemy reads them) as one batch of the archive's schema."""
    columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
    for row in rows:
        for name in COLUMNS:
            value = row[name]
            if value is not None and name in _MONEY:
                value = canonical(value)
            elif value is not None and name in _MONTHS:
                value = str(value)
            columns[name].append(value)
    return pa.RecordBatch.from_pydict(columns, schema=SCHEMA)


def file_metadata(month: Month) -> dict[bytes, bytes]:
    return {METADATA_KEY: json.dumps({"format": FORMAT, "month": str(month)}, sort_keys=True).encode()}
