"""Benchmark: paying a closed month's statements beside the database's own commit rate, and
reconciling a large settled month beside one SQL sum over its fills, on SQLite and PostgreSQL.

    .venv/bin/python bench/settle.py --quick --sqlite-only        # a smoke run (about a minute)
    .venv/bin/python bench/settle.py --pg postgresql+psycopg://postgres@127.0.0.1:54329/postgres
    .venv/bin/python bench/settle.py --fills 10000000 --pg URL     # a 10M-fill month to reconcile

What it does, per database (B = --brokers, N = --fills):

1. Settlement. A template database: the registry of B brokers (all active, one user each, the
   affiliates and codes of `bench/ingest_close.py`), 4 × B fills of March 2025 through bkr's own
   import (`import_rows`; every (user, market type) is counted once in the first 2 × B, so every
   broker has a statement), the month closed, and every statement approved by one operator, one
   transaction per approval (the program runs with `review_days = 0`: approvals only). Then
   `--repeat` times, on a fresh copy of the template (a copied SQLite file; `CREATE DATABASE …
   TEMPLATE` on PostgreSQL): the baseline, B single-row `INSERT`s into a scratch table through the
   bare driver, one transaction and one commit each (SQLite in WAL with `synchronous=NORMAL`, as
   bkr runs it); then `settle_month`, timed (B statements, one transaction each, each a ledger
   posting unless its payout is zero); then `settle_month` again on the paid month, timed: what a
   retry costs. Printed: statements settled per second, the commit rate, their ratio, and the retry.
   The last copy is reconciled (it must be clean) before it is dropped.
2. Reconciliation. A month of N fills from the generator of `ingest_close.py` over the same B
   brokers (50k users at 1M fills and more, the brokers sized from a few big ones to a long tail),
   built at the SQL level by `bench/http.py`'s `build_summary_db` (bulk load of the fills with the
   columns bkr's writer derives, aggregates by SQL `GROUP BY`, checked against totals summed while
   generating), then closed, approved and settled through bkr. Then, `--repeat` times in turn: the
   baseline, one `SELECT count(*), sum(volume_usd)` over the month's counted fills (NUMERIC `sum` on
   PostgreSQL, the `dec_sum` aggregate bkr registers on SQLite, both exact), and `reconcile_month`,
   which must be clean. Printed: both times, reconcile's counted fills/s, the ratio, the close's own
   time for reference, and the build (not measured: it is only how the month was made).

Progress goes to stderr; the table and one JSON line to stdout.
"""

# `bench/http.py` shares its name with the standard library's `http` package, and Python puts a
# script's directory first on sys.path: move the directory to the end, where `ingest_close` is
# still found, and load `http.py` under another name.
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import sqlite3  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import replace  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from decimal import Decimal  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import psycopg  # noqa: E402
from sqlalchemy import Engine, func, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bkr.domain.config import DEFAULT_CONFIG  # noqa: E402
from bkr.ingest.readers import RawRow  # noqa: E402
from bkr.program import settlement  # noqa: E402
from bkr.program.close import close_month  # noqa: E402
from bkr.program.importer import import_rows  # noqa: E402
from bkr.program.reconcile import reconcile_month  # noqa: E402
from bkr.store import db  # noqa: E402
from bkr.store.tables import aggregates, ledger_groups, statements  # noqa: E402
from ingest_close import (  # noqa: E402
    CLOSE_AT,
    IMPORT_AT,
    MAX_USERS,
    MONTH,
    Backend,
    PostgresBackend,
    SqliteBackend,
    World,
    generate,
    load_http_bench,
    log,
    machine,
    make_world,
    psycopg_dsn,
    register,
    source,
)

bench_http = load_http_bench()

APPROVE_ONLY = replace(DEFAULT_CONFIG, review_days=0)  # statements become final by approval only
APPROVED_AT = datetime(2025, 4, 1, 9, 0, tzinfo=UTC)
SETTLE_AT = datetime(2025, 4, 1, 10, 0, tzinfo=UTC)
APPROVER = "ops-bench"
SETTLE_FILLS_PER_BROKER = 4


# --- the program: B brokers ---------------------------------------------------------------------

def broad_world(brokers: int, users: int, seed: int) -> World:
    """`ingest_close`'s world (affiliates, codes, who signed up with one) with `brokers` brokers:
    the first `brokers` users trade through one broker each, so every broker has users; the rest
    spread from a few big brokers to a long tail, as there."""
    assert users >= brokers, (users, brokers)
    base = make_world(users, seed)
    rng = random.Random(seed + 7)
    broker_ids = tuple(sorted(rng.sample(range(1000, 65_000), brokers)))
    broker_of_user = tuple(broker_ids[u] if u < brokers
                           else broker_ids[min(brokers - 1, int(brokers * rng.random() ** 2.5))] for u in range(users))
    return World(broker_ids, base.codes, broker_of_user, base.code_of_user)


