"""Benchmark: fill import throughput against a raw bulk insert, month-close time at two fill
counts, and the import's peak memory at two file sizes, on SQLite and PostgreSQL.

    .venv/bin/python bench/ingest_close.py --pg postgresql+psycopg://postgres@127.0.0.1:54329/postgres
    .venv/bin/python bench/ingest_close.py --fills 10000000 --pg URL
    make bench                                   # the same, with a throwaway PostgreSQL

What it does, per database (N = --fills, S = N/10):

1. Generates two CSV fill files, S and N rows, streamed from a seeded generator (never more than
   one chunk in memory): one month of spot and perp fills from ~50k users, each trading through one
   of 200 brokers (a few big ones, a long tail) or now and then without one, from the web UI, or
   as a liquidation; fees in the base or quote asset, some makers with a negative fee.
2. Raw baseline: the same rows, regenerated as tuples of str/int/bool in memory chunk by chunk,
   bulk-inserted into a bare table (no key, no index) with the same columns, one transaction:
   SQLite `executemany`, PostgreSQL `COPY`. Only the insert calls and the commit are timed.
3. For each file: a fresh database (a temp SQLite file; a PostgreSQL database created and dropped),
   the registry built through `bkr.program.registry` (brokers active from before the month,
   affiliates and referral codes, users with and without a code), then `import_file` in a child
   process, timed there, whose peak RSS the parent reads with `os.wait4`.
4. `close_month(..., dry_run=True)` and a real close of the month, `--repeat` times each (the month
   is reopened between real closes by deleting its statements), on both databases.

The generator makes every (user, market type) pair appear within the first 2 × users fills, all
counted, so that the S and N databases hold the same aggregate rows: a close that reads aggregates
must take the same time on both.

`--growing-users` changes the data: the users grow with the fills (one user per 10 fills, so
fills / 5 (user, market type) keys, each traded about five times; each file has its own users), as
in a month where new users bring the volume. Then the close grows with the file: about 2M statement
lines at 10M fills.

`--bulk-month` measures only the close, on a month too large to import through bkr in reasonable
time: the N-fill month (with `--growing-users`, its N/10 users) is built at the SQL level by
`bench/http.py`'s `build_summary_db` (the fills bulk-loaded with the columns bkr's writer derives,
aggregates by SQL `GROUP BY`, checked against totals summed in Python while generating), then
closed as in step 4. With `--keep` the database is kept and reused by the next run of that size.

    .venv/bin/python bench/ingest_close.py --bulk-month --growing-users --fills 10000000 --keep --pg URL

Progress goes to stderr; the table and one JSON line to stdout.
"""

import argparse
import csv
import hashlib
import importlib.util
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.engine import make_url

import bkr
from bkr.domain.config import DEFAULT_CONFIG, ProgramConfig
from bkr.domain.fills import FIELDS
from bkr.domain.money import D
from bkr.domain.money import total as money_total
from bkr.domain.periods import Month
from bkr.domain.registry import BrokerStatus
from bkr.domain.statements import BrokerStatement
from bkr.program import registry, settings_versions
from bkr.program.close import close_month
from bkr.program.importer import import_file
from bkr.store import db
from bkr.store.tables import aggregates, fills, periods, statements

# What a generated row holds: every field of a fill but `corrects` (the generator makes no corrections).
ROW_FIELDS = tuple(name for name in FIELDS if name not in ("corrects", "trade_id"))  # the generated columns

MONTH = Month(2025, 3)
SETUP_AT = datetime(2025, 2, 20, tzinfo=UTC)  # when the registry is loaded
ACTIVE_FROM = datetime(2025, 1, 1, tzinfo=UTC)  # brokers active and referral rates in force from
IMPORT_AT = datetime(2025, 4, 1, 0, 1, tzinfo=UTC)  # the import's clock: the month has just ended
CLOSE_AT = datetime(2025, 4, 1, 0, 10, tzinfo=UTC)

CHUNK = 50_000  # rows generated (and regenerated for the raw baseline) at a time
PRIME = 1_000_003  # larger than any key count, so i -> i * PRIME mod K walks every key each K rows
FILL_BASE = 4_000_000_000_000
ORDER_BASE = 9_000_000_000_000
USER_BASE = 20_000_000
BROKERS = 200
AFFILIATES = 100
MAX_USERS = 50_000
GROWING_FILLS_PER_USER = 10  # --growing-users: users = fills / 10, so (user, market) keys = fills / 5

