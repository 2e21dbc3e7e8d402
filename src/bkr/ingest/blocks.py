"""A CSV fill file read in blocks of many records, by Arrow where the bytes allow it.

The set-based import (`bkr.program.set_import`) takes a file a block at a time. A block whose
bytes are *plain* — printable ASCII and newlines, no quote character, no blank line, every
record as wide as the header — is parsed by Arrow's CSV reader into columns of text, in C, and
its records are numbered by line without reading them one by one (in such a block each record is
one line). Any other block is read by the same `csv` code as `read_csv`, into `RawRow`s, which the
row path imports: a byte that is not UTF-8, a quoted field or a short record then gets exactly
the reason it gets today. A quote character may open a field that runs past the block's end, so
from the first block holding one, the rest of the file is read that way.

Memory stays flat: one block (`BLOCK_BYTES` of the file, and its columns) is held at a time.
"""

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from itertools import islice
from pathlib import Path

import pyarrow as pa
import pyarrow.compute
import pyarrow.csv as pa_csv

from bkr.domain.errors import InvalidInput
from bkr.ingest.readers import RawRow, csv_header, csv_records, parquet_batches, parquet_row

BLOCK_BYTES = 16 << 20  # about 120,000 records of a typical fill file

# every byte a plain block may hold: printable ASCII and the newline
_PLAIN_BYTES = bytes(range(0x20, 0x7F)) + b"\n"


@dataclass(frozen=True, slots=True)
class PlainBlock:
    """Records of a CSV file as columns of text, one record per line from `first_line` on."""

    header: tuple[str, ...]
    columns: pa.Table  # one string column per header name, in the header's order
    first_line: int

    @property
    def records(self) -> int:
        return int(self.columns.num_rows)

    def part(self, start: int, length: int) -> "PlainBlock":
        """`length` records from record `start` on, as a block of their own."""
        return PlainBlock(self.header, self.columns.slice(start, length), self.first_line + start)

    def row(self, index: int) -> RawRow:
        """Record `index` as `read_csv` yields it: the row path's input."""
        fields = [str(self.columns.column(i)[index].as_py()) for i in range(len(self.header))]
        return RawRow(self.first_line + index, dict(zip(self.header, fields, strict=True)), fields)


@dataclass(frozen=True, slots=True)
class ParquetBlock:
    """Records of a Parquet file: as stored (`batch`), and as the text the column checks read
    (`columns`: a decimal, an integer or a boolean as its text, a time as `YYYY-MM-DDTHH:MM:SS.ffffffZ`
    in UTC; a column of any other type is left empty, so its records go to the row path)."""

    batch: pa.RecordBatch
    columns: pa.Table
    first_record: int  # records are numbered from 1, as `read_parquet` numbers them

    @property
    def records(self) -> int:
        return int(self.batch.num_rows)

    def part(self, start: int, length: int) -> "ParquetBlock":
        return ParquetBlock(self.batch.slice(start, length), self.columns.slice(start, length),
                            self.first_record + start)

    def row(self, index: int) -> RawRow:
        """Record `index` as `read_parquet` yields it: the row path's input."""
        return parquet_row(self.first_record + index, self.batch.slice(index, 1).to_pylist()[0])


ColumnBlock = PlainBlock | ParquetBlock
Block = PlainBlock | ParquetBlock | list[RawRow]
PARQUET_RECORDS = 100_000  # records per block of a Parquet file


def parquet_blocks(path: Path, records: int = PARQUET_RECORDS) -> Iterator[ParquetBlock]:
    """A Parquet file's records, a batch at a time, with their text for the column checks."""
    first = 1
    for batch in parquet_batches(path, records):
        yield ParquetBlock(batch, pa.table({name: _as_text(batch.column(name)) for name in batch.schema.names}),
                           first)
        first += batch.num_rows


