"""Benchmark: bkr's own work per broker read, without HTTP: the signature and key check, the use
case in its snapshot, the response model and its JSON, through the same functions the routes
call, one request at a time in this process.

    .venv/bin/python bench/read_cost.py sqlite:////tmp/bkr-bench-http/summary_10000000_202612_s1.db
    .venv/bin/python bench/read_cost.py postgresql+psycopg://…/bkr_bench_http_summary_10000000_202612_s1

It reads a database that `bench/http.py --keep` built (any bkr database with a current month
works); it adds a key per broker. Per read (summary, daily, users), `--requests` (200) requests
go over every broker of the month in turn, in 3 passes; printed is the pass with the lowest
median: wall p50 and this process's CPU time p50/p99/max (on PostgreSQL the server's own CPU comes
on top of it). It says how much of a read under load is bkr's, beside bench/http.py's figures.
"""

# bench/http.py shares its name with the standard library's `http` package, which starlette
# imports: keep this directory off the front of sys.path (as bench/http.py does for itself).
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from typing import Any  # noqa: E402

from sqlalchemy import Connection, select  # noqa: E402
from starlette.requests import Request  # noqa: E402

from bkr.api.app import create_app  # noqa: E402
from bkr.api.deps import SignedBroker, broker_signature, signed_broker  # noqa: E402
from bkr.api.routers import broker as routes  # noqa: E402
from bkr.domain.periods import Month  # noqa: E402
from bkr.domain.signing import sign, signing_string  # noqa: E402
from bkr.program import reports  # noqa: E402
from bkr.program.keys import create_broker_key  # noqa: E402
from bkr.store import db  # noqa: E402
from bkr.store.tables import aggregates  # noqa: E402

WINDOW_MS = 60_000


def summary(connection: Connection, caller: SignedBroker, now: datetime) -> str:
    found = reports.broker_summary(connection, caller.broker_id, now, broker=caller.broker)
    return routes.BrokerSummaryOut.model_validate(found.to_document()).model_dump_json()


def daily(connection: Connection, caller: SignedBroker, now: datetime) -> str:
    series = reports.daily_series(connection, caller.broker_id, Month.of(now), now)
    return routes.BrokerDailyVolumeOut.model_validate(series.to_document()).model_dump_json()


def users(connection: Connection, caller: SignedBroker, now: datetime) -> str:
    found = reports.user_breakdown(connection, caller.broker_id, Month.of(now), limit=100, offset=0)
    return routes.BrokerUsersOut.model_validate(found.to_document()).model_dump_json()


READS: dict[str, tuple[str, Callable[[Connection, SignedBroker, datetime], str]]] = {
    "summary": (routes.SUMMARY, summary), "daily": (routes.DAILY_VOLUME, daily), "users": (routes.USERS, users)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    engine = db.open_engine(args.url, create=False)
    with engine.connect() as connection:
        brokers = sorted(connection.execute(select(aggregates.c.broker_id).distinct()
                                            .where(aggregates.c.period == Month.of(datetime.now(UTC)))).scalars())
    with engine.begin() as connection:
        keys = {b: create_broker_key(connection, b, datetime.now(UTC), actor="bench") for b in brokers}
    app = create_app(engine)
    services = app.state.services
    for name, (instruction, read) in READS.items():
        check = broker_signature(instruction)
        passes = []
        for _ in range(3):
            walls, cpus = [], []
            for number in range(args.requests):
                broker_id = brokers[number % len(brokers)]
                timestamp = int(time.time() * 1000)
                message = signing_string(instruction, {}, timestamp, WINDOW_MS)
                headers = {"x-api-key": keys[broker_id].api_key, "x-signature": sign(keys[broker_id].secret, message),
                           "x-timestamp": str(timestamp), "x-window": str(WINDOW_MS)}
                request = Request({"type": "http", "method": "GET", "path": "/", "query_string": b"", "app": app,
                                   "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})
                wall, cpu = time.perf_counter(), time.process_time()
                signature = _run(check(request, services, headers["x-api-key"]))
                with db.snapshot(engine) as connection:
                    read(connection, signed_broker(connection, request, signature), signature.now)
                walls.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
            passes.append((statistics.median(walls), statistics.median(cpus),
                           statistics.quantiles(cpus, n=100, method="inclusive")[98], max(cpus)))
        wall, cpu, cpu_p99, cpu_max = min(passes)
        print(f"{name}: wall p50 {wall * 1000:.2f} ms; cpu p50 {cpu * 1000:.2f} ms, p99 {cpu_p99 * 1000:.2f} ms, "
              f"max {cpu_max * 1000:.2f} ms ({args.requests} requests over {len(brokers)} brokers, best of 3 passes)")
    engine.dispose()


def _run(coroutine: Any) -> Any:
    """Run a coroutine that never suspends (the signature check awaits nothing) to its result."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the signature check suspended")


if __name__ == "__main__":
    main()
