"""The fast paths of ingestion: new fills and aggregate increments, written per batch.

A fill is stored by claiming its id in `fill_keys` and inserting its row into `fills`, in one
transaction: the claim is what keeps a fill_id unique across every fill (on PostgreSQL `fills`
is partitioned by month, and no index of it spans the months; and an archived month's ids stay
claimed after its rows are gone). `move_staged_fills` is that step for any writer holding its
new fills in a staging table; `insert_new_fills` is the row path's, from records.

SQLAlchemy's per-row parameter processing costs more than the database itself here, so new
fills are written with the driver directly, values converted once by the same rules as the
column types (`bkr.store.types`):

- SQLite: the writer already holds the database's write lock (BEGIN IMMEDIATE), so the ids
  that are claimed are read first and the rest are inserted with one `executemany` each.
- PostgreSQL: the rows are `COPY`ed into a session-local staging table and moved with one
  statement that claims the ids (`INSERT … ON CONFLICT (fill_id) DO NOTHING RETURNING`, in
  fill_id order, so that writers claiming the same ids never deadlock) and inserts the rows of
  the ids it claimed. It stays correct while other writers claim the same ids: a second claim
  waits for the first to commit, then skips the id (a duplicate or conflict, which the caller
  decides from `fill_keys`), or takes it if the first rolled back.

Before rows go in, the months they are paid in get their partitions (`bkr.store.partitions`).

Aggregate increments are an upsert that adds exactly: NUMERIC `+` on PostgreSQL, the
`dec_add` function registered on every SQLite connection (`bkr.store.db`) on SQLite.
`add_to_user_totals` does the same for `user_totals` and keeps each row's sort key in step.
"""

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, select

from bkr.domain.fills import MarketType
from bkr.domain.money import MONEY, canonical
from bkr.domain.periods import Month
from bkr.store.db import user_rank_key
from bkr.store.partitions import ensure_fill_partitions
from bkr.store.tables import fill_keys, fills
from bkr.store.types import ordered_key, to_micros

_ZERO = Decimal(0)
COLUMNS: tuple[str, ...] = tuple(column.name for column in fills.columns)
_CHUNK = 10_000  # ids per IN list: within SQLite's and PostgreSQL's limits on parameters
_MONEY = frozenset({"price", "quantity", "fee", "volume_usd", "fee_usd", "affiliate_rate", "fee_base_usd"})


def insert_new_fills(connection: Connection, records: Sequence[dict[str, Any]]) -> set[str]:
    """Insert the records whose fill_id is not claimed yet, claiming it; return the ids inserted.
    The records' fill_ids are distinct."""
    if not records:
        return set()
    ensure_fill_partitions(connection, {record["period"] for record in records})
    if connection.dialect.name == "postgresql":
        return _insert_postgresql(connection, records)
    return _insert_sqlite(connection, records)


def claimed_keys(connection: Connection, fill_ids: Sequence[str]) -> dict[str, str]:
    """The content key of each of these fill_ids that is claimed: a fill stored, or archived."""
    found: dict[str, str] = {}
    for start in range(0, len(fill_ids), _CHUNK):
        found.update((fill_id, key) for fill_id, key in connection.execute(
            select(fill_keys.c.fill_id, fill_keys.c.content_key)
            .where(fill_keys.c.fill_id.in_(fill_ids[start:start + _CHUNK]))))
    return found


def move_staged_fills(connection: Connection, staging: str) -> set[str]:
    """Move the rows of table `staging` whose fill_id nobody has claimed into `fills`, claiming
    each id in `fill_keys`; return the ids moved. `staging` has the columns of `fills` (at least
    `COLUMNS`), its values as the columns store them on this database, and one row per fill_id
    (decide duplicates within a batch before). Call it in the transaction that does the rest of
    the batch's writes: the claims are released if it rolls back. The caller then reads the
    stored content key of each id not moved (`claimed_keys`) to tell a duplicate from a conflict."""
    periods = [Month.parse(text) for (text,) in connection.exec_driver_sql(f"SELECT DISTINCT period FROM {staging}")]
    ensure_fill_partitions(connection, periods)
    columns = ", ".join(COLUMNS)
    if connection.dialect.name == "postgresql":
        moved = connection.exec_driver_sql(_MOVE_POSTGRESQL.format(staging=staging, columns=columns))
        return set(moved.scalars())
    # SQLite: the writer holds the write lock; no other claim can come between these statements
    moved = connection.exec_driver_sql(
        f"INSERT INTO fills ({columns}) SELECT {columns} FROM {staging} "
        "WHERE fill_id NOT IN (SELECT fill_id FROM fill_keys) ORDER BY fill_id RETURNING fill_id")
    ids = set(moved.scalars())
    connection.exec_driver_sql(
        f"INSERT INTO fill_keys (fill_id, content_key) SELECT fill_id, content_key FROM {staging} "
        "WHERE fill_id NOT IN (SELECT fill_id FROM fill_keys) ORDER BY fill_id")
    return ids