def _as_text(column: pa.Array) -> pa.Array:
    """A Parquet column as the text `parse_fill` would read the same values as; empty where no text
    reads the same (a time below microseconds, a type no fill field has), which the checks refuse."""
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return pa.compute.cast(column, pa.string())
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        return pa.compute.cast(column, pa.string())
    if pa.types.is_decimal(kind):
        # Arrow writes a zero or a small value in scientific notation (0E-18, 1.0E-7), which no
        # fill's text is: those few are written out plainly here
        text = pa.compute.cast(column, pa.string())
        scientific = pa.compute.fill_null(pa.compute.match_substring(text, "E"), False)
        if not pa.compute.any(scientific).as_py():
            return text
        plain = [format(Decimal(value), "f") for value in pa.compute.filter(text, scientific).to_pylist()]
        return pa.compute.replace_with_mask(text, scientific, pa.array(plain, pa.string()))
    if pa.types.is_timestamp(kind) and kind.unit in ("s", "ms", "us"):
        # `as_utc`: a time without a zone is UTC, one with a zone is converted to UTC
        utc = pa.compute.cast(column, pa.timestamp("us", tz="UTC")) if kind.tz else column
        return pa.compute.strftime(pa.compute.cast(utc, pa.timestamp("us")), format="%Y-%m-%dT%H:%M:%SZ")
    return pa.nulls(len(column), pa.string())


def csv_blocks(path: Path, block_bytes: int = BLOCK_BYTES) -> Iterator[Block]:
    """The file's records after its header, block by block: a `PlainBlock` where Arrow reads
    them, else the rows `read_csv` would yield for the same lines."""
    with path.open("rb") as handle:
        first = handle.readline()
        if not first:
            return
        if b'"' in first:  # a quoted header: the whole file is read record by record
            yield from _rows_from(path, 0, 0, None)
            return
        header = _header(path, first)
        if len(set(header)) != len(header) or "" in header:
            yield from _rows_from(path, 0, 0, None)
            return
        line, offset, carry = 1, len(first), b""
        while True:
            chunk = handle.read(block_bytes)
            data = carry + chunk
            if not chunk:
                if data:
                    yield from _block(path, header, data, line)
                return
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # no whole line yet: read on
                carry = data
                continue
            block, carry = data[:cut], data[cut:]
            if b'"' in block:
                yield from _rows_from(path, offset, line, header)
                return
            yield from _block(path, header, block, line)
            line += block.count(b"\n")
            offset += len(block)


def _header(path: Path, first: bytes) -> list[str]:
    text = first.decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    try:
        fields = next(csv.reader([text]))
    except (csv.Error, StopIteration) as error:
        raise InvalidInput(f"{path.name}: line 1: not a CSV header ({error})") from None
    return csv_header(path, fields)


def _block(path: Path, header: list[str], block: bytes, line: int) -> Iterator[Block]:
    """One block of whole lines after line `line`, read by Arrow if its bytes are plain."""
    if not block.translate(None, _PLAIN_BYTES) and b"\n\n" not in block and not block.startswith(b"\n"):
        try:
            columns = pa_csv.read_csv(
                io.BytesIO(block),
                read_options=pa_csv.ReadOptions(column_names=header, block_size=max(len(block), 1 << 20)),
                parse_options=pa_csv.ParseOptions(quote_char=False, double_quote=False, escape_char=False,
                                                  newlines_in_values=False, ignore_empty_lines=False),
                convert_options=pa_csv.ConvertOptions(column_types=dict.fromkeys(header, pa.string()),
                                                      strings_can_be_null=False))
        except pa.ArrowInvalid:  # a record of another width: read as the row path reads it
            pass
        else:
            yield PlainBlock(tuple(header), columns, line + 1)
            return
    text = io.StringIO(block.decode("utf-8", "surrogateescape"), newline="")
    yield list(csv_records(csv.reader(text), header, line, line))


def _rows_from(path: Path, offset: int, line: int, header: list[str] | None) -> Iterator[list[RawRow]]:
    """The rest of the file from byte `offset` (the start of line `line + 1`), read by `read_csv`'s
    code, in lists of rows."""
    with path.open("rb") as raw:
        raw.seek(offset)
        handle = io.TextIOWrapper(raw, encoding="utf-8-sig" if offset == 0 else "utf-8",
                                  errors="surrogateescape", newline="")
        reader = csv.reader(handle)
        if header is None:
            try:
                header = csv_header(path, next(reader))
            except StopIteration:
                return
            except csv.Error as error:
                raise InvalidInput(f"{path.name}: line 1: not a CSV header ({error})") from None
            line = reader.line_num
        rows = csv_records(reader, header, line, 0 if offset == 0 else line)
        while batch := list(islice(rows, 10_000)):
            yield batch
