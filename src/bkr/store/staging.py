"""The staging table of the set-based import, and the SQL that moves staged fills into `fills`.

A block of fills that passed the column checks (`bkr.ingest.columns`) is loaded into a
session-local table, `staged_fills` — PostgreSQL `COPY` of the block written as CSV by Arrow,
SQLite one `executemany` — and each step after that is one statement over the whole block:

1. `price`: volume and fee in USD, `price × quantity × quote rate` and the fee by its asset, exact:
   NUMERIC arithmetic on PostgreSQL (`trim_scale` gives the canonical scale the row path stores),
   the `dec_mul` function on SQLite (`bkr.store.db`, the money context's own multiply).
2. `implausible`: the rows whose fee is more than the configured share of their notional.
3. `stored`: the rows whose `fill_id` is already claimed (`fill_keys`), with both content keys.
4. `attribute`: each row's period, attribution and affiliate rate at the fill's time, from the
   broker status and referral rate timelines, by the rules of `bkr.domain.fills.attribute`.
5. `insert`: the rows into `fills`, each id claimed in `fill_keys` (`bulk.move_staged_fills`;
   on PostgreSQL the rows another writer claimed meanwhile are returned as not inserted).
6. `add_counted`: the counted rows' increments to the running totals, `GROUP BY` and upsert.

The caller (`bkr.program.set_import`) owns the transaction and decides what each result means.
"""

from collections.abc import Iterable, Mapping

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from sqlalchemy import Connection

from bkr.domain.periods import Month
from bkr.store.bulk import AGGREGATE_KEY, AGGREGATE_SUMS, DAILY_KEY, DAILY_SUMS, TOTALS_KEY, move_staged_fills

# (name, PostgreSQL type, SQLite type) of every staged column, in the order they are loaded
_LOADED = (
    ("position", "bigint", "INTEGER"), ("fill_id", "text", "TEXT"), ("order_id", "text", "TEXT"),
    ("user_id", "text", "TEXT"), ("symbol", "text", "TEXT"), ("market_type", "text", "TEXT"),
    ("side", "text", "TEXT"), ("price", "numeric", "TEXT"), ("quantity", "numeric", "TEXT"),
    ("fee", "numeric", "TEXT"), ("fee_symbol", "text", "TEXT"), ("is_maker", "boolean", "INTEGER"),
    ("ts", "timestamptz", "INTEGER"), ("broker_id", "integer", "INTEGER"), ("via_api", "boolean", "INTEGER"),
    ("fill_type", "text", "TEXT"), ("content_key", "text", "TEXT"), ("fill_month", "text", "TEXT"),
    ("day", "text", "TEXT"), ("fee_in", "text", "TEXT"), ("quote_rate", "numeric", "TEXT"),
    ("fee_rate", "numeric", "TEXT"), ("fee_share", "numeric", "TEXT"),
)
# set by the statements below, and the columns of `fills` a new fill leaves empty
_DERIVED = (("volume_usd", "numeric", "TEXT"), ("fee_usd", "numeric", "TEXT"), ("attribution", "text", "TEXT"),
            ("affiliate_rate", "numeric", "TEXT"), ("period", "text", "TEXT"), ("import_id", "integer", "INTEGER"),
            ("corrects", "text", "TEXT"), ("fee_base_usd", "numeric", "TEXT"), ("trade_id", "text", "TEXT"))
LOADED = tuple(name for name, _, _ in _LOADED)
_ROWS_AT_ONCE = 20_000


def _postgresql(connection: Connection) -> bool:
    return connection.dialect.name == "postgresql"


