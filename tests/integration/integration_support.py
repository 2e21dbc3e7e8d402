"""Readable test data for the integration tests.

A fill is a small dict of text, made by `fill(...)` with defaults that describe one ordinary API
fill of broker 1400 in May 2024; a test names only what matters to it. `write_fills` writes such
rows as CSV, NDJSON or Parquet. The registry is set up through the program's own use cases, and
statements are read back the way an operator sees them: as the documents a close produces. The
program's settings are a version in the database (`program_support.use_program`): a helper given
a `config` makes it the program's settings first.
"""

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from bkr.domain.config import ProgramConfig
from bkr.domain.fills import FIELDS
from bkr.domain.operators import Role
from bkr.domain.periods import Month, parse_instant
from bkr.domain.registry import BrokerStatus
from bkr.program import operators, registry, settlement
from bkr.program.close import close_month
from bkr.program.importer import import_file
from bkr.program.writer import Tally
from bkr.store.tables import aggregates, fill_rejections, fills, statements
from program_support import use_program

BROKER = 1400  # ccxt's id on Backpack
MAY, JUNE = Month(2024, 5), Month(2024, 6)
APRIL = MAY.previous()
NOW = datetime(2025, 1, 15, 9, 30, tzinfo=UTC)  # the clock of every use case: all of 2024 has ended


def clock() -> datetime:
    return NOW


def fill(fill_id: str, *, at: str = "2024-05-10T12:00:00Z", user: str = "alice", broker: int | None = BROKER,
         price: str = "100", quantity: str = "1", fee: str = "0.1", market: str = "SPOT",
         symbol: str | None = None, fee_symbol: str = "USDC", via_api: bool = True, fill_type: str = "User",
         is_maker: bool = False, side: str = "Bid", order_id: str | None = None,
         trade_id: str | int | None = None) -> dict[str, Any]:
    """One fill row as a file would carry it (money as decimal text); `trade_id` only if given."""
    if symbol is None:
        symbol = "SOL_USDC" if market == "SPOT" else f"SOL_USDC_{market}"
    row = {
        "fill_id": fill_id, "order_id": order_id or f"order-{fill_id}", "user_id": user, "symbol": symbol,
        "market_type": market, "side": side, "price": price, "quantity": quantity, "fee": fee,
        "fee_symbol": fee_symbol, "is_maker": is_maker, "timestamp": at, "broker_id": broker,
        "via_api": via_api, "fill_type": fill_type,
    }
    if trade_id is not None:
        row["trade_id"] = trade_id
    return row


def correction(of: Mapping[str, Any], fill_id: str, *, quantity: str, fee: str) -> dict[str, Any]:
    """A correction row of the fill row `of`: the same trade, changed by `quantity` and `fee`."""
    return {**of, "fill_id": fill_id, "corrects": of["fill_id"], "quantity": quantity, "fee": fee}


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def write_csv(path: Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str] = FIELDS) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_text(row.get(column)) for column in columns])
    return path


def write_ndjson(path: Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(dict(row)) + "\n")
    return path


MONEY_COLUMNS = ("price", "quantity", "fee")


def write_parquet(path: Path, rows: Sequence[Mapping[str, Any]], *, money: str = "decimal") -> Path:
    """Typed columns, as an exchange's export would have them. `money` is the type of price,
    quantity and fee: `decimal` (decimal128(38, 18)), `string`, or `float` (which bkr refuses).
    A `trade_id` column is written when a row has one: integers, as Backpack's `tradeId`, or text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    money_types = {"decimal": pa.decimal128(38, 18), "string": pa.string(), "float": pa.float64()}
    schema = pa.schema([
        ("fill_id", pa.string()), ("order_id", pa.string()), ("user_id", pa.string()), ("symbol", pa.string()),
        ("market_type", pa.string()), ("side", pa.string()),
        *((name, money_types[money]) for name in MONEY_COLUMNS),
        ("fee_symbol", pa.string()), ("is_maker", pa.bool_()), ("timestamp", pa.timestamp("us", tz="UTC")),
        ("broker_id", pa.int32()), ("via_api", pa.bool_()), ("fill_type", pa.string()),
    ])
    trade_ids = [row.get("trade_id") for row in rows]
    if any(value is not None for value in trade_ids):
        integers = all(isinstance(value, int) for value in trade_ids if value is not None)
        schema = schema.append(pa.field("trade_id", pa.int64() if integers else pa.string()))

    def cell(name: str, value: Any) -> Any:
        if name in MONEY_COLUMNS:
            return {"decimal": Decimal, "string": str, "float": float}[money](value)
        if name == "timestamp":
            return parse_instant(value)
        return value

    table = pa.Table.from_pylist([{name: cell(name, row.get(name)) for name in schema.names} for row in rows],
                                 schema=schema)
    pq.write_table(table, path)
    return path


def write_fills(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write rows in the format the file's suffix names."""
    writers = {".csv": write_csv, ".ndjson": write_ndjson, ".parquet": write_parquet}
    return writers[path.suffix](path, rows)  # type: ignore[operator]


