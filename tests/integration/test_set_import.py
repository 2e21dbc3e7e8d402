"""The set-based import leaves the store the row path leaves, for any file, CSV or Parquet: the differential test.

Each example is one CSV file of mixed records — ordinary fills in every shape `parse_fill`
accepts (leading and trailing zeros, lower-case flags, defaults left empty), fills already stored
(duplicates) and the same ids with other content (conflicts), repeats within the file, corrections,
both sides of named trades (self-trades among them), fills of a closed month (late), of users bkr
does not know (awaiting), of a broker suspended for part of the month and of a code whose rate
changes mid-month, and records to reject for every reason. The same file goes into two databases
set up alike, once by the set path and once by the row path in one batch; every table an import
writes must come out equal, row for row, and so must the tallies. On SQLite and PostgreSQL.
"""

import csv
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from integration_support import (
    APRIL,
    MAY,
    add_broker,
    add_code,
    add_users,
    clock,
    close,
    fill,
    write_csv,
    write_parquet,
)
from sqlalchemy import Engine, select

from bkr.domain.config import ProgramConfig
from bkr.domain.fills import FIELDS
from bkr.domain.periods import parse_instant
from bkr.domain.registry import BrokerStatus
from bkr.program import registry
from bkr.program.importer import import_file
from bkr.program.writer import Tally
from bkr.store import db
from bkr.store.tables import (
    aggregate_totals,
    aggregates,
    daily_volumes,
    fill_conflicts,
    fill_keys,
    fill_rejections,
    fills,
    imports,
    user_totals,
)
from program_support import use_program

USERS = ("alice", "bob", "carol", "dave-unknown", "erin-unknown")
BROKERS = ("1400", "2200", "3300", "9999", "")  # active but suspended mid-May, active, pending, unknown, none
DAYS = ("2024-04-20T10:00:00Z", "2024-05-01T00:00:00Z", "2024-05-11T23:59:59.999999Z", "2024-05-12T00:00:00Z",
        "2024-05-16T08:00:00.5Z", "2024-05-20T00:00:00Z", "2024-05-31T23:59:59Z", "2024-06-02T12:00:00Z")
PRICES = ("100", "100.50", "0100", "1.000", "0.000001", "123456789012345")
QUANTITIES = ("1", "2.5", "0.10", "1000")
FEES = ("0.1", "0", "-0.01", "0.000", "-0.0", "00.25", "2")
BAD = {  # field: values the row path rejects, or reads in a shape the column checks leave to it
    "price": ("abc", "-1", "0", "1e2", " 100", "1_0", "1.0000000000000000001", "1234567890123456"),
    "quantity": ("0", "-2", ""),
    "fee": ("5000", "x", "1E-3"),
    "market_type": ("FOO", "spot", ""),
    "side": ("bid", "Buy"),
    "timestamp": ("2024-02-30T00:00:00Z", "2030-01-01T00:00:00Z", "2019-01-01T00:00:00Z", "yesterday",
                  "2024-05-10T12:00:00+00:00", "2024-05-10 12:00:00"),
    "user_id": ("", " alice"),
    "broker_id": ("70000", "0", "14x", "01400"),
    "symbol": ("SOLUSDC", "sol_usdc", "SOL_EUR"),
    "fee_symbol": ("BTC", "usdc"),
    "is_maker": ("maybe", "TRUE"),
    "via_api": ("nope", "False"),
    "fill_type": ("Bogus", "Liquidation"),
}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


