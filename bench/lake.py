"""Benchmark: a month's aggregates by Spark from Parquet fills (`bkr lake aggregate`) beside bkr's
own set-based import of the same fills, at growing sizes; and the check that both leave the same
totals.

    .venv/bin/python bench/lake.py                                  # 1M and 10M fills, SQLite
    .venv/bin/python bench/lake.py --sizes 1000000 --pg URL         # PostgreSQL for both stores
    .venv/bin/python bench/lake.py --sizes 1000000,10000000 --import-up-to 1000000

What it does, for each size N:

1. Writes N fills as Parquet files of at most 1M records (row groups of 50k) in a lake directory,
   from `bench/ingest_close.py`'s seeded generator (the same month, users, brokers and codes; the
   columns as text, booleans and an integer broker id, as an exchange's export could hold them).
2. The lake: a fresh store with the registry, then in a child process the steps of
   `bkr.lake.load.aggregate_month` one by one, timed: Spark's session (`--master`, default
   `local[2]`), the snapshot, the files' digest, the job, the load. The child samples the resident
   memory of itself and every process under it (the JVM) every 0.2 s: the peak is the job's; and
   the CPU time the job took in that process tree (fills per CPU-second: what a cluster's cores
   would each do, independent of other load on a shared machine).
   Spark's UI is on for the child (on the loopback only) so that the bytes its stages shuffled are
   read from its REST API.
3. bkr's own import: a fresh store with the same registry, `import_file` (the set path) of each
   file, in a child process, timed (skipped above `--import-up-to`).
4. The running totals of both stores (aggregates, their users-merged totals, users' totals, daily
   series) compared row for row: `equal` in the table.

Progress goes to stderr; a table and one JSON line to stdout.
"""

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys

# bench/http.py shares its name with the standard library's `http`, and Python puts a script's
# directory first on sys.path: move it off the front, as bench/dashboard.py does.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Any  # noqa: E402

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import sqlalchemy  # noqa: E402
from sqlalchemy import select  # noqa: E402

from bkr.store import db  # noqa: E402
from bkr.store.tables import aggregate_totals, aggregates, daily_volumes, user_totals  # noqa: E402

FILE_RECORDS = 1_000_000
TOTALS = (aggregates, aggregate_totals, user_totals, daily_volumes)


def load_ingest_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_ingest_close", Path(__file__).with_name("ingest_close.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ingest = load_ingest_bench()
log = ingest.log


def write_lake(directory: Path, world: Any, total: int, seed: int) -> list[Path]:
    """The month's fills as Parquet files of at most FILE_RECORDS records."""
    directory.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([(name, pa.bool_() if name in ("is_maker", "via_api") else
                         pa.int32() if name == "broker_id" else pa.string()) for name in ingest.ROW_FIELDS])
    paths: list[Path] = []
    writer: pq.ParquetWriter | None = None
    written = 0
    for rows in ingest.generate(world, total, seed):
        if writer is None or written >= FILE_RECORDS:
            if writer is not None:
                writer.close()
            paths.append(directory / f"part-{len(paths):05d}.parquet")
            writer, written = pq.ParquetWriter(paths[-1], schema), 0
        columns = list(zip(*rows, strict=True))
        writer.write_table(pa.table({name: pa.array(list(values), schema.field(name).type)
                                     for name, values in zip(ingest.ROW_FIELDS, columns, strict=True)}))
        written += len(rows)
    if writer is not None:
        writer.close()
    return paths


