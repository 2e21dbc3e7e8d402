"""Benchmark: how long each dashboard page takes to render on the server, on a month of N fills.

    .venv/bin/python bench/dashboard.py                          # SQLite, a month of 1M fills
    .venv/bin/python bench/dashboard.py --fills 10000000 --pg postgresql+psycopg://postgres@127.0.0.1:54329/postgres
    make bench-dashboard                                         # SQLite and a throwaway PostgreSQL (BENCH_ARGS)

The current UTC month holds `--fills` fills of bench/http.py's generated program (200 brokers,
50,000 users), written through bkr's own writer (about 10,000 fills/s, under 2 minutes per million),
or with `--load bulk` bulk-loaded as `bench/http.py` builds its broker-summary month (faster, for
10M; see that file); plus a closed previous month of
`--closed-fills` fills written through bkr's writer and closed, so that statements, their lines
and the months pages have something to show. With `--keep` it is kept (SQLite file in `$TMPDIR/bkr-bench-dashboard/`,
PostgreSQL database `bkr_bench_dashboard_…`) and reused by the next run of the same size.

Each page is requested in process through FastAPI's TestClient (no network, no uvicorn) by a
signed-in session: `--warmup` requests (2), then `--repeat` timed ones (20), one after the other.
Printed: the median and the 95th percentile per page, in milliseconds (target: under 300 ms).
The broker pages are those of the month's largest broker (most users: the heaviest page) and of
a median one.
"""

# bench/http.py shares its name with the standard library's `http` package, and Python puts a
# script's directory first on sys.path: move it to the end, where `ingest_close` is still found.
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import Engine, func, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bkr.api.app import create_app  # noqa: E402
from bkr.domain.fills import FIELDS  # noqa: E402
from bkr.domain.operators import Role  # noqa: E402
from bkr.domain.periods import Month  # noqa: E402
from bkr.ingest.readers import RawRow  # noqa: E402
from bkr.program import keys, operators  # noqa: E402
from bkr.program.close import close_month  # noqa: E402
from bkr.program.importer import import_rows  # noqa: E402
from bkr.program.periods import closed_months  # noqa: E402
from bkr.settings import ServiceSettings  # noqa: E402
from bkr.store import db  # noqa: E402
from bkr.store.tables import aggregates  # noqa: E402
from ingest_close import (  # noqa: E402
    MAX_USERS,
    Backend,
    PostgresBackend,
    SqliteBackend,
    generate,
    load_http_bench,
    log,
    machine,
    make_world,
    register,
)

http_bench = load_http_bench()


def dashboard_url(backend: Backend, directory: Path, total: int, month: Month, seed: int) -> str:
    """Where this benchmark's database lives: never bench/http.py's own kept database, which it
    checks against totals that the closed month added here would break."""
    label = f"{total}_{month.year}{month.month:02d}_s{seed}"
    if isinstance(backend, PostgresBackend):
        return make_url(backend.admin_url).set(database=f"bkr_bench_dashboard_{label}").render_as_string(
            hide_password=False)
    return f"sqlite:///{directory / f'dashboard_{label}.db'}"


http_bench.summary_url = dashboard_url  # build_summary_db names its database through this


def import_month(engine: Engine, world: Any, fills: int, seed: int, month: Month, id_prefix: str) -> None:
    """A generated month written through bkr's own writer. Ids are prefixed: the generator numbers
    every month's fills from the same base."""
    number = 0
    for chunk in generate(world, fills, seed, month):
        raw = []
        for row in chunk:
            number += 1
            document = dict(zip(FIELDS[:len(row)], row, strict=True))  # the generator leaves optional fields out
            document["fill_id"], document["order_id"] = f"{id_prefix}{row[0]}", f"{id_prefix}{row[1]}"
            raw.append(RawRow(number, document, ""))
        import_rows(engine, raw, source=f"bench-{month}", clock=lambda: datetime.now(UTC), actor="bench")
        if number % 200_000 < len(chunk):
            log(f"{month}: {number:,} fills written")