def load(connection: Connection, staged: pa.Table) -> None:
    """Empty `staged_fills` (creating it in this session if need be) and load `staged`, whose
    columns are `LOADED`: text, booleans, the time as a UTC timestamp, the broker id as an integer."""
    postgresql = _postgresql(connection)
    columns = ", ".join(f"{name} {pg if postgresql else lite}" for name, pg, lite in (*_LOADED, *_DERIVED))
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if postgresql:
            cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS staged_fills ({columns}) ON COMMIT DELETE ROWS")
            cursor.execute("TRUNCATE staged_fills")
            buffer = pa.BufferOutputStream()
            pa_csv.write_csv(staged.select(list(LOADED)), buffer,
                             pa_csv.WriteOptions(include_header=False, quoting_style="needed"))
            with cursor.copy(f"COPY staged_fills ({', '.join(LOADED)}) FROM STDIN (FORMAT csv)") as copy:
                copy.write(buffer.getvalue().to_pybytes())
            cursor.execute("ANALYZE staged_fills")
        else:
            cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS staged_fills ({columns})")
            cursor.execute("DELETE FROM staged_fills")
            micros = pc.cast(pc.cast(staged.column("ts"), pa.timestamp("us")), pa.int64())
            rows = staged.select(list(LOADED)).set_column(LOADED.index("ts"), "ts", micros)
            sql = f"INSERT INTO staged_fills ({', '.join(LOADED)}) VALUES ({', '.join('?' for _ in LOADED)})"
            for start in range(0, rows.num_rows, _ROWS_AT_ONCE):  # Python's objects for a slice at a time
                part = rows.slice(start, _ROWS_AT_ONCE)
                cursor.executemany(sql, list(zip(*(column.to_pylist() for column in part.columns), strict=True)))
    finally:
        cursor.close()


_VOLUME = {
    "postgresql": "trim_scale(price * quantity * quote_rate)",
    "sqlite": "CASE quote_rate WHEN '1' THEN dec_mul(price, quantity) "
              "ELSE dec_mul(dec_mul(price, quantity), quote_rate) END",
}
_FEE = {
    "postgresql": "trim_scale(CASE fee_in WHEN 'quote' THEN fee * quote_rate WHEN 'base' THEN fee * price * quote_rate "
                  "ELSE fee * fee_rate END)",
    "sqlite": "CASE fee_in WHEN 'quote' THEN CASE quote_rate WHEN '1' THEN fee ELSE dec_mul(fee, quote_rate) END "
              "WHEN 'base' THEN CASE quote_rate WHEN '1' THEN dec_mul(fee, price) "
              "ELSE dec_mul(dec_mul(fee, price), quote_rate) END ELSE dec_mul(fee, fee_rate) END",
}
# Each staged row beside what the registry says at its time: whether its broker is enrolled, the
# broker's status then (the latest change at or before it, as `StatusTimeline.status_at`), whether
# its user is known, and the rate of the user's code then (as `RateTimeline.rate_at`).
_REGISTRY = """
SELECT s.position, b.broker_id AS enrolled, st.status, u.user_id AS known, r.rate
FROM staged_fills s
LEFT JOIN brokers b ON b.broker_id = s.broker_id
LEFT JOIN (SELECT broker_id, status, effective_at AS since,
                  LEAD(effective_at) OVER (PARTITION BY broker_id ORDER BY effective_at) AS until
           FROM broker_status_changes) st
       ON st.broker_id = s.broker_id AND st.since <= s.ts AND (st.until IS NULL OR s.ts < st.until)
LEFT JOIN users u ON u.user_id = s.user_id
LEFT JOIN (SELECT code, rate, effective_from AS since,
                  LEAD(effective_from) OVER (PARTITION BY code ORDER BY effective_from) AS until
           FROM referral_rates) r
       ON r.code = u.referral_code AND r.since <= s.ts AND (r.until IS NULL OR s.ts < r.until)
"""
# `bkr.domain.fills.attribute`, in its order
_ATTRIBUTION = """CASE
    WHEN staged_fills.broker_id IS NULL THEN 'no_broker'
    WHEN staged_fills.fill_type <> 'User' THEN 'system'
    WHEN NOT staged_fills.via_api THEN 'web'
    WHEN a.enrolled IS NULL THEN 'broker_unknown'
    WHEN a.status IS NULL OR a.status <> 'active' THEN 'broker_inactive'
    WHEN a.known IS NULL THEN 'awaiting_user'
    ELSE 'counted' END"""


def price_and_attribute(connection: Connection, periods: Mapping[Month, Month]) -> None:
    """Each staged row's volume and fee in USD, by `bkr.domain.fills.price_in_usd`'s rules; its
    period (its month's paying period, from `periods`); its attribution by the rules of
    `bkr.domain.fills.attribute`, and, counted, its affiliate rate at its time (0 for a user
    without a code, and before the code's first rate)."""
    dialect = connection.dialect.name
    moved = {str(month): str(target) for month, target in periods.items() if month != target}
    period = ("CASE fill_month " + " ".join(f"WHEN '{m}' THEN '{t}'" for m, t in sorted(moved.items()))
              + " ELSE fill_month END") if moved else "fill_month"
    zero = "0" if dialect == "postgresql" else "'0'"
    connection.exec_driver_sql(
        f"UPDATE staged_fills SET volume_usd = {_VOLUME[dialect]}, fee_usd = {_FEE[dialect]}, period = {period}, "
        f"attribution = {_ATTRIBUTION}, "
        f"affiliate_rate = CASE WHEN {_ATTRIBUTION} = 'counted' THEN COALESCE(a.rate, {zero}) END "
        f"FROM ({_REGISTRY}) a WHERE a.position = staged_fills.position")