def tree_rss_kb(root: int) -> int:
    """Resident memory of `root` and every process under it, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/status") as status:
                total += next((int(line.split()[1]) for line in status if line.startswith("VmRSS:")), 0)
        except OSError:
            pass
    return total


def tree_cpu_seconds(root: int) -> float:
    """User and system CPU time of `root` and every process under it (the JVM), from /proc: on a
    shared machine the job's CPU time, unlike its wall time, does not grow with the others' load."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
            times[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        total += times.get(pid, 0.0)
    return total


def shuffled_bytes(spark: Any) -> tuple[int, int]:
    """(bytes written to, bytes read from) shuffles by every stage, from Spark's REST API."""
    base = spark.sparkContext.uiWebUrl
    application = spark.sparkContext.applicationId
    with urllib.request.urlopen(f"{base}/api/v1/applications/{application}/stages", timeout=30) as answer:
        stages = json.load(answer)
    return (sum(s.get("shuffleWriteBytes", 0) for s in stages), sum(s.get("shuffleReadBytes", 0) for s in stages))


def child_lake(url: str, lake: str, master: str, work: str) -> None:
    """Runs in the child: the lake path step by step, timed, and the peak memory of the process tree."""
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss_kb(os.getpid()))
            time.sleep(0.2)

    threading.Thread(target=sample, daemon=True).start()
    from pyspark.sql import SparkSession

    from bkr.lake import load
    from bkr.lake.job import file_digests, quiet, run_job
    from bkr.lake.snapshot import take_snapshot, write_snapshot

    engine = db.open_engine(url, create=False)
    figures: dict[str, Any] = {}
    started = time.perf_counter()
    spark = quiet(SparkSession.builder.master(master).appName("bkr lake bench")
                  .config("spark.sql.session.timeZone", "UTC").config("spark.sql.ansi.enabled", "true")
                  .config("spark.ui.enabled", "true").config("spark.driver.host", "127.0.0.1")
                  .config("spark.driver.bindAddress", "127.0.0.1").config("spark.ui.showConsoleProgress", "false")
                  .config("spark.sql.shuffle.partitions", "4").getOrCreate())
    figures["session_s"] = time.perf_counter() - started
    step = time.perf_counter()
    with engine.connect() as connection:
        snapshot = write_snapshot(take_snapshot(connection, ingest.MONTH, ingest.IMPORT_AT), Path(work))
    figures["snapshot_s"] = time.perf_counter() - step
    step = time.perf_counter()
    files = file_digests(spark, lake)
    figures["digest_s"] = time.perf_counter() - step
    step, cpu = time.perf_counter(), tree_cpu_seconds(os.getpid())
    result = run_job(spark, lake, snapshot.document)
    figures["job_s"] = time.perf_counter() - step
    figures["job_cpu_s"] = tree_cpu_seconds(os.getpid()) - cpu
    figures["shuffle_write_bytes"], figures["shuffle_read_bytes"] = shuffled_bytes(spark)
    step = time.perf_counter()
    with engine.begin() as connection:
        run = load._load(connection, snapshot, result, files, uri=lake, master=master, started=ingest.IMPORT_AT,
                         clock=lambda: ingest.IMPORT_AT, actor="bench")
    figures["load_s"] = time.perf_counter() - step
    done.set()
    spark.stop()
    figures.update(records=run.records, decided_in_lake=run.decided_in_lake, lines=len(result.lines),
                   days=len(result.days), left=sum(len(rows) for rows in result.left.values()),
                   accepted=run.tally.accepted, counted=run.tally.counted, rejected=run.tally.rejected,
                   peak_rss_kb=peak[0])
    print(json.dumps(figures))


def child_import(url: str, paths: list[str]) -> None:
    from bkr.program.importer import import_file

    engine = db.open_engine(url, create=False)
    started = time.perf_counter()
    accepted = 0
    for path in paths:
        accepted += import_file(engine, Path(path), clock=lambda: ingest.IMPORT_AT, actor="bench").accepted
    print(json.dumps({"seconds": time.perf_counter() - started, "accepted": accepted,
                      "peak_rss_kb": ingest.proc_status_kb("VmHWM")}))