# One statement: the claims, in fill_id order, and the rows of the ids claimed.
_MOVE_POSTGRESQL = (
    "WITH claimed AS (INSERT INTO fill_keys (fill_id, content_key) "
    "SELECT fill_id, content_key FROM {staging} ORDER BY fill_id "
    "ON CONFLICT (fill_id) DO NOTHING RETURNING fill_id) "
    "INSERT INTO fills ({columns}) SELECT {columns} FROM {staging} JOIN claimed USING (fill_id) "
    "RETURNING fill_id")


def _insert_sqlite(connection: Connection, records: Sequence[dict[str, Any]]) -> set[str]:
    existing = claimed_keys(connection, [record["fill_id"] for record in records])
    new = [record for record in records if record["fill_id"] not in existing]
    rows = [tuple(_sqlite_value(name, record[name]) for name in COLUMNS) for record in new]
    if rows:
        placeholders = ", ".join("?" for _ in COLUMNS)
        connection.exec_driver_sql("INSERT INTO fill_keys (fill_id, content_key) VALUES (?, ?)",
                                   [(record["fill_id"], record["content_key"]) for record in new])
        connection.exec_driver_sql(f"INSERT INTO fills ({', '.join(COLUMNS)}) VALUES ({placeholders})", rows)
    return {record["fill_id"] for record in new}


def _sqlite_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, Month):
        return str(value)
    if name in _MONEY:
        return canonical(value)
    if name == "ts":
        return to_micros(value)
    if isinstance(value, bool):
        return int(value)
    return value


def _insert_postgresql(connection: Connection, records: Sequence[dict[str, Any]]) -> set[str]:
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute("CREATE TEMP TABLE IF NOT EXISTS incoming_fills "
                       "(LIKE fills INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
        cursor.execute("TRUNCATE incoming_fills")
        with cursor.copy(f"COPY incoming_fills ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for record in records:
                copy.write_row(tuple(_plain(record[name]) for name in COLUMNS))
    finally:
        cursor.close()
    moved = connection.exec_driver_sql(_MOVE_POSTGRESQL.format(staging="incoming_fills", columns=", ".join(COLUMNS)))
    return set(moved.scalars())


_COPY_FROM = 1_000  # rows from which an upsert of totals goes through COPY rather than one statement per row
AGGREGATE_KEY = ("broker_id", "period", "fill_month", "user_id", "market_type", "affiliate_rate", "kind")
AGGREGATE_SUMS = ("fills", "volume_usd", "fee_usd", "fee_base_usd")
TOTALS_KEY = ("broker_id", "period", "fill_month", "market_type", "affiliate_rate", "kind")
DAILY_KEY = ("broker_id", "period", "day", "market_type")
DAILY_SUMS = ("fills", "volume_usd", "fee_base_usd")


def add_to_totals(connection: Connection, table: str, keys: Sequence[str], sums: Sequence[str],
                  rows: Sequence[tuple[Any, ...]]) -> None:
    """Add rows of (key values..., count, money sums...) to a table of running totals.

    The first sum is a count, the others are money (Decimals). Keys must be unique within
    `rows`, and sorted: every writer then locks rows in the same order and none deadlocks."""
    if not rows:
        return
    columns = ", ".join((*keys, *sums))
    conflict = ", ".join(keys)
    width = len(keys) + len(sums)
    count, *money = sums
    if connection.dialect.name == "postgresql":
        adds = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in sums)
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            if len(rows) < _COPY_FROM:
                cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * width)}) "
                                   f"ON CONFLICT ({conflict}) DO UPDATE SET {adds}",
                                   [tuple(_plain(value) for value in row) for row in rows])
                return
            # many rows (a block of the set-based import): one COPY and one upsert, in key order
            cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS incoming_{table} (LIKE {table}) ON COMMIT DELETE ROWS")
            cursor.execute(f"TRUNCATE incoming_{table}")
            with cursor.copy(f"COPY incoming_{table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(tuple(_plain(value) for value in row))
            cursor.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM incoming_{table} "
                           f"ORDER BY {conflict} ON CONFLICT ({conflict}) DO UPDATE SET {adds}")
        finally:
            cursor.close()
        return
    adds = ", ".join([f"{count} = {table}.{count} + excluded.{count}"]
                     + [f"{c} = dec_add({table}.{c}, excluded.{c})" for c in money])
    split = len(keys) + 1
    connection.exec_driver_sql(
        f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['?'] * width)}) "
        f"ON CONFLICT ({conflict}) DO UPDATE SET {adds}",
        [(*(_sqlite_key(v) for v in row[:split]), *(canonical(v) for v in row[split:])) for row in rows])