def implausible(connection: Connection) -> list[int]:
    """The positions of staged rows whose fee or rebate is more than its share of the notional."""
    condition = ("abs(fee_usd) > fee_share * volume_usd" if _postgresql(connection)
                 else "fee_exceeds(fee_usd, fee_share, volume_usd)")
    return list(connection.exec_driver_sql(f"SELECT position FROM staged_fills WHERE {condition}").scalars())


def stored(connection: Connection) -> list[tuple[int, str, str]]:
    """(position, staged content key, stored content key) of the staged rows whose fill_id is
    claimed (`fill_keys`: stored, or archived with its month)."""
    return [(row[0], row[1], row[2]) for row in connection.exec_driver_sql(
        "SELECT s.position, s.content_key, k.content_key FROM staged_fills s "
        "JOIN fill_keys k ON k.fill_id = s.fill_id")]


def drop(connection: Connection, positions: Iterable[int]) -> None:
    """Take rows out of the staging table: the row path decides them, or nothing is to be done."""
    chosen = [(position,) for position in positions]
    if chosen:
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            marker = "%s" if _postgresql(connection) else "?"
            cursor.executemany(f"DELETE FROM staged_fills WHERE position = {marker}", chosen)
        finally:
            cursor.close()


def insert(connection: Connection, import_id: int | None) -> tuple[int, list[int]]:
    """Move the staged rows into `fills`, claiming their ids (`bkr.store.bulk.move_staged_fills`):
    (how many went in, the positions of those that did not, because another writer claimed their
    fill_id meanwhile)."""
    connection.exec_driver_sql("UPDATE staged_fills SET import_id = "
                               f"{'%(import_id)s' if _postgresql(connection) else ':import_id'}",
                               {"import_id": import_id})
    moved = move_staged_fills(connection, "staged_fills")
    staged = connection.exec_driver_sql("SELECT position, fill_id FROM staged_fills").all()
    return len(moved), [position for position, fill_id in staged if fill_id not in moved]


def counts(connection: Connection) -> dict[str, int]:
    """How many staged rows have each attribution."""
    return {attribution: count for attribution, count in connection.exec_driver_sql(
        "SELECT attribution, count(*) FROM staged_fills GROUP BY attribution")}


# what a fill's fee adds to the fee base (`bkr.domain.payout.fee_base`): the fee, or 0 for a rebate
# (on SQLite money is text: its sign is its first character)
_FEE_BASE = {"postgresql": "CASE WHEN fee_usd > 0 THEN fee_usd ELSE 0 END",
             "sqlite": "CASE WHEN fee_usd LIKE '-%' THEN '0' ELSE fee_usd END"}
_LINE = "broker_id, period, fill_month, user_id, market_type, affiliate_rate"