# (symbol, base, quote, reference price, price decimals, quantity decimals)
SPOT = (("BTC_USDC", "BTC", "USDC", 84_000.0, 1, 5), ("ETH_USDC", "ETH", "USDC", 2_000.0, 2, 4),
        ("SOL_USDC", "SOL", "USDC", 135.0, 2, 2), ("SOL_USDT", "SOL", "USDT", 135.0, 2, 2),
        ("JUP_USDC", "JUP", "USDC", 0.55, 4, 1), ("DOGE_USDC", "DOGE", "USDC", 0.17, 5, 0))
PERP = (("BTC_USDC_PERP", "BTC", "USDC", 84_000.0, 1, 5), ("ETH_USDC_PERP", "ETH", "USDC", 2_000.0, 2, 4),
        ("SOL_USDC_PERP", "SOL", "USDC", 135.0, 2, 2), ("WIF_USDC_PERP", "WIF", "USDC", 0.6, 4, 0),
        ("DOGE_USDC_PERP", "DOGE", "USDC", 0.17, 5, 0))
BROKER_TYPES = ("exchange_aggregator", "trading_terminal", "trading_bot", "algorithmic_trading_platform",
                "social_trading_platform", "asset_manager", "order_execution_service", "other")

Row = tuple[str, str, str, str, str, str, str, str, str, str, bool, str, int | None, bool, str]


