"""The few statements whose SQL differs between SQLite and PostgreSQL."""

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Table, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import Select


def insert_for(connection: Connection, table: Table) -> Any:
    """An INSERT that supports ON CONFLICT on the connection's database."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def insert_ignoring(connection: Connection, table: Table, rows: list[dict[str, Any]], keys: Iterable[str]) -> None:
    """Insert rows, skipping those whose key already exists."""
    if rows:
        connection.execute(insert_for(connection, table).on_conflict_do_nothing(index_elements=list(keys)), rows)


def locked(query: Select[Any], *, shared: bool = False) -> Select[Any]:
    """Row locks on PostgreSQL; SQLite serializes writers with BEGIN IMMEDIATE instead."""
    return query.with_for_update(read=shared)


_ADVISORY = text("SELECT pg_advisory_xact_lock(k) FROM (SELECT unnest(CAST(:keys AS bigint[])) AS k ORDER BY k) AS o")


def lock_keys(connection: Connection, keys: Iterable[int]) -> None:
    """Hold a lock on each of these 64-bit keys until the transaction ends, taken in ascending
    order so that writers never deadlock on them: advisory locks on PostgreSQL, for what has
    no row to lock yet; SQLite's BEGIN IMMEDIATE already serializes writers."""
    ordered = sorted(set(keys))
    if ordered and connection.dialect.name == "postgresql":
        connection.execute(_ADVISORY, {"keys": ordered})


def driver_batches(connection: Connection, query: str, parameters: Sequence[Any] = (), *,
                   size: int = 50_000) -> Iterator[Sequence[Any]]:
    """The rows of `query` (placeholders written `?`) in batches of `size`, straight from the
    driver in the connection's transaction, as it returns them: TEXT, INTEGER and NUMERIC
    (a `Decimal` on PostgreSQL) values, no column types applied. For reads of hundreds of
    thousands of rows, where SQLAlchemy's processing of each value costs more than the query."""
    if connection.dialect.name == "postgresql":
        query = query.replace("%", "%%").replace("?", "%s")
    cursor = connection.connection.cursor()
    try:
        cursor.execute(query, tuple(parameters))
        while rows := cursor.fetchmany(size):
            yield rows
    finally:
        cursor.close()


def exact_sum(connection: Connection, column: Any) -> Any:
    """SUM of a money column, exact on both databases: NUMERIC on PostgreSQL, bkr's `dec_sum`
    aggregate over decimal text on SQLite (whose own SUM goes through floats)."""
    return (func.sum if connection.dialect.name == "postgresql" else func.dec_sum)(column)


__all__ = ["driver_batches", "exact_sum", "insert_for", "insert_ignoring", "lock_keys", "locked", "select"]