USER_SUMS = ("spot_volume_usd", "futures_volume_usd", "fee_usd", "fee_base_usd", "adjustment_fee_base_usd")


def user_rows_of(aggregate_rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Increments of `aggregates` (rows of `AGGREGATE_KEY` then `AGGREGATE_SUMS`, as given to
    `add_to_totals`) summed per (broker, period, user), as `add_to_user_totals` takes them:
    volumes, fee and fee base of lines of the month's own fills (kind `fill`, fill month = period),
    the fee base of every other line (late fills, corrections, retroactive changes) apart. Whatever
    adds to `aggregates` adds these to `user_totals` in the same transaction."""
    by_user: dict[tuple[Any, ...], list[Decimal]] = {}
    for broker, period, fill_month, user, market_type, _, kind, _, volume, fee, base in aggregate_rows:
        sums = by_user.get((broker, period, user))
        if sums is None:
            sums = by_user[(broker, period, user)] = [_ZERO] * 5
        if kind == "fill" and fill_month == period:
            slot = 0 if market_type == MarketType.SPOT.value else 1  # every other market type is futures
            sums[slot] = MONEY.add(sums[slot], volume)
            sums[2] = MONEY.add(sums[2], fee)
            sums[3] = MONEY.add(sums[3], base)
        else:
            sums[4] = MONEY.add(sums[4], base)
    return [(*key, *sums) for key, sums in sorted(by_user.items())]


def add_to_user_totals(connection: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Add rows of (broker_id, period, user_id, spot volume, futures volume, fee, fee base,
    adjustment fee base) to `user_totals`, and set each row's `rank_key` from its new sums.

    Keys must be unique within `rows`, and sorted, as for `add_to_totals`."""
    if not rows:
        return
    columns = ", ".join(("broker_id", "period", "user_id", *USER_SUMS, "rank_key"))
    fee_base, adjustment = "fee_base_usd", "adjustment_fee_base_usd"
    if connection.dialect.name == "postgresql":
        # the key is minus a sum: it adds like the sums do
        adds = ", ".join(f"{c} = user_totals.{c} + excluded.{c}" for c in (*USER_SUMS, "rank_key"))
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(f"INSERT INTO user_totals ({columns}) VALUES ({', '.join(['%s'] * 9)}) "
                               f"ON CONFLICT (broker_id, period, user_id) DO UPDATE SET {adds}",
                               [(*(_plain(v) for v in row), user_rank_key(row[6], row[7])) for row in rows])
        finally:
            cursor.close()
        return
    # every expression of the SET reads the row as it was before the update
    adds = ", ".join([f"{c} = dec_add(user_totals.{c}, excluded.{c})" for c in USER_SUMS]
                     + [f"rank_key = dec_rank_key(dec_add(user_totals.{fee_base}, excluded.{fee_base}), "
                        f"dec_add(user_totals.{adjustment}, excluded.{adjustment}))"])
    connection.exec_driver_sql(
        f"INSERT INTO user_totals ({columns}) VALUES ({', '.join(['?'] * 9)}) "
        f"ON CONFLICT (broker_id, period, user_id) DO UPDATE SET {adds}",
        [(row[0], str(row[1]), row[2], *(canonical(v) for v in row[3:]), ordered_key(user_rank_key(row[6], row[7])))
         for row in rows])


def _sqlite_key(value: Any) -> Any:
    return canonical(value) if isinstance(value, Decimal) else _plain(value)


def _plain(value: Any) -> Any:
    """What the driver is handed for a value these raw statements write: a month as its text (the
    column's own form; `MonthText` does this for statements SQLAlchemy builds)."""
    return str(value) if isinstance(value, Month) else value