def written_month(backend: Backend, world: Any, fills: int, seed: int, month: Month,
                  directory: Path) -> tuple[str, dict[str, Any]]:
    """The current month written through bkr's writer (`--load writer`): slower than bench/http.py's
    bulk load, and independent of it."""
    url = dashboard_url(backend, directory, fills, month, seed).replace("dashboard_", "dashboard_writer_")
    wanted = {"fills": fills, "month": str(month), "seed": seed, "load": "writer"}
    meta = http_bench.dataset_meta(url)
    if meta is not None and all(meta.get(k) == v for k, v in wanted.items()):
        log(f"{backend.name}: reusing {url}")
        return url, {**meta, "reused": True}
    if isinstance(backend, PostgresBackend):
        backend._admin(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
        backend._admin(f'CREATE DATABASE "{make_url(url).database}"')
    else:
        backend.drop(url)
    started = time.perf_counter()
    engine = db.open_engine(url)
    try:
        register(engine, world)
        import_month(engine, world, fills, seed, month, "")
        meta = {**wanted, "build_s": time.perf_counter() - started}
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE bench_dataset (document TEXT NOT NULL)")
            connection.execute(text("INSERT INTO bench_dataset (document) VALUES (:d)"), {"d": json.dumps(meta)})
    finally:
        engine.dispose()
    log(f"{backend.name}: {fills:,} fills of {month} written in {meta['build_s']:.0f} s")
    return url, {**meta, "reused": False}


def add_closed_month(url: str, world: Any, fills: int, seed: int, month: Month) -> None:
    """The previous month, written through bkr's writer and closed: statements to show."""
    engine = db.open_engine(url, create=False)
    try:
        with engine.connect() as connection:
            if month.previous() in closed_months(connection):
                return
        started = time.perf_counter()
        previous = month.previous()
        import_month(engine, world, fills, seed + 1, previous, "c-")
        result = close_month(engine, previous, now=datetime.now(UTC))
        log(f"{previous}: {fills:,} fills imported and closed ({len(result.statements)} statements) in "
            f"{time.perf_counter() - started:.0f} s")
    finally:
        engine.dispose()


def _csrf(text: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', text)
    assert found is not None, "no CSRF token on the page"
    return found.group(1)


def signed_in(app: Any, key: str) -> TestClient:
    client = TestClient(app)
    token = _csrf(client.get("/dashboard/sign-in").text)
    answer = client.post("/dashboard/sign-in", data={"csrf": token, "key": key}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    return client


def timed(client: TestClient, path: str, warmup: int, repeat: int) -> dict[str, float]:
    for _ in range(warmup):
        assert client.get(path).status_code == 200, path
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        answer = client.get(path)
        samples.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, (path, answer.status_code)
    ordered = sorted(samples)
    return {"median_ms": statistics.median(samples), "p95_ms": ordered[math.ceil(0.95 * len(ordered)) - 1],
            "max_ms": ordered[-1]}


def bench_backend(backend: Backend, args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    month = Month.of(datetime.now(UTC))
    world = make_world(MAX_USERS, args.seed)
    if args.load == "bulk":
        url, dataset = http_bench.build_summary_db(backend, world, args.fills, args.seed, month, directory)
    else:
        url, dataset = written_month(backend, world, args.fills, args.seed, month, directory)
    try:
        add_closed_month(url, world, args.closed_fills, args.seed, month)
        engine = db.open_engine(url, create=False)
        with engine.begin() as connection:
            users = connection.execute(
                select(aggregates.c.broker_id, func.count(func.distinct(aggregates.c.user_id)))
                .where(aggregates.c.period == month).group_by(aggregates.c.broker_id)).all()
            ranked = sorted(users, key=lambda row: (-row[1], row[0]))
            biggest, median = ranked[0][0], ranked[len(ranked) // 2][0]
            operator = operators.add_operator(connection, "bench", Role.ADMIN, datetime.now(UTC), created_by=None).token
            secrets = {b: keys.create_broker_key(connection, b, datetime.now(UTC), actor="bench").secret
                       for b in (biggest, median)}
        app = create_app(engine, None, ServiceSettings())
        previous = month.previous()
        pages: list[tuple[str, Callable[[], TestClient], str]] = [
            (f"broker {biggest} ({ranked[0][1]:,} users)", lambda: signed_in(app, secrets[biggest]),
             f"/dashboard/brokers/{biggest}"),
            (f"broker {median} ({ranked[len(ranked) // 2][1]:,} users)", lambda: signed_in(app, secrets[median]),
             f"/dashboard/brokers/{median}"),
            (f"statement {biggest} {previous}", lambda: signed_in(app, secrets[biggest]),
             f"/dashboard/brokers/{biggest}/statements/{previous}"),
            (f"statement {biggest} {previous} CSV", lambda: signed_in(app, secrets[biggest]),
             f"/dashboard/brokers/{biggest}/statements/{previous}/download?format=csv"),
            ("program overview", lambda: signed_in(app, operator), "/dashboard/program"),
            ("brokers", lambda: signed_in(app, operator), "/dashboard/program/brokers"),
            ("months (next close preview)", lambda: signed_in(app, operator), "/dashboard/program/months"),
            (f"month {previous}", lambda: signed_in(app, operator), f"/dashboard/program/months/{previous}"),
            ("review", lambda: signed_in(app, operator), "/dashboard/program/review"),
        ]
        results = {}
        for name, client_for, path in pages:
            with client_for() as client:
                results[name] = {"path": path, **timed(client, path, args.warmup, args.repeat)}
            log(f"{backend.name}: {name}: median {results[name]['median_ms']:.1f} ms, "
                f"p95 {results[name]['p95_ms']:.1f} ms")
        engine.dispose()
        return {"dataset": {k: v for k, v in dataset.items() if k != "checks"}, "pages": results, "url": url}
    finally:
        if not args.keep:
            backend.drop(url)


def print_table(report: dict[str, Any]) -> None:
    names = [name for name in ("sqlite", "postgresql") if name in report]
    fills = report["fills"]
    print(f"\nDashboard pages, server-side render time (ms) on a month of {fills:,} fills "
          f"({report['repeat']} requests each, after {report['warmup']} not counted)")
    header = f"{'page':<44}" + "".join(f"{name + ' median':>20}{name + ' p95':>18}" for name in names)
    print(header)
    print("-" * len(header))
    for page in report[names[0]]["pages"]:
        cells = "".join(f"{report[n]['pages'][page]['median_ms']:>20.1f}{report[n]['pages'][page]['p95_ms']:>18.1f}"
                        for n in names)
        print(f"{page:<44}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fills", type=int, default=1_000_000, help="fills in the current month (1M; the "
                                                                      "target is measured at 10M)")
    parser.add_argument("--load", choices=("writer", "bulk"), default="writer",
                        help="how the current month is built: through bkr's own writer (writer, about 10,000 "
                             "fills/s) or by bench/http.py's bulk load (bulk: faster, for 10M)")
    parser.add_argument("--closed-fills", type=int, default=100_000, help="fills of the closed previous month")
    parser.add_argument("--repeat", type=int, default=20, help="timed requests per page (20)")
    parser.add_argument("--warmup", type=int, default=2, help="requests per page not counted (2)")
    parser.add_argument("--pg", metavar="URL", help="PostgreSQL server URL; databases are created and dropped")
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--pg-only", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tmp", type=Path, help="directory for the SQLite database")
    parser.add_argument("--keep", action="store_true", help="keep the database; the next run of the same size "
                                                            "reuses it")
    args = parser.parse_args()
    if args.pg_only and not args.pg:
        parser.error("--pg-only needs --pg URL")
    directory = (args.tmp or Path(tempfile.gettempdir())) / "bkr-bench-dashboard"
    directory.mkdir(parents=True, exist_ok=True)
    backends: list[Backend] = []
    if not args.pg_only:
        backends.append(SqliteBackend(directory))
    if args.pg and not args.sqlite_only:
        backends.append(PostgresBackend(args.pg))
    report: dict[str, Any] = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "fills": args.fills,
                              "closed_fills": args.closed_fills, "repeat": args.repeat, "warmup": args.warmup,
                              "machine": machine(args.pg if args.pg and not args.sqlite_only else None)}
    for backend in backends:
        report[backend.name] = bench_backend(backend, args, directory)
    print_table(report)
    print(json.dumps(report, sort_keys=True, default=str))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