@st.composite
def records(draw: st.DrawFn) -> list[dict[str, str]]:
    """A file's records, in order, as text."""
    made: list[dict[str, str]] = []
    for number in range(draw(st.integers(1, 40))):
        kind = draw(st.sampled_from(("fill", "fill", "fill", "fill", "bad", "again", "conflict", "correction",
                                     "trade", "stored")))
        if kind in ("again", "conflict", "correction") and made:
            earlier = draw(st.sampled_from(made))
            if kind == "again":  # the same record, or its id with what the row path strips from it
                spaced = draw(st.sampled_from(("", " ", "\u2003", "\x1c")))
                made.append(earlier | {"fill_id": spaced + earlier["fill_id"]})
            elif kind == "conflict":
                made.append(earlier | {"fee": draw(st.sampled_from(("0.3", "0.0001")))})
            else:
                made.append(earlier | {"fill_id": f"c{number}", "corrects": earlier["fill_id"],
                                       "quantity": draw(st.sampled_from(("-0.5", "-1", "0.25", "-5"))),
                                       "fee": draw(st.sampled_from(("-0.05", "0", "0.01")))})
            continue
        row = {name: _text(value) for name, value in fill(
            f"s{number % 7}" if kind == "stored" else f"f{number}",
            at=draw(st.sampled_from(DAYS)), user=draw(st.sampled_from(USERS)), broker=None,
            price=draw(st.sampled_from(PRICES)), quantity=draw(st.sampled_from(QUANTITIES)),
            fee=draw(st.sampled_from(FEES)), market=draw(st.sampled_from(("SPOT", "PERP"))),
            fee_symbol=draw(st.sampled_from(("USDC", "SOL", "USDT"))), is_maker=draw(st.booleans()),
            side=draw(st.sampled_from(("Bid", "Ask")))).items()}
        row["broker_id"] = draw(st.sampled_from(BROKERS))
        row["is_maker"] = draw(st.sampled_from((row["is_maker"], row["is_maker"].capitalize(), "1" if
                                                row["is_maker"] == "true" else "0")))
        row["via_api"] = draw(st.sampled_from(("", "true", "false", "yes")))
        row["fill_type"] = draw(st.sampled_from(("", "User", "User", "Liquidation")))
        if kind == "bad":
            field = draw(st.sampled_from(sorted(BAD)))
            row[field] = draw(st.sampled_from(BAD[field]))
        if kind == "trade":
            row["trade_id"] = f"t{draw(st.integers(1, 3))}"
        made.append(row)
    return made


def write_records(path: Path, rows: list[dict[str, str]]) -> Path:
    """The records as CSV, or as Parquet with a text column per field (an empty value a null)."""
    if path.suffix == ".parquet":
        columns = {name: pa.array([row.get(name) or None for row in rows], pa.string()) for name in FIELDS}
        pq.write_table(pa.table(columns), path)
        return path
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, FIELDS, lineterminator="\n", restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def set_up(engine: Engine, tmp_path: Path) -> None:
    """The same registry and history in each database: April closed with one fill in it; broker
    1400 suspended from 15 to 20 May; alice's code at 0.1, then 0.3 from 12 May; carol's code
    without a rate until 20 May; fills s0..s6 stored before the file."""
    use_program(engine)
    add_broker(engine, 1400)
    add_broker(engine, 2200)
    add_broker(engine, 3300, status=None)
    with engine.begin() as connection:
        registry.change_broker_status(connection, 1400, BrokerStatus.SUSPENDED, parse_instant("2024-05-15T00:00:00Z"),
                                      clock(), actor="ops")
        registry.change_broker_status(connection, 1400, BrokerStatus.ACTIVE, parse_instant("2024-05-20T00:00:00Z"),
                                      clock(), actor="ops")
    add_code(engine, "ALICE10", "0.1")
    add_code(engine, "ALICE10", "0.3", since="2024-05-12T00:00:00Z")
    add_code(engine, "CAROL", "0.25", since="2024-05-20T00:00:00Z")
    add_users(engine, "alice", code="ALICE10")
    add_users(engine, "bob")
    add_users(engine, "carol", code="CAROL")
    earlier = [fill(f"s{n}", at="2024-05-05T10:00:00Z", user=USERS[n % 3], fee=("0.1", "0.2")[n % 2])
               for n in range(7)]
    earlier.append(fill("april", at="2024-04-10T10:00:00Z"))
    import_file(engine, write_csv(tmp_path / "earlier.csv", earlier), clock=clock, actor="ops", set_based=False)
    close(engine, APRIL)


TABLES = (fills, fill_keys, fill_rejections, fill_conflicts, aggregates, aggregate_totals, user_totals, daily_volumes,
          imports)
UNORDERED = {"fill_rejections": "rejection_id", "fill_conflicts": "conflict_id"}  # serial ids: compared without


def stored(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    state = {}
    with engine.connect() as connection:
        for table in TABLES:
            columns = [c for c in table.columns if c.name not in (UNORDERED.get(table.name), "started_at",
                                                                   "finished_at")]
            state[table.name] = sorted((tuple(row) for row in connection.execute(select(*columns))), key=repr)
    return state


def run(url: str, path: Path, tmp_path: Path, *, set_based: bool,
        left: list[int] | None = None) -> tuple[Tally, dict[str, Any]]:
    """Import `path` into a database set up by `set_up`; `left` gets how many records of each
    transaction the row path decided."""
    engine = db.open_engine(url)
    try:
        set_up(engine, tmp_path)
        tally = import_file(engine, path, clock=clock, actor="ops", set_based=set_based,
                            batch_size=None if set_based else 1_000_000,
                            on_batch=None if left is None else lambda _, results: left.append(len(results)))
        return tally, stored(engine)
    finally:
        engine.dispose()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=records())