def approve_all(engine: Engine) -> tuple[int, float]:
    """Approve every draft of the month, one transaction per approval (as operators do it); returns
    (approvals, seconds)."""
    with engine.connect() as connection:
        ids = list(connection.execute(select(statements.c.broker_id).where(
            (statements.c.month == MONTH) & (statements.c.status == settlement.DRAFT))
            .order_by(statements.c.broker_id)).scalars())
    started = time.perf_counter()
    for broker_id in ids:
        with engine.begin() as connection:
            approval = settlement.approve(connection, broker_id, MONTH, APPROVER, APPROVED_AT)
            assert approval.status == settlement.FINAL, approval
    return len(ids), time.perf_counter() - started


def payout_counts(engine: Engine) -> dict[str, Any]:
    with engine.connect() as connection:
        rows = connection.execute(select(statements.c.payout).where(statements.c.month == MONTH)).scalars().all()
        groups = connection.execute(select(func.count()).select_from(ledger_groups)).scalar_one()
        lines = connection.execute(select(func.count()).select_from(aggregates)
                                   .where(aggregates.c.period == MONTH)).scalar_one()
    return {"statements": len(rows), "with_payout": sum(1 for p in rows if p > 0),
            "payout_total": str(sum(rows, Decimal(0))), "ledger_groups": groups, "aggregate_rows": lines}


# --- databases: a template and its copies ---------------------------------------------------------

def clone(backend: Backend, template: str, label: str) -> str:
    """A fresh copy of the template database; its URL."""
    if isinstance(backend, SqliteBackend):
        url = backend.create(label)
        source_path, target = db.sqlite_path(template), db.sqlite_path(url)
        assert source_path is not None and target is not None
        for suffix in ("", "-wal"):  # the template's engine is disposed: its WAL is normally gone
            if Path(f"{source_path}{suffix}").exists():
                shutil.copyfile(f"{source_path}{suffix}", f"{target}{suffix}")
        return url
    assert isinstance(backend, PostgresBackend)
    name = f"{backend.prefix}_{label}"
    backend._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    backend._admin(f'CREATE DATABASE "{name}" TEMPLATE "{make_url(template).database}"')
    return make_url(backend.admin_url).set(database=name).render_as_string(hide_password=False)


def commit_baseline(backend: Backend, url: str, count: int) -> float:
    """`count` single-row INSERTs into a scratch table, one transaction and commit each, through
    the bare driver; only the loop is timed. The table is dropped afterwards."""
    if isinstance(backend, SqliteBackend):
        path = db.sqlite_path(url)
        assert path is not None
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode=WAL")  # the settings bkr's engine uses
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("CREATE TABLE bench_commits (n INTEGER PRIMARY KEY, month TEXT, amount TEXT)")
            started = time.perf_counter()
            for n in range(count):
                connection.execute("BEGIN IMMEDIATE")
                connection.execute("INSERT INTO bench_commits VALUES (?, ?, ?)", (n, str(MONTH), "12.34"))
                connection.execute("COMMIT")
            elapsed = time.perf_counter() - started
            connection.execute("DROP TABLE bench_commits")
            return elapsed
        finally:
            connection.close()
    with psycopg.connect(psycopg_dsn(url)) as pg:
        pg.execute("CREATE TABLE bench_commits (n integer PRIMARY KEY, month text, amount numeric)")
        pg.commit()
        started = time.perf_counter()
        for n in range(count):
            pg.execute("INSERT INTO bench_commits VALUES (%s, %s, %s)", (n, str(MONTH), Decimal("12.34")))
            pg.commit()
        elapsed = time.perf_counter() - started
        pg.execute("DROP TABLE bench_commits")
        pg.commit()
        return elapsed


def warm(engine: Engine) -> None:
    """Open the engine's first connection outside the timed call."""
    with engine.connect() as connection:
        connection.execute(select(1)).scalar_one()


# --- part 1: settlement ---------------------------------------------------------------------------