def import_rows(engine: Engine, path: Path, rows: Sequence[Mapping[str, Any]], *,
                config: ProgramConfig | None = None, batch_size: int = 5_000) -> Tally:
    """Write rows to `path` and import that file (under `config`, if given)."""
    use_program(engine, config)
    return import_file(engine, write_fills(path, rows), clock=clock, actor="ops", batch_size=batch_size)


# --- the registry -----------------------------------------------------------------------------

def add_broker(engine: Engine, broker_id: int = BROKER, *, status: BrokerStatus | None = BrokerStatus.ACTIVE,
               since: str = "2024-01-01T00:00:00Z", account: str | None = None) -> None:
    """Enroll a broker and, unless `status` is None (left pending), give it `status` from `since`."""
    with engine.begin() as connection:
        registry.enroll_broker(connection, broker_id, account or f"acct-{broker_id}", f"Broker {broker_id}",
                               "exchange_aggregator", NOW, actor="ops")
        if status is None:
            return
        if status is not BrokerStatus.ACTIVE:
            # suspended and terminated are reached from active, a day earlier
            registry.change_broker_status(connection, broker_id, BrokerStatus.ACTIVE,
                                          parse_instant("2023-12-31T00:00:00Z"), NOW, actor="ops")
        registry.change_broker_status(connection, broker_id, status, parse_instant(since), NOW, actor="ops")


def add_code(engine: Engine, code: str, rate: str, *, affiliate: str = "acct-aff",
             since: str = "2024-01-01T00:00:00Z") -> None:
    """A referral code of `affiliate` (enrolled on first use) with `rate` from `since`."""
    with engine.begin() as connection:
        if affiliate not in {account for account, _, _ in registry.list_affiliates(connection)}:
            registry.enroll_affiliate(connection, affiliate, f"Affiliate {affiliate}", NOW, actor="ops")
        registry.set_referral_rate(connection, affiliate, code, Decimal(rate), parse_instant(since), NOW,
                                   actor="ops")


def add_users(engine: Engine, *users: str, code: str | None = None) -> None:
    with engine.begin() as connection:
        registry.add_users(connection, [(user, code) for user in users], NOW, actor="ops")


# --- statements and what is stored ----------------------------------------------------------

def preview(engine: Engine, month: Month, config: ProgramConfig | None = None) -> dict[int, dict[str, Any]]:
    """The statements a close of `month` would issue now, with their lines, by broker id."""
    use_program(engine, config)
    result = close_month(engine, month, now=NOW, dry_run=True)
    return {statement.broker_id: statement.to_document() for statement in result.statements}


def close(engine: Engine, month: Month, config: ProgramConfig | None = None) -> dict[int, dict[str, Any]]:
    use_program(engine, config)
    result = close_month(engine, month, now=NOW)
    return {statement.broker_id: statement.to_document() for statement in result.statements}


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(table)).scalar_one()  # type: ignore[no-any-return]


def stored_state(engine: Engine) -> dict[str, Any]:
    """Everything an import may change, in a comparable form: fills, aggregates, rejections."""
    with engine.connect() as connection:
        fill_rows = connection.execute(select(fills.c.fill_id, fills.c.content_key, fills.c.attribution,
                                              fills.c.period).order_by(fills.c.fill_id)).all()
        aggregate_rows = connection.execute(select(aggregates).order_by(*aggregates.primary_key.columns)).all()
        rejection_rows = connection.execute(select(fill_rejections.c.line, fill_rejections.c.reason)
                                            .order_by(fill_rejections.c.rejection_id)).all()
    return {"fills": [tuple(r) for r in fill_rows], "aggregates": [tuple(r) for r in aggregate_rows],
            "rejections": [tuple(r) for r in rejection_rows]}


def approve_all(engine: Engine, approver: str = "ops-1") -> None:
    """Approve every draft statement as `approver`."""
    with engine.begin() as connection:
        for broker_id, month in connection.execute(select(statements.c.broker_id, statements.c.month)
                                                   .where(statements.c.status == settlement.DRAFT)).all():
            settlement.approve(connection, broker_id, month, approver, NOW)


def operator_key(engine: Engine, role: str = "admin", name: str | None = None) -> str:
    """The key of a new operator (`name`, else `<role>-<n>`), for a command's `--key`."""
    with engine.begin() as connection:
        taken = len(operators.list_operators(connection, NOW))
        return operators.add_operator(connection, name or f"{role}-{taken + 1}", Role(role), clock(),
                                      created_by=None).token


def statement_count(engine: Engine) -> int:
    return count(engine, statements)
