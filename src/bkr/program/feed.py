"""The fill feed: a batch of fills sent over HTTP (`POST /v1/fills`) by the exchange.

A batch is a JSON array of fill objects or NDJSON (one object per line). Each item becomes a
`RawRow` exactly as a line of a fill file does, and the batch goes through the same
`write_batch` as a file import, in one transaction: the same rules, the same outcomes, and a
retried or concurrent post applies nothing twice. Only a body that is not JSON at all is
refused as a whole; a malformed item is one rejection among the batch's results.
"""

import json
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, insert

from bkr.domain.clock import Clock
from bkr.domain.errors import BkrError, InvalidInput
from bkr.domain.fills import FIELDS
from bkr.ingest.readers import RawRow, json_record, ndjson_rows
from bkr.program.settings_versions import hold_timeline
from bkr.program.writer import Outcome, RowResult, Tally, write_batch
from bkr.store.tables import imports


class BatchFormat(StrEnum):
    JSON = "json"  # application/json: an array of fill objects
    NDJSON = "ndjson"  # application/x-ndjson: one fill object per line


class BatchTooLarge(BkrError):
    """A batch holds more items than the service accepts at once."""

    code = "batch_too_large"


@dataclass(frozen=True, slots=True)
class FeedResult:
    tally: Tally
    results: list[RowResult]  # one per item, in the batch's order


def read_batch(body: bytes, batch_format: BatchFormat, max_items: int) -> list[RawRow]:
    """The batch's items as rows, numbered from 1 (the NDJSON line, or the array position).
    Counts the items before reading any of them: an oversized batch costs no parsing."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InvalidInput(f"body: not UTF-8 text ({error.reason} at byte {error.start})", field="body") from None
    if batch_format is BatchFormat.NDJSON:
        lines = text.splitlines()
        _check_size(sum(1 for line in lines if line.strip()), max_items)
        rows = list(ndjson_rows(lines))
        if rows and all(row.values is None and (row.error or "").startswith("not valid JSON") for row in rows):
            raise InvalidInput(f"body: not NDJSON (line {rows[0].line}: {rows[0].error})", field="body")
        return rows
    try:
        items = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as error:
        raise InvalidInput(f"body: not valid JSON: {error.msg} at line {error.lineno} column {error.colno}",
                           field="body") from None
    except RecursionError:
        raise InvalidInput("body: JSON nested too deeply to be a batch of fills", field="body") from None
    if not isinstance(items, list):
        raise InvalidInput(f"body: expected a JSON array of fill objects, not a JSON {_json_kind(items)} "
                           "(or send one object per line as application/x-ndjson)", field="body")
    _check_size(len(items), max_items)
    return [json_record(index, item) for index, item in enumerate(items, start=1)]


def _check_size(count: int, max_items: int) -> None:
    if count > max_items:
        raise BatchTooLarge(f"the batch has {count:,} fills; at most {max_items:,} are accepted per request "
                            "(split it)", field="body")


def _json_kind(value: Any) -> str:
    return {dict: "object", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def ingest_batch(engine: Engine, rows: list[RawRow], *, source: str, clock: Clock) -> FeedResult:
    """Write one batch in one transaction and record it as an import (with its counts), so that
    operators see where each rejected row came from."""
    tally = Tally()
    with engine.begin() as connection:
        program = hold_timeline(connection)
        now = clock()
        import_id = connection.execute(
            insert(imports).values(source=source, started_at=now).returning(imports.c.import_id)).scalar_one()
        results = write_batch(connection, rows, program, source=source, now=now, import_id=import_id)
        tally.add(results)
        connection.execute(imports.update().where(imports.c.import_id == import_id).values(
            finished_at=clock(), **tally.counts()))
    return FeedResult(tally, results)


def reason_field(result: RowResult) -> str:
    """The field a rejection blames (its reason starts with it), for metrics: a bounded set of
    labels. A record that could not be read at all is `record`; other outcomes have none."""
    if result.outcome is not Outcome.REJECTED:
        return ""
    prefix = (result.reason or "").split(":", 1)[0]
    return prefix if prefix in FIELDS else "record"