def in_child(*args: str) -> dict[str, Any]:
    child = subprocess.run([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, check=True)
    result: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    return result


def totals(url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = db.open_engine(url, create=False)
    try:
        with engine.connect() as connection:
            return {t.name: sorted((tuple(r) for r in connection.execute(select(t))), key=repr) for t in TOTALS}
    finally:
        engine.dispose()


def fresh_store(pg: str | None, directory: Path, name: str, world: Any) -> str:
    if pg is None:
        url = f"sqlite:///{directory / (name + '.db')}"
    else:
        database = f"bkr_lake_bench_{name}"
        admin = sqlalchemy.create_engine(pg, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {database}")
            connection.exec_driver_sql(f"CREATE DATABASE {database}")
        admin.dispose()
        url = sqlalchemy.engine.make_url(pg).set(database=database).render_as_string(hide_password=False)
    engine = db.open_engine(url)
    ingest.register(engine, world)
    engine.dispose()
    return url


def drop_store(pg: str | None, url: str) -> None:
    if pg is None:
        return
    admin = sqlalchemy.create_engine(pg, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {sqlalchemy.engine.make_url(url).database}")
    admin.dispose()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_lake":
        child_lake(*sys.argv[2:6])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_import":
        child_import(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000", help="fills per month, comma-separated")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--pg", default=None, help="PostgreSQL URL (default: SQLite files)")
    parser.add_argument("--import-up-to", type=int, default=10_000_000,
                        help="run bkr's own import (and the equality check) only up to this many fills")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dir", default=None, help="working directory (default: a temporary one, removed)")
    args = parser.parse_args()
    directory = Path(args.dir or tempfile.mkdtemp(prefix="bkr-lake-bench-"))
    report: dict[str, Any] = {"master": args.master, "store": "postgresql" if args.pg else "sqlite", "sizes": []}
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            world = ingest.world_for(size, args.seed, False, size)
            lake = directory / f"lake-{size}"
            log(f"{size:,} fills: writing Parquet")
            started = time.perf_counter()
            paths = write_lake(lake, world, size, args.seed)
            row: dict[str, Any] = {"fills": size, "files": len(paths), "write_s": time.perf_counter() - started,
                                   "bytes": sum(p.stat().st_size for p in paths)}
            lake_url = fresh_store(args.pg, directory, f"lake{size}", world)
            log(f"{size:,} fills: the lake path ({args.master})")
            row["lake"] = in_child("_lake", lake_url, str(lake), args.master, str(directory / "work"))
            if size <= args.import_up_to:
                own_url = fresh_store(args.pg, directory, f"own{size}", world)
                log(f"{size:,} fills: bkr's own set-based import")
                row["import"] = in_child("_import", own_url, *map(str, paths))
                row["equal"] = totals(lake_url) == totals(own_url)
                drop_store(args.pg, own_url)
            drop_store(args.pg, lake_url)
            shutil.rmtree(lake)
            report["sizes"].append(row)
            log(f"{size:,} fills: {json.dumps(row)}")
    finally:
        if args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    print(f"{'fills':>12} {'spark job s':>11} {'digest s':>8} {'load s':>7} {'peak MB':>8} {'shuffled MB':>11} "
          f"{'fills/cpu-s':>12} {'bkr import s':>12} {'equal':>6}")
    for row in report["sizes"]:
        lake_figures = row["lake"]
        rate = row["fills"] / lake_figures["job_cpu_s"] if lake_figures["job_cpu_s"] else 0
        own = row.get("import", {}).get("seconds")
        print(f"{row['fills']:>12,} {lake_figures['job_s']:>11.1f} {lake_figures['digest_s']:>8.1f} "
              f"{lake_figures['load_s']:>7.1f} {lake_figures['peak_rss_kb'] / 1024:>8.0f} "
              f"{lake_figures['shuffle_write_bytes'] / 2**20:>11.1f} {rate:>12,.0f} "
              f"{'-' if own is None else f'{own:.1f}':>12} {row.get('equal', '-')!s:>6}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
