"""Benchmark: fills ingested over HTTP beside the direct import of the same fills, and the broker
reads' latency under 50 concurrent clients on a database holding a month of 10M fills, beside a
bare endpoint of the same server.

    .venv/bin/python bench/http.py --pg postgresql+psycopg://postgres@127.0.0.1:54329/postgres
    .venv/bin/python bench/http.py --pg URL --fills 20000 --summary-fills 200000 --seconds 5   # a quick look
    make bench-http                              # the same, with a throwaway PostgreSQL

Both parts run a real server, `bkr serve --workers 2 --no-scheduled-close`, in a child process on
a free port of 127.0.0.1, on SQLite and on PostgreSQL (`--sqlite-only`, `--pg-only`). The clients
are httpx, in this process. What it does, per database:

1. HTTP ingest. The fills of `bench/ingest_close.py`'s generator (one month, N = `--fills`) are
   cut into batches of `--batch` (1,000) and serialized to JSON before the clock starts (money as
   strings). `--ingest-clients` threads (4) post them to `POST /v1/fills` with an operator bearer
   key, into a fresh database that holds the registry. The time runs from the first request to
   the last answer; every fill must come back accepted. Beside it, in the same run, `import_file`
   of the same fills (a CSV file) into another fresh database, timed in a child process as
   `ingest_close.py` does. Printed: both rates and their ratio.
2. Broker summary. A database holding one month of `--summary-fills` fills (10M) is built at the
   SQL level, since importing 10M fills through bkr would take hours: the generator's rows, with
   the columns the writer derives (USD volume and fee, content key, attribution, affiliate rate,
   month) computed by the same domain functions, are bulk-loaded into `fills` (PostgreSQL `COPY`,
   SQLite `executemany`) by two processes; `aggregates` and `daily_volumes` are then built with
   one SQL `GROUP BY` each. Checks: the first fills written through `bkr.program.writer.write_batch`
   into a scratch database are stored exactly as the bulk load stores them; every broker's totals
   in `aggregates` and `daily_volumes` equal the totals summed in Python while generating; three
   brokers' aggregate totals equal a direct `SUM` over their fills. With `--keep` the database is
   kept and reused by the next run with the same size, month and seed (with `--tmp DIR`, SQLite's
   under DIR/bkr-bench-http/). Then, for each read of `--endpoints`, `--clients` (50) concurrent
   clients send requests for a random broker of the month, back to back, for `--seconds` (10) per
   round, `--rounds` (3) rounds after a warm-up, the reads taking turns within a round: `GET /healthz`
   (the bare endpoint: no database, no signature; the server's and the clients' own cost), and the
   signed `GET /v1/broker/{id}/summary`, `…/volume/daily` and `…/users` (the first page of 100).
   Per round p50/p90/p99/max and requests/s, and the median of the rounds, per read.

The month of the summary database is the current UTC month (the summary reports the month in
progress). Progress goes to stderr; the table and one JSON line to stdout.
"""

# This file shares its name with the standard library's `http` package, and Python puts a
# script's directory first on sys.path: `import http` (in httpx, uvicorn) would then find this
# file. Move the directory to the end, where `ingest_close` is still found.
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import queue  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sqlite3  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from decimal import Decimal  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
import psycopg  # noqa: E402
from sqlalchemy import Engine, func, select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bkr.domain.config import DEFAULT_CONFIG  # noqa: E402
from bkr.domain.fills import Attribution, Fill, MarketType, Side, attribute, price_in_usd  # noqa: E402
from bkr.domain.money import MONEY, ZERO, canonical  # noqa: E402
from bkr.domain.operators import Role  # noqa: E402
from bkr.domain.payout import fee_base  # noqa: E402
from bkr.domain.periods import Month  # noqa: E402
from bkr.domain.signing import KeyPair, sign, signing_string  # noqa: E402
from bkr.ingest.readers import RawRow  # noqa: E402
from bkr.program.importer import import_rows  # noqa: E402
from bkr.program.keys import create_broker_key  # noqa: E402
from bkr.program.operators import add_operator  # noqa: E402
from bkr.store import db  # noqa: E402
from bkr.store.bulk import COLUMNS  # noqa: E402
from bkr.store.db import user_rank_key  # noqa: E402
from bkr.store.partitions import ensure_fill_partitions  # noqa: E402
from bkr.store.tables import aggregates, daily_volumes, fills, user_totals  # noqa: E402
from bkr.store.types import ordered_key, to_micros  # noqa: E402
from ingest_close import (  # noqa: E402
    MAX_USERS,
    ROW_FIELDS,
    USER_BASE,
    Backend,
    PostgresBackend,
    Row,
    SqliteBackend,
    World,
    chunk_count,
    generate,
    generate_chunk,
    log,
    machine,
    make_world,
    psycopg_dsn,
    register,
    run_import,
    source,
    write_csv,
)

WINDOW_MS = 5_000
BUILD_PROCESSES = 2
CHECKED_FILLS = 2_000  # fills written through the real writer to check the bulk load's columns

Stored = tuple[Any, ...]  # one `fills` row, in `bkr.store.bulk.COLUMNS` order, as Python values
Totals = dict[int, list[Any]]  # broker -> [counted fills, volume_usd, fee_usd, fee_base_usd]


# --- the machine's load ---------------------------------------------------------------------------

class LoadSampler:
    """The 1-minute load average, sampled every two seconds while a phase runs."""

    def __init__(self) -> None:
        self.samples: list[float] = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(2.0):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> "LoadSampler":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict[str, float]:
        return {"min": min(self.samples), "max": max(self.samples), "mean": statistics.fmean(self.samples)}