def test_the_set_path_leaves_the_store_the_row_path_leaves(rows: list[dict[str, str]], suffix: str, tmp_path: Path,
                                                           fresh_db_url: Callable[[], str]) -> None:
    path = write_records(tmp_path / f"month{suffix}", rows)

    by_set, set_state = run(fresh_db_url(), path, tmp_path, set_based=True)
    by_row, row_state = run(fresh_db_url(), path, tmp_path, set_based=False)

    assert by_set == by_row
    for table in TABLES:
        assert set_state[table.name] == row_state[table.name], table.name


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_file_of_plain_fills_is_decided_in_sql_and_equals_the_row_path(
        fresh_db_url: Callable[[], str], tmp_path: Path, suffix: str) -> None:
    """The common case: every record is accepted by the set path itself, none left to the row path.
    The Parquet file has typed columns, as an exchange's export would: decimals, booleans, UTC times."""
    rows = [fill(f"p{n}", at=DAYS[1 + n % 6], user=USERS[n % 5], fee=FEES[n % 6], price=PRICES[n % 4],
                 broker=int(BROKERS[n % 5]) if BROKERS[n % 5] else None) for n in range(3000)]
    if suffix == ".csv":
        path = write_records(tmp_path / "plain.csv", [{name: _text(value) for name, value in row.items()}
                                                      for row in rows])
    else:
        path = write_parquet(tmp_path / "plain.parquet", rows)

    left: list[int] = []
    by_set, set_state = run(fresh_db_url(), path, tmp_path, set_based=True, left=left)
    by_row, row_state = run(fresh_db_url(), path, tmp_path, set_based=False)

    assert (by_set.accepted, by_set.rejected, left) == (3000, 0, [0])
    assert by_set == by_row
    assert set_state == row_state


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_an_id_the_row_path_strips_is_one_fill_id_on_both_paths(fresh_db_url: Callable[[], str], tmp_path: Path,
                                                                suffix: str) -> None:
    """`\\u2003p1` is `p1` to `parse_fill`: the first of the two is the fill, the second a conflict."""
    first = {name: _text(value) for name, value in fill("\u2003p1", fee="0.1").items()}
    second = {name: _text(value) for name, value in fill("p1", fee="0.2").items()}
    path = write_records(tmp_path / f"spaced{suffix}", [first, second])

    by_set, set_state = run(fresh_db_url(), path, tmp_path, set_based=True)
    by_row, row_state = run(fresh_db_url(), path, tmp_path, set_based=False)

    assert (by_set.accepted, by_set.conflicts) == (1, 1)
    assert by_set == by_row
    assert set_state == row_state


def test_a_stored_fill_sent_again_under_a_stricter_fee_rule_is_rejected_on_both_paths(
        fresh_db_url: Callable[[], str], tmp_path: Path) -> None:
    """A version from May allowing fees of at most 0.15% of the notional: of the stored fills sent
    again, those with a fee of 0.2 on 100 are rejected before anything looks for duplicates."""
    again = [{name: _text(value) for name, value in fill(f"s{n}", at="2024-05-05T10:00:00Z", user=USERS[n % 3],
                                                          fee=("0.1", "0.2")[n % 2]).items()} for n in range(7)]
    path = write_records(tmp_path / "again.csv", again)
    stricter = ProgramConfig(max_fee_share=Decimal("0.0015"))
    outcomes = []
    for set_based in (True, False):
        engine = db.open_engine(fresh_db_url())
        try:
            set_up(engine, tmp_path)
            use_program(engine, stricter, from_month=MAY)
            tally = import_file(engine, path, clock=clock, actor="ops", set_based=set_based,
                                batch_size=None if set_based else 1_000_000)
            outcomes.append((tally, stored(engine)))
        finally:
            engine.dispose()

    (by_set, set_state), (by_row, row_state) = outcomes
    assert (by_set.duplicates, by_set.rejected) == (4, 3)
    assert by_set == by_row
    assert set_state == row_state