def add_counted(connection: Connection) -> None:
    """Add the counted staged rows to the running totals, exactly, as
    `bkr.program.attribution.add_to_aggregates` adds the row path's fills: the block's lines are
    summed once over its rows (`staged_lines`), and the aggregates, their users-merged totals and
    each user's month are upserted from those; the daily series from the rows. Upserts go in key
    order (the order `bulk.add_to_totals` writes in, so that no two writers deadlock)."""
    postgresql = _postgresql(connection)
    total = "sum" if postgresql else "dec_sum"
    base = _FEE_BASE[connection.dialect.name]
    connection.exec_driver_sql("DROP TABLE IF EXISTS staged_lines")
    connection.exec_driver_sql(
        f"CREATE TEMP TABLE staged_lines AS SELECT {_LINE}, count(*) AS fills, {total}(volume_usd) AS volume_usd, "
        f"{total}(fee_usd) AS fee_usd, {total}({base}) AS fee_base_usd "
        "FROM staged_fills WHERE attribution = 'counted' GROUP BY 1, 2, 3, 4, 5, 6")
    money = ("volume_usd", "fee_usd", "fee_base_usd")
    _upsert(connection, "aggregates", AGGREGATE_KEY, AGGREGATE_SUMS,
            f"SELECT {_LINE}, 'fill', fills, {', '.join(money)} FROM staged_lines WHERE true ORDER BY 1, 2, 3, 4, 5, 6")
    _upsert(connection, "aggregate_totals", TOTALS_KEY, AGGREGATE_SUMS,
            "SELECT broker_id, period, fill_month, market_type, affiliate_rate, 'fill', sum(fills), "
            f"{', '.join(f'{total}({c})' for c in money)} FROM staged_lines "
            "GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5")
    _upsert(connection, "daily_volumes", DAILY_KEY, DAILY_SUMS,
            f"SELECT broker_id, period, day, market_type, count(*), {total}(volume_usd), {total}({base}) "
            "FROM staged_fills WHERE attribution = 'counted' GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4")
    _add_to_user_totals(connection, total)


def own_month_pairs(connection: Connection) -> list[tuple[int, Month]]:
    """The (broker, month) pairs whose own volume the block's counted lines (`add_counted`'s
    `staged_lines`) added to: the months a tier may have been reached in."""
    return [(broker_id, Month.parse(period)) for broker_id, period in connection.exec_driver_sql(
        "SELECT DISTINCT broker_id, period FROM staged_lines WHERE fill_month = period ORDER BY 1, 2")]


def _upsert(connection: Connection, table: str, keys: tuple[str, ...], sums: tuple[str, ...], select: str) -> None:
    """Add the rows of `select` (keys, then a count, then money) to a table of running totals."""
    if _postgresql(connection):
        adds = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in sums)
    else:
        count, *money = sums
        adds = ", ".join([f"{count} = {table}.{count} + excluded.{count}"]
                         + [f"{c} = dec_add({table}.{c}, excluded.{c})" for c in money])
    connection.exec_driver_sql(f"INSERT INTO {table} ({', '.join((*keys, *sums))}) {select} "
                               f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {adds}")


def _add_to_user_totals(connection: Connection, total: str) -> None:
    """Each user's month (`user_totals`), from the block's lines, as `bulk.user_rows_of` and
    `bulk.add_to_user_totals` keep it: a line of its own month adds to the user's volume (spot or
    futures), fee and fee base; a late one (paid in a later period) to the adjustment fee base;
    and the rank key follows the new fee bases."""
    postgresql = _postgresql(connection)
    zero = "0" if postgresql else "'0'"
    own = "fill_month = period"
    columns = {
        "spot_volume_usd": f"{total}(CASE WHEN {own} AND market_type = 'SPOT' THEN volume_usd ELSE {zero} END)",
        "futures_volume_usd": f"{total}(CASE WHEN {own} AND market_type <> 'SPOT' THEN volume_usd ELSE {zero} END)",
        "fee_usd": f"{total}(CASE WHEN {own} THEN fee_usd ELSE {zero} END)",
        "fee_base_usd": f"{total}(CASE WHEN {own} THEN fee_base_usd ELSE {zero} END)",
        "adjustment_fee_base_usd": f"{total}(CASE WHEN {own} THEN {zero} ELSE fee_base_usd END)",
    }
    if postgresql:
        rank = f"-{total}(fee_base_usd)"
        adds = ", ".join(f"{c} = user_totals.{c} + excluded.{c}" for c in (*columns, "rank_key"))
    else:
        rank = f"dec_rank_key({columns['fee_base_usd']}, {columns['adjustment_fee_base_usd']})"
        adds = ", ".join([f"{c} = dec_add(user_totals.{c}, excluded.{c})" for c in columns]
                         + ["rank_key = dec_rank_key(dec_add(user_totals.fee_base_usd, excluded.fee_base_usd), "
                            "dec_add(user_totals.adjustment_fee_base_usd, excluded.adjustment_fee_base_usd))"])
    connection.exec_driver_sql(
        f"INSERT INTO user_totals (broker_id, period, user_id, {', '.join(columns)}, rank_key) "
        f"SELECT broker_id, period, user_id, {', '.join(columns.values())}, {rank} FROM staged_lines "
        "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3 "
        f"ON CONFLICT (broker_id, period, user_id) DO UPDATE SET {adds}")