def load_http_bench() -> ModuleType:
    """bench/http.py, whose name is the standard library's `http`: loaded by path, under another
    name, for the benchmarks that build their month as it does."""
    spec = importlib.util.spec_from_file_location("bench_http", Path(__file__).with_name("http.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its build workers are pickled by module name
    spec.loader.exec_module(module)
    return module


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the generated program ------------------------------------------------------------------------

@dataclass(frozen=True)
class World:
    """Who trades: brokers, affiliates' codes and users, the same for every file of a run."""

    broker_ids: tuple[int, ...]
    codes: tuple[tuple[str, str, Decimal], ...]  # (affiliate account, code, rate)
    broker_of_user: tuple[int, ...]
    code_of_user: tuple[str | None, ...]

    @property
    def users(self) -> int:
        return len(self.broker_of_user)

    @property
    def keys(self) -> int:
        return 2 * self.users  # (user, spot|perp)


def make_world(users: int, seed: int) -> World:
    rng = random.Random(seed)
    broker_ids = sorted({1400, 2200, *rng.sample(range(1000, 65_000), BROKERS + 10)})[:BROKERS]
    codes = tuple((f"acct-aff-{a:03d}", f"REF{a:03d}", D(rng.choice(("0.05", "0.1", "0.15", "0.2", "0.3", "0.4"))))
                  for a in range(AFFILIATES))
    # a few big platforms and a long tail: broker index ~ 200 * u^2.5
    broker_of_user = tuple(broker_ids[min(BROKERS - 1, int(BROKERS * rng.random() ** 2.5))] for _ in range(users))
    code_of_user = tuple(codes[min(AFFILIATES - 1, int(AFFILIATES * rng.random() ** 2))][1]
                         if rng.random() < 0.4 else None for _ in range(users))
    return World(tuple(broker_ids), codes, broker_of_user, code_of_user)


def world_for(fills: int, seed: int, growing_users: bool, large: int) -> World:
    """The world of a file of `fills` fills: by default the same ~50k users for every file of a run
    (sized by the large file, `large`); with `growing_users`, one user per 10 fills of this file."""
    if growing_users:
        return make_world(max(500, fills // GROWING_FILLS_PER_USER), seed)
    return make_world(min(MAX_USERS, max(500, large // 20)), seed)


def user_id(index: int) -> str:
    return str(USER_BASE + index)


def register(engine: Engine, world: World, program: ProgramConfig = DEFAULT_CONFIG) -> None:
    """The program's settings (`program`, as version 1) and the registry, through the same use
    cases the CLI and the API call."""
    with engine.begin() as connection:
        settings_versions.import_first_version(connection, program, "bench", "bench", SETUP_AT)
        for number, broker_id in enumerate(world.broker_ids):
            registry.enroll_broker(connection, broker_id, f"acct-broker-{broker_id}", f"Broker {broker_id}",
                                   BROKER_TYPES[number % len(BROKER_TYPES)], SETUP_AT, actor="bench")
            registry.change_broker_status(connection, broker_id, BrokerStatus.ACTIVE, ACTIVE_FROM, SETUP_AT,
                                          actor="bench")
        for account, code, rate in world.codes:
            registry.enroll_affiliate(connection, account, f"Affiliate {account}", SETUP_AT, actor="bench")
            registry.set_referral_rate(connection, account, code, rate, ACTIVE_FROM, SETUP_AT, actor="bench")
        registry.add_users(connection, ((user_id(u), code) for u, code in enumerate(world.code_of_user)), SETUP_AT,
                           actor="bench")


def generate(world: World, total: int, seed: int, month: Month = MONTH) -> Iterator[list[Row]]:
    """The `total` fills of one file, in chunks, in time order over the month. Deterministic:
    the same (world, total, seed) gives the same rows, so the raw baseline can regenerate them."""
    for chunk in range(chunk_count(total)):
        yield generate_chunk(world, total, seed, chunk, month)


def chunk_count(total: int) -> int:
    return (total + CHUNK - 1) // CHUNK


def generate_chunk(world: World, total: int, seed: int, chunk: int, month: Month = MONTH) -> list[Row]:
    """Chunk number `chunk` of `generate`: each chunk has its own seed, so chunks can be made apart
    (in several processes) and still be the same rows."""
    start = datetime(month.year, month.month, 1)  # naive: the text gets a "Z"
    span = int((month.end - month.start) / timedelta(microseconds=1))
    slot = max(1, span // total)
    keys = world.keys
    rng = random.Random(seed * 1_000_003 + chunk)
    rows: list[Row] = []
    for i in range(chunk * CHUNK, min(total, (chunk + 1) * CHUNK)):
        key = (i * PRIME) % keys
        user, perp = key >> 1, key & 1
        symbol, base, quote, reference, price_places, quantity_places = rng.choice(PERP if perp else SPOT)
        price = f"{reference * (1 + rng.uniform(-0.04, 0.04)):.{price_places}f}"
        notional = rng.lognormvariate(6.0, 1.3)  # USD, median ~400
        quantity = f"{max(notional / float(price), 10.0 ** -quantity_places):.{quantity_places}f}"
        side = "Bid" if rng.random() < 0.5 else "Ask"
        is_maker = rng.random() < 0.4
        taker_rate = 0.0005 if perp else 0.001
        fee_rate = (-0.0001 if rng.random() < 0.08 else 0.0002) if is_maker else taker_rate  # maker rebates
        if not perp and side == "Bid":  # spot fees are charged in the asset received
            fee, fee_symbol = f"{float(quantity) * fee_rate:.8f}", base
        else:
            fee, fee_symbol = f"{float(price) * float(quantity) * fee_rate:.6f}", quote
        moment = start + timedelta(microseconds=(i * span) // total + rng.randrange(slot))
        timestamp = moment.isoformat(timespec="milliseconds") + "Z"
        broker: int | None = world.broker_of_user[user]
        via_api, fill_type = True, "User"
        if i >= keys:  # past the first pass over every key, some fills are not broker volume
            draw = rng.random()
            if draw < 0.08:
                broker = None
            elif draw < 0.10:
                via_api = False
            elif draw < 0.11:
                broker, fill_type, is_maker = None, "Liquidation", False
        rows.append((str(FILL_BASE + i), str(ORDER_BASE + i), user_id(user), symbol, "PERP" if perp else "SPOT",
                     side, price, quantity, fee, fee_symbol, is_maker, timestamp, broker, via_api, fill_type))
    return rows


def write_csv(path: Path, world: World, total: int, seed: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(ROW_FIELDS)
        for rows in generate(world, total, seed):
            writer.writerows((*r[:10], "true" if r[10] else "false", r[11], "" if r[12] is None else r[12],
                              "true" if r[13] else "false", r[14]) for r in rows)


# --- databases ------------------------------------------------------------------------------------

def psycopg_dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url)
    if database:
        parsed = parsed.set(database=database)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


class Backend:
    name: str

    def create(self, label: str) -> str:
        """A fresh empty database; its SQLAlchemy URL."""
        raise NotImplementedError

    def drop(self, url: str) -> None:
        raise NotImplementedError

    def size(self, url: str) -> int:
        raise NotImplementedError

    def raw_insert(self, url: str, world: World, total: int, seed: int) -> float:
        raise NotImplementedError


class SqliteBackend(Backend):
    name = "sqlite"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def create(self, label: str) -> str:
        path = self.directory / f"{label}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{path}"

    def drop(self, url: str) -> None:
        path = db.sqlite_path(url)
        assert path is not None
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    def size(self, url: str) -> int:
        path = db.sqlite_path(url)
        assert path is not None
        return sum(Path(f"{path}{s}").stat().st_size for s in ("", "-wal") if Path(f"{path}{s}").exists())

    def raw_insert(self, url: str, world: World, total: int, seed: int) -> float:
        path = db.sqlite_path(url)
        assert path is not None
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode=WAL")  # the settings bkr's engine uses
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("CREATE TABLE raw_fills (fill_id TEXT, order_id TEXT, user_id TEXT, symbol TEXT, "
                               "market_type TEXT, side TEXT, price TEXT, quantity TEXT, fee TEXT, fee_symbol TEXT, "
                               "is_maker INTEGER, timestamp TEXT, broker_id INTEGER, via_api INTEGER, fill_type TEXT)")
            insert = f"INSERT INTO raw_fills VALUES ({', '.join('?' * len(ROW_FIELDS))})"
            elapsed = 0.0
            connection.execute("BEGIN IMMEDIATE")
            for rows in generate(world, total, seed):
                started = time.perf_counter()
                connection.executemany(insert, rows)
                elapsed += time.perf_counter() - started
            started = time.perf_counter()
            connection.execute("COMMIT")
            elapsed += time.perf_counter() - started
            (count,) = connection.execute("SELECT count(*) FROM raw_fills").fetchone()
            assert count == total, (count, total)
            return elapsed
        finally:
            connection.close()


class PostgresBackend(Backend):
    name = "postgresql"

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.prefix = f"bkr_bench_{os.getpid()}"

    def _admin(self, sql: str) -> None:
        with psycopg.connect(psycopg_dsn(self.admin_url), autocommit=True) as connection:
            connection.execute(sql)  # type: ignore[arg-type]

    def create(self, label: str) -> str:
        name = f"{self.prefix}_{label}"
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._admin(f'CREATE DATABASE "{name}"')
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')

    def size(self, url: str) -> int:
        with psycopg.connect(psycopg_dsn(url)) as connection:
            row = connection.execute("SELECT pg_database_size(current_database())").fetchone()
            assert row is not None
            return int(row[0])

    def raw_insert(self, url: str, world: World, total: int, seed: int) -> float:
        with psycopg.connect(psycopg_dsn(url)) as connection:
            connection.execute("CREATE TABLE raw_fills (fill_id text, order_id text, user_id text, symbol text, "
                               "market_type text, side text, price numeric, quantity numeric, fee numeric, "
                               "fee_symbol text, is_maker boolean, timestamp timestamptz, broker_id integer, "
                               "via_api boolean, fill_type text)")
            connection.commit()
            elapsed = 0.0
            with connection.cursor() as cursor:
                for rows in generate(world, total, seed):
                    started = time.perf_counter()
                    with cursor.copy(f"COPY raw_fills ({', '.join(ROW_FIELDS)}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
                    elapsed += time.perf_counter() - started
                started = time.perf_counter()
                connection.commit()
                elapsed += time.perf_counter() - started
                row = cursor.execute("SELECT count(*) FROM raw_fills").fetchone()
                assert row is not None and row[0] == total, (row, total)
            return elapsed


# --- the measurements -----------------------------------------------------------------------------

def proc_status_kb(field: str) -> int:
    """VmRSS (resident now) or VmHWM (peak resident) of this process, from /proc/self/status."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return 0


def child_import(url: str, path: str) -> None:
    """Runs in the child process: the import alone, timed; one JSON line on stdout."""
    engine = db.open_engine(url, create=False)
    before = proc_status_kb("VmRSS")
    started = time.perf_counter()
    tally = import_file(engine, Path(path), clock=lambda: IMPORT_AT, actor="bench")
    elapsed = time.perf_counter() - started
    engine.dispose()
    print(json.dumps({"seconds": elapsed, "rss_before_kb": before, "peak_rss_kb": proc_status_kb("VmHWM"),
                      "counted": tally.counted, **tally.counts()}))


def run_import(url: str, path: Path) -> dict[str, Any]:
    """`import_file` in a child process, which reports its time and its peak RSS.

    The peak is the child's VmHWM from /proc, not `ru_maxrss`: Linux carries the parent's peak RSS
    into a child's `ru_maxrss` at exec (the old address space's high-water mark is kept), so
    `getrusage(RUSAGE_CHILDREN)` or `wait4` would report the benchmark's own memory, not the import's.
    The child's `ru_maxrss` is kept in the report under that caveat."""
    child = subprocess.Popen([sys.executable, __file__, "_import", url, str(path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"the import child failed (exit {child.returncode})")
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    result["ru_maxrss_kb"] = usage.ru_maxrss
    return result


def reopen(engine: Engine) -> None:
    """Undo a close so that the next real close does the whole work again (benchmark only)."""
    with engine.begin() as connection:
        connection.execute(delete(statements).where(statements.c.month == MONTH))
        connection.execute(update(periods).where(periods.c.month == MONTH).values(status="open", closed_at=None))


def time_closes(engine: Engine, repeat: int) -> dict[str, Any]:
    dry: list[float] = []
    real: list[float] = []
    statements: tuple[BrokerStatement, ...] = ()
    for _ in range(repeat):
        started = time.perf_counter()
        result = close_month(engine, MONTH, now=CLOSE_AT, dry_run=True)
        dry.append(time.perf_counter() - started)
        statements = result.statements
    for attempt in range(repeat):
        started = time.perf_counter()
        result = close_month(engine, MONTH, now=CLOSE_AT)
        real.append(time.perf_counter() - started)
        assert not result.already_closed and result.statements == statements, "a close differs from its preview"
        if attempt < repeat - 1:
            reopen(engine)
    started = time.perf_counter()
    replay = close_month(engine, MONTH, now=CLOSE_AT)
    replay_seconds = time.perf_counter() - started
    assert replay.already_closed
    return {"dry_run_s": statistics.median(dry), "close_s": statistics.median(real), "replay_s": replay_seconds,
            "dry_run_runs": dry, "close_runs": real, "statements": len(statements),
            "payout_total": str(money_total(s.payout for s in statements))}


def bench_size(backend: Backend, world: World, label: str, csv_path: Path, total: int, repeat: int,
               keep: bool) -> dict[str, Any]:
    url = backend.create(label)
    engine = db.open_engine(url)
    try:
        started = time.perf_counter()
        register(engine, world)
        setup_s = time.perf_counter() - started
        engine.dispose()
        log(f"{backend.name} {label}: registry loaded in {setup_s:.1f}s; importing {total:,} fills")
        imported = run_import(url, csv_path)
        load = os.getloadavg()[0]  # how busy the machine was (this is a 1-minute average)
        if imported["accepted"] != total or imported["rejected"] or imported["conflicts"]:
            raise SystemExit(f"import did not accept every row: {imported}")
        with engine.connect() as connection:
            aggregate_rows = connection.execute(select(func.count()).select_from(aggregates)).scalar_one()
            stored = connection.execute(select(func.count()).select_from(fills)).scalar_one()
        assert stored == total
        log(f"{backend.name} {label}: {total / imported['seconds']:,.0f} fills/s, "
            f"peak RSS {imported['peak_rss_kb'] / 1024:.0f} MB; closing ({repeat}x dry run, {repeat}x real)")
        closes = time_closes(engine, repeat)
        log(f"{backend.name} {label}: close {closes['close_s']:.2f}s, dry run {closes['dry_run_s']:.2f}s")
        return {"fills": total, "setup_s": setup_s, "import_s": imported["seconds"],
                "import_fills_per_s": total / imported["seconds"], "counted": imported["counted"],
                "peak_rss_mb": imported["peak_rss_kb"] / 1024, "rss_before_import_mb": imported["rss_before_kb"] / 1024,
                "ru_maxrss_mb": imported["ru_maxrss_kb"] / 1024,
                "aggregate_rows": aggregate_rows, "db_bytes": backend.size(url), "load_after_import": load, **closes}
    finally:
        engine.dispose()
        if keep:
            log(f"kept {url}")
        else:
            backend.drop(url)


def bench_raw(backend: Backend, world: World, total: int, seed: int, repeat: int, keep: bool) -> dict[str, Any]:
    runs = []
    for attempt in range(repeat):
        url = backend.create(f"raw_{total}")
        try:
            runs.append(backend.raw_insert(url, world, total, seed))
        finally:
            if not keep or attempt < repeat - 1:
                backend.drop(url)
    seconds = statistics.median(runs)
    log(f"{backend.name} raw insert of {total:,} rows: {total / seconds:,.0f} rows/s (median of {repeat})")
    return {"fills": total, "seconds": seconds, "rows_per_s": total / seconds, "runs": runs,
            "load_after": os.getloadavg()[0]}


def bench_backend(backend: Backend, worlds: dict[int, World], files: dict[int, Path], seed: int, repeat: int,
                  keep: bool) -> dict[str, Any]:
    small, large = sorted(files)
    result: dict[str, Any] = {"raw": {}, "import": {}}
    for total in (small, large):
        result["raw"][str(total)] = bench_raw(backend, worlds[total], total, seed, repeat, keep)
    for total in (small, large):
        result["import"][str(total)] = bench_size(backend, worlds[total], f"n{total}", files[total], total, repeat,
                                                  keep)
    imp_small, imp_large = result["import"][str(small)], result["import"][str(large)]
    result["ratios"] = {
        "import_vs_raw_small": imp_small["import_fills_per_s"] / result["raw"][str(small)]["rows_per_s"],
        "import_vs_raw_large": imp_large["import_fills_per_s"] / result["raw"][str(large)]["rows_per_s"],
        "dry_run_large_vs_small": imp_large["dry_run_s"] / imp_small["dry_run_s"],
        "close_large_vs_small": imp_large["close_s"] / imp_small["close_s"],
        "rss_large_vs_small": imp_large["peak_rss_mb"] / imp_small["peak_rss_mb"],
    }
    return result


def bulk_month_url(backend: Backend, directory: Path, total: int, month: Month, seed: int, users: int) -> str:
    """Where `--bulk-month` keeps its month: never bench/http.py's kept database, whose totals a
    close (and another count of users) would not match."""
    label = f"{total}_u{users}_{month.year}{month.month:02d}_s{seed}"
    if isinstance(backend, PostgresBackend):
        return make_url(backend.admin_url).set(database=f"bkr_bench_close_{label}").render_as_string(
            hide_password=False)
    return f"sqlite:///{directory / f'close_{label}.db'}"


def bench_bulk_month(backend: Backend, world: World, total: int, seed: int, repeat: int, directory: Path,
                     keep: bool) -> dict[str, Any]:
    """The close of a month of `total` fills built at the SQL level by bench/http.py's
    `build_summary_db` (its checks included), timed as `bench_size` times it."""
    bench_http = load_http_bench()
    # build_summary_db names its database through this module function
    bench_http.summary_url = lambda b, d, t, m, s: bulk_month_url(b, d, t, m, s, world.users)
    started = time.perf_counter()
    url, dataset = bench_http.build_summary_db(backend, world, total, seed, MONTH, directory)
    log(f"{backend.name}: month of {total:,} fills ready in {time.perf_counter() - started:.0f} s")
    engine = db.open_engine(url, create=False)
    try:
        reopen(engine)  # a kept database holds the last run's close
        with engine.connect() as connection:
            lines = connection.execute(select(func.count()).select_from(aggregates)
                                       .where(aggregates.c.period == MONTH)).scalar_one()
        log(f"{backend.name}: closing {lines:,} aggregate lines ({repeat}x dry run, {repeat}x real)")
        closes = time_closes(engine, repeat)
        log(f"{backend.name}: close {closes['close_s']:.2f}s, dry run {closes['dry_run_s']:.2f}s, "
            f"replay {closes['replay_s']:.2f}s")
        return {"fills": total, "users": world.users, "aggregate_rows": lines, "load_before_close": os.getloadavg()[0],
                "dataset": dataset, **closes}
    finally:
        engine.dispose()
        if keep:
            log(f"kept {url}")
        else:
            backend.drop(url)


# --- the report -----------------------------------------------------------------------------------

def machine(pg_url: str | None) -> dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as info:
        ram_kb = int(info.readline().split()[1])
    facts: dict[str, Any] = {"nproc": os.cpu_count(), "ram_gb": round(ram_kb / 1024 / 1024, 1), "cpu": cpu,
                             "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
                             "kernel": platform.release()}
    if pg_url:
        with psycopg.connect(psycopg_dsn(pg_url)) as connection:
            settings = {name: connection.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                        for name in ("server_version", "fsync", "synchronous_commit", "full_page_writes",
                                     "shared_buffers")}
        facts["postgresql"] = settings
    return facts


def source() -> dict[str, Any]:
    """Which code was measured: the package's location, a digest of its files, the checkout's commit."""
    package = Path(bkr.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    try:
        commit = subprocess.run(["git", "-C", str(package), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {"package": str(package), "src_sha256": digest.hexdigest()[:16], "commit": commit}


def print_table(report: dict[str, Any]) -> None:
    small, large = report["sizes"]
    names = [name for name in ("sqlite", "postgresql") if name in report]
    rows: list[tuple[str, list[str]]] = []

    def add(label: str, value: Callable[[dict[str, Any]], str]) -> None:
        rows.append((label, [value(report[name]) for name in names]))

    for total in (small, large):
        key = str(total)
        add(f"import {total:,} fills (fills/s)", lambda r, k=key: f"{r['import'][k]['import_fills_per_s']:,.0f}")
        add("  raw bulk insert, same rows (rows/s, median)", lambda r, k=key: f"{r['raw'][k]['rows_per_s']:,.0f}")
        add("  import / raw   (aim >= 30%)",
            lambda r, k=("import_vs_raw_small" if total == small else "import_vs_raw_large"): f"{r['ratios'][k]:.1%}")
    for kind, label in (("dry_run_s", "close --dry-run"), ("close_s", "close")):
        for total in (small, large):
            add(f"{label} at {total:,} fills (s, median)", lambda r, k=str(total), c=kind: f"{r['import'][k][c]:.3f}")
        ratio = "dry_run_large_vs_small" if kind == "dry_run_s" else "close_large_vs_small"
        add("  large / small  (aim ~1, fills x10)", lambda r, k=ratio: f"{r['ratios'][k]:.2f}")
    for total in (small, large):
        add(f"peak RSS of import, {total:,} fills (MB)", lambda r, k=str(total): f"{r['import'][k]['peak_rss_mb']:.0f}")
    add("  large / small  (aim ~1, file x10)", lambda r: f"{r['ratios']['rss_large_vs_small']:.2f}")
    for total in (small, large):
        add(f"load average after import, {total:,} fills",
            lambda r, k=str(total): f"{r['import'][k]['load_after_import']:.1f}")
    for total in (small, large):
        add(f"aggregate rows / statements, {total:,} fills",
            lambda r, k=str(total): f"{r['import'][k]['aggregate_rows']:,} / {r['import'][k]['statements']}")
    for total in (small, large):
        add(f"database size, {total:,} fills (MB)", lambda r, k=str(total): f"{r['import'][k]['db_bytes'] / 1e6:,.0f}")

    print_rows(report, rows, "bkr ingest + close benchmark")


def print_bulk_table(report: dict[str, Any]) -> None:
    names = [name for name in ("sqlite", "postgresql") if name in report]
    rows: list[tuple[str, list[str]]] = []

    def add(label: str, value: Callable[[dict[str, Any]], str]) -> None:
        rows.append((label, [value(report[name]) for name in names]))

    add("fills in the month (bulk-loaded)", lambda r: f"{r['fills']:,}")
    add("users", lambda r: f"{r['users']:,}")
    add("aggregate lines / statements", lambda r: f"{r['aggregate_rows']:,} / {r['statements']}")
    add("close --dry-run (s, median)", lambda r: f"{r['dry_run_s']:.2f}")
    add("close (s, median)   (aim < 10 s)", lambda r: f"{r['close_s']:.2f}")
    add("replay of the closed month (s)", lambda r: f"{r['replay_s']:.2f}")
    add("total payout (USD)", lambda r: r["payout_total"])
    add("load average before the closes", lambda r: f"{r['load_before_close']:.1f}")
    print_rows(report, rows, "bkr close benchmark, month built at the SQL level")


def print_rows(report: dict[str, Any], rows: list[tuple[str, list[str]]], title: str) -> None:
    names = [name for name in ("sqlite", "postgresql") if name in report]
    width = max(len(label) for label, _ in rows) + 2
    facts = report["machine"]
    print(f"\n{title}, {report['date']}: {facts['nproc']} CPUs ({facts['cpu']}), "
          f"{facts['ram_gb']} GB, Python {facts['python']}, SQLite {facts['sqlite']}"
          + (f", PostgreSQL {facts['postgresql']['server_version']}" if "postgresql" in facts else ""))
    code = report["source"]
    print(f"code: {code['package']} (commit {code['commit']}, files sha256 {code['src_sha256']}); "
          f"{report['users']:,} users, {report['brokers']} brokers, medians of {report['repeat']}"
          + (", users growing with the fills" if report.get("growing_users") else ""))
    print(f"{'':{width}}" + "".join(f"{name:>16}" for name in names))
    for label, values in rows:
        print(f"{label:{width}}" + "".join(f"{value:>16}" for value in values))
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fills", type=int, default=1_000_000, help="fills in the large file (default 1M)")
    parser.add_argument("--pg", metavar="URL", help="PostgreSQL server URL; a database is created and dropped")
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--pg-only", action="store_true")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each close and raw insert (median)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tmp", type=Path, help="directory for the CSV files and SQLite databases")
    parser.add_argument("--keep", action="store_true", help="keep the files and databases (to profile them)")
    parser.add_argument("--growing-users", action="store_true",
                        help=f"one user per {GROWING_FILLS_PER_USER} fills of each file (default: ~50k users)")
    parser.add_argument("--bulk-month", action="store_true",
                        help="only the close, of an N-fill month built at the SQL level (no import)")
    args = parser.parse_args()
    if args.pg_only and not args.pg:
        parser.error("--pg-only needs --pg URL")
    if not args.sqlite_only and not args.pg:
        log("no --pg URL: PostgreSQL is skipped")
    run_pg = bool(args.pg) and not args.sqlite_only
    run_sqlite = not args.pg_only
    large = args.fills
    small = max(1, large // 10)
    worlds = {total: world_for(total, args.seed, args.growing_users, large) for total in (small, large)}
    world = worlds[large]
    if small < worlds[small].keys and not args.bulk_month:
        log(f"note: {small:,} fills do not reach every one of the {worlds[small].keys:,} (user, market) keys; "
            "the two closes will not read the same aggregate rows")

    report: dict[str, Any] = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "sizes": [small, large],
                              "repeat": args.repeat, "users": world.users, "brokers": len(world.broker_ids),
                              "growing_users": args.growing_users, "bulk_month": args.bulk_month,
                              "machine": machine(args.pg if run_pg else None), "source": source()}
    if args.bulk_month:
        # a fixed place, so that --keep finds the month again
        kept = (args.tmp or Path(tempfile.gettempdir())) / "bkr-bench-close"
        kept.mkdir(parents=True, exist_ok=True)
        if run_sqlite:
            report["sqlite"] = bench_bulk_month(SqliteBackend(kept), world, large, args.seed, args.repeat, kept,
                                                args.keep)
        if run_pg:
            report["postgresql"] = bench_bulk_month(PostgresBackend(args.pg), world, large, args.seed, args.repeat,
                                                    kept, args.keep)
        print_bulk_table(report)
        print(json.dumps(report, sort_keys=True, default=str))
        return

    directory = Path(tempfile.mkdtemp(prefix="bkr-bench-", dir=args.tmp))
    try:
        files = {}
        for total in (small, large):
            files[total] = directory / f"fills-{total}.csv"
            started = time.perf_counter()
            write_csv(files[total], worlds[total], total, args.seed)
            log(f"generated {files[total]} ({files[total].stat().st_size / 1e6:,.0f} MB) "
                f"in {time.perf_counter() - started:.1f}s")
        if run_sqlite:
            report["sqlite"] = bench_backend(SqliteBackend(directory), worlds, files, args.seed, args.repeat,
                                             args.keep)
        if run_pg:
            report["postgresql"] = bench_backend(PostgresBackend(args.pg), worlds, files, args.seed, args.repeat,
                                                 args.keep)
    finally:
        if args.keep:
            log(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    print_table(report)
    print(json.dumps(report, sort_keys=True))


if __name__ == "__main__":
    # Run as the module `ingest_close`, the one bench/http.py imports: its isinstance checks on the
    # backends then see the classes this run makes.
    import ingest_close

    if len(sys.argv) == 4 and sys.argv[1] == "_import":
        ingest_close.child_import(sys.argv[2], sys.argv[3])
    else:
        ingest_close.main()
