"""Streaming readers: each yields `RawRow`s, one per record, without loading the file.

A row that cannot even be read (a broken JSON line) is still yielded, with its `error`, so the
import reports it with its line number instead of stopping.
"""

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from bkr.domain.errors import InvalidInput
from bkr.domain.fills import FIELDS, unknown_field


@dataclass(frozen=True, slots=True)
class RawRow:
    line: int | None  # line in a text file, record number in Parquet, item index in a batch
    values: dict[str, Any] | None
    received: str | list[str]  # the record as received (a CSV record is kept as its fields)
    error: str | None = None

    @property
    def raw(self) -> str:
        """The record as text, kept with a rejection or a conflict. Built only for those rows."""
        if isinstance(self.received, str):
            return self.received
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="").writerow(self.received)
        return buffer.getvalue()


def detect_format(path: Path) -> str:
    suffixes = "".join(path.suffixes).lower()
    for name, endings in (("csv", (".csv",)), ("ndjson", (".ndjson", ".jsonl", ".json")),
                          ("parquet", (".parquet", ".pq"))):
        if suffixes.endswith(endings):
            return name
    raise InvalidInput(f"{path.name}: unknown file type (use .csv, .ndjson/.jsonl or .parquet)")


def read_rows(path: Path, file_format: str | None = None) -> Iterator[RawRow]:
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    file_format = file_format or detect_format(path)
    if file_format == "csv":
        return read_csv(path)
    if file_format == "ndjson":
        return read_ndjson(path)
    if file_format == "parquet":
        return read_parquet(path)
    raise InvalidInput(f"unknown fill file format {file_format!r}")


def _text_file(path: Path) -> io.TextIOWrapper:
    """The file as UTF-8 text, a byte-order mark skipped; a byte that is not UTF-8 is kept as a
    surrogate escape, so that its record (not the file) is refused."""
    return path.open(newline="", encoding="utf-8-sig", errors="surrogateescape")


def read_csv(path: Path) -> Iterator[RawRow]:
    with _text_file(path) as handle:
        reader = csv.reader(handle)
        try:
            header = csv_header(path, next(reader))
        except StopIteration:
            return
        except csv.Error as error:
            raise InvalidInput(f"{path.name}: line 1: not a CSV header ({error})") from None
        yield from csv_records(reader, header, reader.line_num)


def csv_header(path: Path, fields: list[str]) -> list[str]:
    """A CSV file's header as the readers use it (names trimmed, lower case), or `InvalidInput`
    refusing the whole file: a name that is not UTF-8, a missing fill column or an unknown one."""
    header = [name.strip().lower() for name in fields]
    if any(_UNDECODED.search(name) for name in header):
        raise InvalidInput(f"{path.name}: line 1: the header is not UTF-8 text")
    _check_header(path, header)
    return header


def csv_records(reader: Any, header: list[str], line: int, before: int = 0) -> Iterator[RawRow]:
    """The records a `csv.reader` gives after the header, as rows numbered by the line each
    starts on; `line` is the last line read before them, `before` the lines of the file before
    the text the reader reads (0: it reads the file from its start)."""
    width = len(header)
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as error:  # the reader resumes at the next line
            start, line = line + 1, before + reader.line_num
            yield RawRow(start, None, "", f"not a CSV record: {error}")
            continue
        start, line = line + 1, before + reader.line_num
        if not record or record == [""]:
            continue
        undecoded = _undecoded(record)
        if undecoded is not None:
            yield RawRow(start, None, [_visible(field) for field in record], undecoded)
        elif len(record) != width:
            yield RawRow(start, None, record, f"row has {len(record)} fields, the header has {width}")
        else:
            yield RawRow(start, dict(zip(header, record, strict=True)), record)


# What `surrogateescape` makes of a byte that is not UTF-8: one of U+DC80..U+DCFF.
_UNDECODED = re.compile("[\udc80-\udcff]")


def _undecoded(fields: Iterable[str]) -> str | None:
    for field in fields:
        found = _UNDECODED.search(field)
        if found is not None:
            return (f"not UTF-8 text: byte 0x{ord(found.group()) - 0xDC00:02x} "
                    "(write the file in UTF-8; other encodings are not read)")
    return None


def _visible(text: str) -> str:
    """Undecodable bytes written as \\xNN, so that the record can be stored for an operator."""
    return _UNDECODED.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", text)