# --- the server -----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serving(url: str, workers: int, log_path: Path) -> Iterator[str]:
    """`bkr serve` on `url` in a child process (its own process group); yields its base URL."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "bkr"), "serve", "--db", url, "--host", "127.0.0.1",
               "--port", str(port), "--workers", str(workers), "--no-scheduled-close"]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BKR_")}
    with log_path.open("ab") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=environment,
                                  start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                raise SystemExit(f"bkr serve exited ({server.returncode}); see {log_path}")
            try:
                if httpx.get(f"{base}/openapi.json", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"bkr serve did not answer within 60 s; see {log_path}")
            time.sleep(0.2)
        yield base
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)  # uvicorn shuts its workers down
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


# --- part 1: HTTP ingest beside the direct import -------------------------------------------------

# the generator makes neither corrections nor trade ids: its rows hold the other fields, in order
GENERATED_FIELDS = tuple(name for name in ROW_FIELDS if name != "trade_id")


def fill_object(row: Row) -> dict[str, Any]:
    """One generated fill as the JSON object of `POST /v1/fills`: the fields of docs/fills.md,
    money as strings, booleans and the broker id as JSON values."""
    return dict(zip(GENERATED_FIELDS, row, strict=True))


def json_batches(world: World, total: int, seed: int, size: int) -> list[bytes]:
    bodies: list[bytes] = []
    pending: list[dict[str, Any]] = []
    for rows in generate(world, total, seed):
        for row in rows:
            pending.append(fill_object(row))
            if len(pending) == size:
                bodies.append(json.dumps(pending).encode())
                pending = []
    if pending:
        bodies.append(json.dumps(pending).encode())
    return bodies


def post_all(base: str, token: str, bodies: Sequence[bytes], clients: int) -> dict[str, Any]:
    """Post every body from `clients` threads; the wall time from the first request to the last answer."""
    work: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    for body in bodies:
        work.put(body)
    counts = {"accepted": 0, "duplicates": 0, "conflicts": 0, "rejected": 0}
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def client() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=300) as session:
            while True:
                try:
                    body = work.get_nowait()
                except queue.Empty:
                    return
                started = time.perf_counter()
                response = session.post("/v1/fills", content=body)
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    if response.status_code >= 300:
                        failures.append(f"{response.status_code} {response.text[:300]}")
                        continue
                    answer = response.json()
                    for name in counts:
                        counts[name] += int(answer[name])

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "failures": failures, "request_p50_s": statistics.median(latencies),
            "request_max_s": max(latencies), **counts}


def fresh_registry(backend: Backend, world: World, label: str) -> tuple[str, float]:
    url = backend.create(label)
    engine = db.open_engine(url)
    try:
        started = time.perf_counter()
        register(engine, world)
        return url, time.perf_counter() - started
    finally:
        engine.dispose()


def bench_ingest(backend: Backend, world: World, total: int, bodies: Sequence[bytes], csv_path: Path,
                 clients: int, workers: int, work: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"fills": total}
    url, setup_s = fresh_registry(backend, world, "http_ingest")
    try:
        engine = db.open_engine(url, create=False)
        with engine.begin() as connection:
            token = add_operator(connection, "bench", Role.OPERATOR, datetime.now(UTC), created_by=None).token
        with serving(url, workers, work / f"serve-ingest-{backend.name}.log") as base, LoadSampler() as load:
            log(f"{backend.name}: posting {total:,} fills in {len(bodies)} batches from {clients} clients to {base}")
            posted = post_all(base, token, bodies, clients)
        with engine.connect() as connection:
            stored = connection.execute(select(func.count()).select_from(fills)).scalar_one()
        engine.dispose()
        if posted["failures"] or posted["accepted"] != total or stored != total:
            raise SystemExit(f"HTTP ingest did not accept every fill: stored {stored}, "
                             f"{ {k: v for k, v in posted.items() if k != 'failures'} }, {posted['failures'][:3]}")
        result["http"] = {**posted, "fills_per_s": total / posted["seconds"], "load": load.summary(),
                          "registry_s": setup_s}
        log(f"{backend.name}: HTTP ingest {total / posted['seconds']:,.0f} fills/s")
    finally:
        backend.drop(url)
    url, setup_s = fresh_registry(backend, world, "direct_import")
    try:
        with LoadSampler() as load:
            imported = run_import(url, csv_path)
        if imported["accepted"] != total or imported["rejected"] or imported["conflicts"]:
            raise SystemExit(f"the direct import did not accept every row: {imported}")
        result["direct"] = {"seconds": imported["seconds"], "fills_per_s": total / imported["seconds"],
                            "load": load.summary(), "registry_s": setup_s}
        log(f"{backend.name}: direct import {total / imported['seconds']:,.0f} fills/s")
    finally:
        backend.drop(url)
    result["http_vs_direct"] = result["http"]["fills_per_s"] / result["direct"]["fills_per_s"]
    return result


# --- part 2: the month of the summary, built at the SQL level -------------------------------------

def stored_fills(world: World, total: int, seed: int, chunk: int, month: Month) -> tuple[list[Stored], Totals]:
    """Chunk `chunk` of the generated month as the writer stores it (every column of `fills`, by
    the domain's own pricing and attribution), and what its counted fills add per broker."""
    rate_of_code = {code: rate for _, code, rate in world.codes}
    usd_rates = DEFAULT_CONFIG.usd_rates
    rows: list[Stored] = []
    totals: Totals = {}
    for r in generate_chunk(world, total, seed, chunk, month):
        fill = Fill(r[0], r[1], r[2], r[3], MarketType(r[4]), Side(r[5]), Decimal(r[6]), Decimal(r[7]),
                    Decimal(r[8]), r[9], r[10], datetime.fromisoformat(r[11]), r[12], r[13], r[14])
        priced = price_in_usd(fill, usd_rates)
        attribution = attribute(fill.broker_id, fill.fill_type, fill.via_api,
                                None if fill.broker_id is None else True, True)  # every broker active, user known
        rate: Decimal | None = None
        if attribution is Attribution.COUNTED:
            assert fill.broker_id is not None
            code = world.code_of_user[int(fill.user_id) - USER_BASE]
            rate = ZERO if code is None else rate_of_code[code]
            sums = totals.setdefault(fill.broker_id, [0, ZERO, ZERO, ZERO])
            sums[0] += 1
            sums[1] = MONEY.add(sums[1], priced.volume_usd)
            sums[2] = MONEY.add(sums[2], priced.fee_usd)
            sums[3] = MONEY.add(sums[3], fee_base(priced.fee_usd))
        rows.append((fill.fill_id, fill.order_id, fill.user_id, fill.symbol, fill.market_type.value, fill.side.value,
                     fill.price, fill.quantity, fill.fee, fill.fee_symbol, fill.is_maker, fill.timestamp,
                     fill.broker_id, fill.via_api, fill.fill_type, priced.volume_usd, priced.fee_usd,
                     fill.content_key(), attribution.value, rate, month, month, None, None, None, None))
    return rows, totals


def sqlite_row(row: Stored) -> tuple[Any, ...]:
    """A row as SQLite stores it (`bkr.store.types`): canonical decimal text, integer microseconds."""
    return tuple(canonical(v) if isinstance(v, Decimal) else to_micros(v) if isinstance(v, datetime)
                 else int(v) if isinstance(v, bool) else str(v) if isinstance(v, Month) else v for v in row)


def postgres_row(row: Stored) -> tuple[Any, ...]:
    """A row for COPY: decimals as their canonical text (NUMERIC parses it), the rest as is."""
    return tuple(canonical(v) if isinstance(v, Decimal) else str(v) if isinstance(v, Month) else v for v in row)


_WORKER: dict[str, Any] = {}


def _build_worker_init(world: World, total: int, seed: int, month: Month, pg_url: str | None) -> None:
    _WORKER.update(world=world, total=total, seed=seed, month=month)
    if pg_url:
        _WORKER["pg"] = psycopg.connect(psycopg_dsn(pg_url))


def _build_worker(chunk: int) -> tuple[list[tuple[Any, ...]] | None, Totals]:
    """Makes one chunk; on PostgreSQL also COPYs it (one transaction per chunk), on SQLite hands
    the rows back to the one writer."""
    rows, totals = stored_fills(_WORKER["world"], _WORKER["total"], _WORKER["seed"], chunk, _WORKER["month"])
    connection = _WORKER.get("pg")
    if connection is None:
        return [sqlite_row(row) for row in rows], totals
    with connection.cursor() as cursor, cursor.copy(f"COPY fills ({', '.join(COLUMNS)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(postgres_row(row))
    connection.commit()
    return None, totals


def merge(into: Totals, more: Totals) -> None:
    for broker_id, sums in more.items():
        mine = into.setdefault(broker_id, [0, ZERO, ZERO, ZERO])
        mine[0] += sums[0]
        for index in (1, 2, 3):
            mine[index] = MONEY.add(mine[index], sums[index])


class DecimalSum:
    """An exact SUM over SQLite's decimal text (the bench's own aggregate; bkr never sums in SQLite SQL)."""

    def __init__(self) -> None:
        self.total = ZERO

    def step(self, value: str | None) -> None:
        if value is not None:
            self.total = MONEY.add(self.total, Decimal(value))

    def finalize(self) -> str:
        return canonical(self.total)


def sqlite_connect(url: str) -> sqlite3.Connection:
    path = db.sqlite_path(url)
    assert path is not None
    connection = sqlite3.connect(path, isolation_level=None)
    connection.create_aggregate("dec_sum", 1, DecimalSum)  # type: ignore[arg-type]
    connection.create_function("dec_rank_key", 2, lambda base, adjustment: ordered_key(
        user_rank_key(Decimal(base), Decimal(adjustment))), deterministic=True)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


# the users-merged totals bkr keeps beside the aggregates, from them
TOTALS_SQL = ("INSERT INTO aggregate_totals (broker_id, period, fill_month, market_type, affiliate_rate, kind, fills, "
              "volume_usd, fee_usd, fee_base_usd) SELECT broker_id, period, fill_month, market_type, affiliate_rate, "
              "kind, sum(fills), {sum}(volume_usd), {sum}(fee_usd), {sum}(fee_base_usd) FROM aggregates "
              "GROUP BY 1, 2, 3, 4, 5, 6")
# each user's month, from the aggregates, as migration 0016 fills it (every line here is of the month's own fills)
# every fill's id claimed, as the writer claims it (`bkr.store.bulk`)
CLAIMS_SQL = "INSERT INTO fill_keys (fill_id, content_key) SELECT fill_id, content_key FROM fills"
USERS_SQL = ("INSERT INTO user_totals (broker_id, period, user_id, spot_volume_usd, futures_volume_usd, fee_usd, "
             "fee_base_usd, adjustment_fee_base_usd, rank_key) SELECT broker_id, period, user_id, "
             "{sum}(CASE WHEN market_type = 'SPOT' THEN volume_usd ELSE {zero} END), "
             "{sum}(CASE WHEN market_type <> 'SPOT' THEN volume_usd ELSE {zero} END), {sum}(fee_usd), "
             "{sum}(fee_base_usd), {zero}, {zero} FROM aggregates GROUP BY 1, 2, 3")
USERS_RANK_SQL = {"postgresql": "UPDATE user_totals SET rank_key = -(fee_base_usd + adjustment_fee_base_usd)",
                  "sqlite": "UPDATE user_totals SET rank_key = dec_rank_key(fee_base_usd, adjustment_fee_base_usd)"}
AGGREGATE_SQL = {
    "postgresql": (
        "INSERT INTO aggregates (broker_id, period, fill_month, user_id, market_type, affiliate_rate, fills, "
        "volume_usd, fee_usd, fee_base_usd) SELECT broker_id, period, fill_month, user_id, market_type, "
        "affiliate_rate, count(*), sum(volume_usd), sum(fee_usd), sum(CASE WHEN fee_usd > 0 THEN fee_usd ELSE 0 END) "
        "FROM fills WHERE attribution = 'counted' GROUP BY 1, 2, 3, 4, 5, 6",
        "INSERT INTO daily_volumes (broker_id, period, day, market_type, fills, volume_usd, fee_base_usd) "
        "SELECT broker_id, period, to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD'), market_type, count(*), "
        "sum(volume_usd), sum(CASE WHEN fee_usd > 0 THEN fee_usd ELSE 0 END) "
        "FROM fills WHERE attribution = 'counted' GROUP BY 1, 2, 3, 4",
        TOTALS_SQL.format(sum="sum"), USERS_SQL.format(sum="sum", zero="0"), USERS_RANK_SQL["postgresql"]),
    "sqlite": (
        # fee_usd is text on SQLite: its sign is its first character
        "INSERT INTO aggregates (broker_id, period, fill_month, user_id, market_type, affiliate_rate, fills, "
        "volume_usd, fee_usd, fee_base_usd) SELECT broker_id, period, fill_month, user_id, market_type, "
        "affiliate_rate, count(*), dec_sum(volume_usd), dec_sum(fee_usd), "
        "dec_sum(CASE WHEN fee_usd LIKE '-%' OR fee_usd = '0' THEN '0' ELSE fee_usd END) "
        "FROM fills WHERE attribution = 'counted' GROUP BY 1, 2, 3, 4, 5, 6",
        "INSERT INTO daily_volumes (broker_id, period, day, market_type, fills, volume_usd, fee_base_usd) "
        "SELECT broker_id, period, strftime('%Y-%m-%d', ts / 1000000, 'unixepoch'), market_type, count(*), "
        "dec_sum(volume_usd), dec_sum(CASE WHEN fee_usd LIKE '-%' OR fee_usd = '0' THEN '0' ELSE fee_usd END) "
        "FROM fills WHERE attribution = 'counted' GROUP BY 1, 2, 3, 4",
        TOTALS_SQL.format(sum="dec_sum"), USERS_SQL.format(sum="dec_sum", zero="'0'"), USERS_RANK_SQL["sqlite"]),
}


def check_against_writer(world: World, total: int, seed: int, month: Month, directory: Path) -> int:
    """Write the month's first fills through bkr's own writer into a scratch SQLite database and
    check that the bulk load stores exactly the same columns for them."""
    url = f"sqlite:///{directory / 'writer-check.db'}"
    engine = db.open_engine(url)
    try:
        register(engine, world)
        generated = generate_chunk(world, total, seed, 0, month)[:CHECKED_FILLS]
        raw = [RawRow(index + 1, fill_object(row), "") for index, row in enumerate(generated)]
        tally = import_rows(engine, raw, source="writer-check", clock=lambda: month.end, actor="bench")
        assert tally.accepted == len(generated), tally
        with engine.connect() as connection:
            written = [tuple(r) for r in connection.execute(select(fills).order_by(fills.c.fill_id))]
        ours = sorted(stored_fills(world, total, seed, 0, month)[0][:CHECKED_FILLS])
        skip = COLUMNS.index("import_id")  # the import id: only the writer has one
        for mine, theirs in zip(ours, written, strict=True):
            if mine[:skip] + mine[skip + 1:] != theirs[:skip] + theirs[skip + 1:]:
                raise SystemExit(f"the bulk load differs from the writer:\n  {mine}\n  {theirs}")
        return len(ours)
    finally:
        engine.dispose()
        db_path = directory / "writer-check.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)


def aggregate_totals(engine: Engine) -> tuple[Totals, dict[int, Decimal]]:
    """Per broker: the totals in `aggregates`, and the volume in `daily_volumes`, summed exactly in Python."""
    totals: Totals = {}
    with engine.connect() as connection:
        for row in connection.execute(select(aggregates.c.broker_id, aggregates.c.fills, aggregates.c.volume_usd,
                                             aggregates.c.fee_usd, aggregates.c.fee_base_usd)):
            merge(totals, {row.broker_id: [row.fills, row.volume_usd, row.fee_usd, row.fee_base_usd]})
        daily: dict[int, Decimal] = {}
        for broker_id, volume in connection.execute(select(daily_volumes.c.broker_id, daily_volumes.c.volume_usd)):
            daily[broker_id] = MONEY.add(daily.get(broker_id, ZERO), volume)
        by_user: Totals = {}  # broker -> [0, volume, fee, fee base], from user_totals
        for row in connection.execute(select(user_totals)):
            volume = MONEY.add(row.spot_volume_usd, row.futures_volume_usd)
            if row.rank_key != MONEY.minus(MONEY.add(row.fee_base_usd, row.adjustment_fee_base_usd)):
                raise SystemExit(f"user_totals: a wrong rank key for user {row.user_id}")
            merge(by_user, {row.broker_id: [0, volume, row.fee_usd, row.fee_base_usd]})
    if {b: s[1:] for b, s in by_user.items()} != {b: s[1:] for b, s in totals.items()}:
        raise SystemExit("user_totals differ from the aggregates")
    return totals, daily


def direct_sums(backend: Backend, url: str, broker_ids: Sequence[int]) -> dict[int, list[Any]]:
    """Three brokers' totals straight from `fills`, by the database's own SUM."""
    found: dict[int, list[Any]] = {}
    for broker_id in broker_ids:
        if backend.name == "postgresql":
            with psycopg.connect(psycopg_dsn(url)) as connection:
                row = connection.execute(
                    "SELECT count(*), sum(volume_usd), sum(fee_usd), "
                    "sum(CASE WHEN fee_usd > 0 THEN fee_usd ELSE 0 END) FROM fills "
                    "WHERE broker_id = %s AND attribution = 'counted'", (broker_id,)).fetchone()
        else:
            connection_ = sqlite_connect(url)
            try:
                row = connection_.execute(
                    "SELECT count(*), dec_sum(volume_usd), dec_sum(fee_usd), "
                    "dec_sum(CASE WHEN fee_usd LIKE '-%' OR fee_usd = '0' THEN '0' ELSE fee_usd END) "
                    "FROM fills WHERE broker_id = ? AND attribution = 'counted'", (broker_id,)).fetchone()
            finally:
                connection_.close()
        assert row is not None
        found[broker_id] = [int(row[0]), *(Decimal(str(v)) for v in row[1:])]
    return found


def dataset_meta(url: str) -> dict[str, Any] | None:
    try:
        engine = db.make_engine(url)
        try:
            with engine.connect() as connection:
                text = connection.exec_driver_sql("SELECT document FROM bench_dataset").scalar()
        finally:
            engine.dispose()
    except Exception:  # no such database or table: nothing to reuse
        return None
    return None if text is None else dict(json.loads(text))


def summary_url(backend: Backend, directory: Path, total: int, month: Month, seed: int) -> str:
    label = f"summary_{total}_{month.year}{month.month:02d}_s{seed}"
    if isinstance(backend, PostgresBackend):
        return make_url(backend.admin_url).set(database=f"bkr_bench_http_{label}").render_as_string(
            hide_password=False)
    return f"sqlite:///{directory / f'{label}.db'}"


def pg_database_exists(backend: PostgresBackend, name: str | None) -> bool:
    with psycopg.connect(psycopg_dsn(backend.admin_url), autocommit=True) as connection:
        return connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def build_summary_db(backend: Backend, world: World, total: int, seed: int, month: Month,
                     directory: Path) -> tuple[str, dict[str, Any]]:
    """The month of `total` fills with its aggregates; reused when an earlier run kept it."""
    url = summary_url(backend, directory, total, month, seed)
    wanted = {"fills": total, "month": str(month), "seed": seed, "users": world.users}
    exists = (pg_database_exists(backend, make_url(url).database) if isinstance(backend, PostgresBackend)
              else Path(url.removeprefix("sqlite:///")).exists())
    if exists:
        meta = dataset_meta(url)
        if meta is not None and all(meta.get(k) == v for k, v in wanted.items()):
            log(f"{backend.name}: reusing {url} (built in {meta['build_s']:.0f} s by an earlier run)")
            return url, {**meta, "reused": True}
    if isinstance(backend, PostgresBackend):
        backend._admin(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
        backend._admin(f'CREATE DATABASE "{make_url(url).database}"')
    else:
        backend.drop(url)

    started = time.perf_counter()
    engine = db.open_engine(url)
    register(engine, world)
    with engine.begin() as connection:  # the month's partition of fills, on PostgreSQL
        ensure_fill_partitions(connection, [month])
    engine.dispose()
    log(f"{backend.name}: loading {total:,} fills of {month} into {url} ({BUILD_PROCESSES} processes)")
    totals: Totals = {}
    load_started = time.perf_counter()
    context = multiprocessing.get_context("fork")
    pg_url = url if backend.name == "postgresql" else None
    writer = None if pg_url else sqlite_connect(url)
    insert = f"INSERT INTO fills ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"
    chunks = chunk_count(total)
    with context.Pool(BUILD_PROCESSES, _build_worker_init, (world, total, seed, month, pg_url)) as pool:
        for done, (rows, chunk_totals) in enumerate(pool.imap_unordered(_build_worker, range(chunks)), 1):
            merge(totals, chunk_totals)
            if writer is not None and rows is not None:
                writer.execute("BEGIN IMMEDIATE")
                writer.executemany(insert, rows)
                writer.execute("COMMIT")
            if done % 20 == 0 or done == chunks:
                elapsed = time.perf_counter() - load_started
                log(f"{backend.name}: {min(total, done * 50_000):,} fills in {elapsed:.0f} s")
    fills_s = time.perf_counter() - load_started

    aggregate_started = time.perf_counter()
    if writer is not None:
        writer.execute("BEGIN IMMEDIATE")
        for sql in (CLAIMS_SQL, *AGGREGATE_SQL["sqlite"]):
            writer.execute(sql)
        writer.execute("COMMIT")
        writer.execute("ANALYZE")
        writer.close()
    else:
        with psycopg.connect(psycopg_dsn(url)) as connection:
            for sql in (CLAIMS_SQL, *AGGREGATE_SQL["postgresql"]):
                connection.execute(sql)
            connection.commit()
        with psycopg.connect(psycopg_dsn(url), autocommit=True) as connection:
            connection.execute("VACUUM ANALYZE")
    aggregates_s = time.perf_counter() - aggregate_started
    build_s = time.perf_counter() - started

    meta = {**wanted, "build_s": build_s, "fills_load_s": fills_s, "aggregates_s": aggregates_s,
            "built_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "counted": sum(s[0] for s in totals.values()),
            "volume_usd": canonical(sum((s[1] for s in totals.values()), ZERO))}
    meta["checks"] = check_summary_db(backend, url, totals)
    engine = db.make_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE bench_dataset (document TEXT NOT NULL)")
        connection.exec_driver_sql("INSERT INTO bench_dataset (document) VALUES (?)" if backend.name == "sqlite"
                                   else "INSERT INTO bench_dataset (document) VALUES (%(d)s)",
                                   (json.dumps(meta),) if backend.name == "sqlite" else {"d": json.dumps(meta)})
    engine.dispose()
    log(f"{backend.name}: built in {build_s:.0f} s (fills {fills_s:.0f} s, aggregates {aggregates_s:.0f} s)")
    return url, {**meta, "reused": False}


def check_summary_db(backend: Backend, url: str, expected: Totals) -> dict[str, Any]:
    engine = db.open_engine(url, create=False)
    try:
        found, daily = aggregate_totals(engine)
        with engine.connect() as connection:
            stored = connection.execute(select(func.count()).select_from(fills)).scalar_one()
            aggregate_rows = connection.execute(select(func.count()).select_from(aggregates)).scalar_one()
            daily_rows = connection.execute(select(func.count()).select_from(daily_volumes)).scalar_one()
    finally:
        engine.dispose()
    if found != expected:
        wrong = sorted(b for b in set(found) | set(expected) if found.get(b) != expected.get(b))
        raise SystemExit(f"aggregates differ from the generated totals for brokers {wrong[:10]}")
    if any(daily.get(b) != sums[1] for b, sums in expected.items()):
        raise SystemExit("daily_volumes differ from the generated volumes")
    biggest = sorted(expected, key=lambda b: expected[b][0])
    sample = [biggest[-1], biggest[len(biggest) // 2], biggest[0]]
    direct = direct_sums(backend, url, sample)
    if any(direct[b] != expected[b] for b in sample):
        raise SystemExit(f"a direct SUM over fills differs from the aggregates: {direct}")
    return {"stored_fills": stored, "aggregate_rows": aggregate_rows, "daily_rows": daily_rows,
            "brokers_checked": len(expected), "direct_sum_brokers": sample}


# --- part 2: the load ------------------------------------------------------------------------------

def broker_keys(url: str, broker_ids: Sequence[int]) -> dict[int, KeyPair]:
    """A fresh key pair per broker (a secret is shown only when created, so a reused database gets new ones)."""
    engine = db.open_engine(url, create=False)
    try:
        with engine.begin() as connection:
            return {b: create_broker_key(connection, b, datetime.now(UTC), actor="bench") for b in broker_ids}
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Endpoint:
    """One read measured under load: its path for a broker, and the instruction its request is
    signed for (None: not signed, as the bare endpoint)."""

    name: str
    instruction: str | None
    path: Callable[[int], str]


# The bare endpoint first: the same server's cost of answering at all (HTTP, routing, JSON, the
# event loop and this process's clients), beside which bkr's own work on the others shows.
ENDPOINTS = (
    Endpoint("healthz", None, lambda _: "/healthz"),
    Endpoint("summary", "brokerSummaryQuery", lambda b: f"/v1/broker/{b}/summary"),
    Endpoint("daily", "brokerDailyVolumeQuery", lambda b: f"/v1/broker/{b}/volume/daily"),
    Endpoint("users", "brokerUsersQuery", lambda b: f"/v1/broker/{b}/users"),
)


def signed_headers(pair: KeyPair, instruction: str) -> dict[str, str]:
    timestamp = int(time.time() * 1000)
    message = signing_string(instruction, {}, timestamp, WINDOW_MS)
    return {"X-API-Key": pair.api_key, "X-Signature": sign(pair.secret, message), "X-Timestamp": str(timestamp),
            "X-Window": str(WINDOW_MS)}


async def load_round(base: str, endpoint: Endpoint, keys: dict[int, KeyPair], clients: int, seconds: float,
                     seed: int) -> dict[str, Any]:
    """`clients` closed-loop clients for `seconds`: each sends its next request when the last one
    is answered, for a random broker of the month. The request is signed before its clock starts."""
    latencies: list[float] = []
    failures: dict[str, int] = {}
    ids = sorted(keys)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as session:
        deadline = time.perf_counter() + seconds

        async def client(number: int) -> None:
            rng = random.Random(seed * 1000 + number)
            while time.perf_counter() < deadline:
                broker_id = rng.choice(ids)
                headers = ({} if endpoint.instruction is None
                           else signed_headers(keys[broker_id], endpoint.instruction))
                started = time.perf_counter()
                try:
                    response = await session.get(endpoint.path(broker_id), headers=headers)
                except httpx.HTTPError as error:  # a timeout, a refused connection: counted, not fatal
                    reason = f"{type(error).__name__}"
                else:
                    if response.status_code == 200:
                        latencies.append(time.perf_counter() - started)
                        continue
                    reason = f"{response.status_code} {response.text[:200]}"
                failures[reason] = failures.get(reason, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(client(n) for n in range(clients)))
        wall = time.perf_counter() - started
    if not latencies:
        raise SystemExit(f"no {endpoint.name} request succeeded: {failures}")
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"requests": len(latencies), "failed": sum(failures.values()), "failures": failures,
            "seconds": wall, "requests_per_s": len(latencies) / wall, "p50_ms": cuts[49] * 1000,
            "p90_ms": cuts[89] * 1000, "p99_ms": cuts[98] * 1000, "max_ms": max(latencies) * 1000}


def bench_reads(backend: Backend, world: World, args: argparse.Namespace, month: Month, directory: Path,
                work: Path) -> dict[str, Any]:
    total = args.summary_fills
    if backend.name == "sqlite" and args.sqlite_summary_fills:
        total = args.sqlite_summary_fills
    with LoadSampler() as build_load:
        url, dataset = build_summary_db(backend, world, total, args.seed, month, directory)
    dataset["build_load"] = build_load.summary()
    endpoints = [e for e in ENDPOINTS if e.name in args.endpoints]
    try:
        engine = db.open_engine(url, create=False)
        with engine.connect() as connection:
            ids = sorted(connection.execute(select(aggregates.c.broker_id).distinct()
                                            .where(aggregates.c.period == month)).scalars())
        engine.dispose()
        keys = broker_keys(url, ids)
        rounds: dict[str, list[dict[str, Any]]] = {e.name: [] for e in endpoints}
        warmups: dict[str, int] = {}
        with serving(url, args.workers, work / f"serve-reads-{backend.name}.log") as base:
            log(f"{backend.name}: per endpoint a warm-up of {args.warmup:.0f} s, then {args.rounds} x "
                f"{args.seconds:.0f} s with {args.clients} clients, {len(ids)} brokers")
            for endpoint in endpoints:
                warmups[endpoint.name] = asyncio.run(
                    load_round(base, endpoint, keys, args.clients, args.warmup, args.seed))["requests"]
            for number in range(args.rounds):  # the endpoints take turns, so a drift in the machine hits all
                for endpoint in endpoints:
                    with LoadSampler() as load:
                        measured = asyncio.run(load_round(base, endpoint, keys, args.clients, args.seconds,
                                                          args.seed + number))
                    measured["load"] = load.summary()
                    rounds[endpoint.name].append(measured)
                    log(f"{backend.name}: round {number + 1}, {endpoint.name}: {measured['requests_per_s']:,.0f} "
                        f"req/s, p50 {measured['p50_ms']:.1f} ms, p99 {measured['p99_ms']:.1f} ms, "
                        f"failed {measured['failed']}")
        figures = {name: {"rounds": measured, "warmup_requests": warmups[name],
                          "median": {key: statistics.median(r[key] for r in measured)
                                     for key in ("requests_per_s", "p50_ms", "p90_ms", "p99_ms", "max_ms")}}
                   for name, measured in rounds.items()}
        return {"dataset": dataset, "brokers": len(ids), "clients": args.clients, "endpoints": figures, "url": url}
    finally:
        if not args.keep:
            if isinstance(backend, PostgresBackend):
                backend._admin(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
            else:
                backend.drop(url)
        else:
            log(f"kept {url}")


# --- the report ------------------------------------------------------------------------------------

def print_table(report: dict[str, Any]) -> None:
    names = [name for name in ("sqlite", "postgresql") if name in report]
    rows: list[tuple[str, list[str]]] = []

    def add(label: str, value: Callable[[dict[str, Any]], str]) -> None:
        rows.append((label, [_cell(value, report[name]) for name in names]))

    with_ingest = [report[n] for n in names if "ingest" in report[n]]
    with_summary = [report[n] for n in names if "summary" in report[n]]
    if with_ingest:
        total = with_ingest[0]["ingest"]["fills"]
        add(f"HTTP ingest, {total:,} fills (fills/s)", lambda r: f"{r['ingest']['http']['fills_per_s']:,.0f}")
        add("  direct import, same fills (fills/s)", lambda r: f"{r['ingest']['direct']['fills_per_s']:,.0f}")
        add("  HTTP / direct   (aim >= 50%)", lambda r: f"{r['ingest']['http_vs_direct']:.0%}")
        add("  POST of 1,000 fills, median (s)", lambda r: f"{r['ingest']['http']['request_p50_s']:.2f}")
        add("  load during HTTP ingest (min-max)",
            lambda r: f"{r['ingest']['http']['load']['min']:.1f}-{r['ingest']['http']['load']['max']:.1f}")
    if with_summary:
        add("summary db: fills in the month", lambda r: f"{r['summary']['dataset']['fills']:,}")
        add("  build (s)",
            lambda r: f"{r['summary']['dataset']['build_s']:,.0f}" + (" *" if r["summary"]["dataset"]["reused"]
                                                                      else ""))
        add("  aggregate rows", lambda r: f"{r['summary']['dataset']['checks']['aggregate_rows']:,}")
        clients = with_summary[0]["summary"]["clients"]
        measured = [e.name for e in ENDPOINTS if e.name in with_summary[0]["summary"]["endpoints"]]
        for name in measured:
            for key, label in (("requests_per_s", "requests/s"), ("p50_ms", "p50 (ms)"), ("p99_ms", "p99 (ms)"),
                               ("max_ms", "max (ms)")):
                add(f"{name}, {clients} clients, {label}",
                    lambda r, n=name, k=key: f"{r['summary']['endpoints'][n]['median'][k]:,.1f}")
            add(f"  {name}: failed requests (all rounds)",
                lambda r, n=name: str(sum(x["failed"] for x in r["summary"]["endpoints"][n]["rounds"])))
        add("  load during the rounds (min-max)",
            lambda r: f"{min(x['load']['min'] for e in r['summary']['endpoints'].values() for x in e['rounds']):.1f}-"
                      f"{max(x['load']['max'] for e in r['summary']['endpoints'].values() for x in e['rounds']):.1f}")

    width = max(len(label) for label, _ in rows) + 2
    facts = report["machine"]
    print(f"\nbkr HTTP benchmark, {report['date']}: {facts['nproc']} CPUs ({facts['cpu']}), {facts['ram_gb']} GB, "
          f"Python {facts['python']}, SQLite {facts['sqlite']}"
          + (f", PostgreSQL {facts['postgresql']['server_version']}" if "postgresql" in facts else ""))
    code = report["source"]
    print(f"code: {code['package']} (commit {code['commit']}, files sha256 {code['src_sha256']}); "
          f"bkr serve --workers {report['workers']}; summary figures: median of {report['rounds']} rounds "
          f"of {report['seconds']:.0f} s" + ("; * = database reused (build time of the run that built it)"
                                              if any(report[n].get("summary", {}).get("dataset", {}).get("reused")
                                                     for n in names) else ""))
    print(f"{'':{width}}" + "".join(f"{name:>16}" for name in names))
    for label, values in rows:
        print(f"{label:{width}}" + "".join(f"{value:>16}" for value in values))
    print()


def _cell(value: Callable[[dict[str, Any]], str], figures: dict[str, Any]) -> str:
    try:
        return value(figures)
    except KeyError:  # this part did not run on this database
        return "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fills", type=int, default=200_000, help="fills posted over HTTP and imported (200k)")
    parser.add_argument("--batch", type=int, default=1_000, help="fills per POST (1,000)")
    parser.add_argument("--ingest-clients", type=int, default=4, help="concurrent posting clients (4)")
    parser.add_argument("--summary-fills", type=int, default=10_000_000, help="fills in the summary's month (10M)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent read clients (50)")
    parser.add_argument("--endpoints", type=lambda text: text.split(","),
                        default=[e.name for e in ENDPOINTS],
                        help="the reads measured, comma-separated (healthz,summary,daily,users)")
    parser.add_argument("--seconds", type=float, default=10, help="length of one round of one read (10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each read; the table shows their median (3)")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of each read not counted (3)")
    parser.add_argument("--workers", type=int, default=2, help="bkr serve --workers (2)")
    parser.add_argument("--pg", metavar="URL", help="PostgreSQL server URL; databases are created and dropped")
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--pg-only", action="store_true")
    parser.add_argument("--skip-ingest", action="store_true", help="only the summary part")
    parser.add_argument("--skip-summary", action="store_true", help="only the ingest part")
    parser.add_argument("--sqlite-summary-fills", type=int,
                        help="a smaller month for SQLite's summary database (default: --summary-fills)")
    parser.add_argument("--summary-on", choices=("both", "sqlite", "postgresql"), default="both",
                        help="the databases of the summary part (both; those selected by --sqlite-only/--pg-only)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tmp", type=Path, help="directory for the CSV file and SQLite databases")
    parser.add_argument("--keep", action="store_true",
                        help="keep the summary database (reused by the next run of the same size) and the files")
    args = parser.parse_args()
    if args.pg_only and not args.pg:
        parser.error("--pg-only needs --pg URL")
    if not args.sqlite_only and not args.pg:
        log("no --pg URL: PostgreSQL is skipped")
    backends: list[Backend] = []
    base_dir = args.tmp or Path(tempfile.gettempdir())
    # the summary database lives in a fixed place so that --keep can find it again
    summary_dir = base_dir / "bkr-bench-http"
    summary_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bkr-bench-http-", dir=base_dir))
    if not args.pg_only:
        backends.append(SqliteBackend(work))
    if args.pg and not args.sqlite_only:
        postgres = PostgresBackend(args.pg)
        postgres.prefix = f"bkr_bench_http_{os.getpid()}"
        backends.append(postgres)
    month = Month.of(datetime.now(UTC))

    report: dict[str, Any] = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "workers": args.workers,
                              "rounds": args.rounds, "seconds": args.seconds, "summary_month": str(month),
                              "machine": machine(args.pg if args.pg and not args.sqlite_only else None),
                              "source": source()}
    try:
        bodies: list[bytes] = []
        csv_path = work / "fills.csv"
        ingest_world = make_world(min(MAX_USERS, max(500, args.fills // 20)), args.seed)
        if not args.skip_ingest:
            started = time.perf_counter()
            bodies = json_batches(ingest_world, args.fills, args.seed, args.batch)
            write_csv(csv_path, ingest_world, args.fills, args.seed)
            log(f"{args.fills:,} fills as {len(bodies)} JSON bodies ({sum(map(len, bodies)) / 1e6:.0f} MB) "
                f"and a CSV file, in {time.perf_counter() - started:.1f} s")
        summary_world = make_world(MAX_USERS, args.seed)
        if not args.skip_summary:
            checked = check_against_writer(summary_world, args.summary_fills, args.seed, month, work)
            log(f"the bulk load stores the first {checked:,} fills exactly as bkr's writer does")
            report["writer_check_fills"] = checked
        for backend in backends:
            report[backend.name] = {}
            if not args.skip_ingest:
                report[backend.name]["ingest"] = bench_ingest(backend, ingest_world, args.fills, bodies, csv_path,
                                                              args.ingest_clients, args.workers, work)
            if not args.skip_summary and args.summary_on in ("both", backend.name):
                report[backend.name]["summary"] = bench_reads(backend, summary_world, args, month, summary_dir,
                                                                work)
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print_table(report)
    print(json.dumps(report, sort_keys=True, default=str))


if __name__ == "__main__":
    main()
