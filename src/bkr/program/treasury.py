"""The treasury's list of a month: every statement with its status, its payout and where the
payout instruction stands. `month_statements` makes the rows; `bkr statements --month`, the
operator API (`GET /v1/admin/statements`) and the dashboard's month page render them, as a
table, CSV or JSON, through `rows_csv` and `rows_document` here, so that the three agree.
"""

import csv
import io
import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, select

from bkr.domain.money import canonical
from bkr.domain.periods import Month
from bkr.domain.tiers import tier_name
from bkr.store.tables import brokers, payout_instructions, statements


class ListFormat(StrEnum):
    TABLE = "table"
    CSV = "csv"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class StatementPayoutRow:
    month: Month
    broker_id: int
    name: str
    account_id: str
    status: str  # draft | final | paid
    tier: str
    api_volume: Decimal
    payout_exact: Decimal
    payout: Decimal
    instruction_key: str | None  # none: not paid yet, a payout of 0, or paid before instructions
    instruction_state: str | None  # pending | acknowledged
    reference: str | None
    acknowledged_at: datetime | None


COLUMNS = ("month", "broker_id", "name", "account_id", "status", "tier", "api_volume", "payout_exact", "payout",
           "instruction_key", "instruction_state", "reference", "acknowledged_at")


def month_statements(connection: Connection, month: Month) -> list[StatementPayoutRow]:
    """Every statement of `month`, by broker id, with its payout instruction if it has one."""
    s, b, i = statements.c, brokers.c, payout_instructions.c
    rows = connection.execute(
        select(s.month, s.broker_id, b.name, b.account_id, s.status, s.tier_level, s.api_volume, s.payout_exact,
               s.payout, i.key, i.state, i.reference, i.acknowledged_at)
        .select_from(statements.join(brokers, b.broker_id == s.broker_id)
                     .outerjoin(payout_instructions, (i.broker_id == s.broker_id) & (i.month == s.month)))
        .where(s.month == month).order_by(s.broker_id))
    return [StatementPayoutRow(r.month, r.broker_id, r.name, r.account_id, r.status, tier_name(r.tier_level),
                               r.api_volume, r.payout_exact, r.payout, r.key, r.state, r.reference,
                               r.acknowledged_at) for r in rows]


def _cells(row: StatementPayoutRow) -> dict[str, Any]:
    return {"month": str(row.month), "broker_id": row.broker_id, "name": row.name, "account_id": row.account_id,
            "status": row.status, "tier": row.tier, "api_volume": canonical(row.api_volume),
            "payout_exact": canonical(row.payout_exact), "payout": canonical(row.payout),
            "instruction_key": row.instruction_key, "instruction_state": row.instruction_state,
            "reference": row.reference,
            "acknowledged_at": None if row.acknowledged_at is None else row.acknowledged_at.isoformat()}


def rows_document(month: Month, rows: list[StatementPayoutRow]) -> dict[str, Any]:
    """The JSON of the list: the month and one object per statement; decimals as strings."""
    return {"month": str(month), "statements": [_cells(row) for row in rows]}


def rows_json(month: Month, rows: list[StatementPayoutRow]) -> str:
    """`rows_document` as the JSON text every door hands out, byte for byte."""
    return json.dumps(rows_document(month, rows), indent=2, ensure_ascii=False) + "\n"


def rows_csv(rows: list[StatementPayoutRow]) -> str:
    """The CSV of the list: a header of `COLUMNS`, one line per statement, empty cells for none."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({name: "" if value is None else value for name, value in _cells(row).items()})
    return buffer.getvalue()


TABLE_COLUMNS = ("broker_id", "name", "status", "tier", "payout", "instruction_state", "reference")


def rows_table(rows: list[StatementPayoutRow]) -> list[list[str]]:
    """The cells of the list as a terminal's table shows them: `TABLE_COLUMNS` of each statement,
    `-` for none (CSV and JSON have every column)."""
    return [["-" if (value := _cells(row)[name]) is None else str(value) for name in TABLE_COLUMNS] for row in rows]