def _check_header(path: Path, header: list[str]) -> None:
    missing = [name for name in ("fill_id", "price", "quantity", "fee", "timestamp") if name not in header]
    if missing:
        raise InvalidInput(f"{path.name}: header lacks {', '.join(missing)} (columns are {', '.join(FIELDS)})")
    unknown = unknown_field(name for name in header if name)
    if unknown is not None:
        raise InvalidInput(f"{path.name}: column {unknown}")


def read_ndjson(path: Path) -> Iterator[RawRow]:
    with _text_file(path) as handle:
        yield from ndjson_rows(handle)


def ndjson_rows(lines: Iterable[str]) -> Iterator[RawRow]:
    """One row per non-blank line, numbered by line (a file, or the body of an HTTP batch)."""
    for number, text in enumerate(lines, start=1):
        text = text.strip()
        if not text:
            continue
        undecoded = _undecoded([text])
        if undecoded is not None:
            yield RawRow(number, None, _visible(text), undecoded)
        else:
            yield parse_json_record(number, text)


def parse_json_record(number: int | None, text: str) -> RawRow:
    """One JSON object; numbers are read as exact decimals, never floats."""
    kept = text.replace("\x00", "\\u0000")  # a NUL cannot be stored as text; keep it visible
    try:
        value = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as error:
        return RawRow(number, None, kept, f"not valid JSON: {error.msg} at column {error.colno}")
    except RecursionError:
        return RawRow(number, None, kept, "not a fill: JSON nested too deeply")
    return json_record(number, value, text)


def json_record(number: int | None, value: Any, text: str | None = None) -> RawRow:
    """A decoded JSON value (decoded with `parse_float=Decimal`) as a row: an object is a
    record, anything else is kept with its error. `text` is the record as received, when known."""
    received = text if text is not None else json.dumps(value, default=_json_default, sort_keys=True)
    if not isinstance(value, dict):
        return RawRow(number, None, received, "not a JSON object")
    problem = untextual_field(value)
    if problem is not None:
        return RawRow(number, None, received, problem)
    return RawRow(number, value, received)


_SURROGATE = re.compile("[\ud800-\udfff]")


def untextual_field(values: Mapping[str, Any]) -> str | None:
    """The reason to reject a record whose fill field holds what is not storable text: a NUL
    character (a PostgreSQL text value cannot hold one) or half a UTF-16 surrogate pair (JSON's
    `\\ud800` escapes allow it; it is not Unicode). Such a record is kept as escaped JSON."""
    for name in FIELDS:
        value = values.get(name)
        if isinstance(value, str):
            if "\x00" in value:
                return f"{name}: contains a NUL character"
            if _SURROGATE.search(value):
                return f"{name}: contains an unpaired UTF-16 surrogate, which is not text"
    return None


def read_parquet(path: Path) -> Iterator[RawRow]:
    number = 0
    for batch in parquet_batches(path, 10_000):
        for record in batch.to_pylist():
            number += 1
            yield parquet_row(number, record)


def parquet_batches(path: Path, size: int) -> Iterator[Any]:
    """The record batches of a Parquet file of fills, after the checks that refuse it whole: not
    readable, a column that is not a fill field, money in floating point."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise InvalidInput(f"{path.name}: not a readable Parquet file ({_first_line(error)})") from None
    unknown = unknown_field(parquet.schema_arrow.names)
    if unknown is not None:
        raise InvalidInput(f"{path.name}: column {unknown}")
    floats = [f.name for f in parquet.schema_arrow if pa.types.is_floating(f.type)
              and f.name in ("price", "quantity", "fee")]
    if floats:
        raise InvalidInput(f"{path.name}: columns {', '.join(floats)} are floating point, which is not exact; "
                           "write them as decimal or string")
    number = 0
    batches = parquet.iter_batches(batch_size=size)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as error:  # the batches before it are read and kept
            raise InvalidInput(f"{path.name}: unreadable after record {number} ({_first_line(error)})") from None
        number += batch.num_rows
        yield batch


def parquet_row(number: int, record: dict[str, Any]) -> RawRow:
    """One Parquet record (as `to_pylist` gives it), numbered from 1, as a row."""
    return RawRow(number, record, json.dumps(record, default=_json_default, sort_keys=True))


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