def build_settle_template(backend: Backend, brokers: int, seed: int) -> tuple[str, dict[str, Any]]:
    world = broad_world(brokers, brokers, seed)
    total = SETTLE_FILLS_PER_BROKER * brokers
    url = backend.create("settle_template")
    engine = db.open_engine(url)
    try:
        started = time.perf_counter()
        register(engine, world, APPROVE_ONLY)
        registry_s = time.perf_counter() - started
        rows = (RawRow(line, bench_http.fill_object(row), "")
                for line, row in enumerate((r for chunk in generate(world, total, seed) for r in chunk), 2))
        imported = import_rows(engine, rows, source="bench-settle", clock=lambda: IMPORT_AT, actor="bench")
        assert imported.accepted == total and not imported.rejected, imported
        closed = close_month(engine, MONTH, now=CLOSE_AT)
        assert len(closed.statements) == brokers, (len(closed.statements), brokers)
        approvals, approve_s = approve_all(engine)
        figures = {"fills": total, "counted": imported.counted, "registry_s": registry_s,
                   "approvals": approvals, "approve_s": approve_s, **payout_counts(engine),
                   "build_s": time.perf_counter() - started}
    finally:
        engine.dispose()  # no connection left: the file can be copied, the database used as a template
    return url, figures


def bench_settle(backend: Backend, brokers: int, seed: int, repeat: int) -> dict[str, Any]:
    log(f"{backend.name}: building a closed, approved month of {brokers} brokers")
    template, built = build_settle_template(backend, brokers, seed)
    log(f"{backend.name}: template built in {built['build_s']:.1f}s ({built['statements']} statements, "
        f"{built['with_payout']} with a payout; {built['approvals'] / built['approve_s']:,.0f} approvals/s)")
    commits: list[float] = []
    first: list[float] = []
    again: list[float] = []
    loads: list[float] = []
    reconciled: dict[str, Any] = {}
    try:
        for attempt in range(repeat):
            url = clone(backend, template, f"settle_run{attempt}")
            try:
                commits.append(commit_baseline(backend, url, brokers))
                engine = db.open_engine(url, create=False)
                try:
                    warm(engine)
                    started = time.perf_counter()
                    paid = settlement.settle_month(engine, MONTH, SETTLE_AT)
                    first.append(time.perf_counter() - started)
                    assert len(paid.paid) == built["statements"] and not paid.not_final, paid.to_document()
                    started = time.perf_counter()
                    retry = settlement.settle_month(engine, MONTH, SETTLE_AT)
                    again.append(time.perf_counter() - started)
                    assert not retry.paid and len(retry.already_paid) == built["statements"], retry.to_document()
                    loads.append(os.getloadavg()[0])
                    log(f"{backend.name}: run {attempt + 1}: settle {first[-1]:.2f}s, retry {again[-1]:.2f}s, "
                        f"{brokers} commits {commits[-1]:.2f}s")
                    if attempt == repeat - 1:
                        with engine.connect() as connection:
                            check = reconcile_month(connection, MONTH)
                        groups = payout_counts(engine)["ledger_groups"]
                        reconciled = {"clean": check.clean, "differences": [str(d) for d in check.differences[:10]],
                                      "ledger_groups": groups}
                        assert check.clean, reconciled
                        assert groups == built["with_payout"], (groups, built["with_payout"])
                finally:
                    engine.dispose()
            finally:
                backend.drop(url)
    finally:
        backend.drop(template)
    settle_s, commit_s, retry_s = statistics.median(first), statistics.median(commits), statistics.median(again)
    return {**built, "settle_s": settle_s, "settle_per_s": brokers / settle_s, "commit_s": commit_s,
            "commits_per_s": brokers / commit_s, "settle_vs_commits": commit_s / settle_s,
            "retry_s": retry_s, "retry_per_s": brokers / retry_s, "retry_vs_settle": retry_s / settle_s,
            "settle_runs": first, "commit_runs": commits, "retry_runs": again, "load": loads,
            "reconciled": reconciled}


# --- part 2: reconciliation of a large month -------------------------------------------------------

def baseline_sum(connection: Any) -> tuple[int, Decimal]:
    """One exact count and sum over the month's counted fills, by the database."""
    total = "sum" if connection.dialect.name == "postgresql" else "dec_sum"
    count, volume = connection.execute(text(
        f"SELECT count(*), {total}(volume_usd) FROM fills WHERE period = :month AND attribution = 'counted'"),
        {"month": str(MONTH)}).one()
    return int(count), Decimal(str(volume))


def bench_reconcile(backend: Backend, brokers: int, total: int, seed: int, repeat: int,
                    directory: Path) -> dict[str, Any]:
    world = broad_world(brokers, min(MAX_USERS, max(brokers, total // 20)), seed)
    if total < world.keys:
        raise SystemExit(f"--fills {total:,} is fewer than the {world.keys:,} (user, market) keys: "
                         "some brokers would have no counted fill")
    # build_summary_db reuses a database with the same name and size: never one left by a failed run
    backend.drop(bench_http.summary_url(backend, directory, total, MONTH, seed))
    started = time.perf_counter()
    url, dataset = bench_http.build_summary_db(backend, world, total, seed, MONTH, directory)
    built_s = time.perf_counter() - started
    result: dict[str, Any] = {"fills": total, "users": world.users, "brokers": brokers,
                              "build": {k: v for k, v in dataset.items() if k != "checks"},
                              "checks": dataset["checks"]}
    try:
        engine = db.open_engine(url, create=False)
        try:
            warm(engine)
            log(f"{backend.name}: closing {MONTH} ({dataset['checks']['aggregate_rows']:,} aggregate rows)")
            started = time.perf_counter()
            closed = close_month(engine, MONTH, now=CLOSE_AT)
            result["close_s"] = time.perf_counter() - started
            assert not closed.already_closed and len(closed.statements) == brokers, len(closed.statements)
            result["approvals"], result["approve_s"] = approve_all(engine)
            started = time.perf_counter()
            paid = settlement.settle_month(engine, MONTH, SETTLE_AT)
            result["settle_s"] = time.perf_counter() - started
            assert len(paid.paid) == brokers, paid.to_document()
            result.update(payout_counts(engine))
            result["build_s"] = built_s
            log(f"{backend.name}: built in {built_s:.0f}s, closed in {result['close_s']:.1f}s, settled in "
                f"{result['settle_s']:.1f}s; reconciling {repeat}x")
            sums: list[float] = []
            runs: list[float] = []
            loads: list[float] = []
            for _ in range(repeat):
                with engine.connect() as connection:
                    started = time.perf_counter()
                    count, volume = baseline_sum(connection)
                    sums.append(time.perf_counter() - started)
                with db.snapshot(engine) as connection:  # as `bkr reconcile` reads
                    started = time.perf_counter()
                    check = reconcile_month(connection, MONTH)
                    runs.append(time.perf_counter() - started)
                loads.append(os.getloadavg()[0])
                if not check.clean:
                    raise SystemExit(f"{backend.name}: the month does not reconcile: "
                                     f"{[str(d) for d in check.differences[:10]]}")
                assert check.fills == count == dataset["counted"], (check.fills, count, dataset["counted"])
                assert volume == Decimal(dataset["volume_usd"]), (volume, dataset["volume_usd"])
                log(f"{backend.name}: reconcile {runs[-1]:.2f}s, count+sum {sums[-1]:.2f}s")
        finally:
            engine.dispose()
    finally:
        backend.drop(url)
    reconcile_s, sum_s = statistics.median(runs), statistics.median(sums)
    return {**result, "counted": count, "volume_usd": str(volume), "reconcile_s": reconcile_s,
            "reconcile_fills_per_s": count / reconcile_s, "sum_s": sum_s, "sum_fills_per_s": count / sum_s,
            "reconcile_vs_sum": reconcile_s / sum_s, "reconcile_runs": runs, "sum_runs": sums, "load": loads}


# --- the report -----------------------------------------------------------------------------------

def print_table(report: dict[str, Any]) -> None:
    names = [name for name in ("sqlite", "postgresql") if name in report]
    rows: list[tuple[str, list[str]]] = []

    def add(label: str, value: Callable[[dict[str, Any]], str]) -> None:
        rows.append((label, [value(report[name]) for name in names]))

    brokers, fills = report["brokers"], report["fills"]
    add(f"settle_month, {brokers:,} statements (statements/s)", lambda r: f"{r['settle']['settle_per_s']:,.0f}")
    add("  time (s, median)", lambda r: f"{r['settle']['settle_s']:.2f}")
    add(f"  {brokers:,} single-row INSERT + COMMIT (commits/s)", lambda r: f"{r['settle']['commits_per_s']:,.0f}")
    add("  settle / commit rate", lambda r: f"{r['settle']['settle_vs_commits']:.1%}")
    add("settle_month again, all paid (s, median)", lambda r: f"{r['settle']['retry_s']:.2f}")
    add("  statements/s", lambda r: f"{r['settle']['retry_per_s']:,.0f}")
    add("  retry / first settle", lambda r: f"{r['settle']['retry_vs_settle']:.0%}")
    add("  statements with a payout / zero", lambda r: f"{r['settle']['with_payout']:,} / "
        f"{r['settle']['statements'] - r['settle']['with_payout']:,}")
    add("  approve, one transaction each (approvals/s)",
        lambda r: f"{r['settle']['approvals'] / r['settle']['approve_s']:,.0f}")
    add("  load average after each settle", lambda r: " ".join(f"{x:.1f}" for x in r["settle"]["load"]))
    add(f"reconcile_month, {fills:,} fills (s, median)", lambda r: f"{r['reconcile']['reconcile_s']:.2f}")
    add("  counted fills / s", lambda r: f"{r['reconcile']['reconcile_fills_per_s']:,.0f}")
    add("  SELECT count(*), exact sum(volume_usd) (s, median)", lambda r: f"{r['reconcile']['sum_s']:.2f}")
    add("  reconcile / count+sum", lambda r: f"{r['reconcile']['reconcile_vs_sum']:.1f}x")
    add("  counted fills / aggregate rows", lambda r: f"{r['reconcile']['counted']:,} / "
        f"{r['reconcile']['aggregate_rows']:,}")
    add("  load average after each reconcile", lambda r: " ".join(f"{x:.1f}" for x in r["reconcile"]["load"]))
    add("close of that month (s, one run, for reference)", lambda r: f"{r['reconcile']['close_s']:.1f}")
    add(f"  settle_month of its {brokers:,} statements (s, one run)", lambda r: f"{r['reconcile']['settle_s']:.1f}")
    add("build, not measured: fills + aggregates (s)", lambda r: f"{r['reconcile']['build']['build_s']:,.0f}")
    add("  and the settlement template (s)", lambda r: f"{r['settle']['build_s']:,.1f}")

    width = max(len(label) for label, _ in rows) + 2
    facts = report["machine"]
    print(f"\nbkr settlement + reconcile benchmark, {report['date']}: {facts['nproc']} CPUs ({facts['cpu']}), "
          f"{facts['ram_gb']} GB, Python {facts['python']}, SQLite {facts['sqlite']}"
          + (f", PostgreSQL {facts['postgresql']['server_version']} (fsync {facts['postgresql']['fsync']}, "
             f"synchronous_commit {facts['postgresql']['synchronous_commit']})" if "postgresql" in facts else ""))
    code = report["source"]
    print(f"code: {code['package']} (commit {code['commit']}, files sha256 {code['src_sha256']}); "
          f"{brokers:,} brokers, month {MONTH}, medians of {report['repeat']}")
    column = max(18, *(len(value) + 2 for _, values in rows for value in values))
    print(f"{'':{width}}" + "".join(f"{name:>{column}}" for name in names))
    for label, values in rows:
        print(f"{label:{width}}" + "".join(f"{value:>{column}}" for value in values))
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg", metavar="URL", help="PostgreSQL server URL; databases are created and dropped")
    parser.add_argument("--brokers", type=int, help="brokers, one statement each (default 1,000)")
    parser.add_argument("--fills", type=int, help="fills in the month reconciled (default 1,000,000)")
    parser.add_argument("--repeat", type=int, help="runs of each timed step (median; default 3)")
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes for a smoke run (200 brokers, 20k fills, 2 runs)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tmp", type=Path, help="directory for the SQLite databases")
    args = parser.parse_args()
    brokers = args.brokers or (200 if args.quick else 1_000)
    total = args.fills or (20_000 if args.quick else 1_000_000)
    repeat = args.repeat or (2 if args.quick else 3)
    if not 1 <= brokers <= 60_000:
        parser.error("--brokers must be between 1 and 60,000")
    run_pg = bool(args.pg) and not args.sqlite_only
    if not args.sqlite_only and not args.pg:
        log("no --pg URL: PostgreSQL is skipped")

    directory = Path(tempfile.mkdtemp(prefix="bkr-bench-settle-", dir=args.tmp))
    backends: list[Backend] = [SqliteBackend(directory)]
    if run_pg:
        postgres = PostgresBackend(args.pg)
        postgres.prefix = f"bkr_bench_settle_{os.getpid()}"
        backends.append(postgres)
    report: dict[str, Any] = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "brokers": brokers,
                              "fills": total, "repeat": repeat, "month": str(MONTH),
                              "machine": machine(args.pg if run_pg else None), "source": source()}
    try:
        for backend in backends:
            report[backend.name] = {"settle": bench_settle(backend, brokers, args.seed, repeat),
                                    "reconcile": bench_reconcile(backend, brokers, total, args.seed, repeat,
                                                                 directory)}
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print_table(report)
    print(json.dumps(report, sort_keys=True, default=str))


if __name__ == "__main__":
    main()
