"""Benchmark: the sandbox venue's order entry, from the bare order book to signed HTTP orders, and
what attribution by `X-Broker-Id` costs.

    .venv/bin/python bench/venue.py --quick                     # a smoke check, SQLite only (about 1 min)
    .venv/bin/python bench/venue.py                             # SQLite
    .venv/bin/python bench/venue.py --pg postgresql+psycopg://postgres@127.0.0.1:54329/postgres

What it measures, in one run (the baselines beside what they are compared with):

1. The order book alone (`bkr.venue.book.OrderBook`, one market, no I/O): `--orders` (100,000)
   operations of a seeded random mix around a slowly walking mid price: 50% GTC limits resting
   1+ ticks away (about 9 on average), 10% GTC limits crossing up to 10 ticks, 10% IOC limits
   crossing, 10% market orders (by base `quantity`; `quoteQuantity` is not exercised), 20%
   cancels of orders still on the book, from 64 users (so self-trade prevention happens). The
   stream is made once by a dry run (so every cancel names a resting order) and replayed on a
   fresh book `--book-runs` (5) times: operations/s, median and range of the runs.
2. Order entry in process (`bkr.venue.exchange.Venue`, no HTTP) on a fresh SQLite file, and on a
   PostgreSQL database created for the run with `--pg`: the same kind of mix, one order (or
   cancel) per transaction, each transaction ingesting its fills into the broker program. Three
   variants, interleaved in `--rounds` (3) rounds of `--venue-orders` (1,000) operations each:
   `X-Broker-Id: 1400` (an active broker), no header, and `9999` (not enrolled; the default
   `ignore` policy trades it and counts the header). Operations/s, median of the rounds.
3. HTTP: a real `bkr serve` (`--workers`, default 1) in a child process on a free port, over its
   own fresh database (broker 1400 enrolled and active, 64 users with keys and accounts made by
   `bkr.venue.accounts.create_user_key`), driven by `bkr.venue.client.BackpackClient` (ED25519
   signed requests: verification is in the path) from threads of this process. Each thread is one
   client with one request in flight; it trades as two users of its own, in turn, each with its
   own httpx client, so that even a lone client has a counterparty (self-trade prevention would
   otherwise expire every crossing order). Closed loop: `POST /api/v1/order` only, 50% resting
   GTC limits, 20% crossing GTC limits, 10% crossing IOC limits, 20% market orders, around a
   fixed mid. At 1 and 32 clients, each variant of (2) for `--seconds` (10) per round, the
   variants rotated across `--rounds` rounds after a warm-up. Orders/s and p50/p99 client-side
   latency (signing included), median of the rounds.
4. The cost of attribution: the ratios (1400 / none, 9999 / none) of the medians of (2) and (3),
   and the p50 difference over HTTP. Checks at the end: every venue fill is in the broker
   program's `fills`; the orders stored with broker 1400 and 9999, and the count of 9999 in
   `venue_broker_ids_seen`, equal what the clients were answered.
5. The WebSocket fan-out, on the same server in the same run: `--subscribers` (100) WebSocket
   clients (the `websockets` library, in one asyncio thread of this process) each subscribe to
   `depth`, `trade` and `bookTicker` of the market, then `--fanout-clients` (8) HTTP clients send
   orders as in (3) for `--seconds`; each round also runs the same HTTP phase with no subscriber,
   so the REST order rate with and without the fan-out sits side by side. Messages/s delivered
   to all subscribers together, REST orders/s, and a trade message's delay from the venue's
   engine time (`T`) to its arrival at a subscriber (p50/p99), medians of `--rounds` rounds.

The clients and the server share the machine's CPUs, so HTTP figures include the clients' own
cost. Progress goes to stderr; the table, a short reading of it and one JSON line to stdout.
"""


# `bench/http.py` shares its name with the standard library's `http` package, and Python puts a
# script's directory first on sys.path: move the directory to the end, where `ingest_close` is
# still found.
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from decimal import Decimal  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from websockets.asyncio.client import connect as ws_connect  # noqa: E402

from bkr.domain.clock import system_clock  # noqa: E402
from bkr.domain.config import ProgramConfig  # noqa: E402
from bkr.domain.errors import BkrError  # noqa: E402
from bkr.domain.fills import Side  # noqa: E402
from bkr.domain.registry import BrokerStatus  # noqa: E402
from bkr.domain.signing import KeyPair  # noqa: E402
from bkr.program import registry, settings_versions  # noqa: E402
from bkr.store import db  # noqa: E402
from bkr.store.tables import fills, venue_broker_ids_seen, venue_fills, venue_orders  # noqa: E402
from bkr.venue.accounts import create_user_key  # noqa: E402
from bkr.venue.book import OrderBook, OrderRequest, OrderType, TimeInForce  # noqa: E402
from bkr.venue.client import BackpackClient, BackpackError  # noqa: E402
from bkr.venue.exchange import Venue  # noqa: E402
from bkr.venue.markets import VenueConfig  # noqa: E402
from bkr.venue.orders import OPEN_STATUSES, OrderInput  # noqa: E402
from ingest_close import Backend, PostgresBackend, SqliteBackend, log, machine, source  # noqa: E402

SYMBOL = "SOL_USDC"  # tick 0.01, step 0.01
TICK = Decimal("0.01")
MID = Decimal("150.00")
BROKER = 1400
UNKNOWN = 9999
BOOK_USERS = 64
# label -> the X-Broker-Id header sent (None: no header)
VARIANTS: dict[str, str | None] = {"1400": str(BROKER), "none": None, "9999": str(UNKNOWN)}
CLIENT_COUNTS = (1, 32)


# --- the order mix ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Draw:
    """One random order: `kind` is passive (a resting GTC limit), cross (a crossing GTC limit), ioc or market."""

    kind: str
    side: Side
    price: Decimal | None
    quantity: Decimal


def draw_order(rng: random.Random, mid: Decimal, weights: Sequence[tuple[str, float]]) -> Draw:
    kinds, cumulative = zip(*weights, strict=True)
    kind = rng.choices(kinds, cum_weights=cumulative)[0]
    side = Side.BID if rng.random() < 0.5 else Side.ASK
    quantity = Decimal(rng.randint(1, 500)) * TICK  # 0.01 .. 5.00 SOL, on the step grid
    if kind == "market":
        return Draw(kind, side, None, quantity)
    if kind == "passive":
        ticks = 1 + min(100, int(rng.expovariate(1 / 8)))
        away = -ticks if side is Side.BID else ticks
    else:  # through the mid, up to 10 ticks
        ticks = rng.randint(0, 10)
        away = ticks if side is Side.BID else -ticks
    return Draw(kind, side, mid + away * TICK, quantity)


# cumulative weights; "cancel" is handled by the caller
BOOK_MIX = (("passive", 0.50), ("cross", 0.60), ("ioc", 0.70), ("market", 0.80), ("cancel", 1.0))
HTTP_MIX = (("passive", 0.50), ("cross", 0.70), ("ioc", 0.80), ("market", 1.0))


ZERO_TICK = Decimal("0.00")


def walk(rng: random.Random, mid: Decimal) -> Decimal:
    """The mid drifts a tick now and then, within 140..160."""
    step = rng.choice((-TICK, ZERO_TICK, ZERO_TICK, TICK))
    return min(Decimal("160"), max(Decimal("140"), mid + step))


def request_of(draw: Draw, order_id: int, user: str) -> OrderRequest:
    if draw.kind == "market":
        return OrderRequest(order_id, user, draw.side, OrderType.MARKET, None, draw.quantity, None, sequence=order_id)
    tif = TimeInForce.IOC if draw.kind == "ioc" else TimeInForce.GTC
    return OrderRequest(order_id, user, draw.side, OrderType.LIMIT, draw.price, draw.quantity, None, tif,
                        sequence=order_id)


class LiveOrders:
    """Ids that may still rest, for cancels: picked at random, dropped once found gone."""

    def __init__(self) -> None:
        self.ids: list[int] = []

    def add(self, order_id: int) -> None:
        self.ids.append(order_id)

    def pick(self, rng: random.Random, resting: Callable[[int], bool]) -> int | None:
        while self.ids:
            index = rng.randrange(len(self.ids))
            order_id = self.ids[index]
            self.ids[index] = self.ids[-1]
            self.ids.pop()
            if resting(order_id):
                return order_id
        return None


# --- 1. the book alone ----------------------------------------------------------------------------

def book_stream(total: int, seed: int) -> tuple[list[OrderRequest | int], dict[str, int]]:
    """`total` operations (an int is a cancel of that id), made by a dry run so cancels name resting orders."""
    rng = random.Random(seed)
    book = OrderBook(SYMBOL, tick_size=TICK, step_size=TICK)
    live = LiveOrders()
    stream: list[OrderRequest | int] = []
    counts = {"passive": 0, "cross": 0, "ioc": 0, "market": 0, "cancel": 0}
    mid = MID
    next_id = 0
    while len(stream) < total:
        mid = walk(rng, mid)
        if rng.random() >= BOOK_MIX[3][1]:
            victim = live.pick(rng, lambda i: book.get(i) is not None)
            if victim is not None:
                book.cancel(victim)
                stream.append(victim)
                counts["cancel"] += 1
                continue
        draw = draw_order(rng, mid, BOOK_MIX[:4])
        next_id += 1
        request = request_of(draw, next_id, f"u{rng.randrange(BOOK_USERS)}")
        execution = book.submit(request)
        if execution.resting is not None:
            live.add(next_id)
        stream.append(request)
        counts[draw.kind] += 1
    return stream, counts


def replay(stream: Sequence[OrderRequest | int]) -> tuple[float, int, int]:
    """Seconds to play `stream` on a fresh book; the trades made; the orders left resting."""
    book = OrderBook(SYMBOL, tick_size=TICK, step_size=TICK)
    submit, cancel = book.submit, book.cancel
    trades = 0
    started = time.perf_counter()
    for item in stream:
        if type(item) is int:
            cancel(item)
        else:
            trades += len(submit(item).matches)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - started
    return elapsed, trades, len(book)


def bench_book(total: int, runs: int, seed: int) -> dict[str, Any]:
    stream, counts = book_stream(total, seed)
    log(f"book: {total:,} operations {counts}; {runs} runs")
    timings = []
    for number in range(runs):
        elapsed, trades, resting = replay(stream)
        timings.append(elapsed)
        log(f"book: run {number + 1}: {total / elapsed:,.0f} ops/s ({trades:,} trades, {resting:,} resting)")
    rates = [total / t for t in timings]
    return {"operations": total, "mix": counts, "runs": runs, "ops_per_s": statistics.median(rates),
            "ops_per_s_min": min(rates), "ops_per_s_max": max(rates), "trades": trades, "resting_at_end": resting,
            "us_per_op": statistics.median(timings) / total * 1e6}


# --- databases --------------------------------------------------------------------------------------

SINCE = datetime.now(UTC) - timedelta(days=1)


def prepare(url: str, users: int) -> list[tuple[str, KeyPair]]:
    """Migrate, enroll broker 1400 (active since yesterday), open `users` accounts with keys."""
    engine = db.open_engine(url)
    try:
        with engine.begin() as connection:
            settings_versions.import_first_version(connection, ProgramConfig(), "defaults", "bench", SINCE)
            registry.enroll_broker(connection, BROKER, "acct-ccxt", "ccxt", "exchange_aggregator", SINCE, actor="bench")
            registry.change_broker_status(connection, BROKER, BrokerStatus.ACTIVE, SINCE, SINCE, actor="bench")
            now = datetime.now(UTC)
            return [(f"bench-{n:02d}", create_user_key(connection, VenueConfig(), f"bench-{n:02d}", now, actor="bench"))
                    for n in range(users)]
    finally:
        engine.dispose()


@dataclass
class Database:
    backend: Backend
    label: str
    url: str = ""

    def __enter__(self) -> "Database":
        self.url = self.backend.create(self.label)
        return self

    def __exit__(self, *_: object) -> None:
        self.backend.drop(self.url)


# --- 2. order entry in process --------------------------------------------------------------------

def loaded_book(venue: Venue) -> OrderBook | None:
    """The venue's in-memory book, to choose cancels from; None while it is not loaded (after an error)."""
    return venue.book(SYMBOL) if venue._books is not None else None


def venue_round(venue: Venue, users: Sequence[str], header: str | None, operations: int, rng: random.Random,
                live: LiveOrders) -> dict[str, Any]:
    counts = {"orders": 0, "cancels": 0, "fills": 0, "errors": 0}
    mid = MID
    started = time.perf_counter()
    for _ in range(operations):
        mid = walk(rng, mid)
        user = rng.choice(users)
        try:
            book = loaded_book(venue)
            if rng.random() >= BOOK_MIX[3][1] and book is not None:
                victim = live.pick(rng, lambda i, b=book: b.get(i) is not None)  # type: ignore[misc]
                if victim is not None:
                    owner = book.get(victim)
                    assert owner is not None
                    venue.cancel(owner.user_id, SYMBOL, victim, None)
                    counts["cancels"] += 1
                    continue
            draw = draw_order(rng, mid, BOOK_MIX[:4])
            order = OrderInput(SYMBOL, draw.side, OrderType.MARKET if draw.kind == "market" else OrderType.LIMIT,
                               draw.price, draw.quantity,
                               time_in_force=TimeInForce.IOC if draw.kind == "ioc" else TimeInForce.GTC)
            view = venue.execute(user, [order], header)[0]
            assert not isinstance(view, BaseException)
            counts["orders"] += 1
            if view.executed_quantity:
                counts["fills"] += 1
            if view.status.value in OPEN_STATUSES:
                live.add(view.order_id)
        except BkrError:
            counts["errors"] += 1
    elapsed = time.perf_counter() - started
    return {**counts, "seconds": elapsed, "ops_per_s": operations / elapsed}


def bench_venue(backend: Backend, operations: int, rounds: int, seed: int) -> dict[str, Any]:
    with Database(backend, "venue_inprocess") as database:
        ids = [user for user, _ in prepare(database.url, 16)]
        engine = db.open_engine(database.url, create=False)
        try:
            venue = Venue(engine, VenueConfig(), system_clock)
            rng = random.Random(seed)
            live = LiveOrders()
            venue_round(venue, ids, VARIANTS["1400"], max(50, operations // 10), rng, live)  # warm-up
            results: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
            names = list(VARIANTS)
            for number in range(rounds):
                for name in names[number % len(names):] + names[:number % len(names)]:
                    measured = venue_round(venue, ids, VARIANTS[name], operations, rng, live)
                    results[name].append(measured)
                    log(f"{backend.name}: in-process round {number + 1}, X-Broker-Id {name}: "
                        f"{measured['ops_per_s']:,.0f} ops/s ({measured['fills']} orders filled, "
                        f"{measured['errors']} errors)")
            with engine.connect() as connection:
                resting = connection.execute(select(func.count()).select_from(venue_orders)
                                             .where(venue_orders.c.status.in_(OPEN_STATUSES))).scalar()
                in_venue = connection.execute(select(func.count()).select_from(venue_fills)).scalar()
                in_program = connection.execute(select(func.count()).select_from(fills)).scalar()
        finally:
            engine.dispose()
    if in_venue != in_program:
        raise SystemExit(f"{backend.name}: {in_venue} venue fills but {in_program} in the broker program")
    return {"operations_per_round": operations, "rounds": rounds, "resting_at_end": resting, "fills": in_venue,
            "variants": {name: {"ops_per_s": statistics.median(r["ops_per_s"] for r in runs),
                                "rounds": runs} for name, runs in results.items()}}


# --- 3. HTTP ----------------------------------------------------------------------------------------

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
    with log_path.open("ab") as output:  # a file, not a pipe: a full pipe would block the server
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=environment,
                                  start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                raise SystemExit(f"bkr serve exited ({server.returncode}); see {log_path}")
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"bkr serve did not answer within 60 s; see {log_path}")
            time.sleep(0.1)
        yield base
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def http_body(draw: Draw) -> dict[str, Any]:
    body: dict[str, Any] = {"symbol": SYMBOL, "side": draw.side.value, "quantity": str(draw.quantity)}
    if draw.kind == "market":
        body["orderType"] = "Market"
    else:
        body.update(orderType="Limit", price=str(draw.price), timeInForce="IOC" if draw.kind == "ioc" else "GTC")
    return body


def http_phase(clients: Sequence[tuple[BackpackClient, BackpackClient]], header: str | None, seconds: float,
               seed: int) -> dict[str, Any]:
    """Each pair of clients, in its own thread, sends orders back to back for `seconds`, taking
    turns (one request in flight per thread): each has a counterparty even alone, so fills happen."""
    latencies: list[list[float]] = [[] for _ in clients]
    filled = [0] * len(clients)
    failures: dict[str, int] = {}
    guard = threading.Lock()
    start = threading.Barrier(len(clients) + 1)
    deadline = [0.0]

    def run(number: int) -> None:
        pair = clients[number]
        for client in pair:
            client.broker_id = header
        rng = random.Random(seed * 1000 + number)
        mine = latencies[number]
        start.wait()
        turn = 0
        while time.perf_counter() < deadline[0]:
            body = http_body(draw_order(rng, MID, HTTP_MIX))
            turn ^= 1
            began = time.perf_counter()
            try:
                answer = pair[turn].order(**body)
            except (BackpackError, httpx.HTTPError) as error:
                reason = f"{type(error).__name__} {getattr(error, 'code', '') or ''}".strip()
                with guard:
                    failures[reason] = failures.get(reason, 0) + 1
                continue
            mine.append(time.perf_counter() - began)
            if answer["executedQuantity"] != "0":
                filled[number] += 1

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(len(clients))]
    for thread in threads:
        thread.start()
    deadline[0] = time.perf_counter() + seconds
    began = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    every = [x for per in latencies for x in per]
    if not every:
        raise SystemExit(f"no order succeeded: {failures}")
    cuts = statistics.quantiles(every, n=100, method="inclusive")
    return {"orders": len(every), "filled": sum(filled), "failed": sum(failures.values()), "failures": failures,
            "seconds": wall, "orders_per_s": len(every) / wall, "p50_ms": cuts[49] * 1000, "p99_ms": cuts[98] * 1000}


def bench_http(backend: Backend, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    with Database(backend, "venue_http") as database:
        users = prepare(database.url, 2 * max(CLIENT_COUNTS))
        report: dict[str, Any] = {"workers": args.workers, "seconds": args.seconds, "rounds": args.rounds}
        sent: dict[str, int] = dict.fromkeys(VARIANTS, 0)
        with serving(database.url, args.workers, work / f"serve-{backend.name}.log") as base:
            singles = [BackpackClient(base, pair.api_key, pair.secret) for _, pair in users]
            pool = list(zip(singles[0::2], singles[1::2], strict=True))
            try:
                for count in CLIENT_COUNTS:
                    clients = pool[:count]
                    warm = http_phase(clients, VARIANTS["1400"], args.warmup, args.seed)
                    sent["1400"] += warm["orders"]
                    results: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
                    names = list(VARIANTS)
                    for number in range(args.rounds):
                        for name in names[number % len(names):] + names[:number % len(names)]:
                            measured = http_phase(clients, VARIANTS[name], args.seconds,
                                                  args.seed + 100 * number + count)
                            sent[name] += measured["orders"]
                            results[name].append(measured)
                            log(f"{backend.name}: HTTP {count} client(s), round {number + 1}, X-Broker-Id {name}: "
                                f"{measured['orders_per_s']:,.0f} orders/s, p50 {measured['p50_ms']:.1f} ms, "
                                f"p99 {measured['p99_ms']:.1f} ms, filled {measured['filled']}, "
                                f"failed {measured['failed']}")
                    report[str(count)] = {
                        name: {"orders_per_s": statistics.median(r["orders_per_s"] for r in runs),
                               "p50_ms": statistics.median(r["p50_ms"] for r in runs),
                               "p99_ms": statistics.median(r["p99_ms"] for r in runs),
                               "failed": sum(r["failed"] for r in runs), "rounds": runs}
                        for name, runs in results.items()}
                report["fanout"] = bench_fanout(base, pool[:args.fanout_clients], args)
                sent["1400"] += report["fanout"]["orders"]
            finally:
                for client in singles:
                    client.close()
        report["checks"] = check_http(database.url, sent)
    return report


# --- 5. WebSocket fan-out ---------------------------------------------------------------------------

class Subscribers:
    """`count` WebSocket clients of `base`, each subscribed to the market's depth, trades and top of
    book, counting what they receive, in an asyncio loop of their own thread."""

    def __init__(self, base: str, count: int) -> None:
        self.url = base.replace("http://", "ws://", 1) + "/"
        self.count = count
        self.messages = 0
        self.trade_delays: list[float] = []
        self.counting = False
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stopping: asyncio.Event | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)

    def __enter__(self) -> "Subscribers":
        self.thread.start()
        if not self.ready.wait(60):
            raise SystemExit("the WebSocket subscribers did not all connect within 60 s")
        return self

    def __exit__(self, *_: object) -> None:
        assert self.stopping is not None
        self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(30)

    async def _main(self) -> None:
        self.stopping = asyncio.Event()
        streams = [f"depth.{SYMBOL}", f"trade.{SYMBOL}", f"bookTicker.{SYMBOL}"]
        connections = [await ws_connect(self.url, max_queue=None) for _ in range(self.count)]
        for connection in connections:
            await connection.send(json.dumps({"method": "SUBSCRIBE", "params": streams, "id": 1}))
        for connection in connections:
            answer = json.loads(await connection.recv())
            if answer != {"id": 1, "result": None}:
                raise SystemExit(f"subscription refused: {answer}")
        readers = [asyncio.ensure_future(self._read(c)) for c in connections]
        self.ready.set()
        await self.stopping.wait()
        for connection in connections:
            await connection.close()
        await asyncio.gather(*readers, return_exceptions=True)

    async def _read(self, connection: Any) -> None:
        async for frame in connection:
            if not self.counting:
                continue
            self.messages += 1
            if '"stream":"trade.' in frame[:40]:  # the others are counted, not parsed: the client shares the CPUs
                self.trade_delays.append(time.time() - json.loads(frame)["data"]["T"] / 1e6)


def bench_fanout(base: str, clients: Sequence[tuple[BackpackClient, BackpackClient]],
                 args: argparse.Namespace) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    for number in range(args.rounds):
        alone = http_phase(clients, VARIANTS["1400"], args.seconds, args.seed + 7000 + number)
        with Subscribers(base, args.subscribers) as subscribers:
            subscribers.counting = True
            began = time.perf_counter()
            flowing = http_phase(clients, VARIANTS["1400"], args.seconds, args.seed + 8000 + number)
            time.sleep(0.5)  # what the last orders caused is still on its way
            subscribers.counting = False
            wall = time.perf_counter() - began
            delays = sorted(subscribers.trade_delays)
            received = subscribers.messages
        cuts = statistics.quantiles(delays, n=100, method="inclusive") if len(delays) > 1 else [0.0] * 99
        measured = {"orders": alone["orders"] + flowing["orders"],
                    "orders_per_s_without": alone["orders_per_s"], "orders_per_s": flowing["orders_per_s"],
                    "messages": received, "messages_per_s": received / wall,
                    "per_subscriber_per_s": received / wall / args.subscribers,
                    "trade_messages": len(delays), "trade_p50_ms": cuts[49] * 1000, "trade_p99_ms": cuts[98] * 1000}
        log(f"fan-out round {number + 1}: {measured['messages_per_s']:,.0f} messages/s to {args.subscribers} "
            f"subscribers while {measured['orders_per_s']:,.0f} orders/s ({alone['orders_per_s']:,.0f} without "
            f"subscribers); trade delay p50 {measured['trade_p50_ms']:.0f} ms, p99 {measured['trade_p99_ms']:.0f} ms")
        rounds.append(measured)
    keys = ["orders_per_s_without", "orders_per_s", "messages_per_s", "per_subscriber_per_s", "trade_p50_ms",
            "trade_p99_ms"]
    return {"subscribers": args.subscribers, "clients": len(clients), "orders": sum(r["orders"] for r in rounds),
            **{key: statistics.median(r[key] for r in rounds) for key in keys}, "rounds": rounds}


def check_http(url: str, sent: dict[str, int]) -> dict[str, Any]:
    """What the database holds agrees with what the clients were answered."""
    engine = db.open_engine(url, create=False)
    try:
        with engine.connect() as connection:
            def count(table: Any, *where: Any) -> int:
                return int(connection.execute(select(func.count()).select_from(table).where(*where)).scalar() or 0)

            found = {
                "venue_fills": count(venue_fills), "program_fills": count(fills),
                "program_fills_broker_1400": count(fills, fills.c.broker_id == BROKER),
                "orders_1400": count(venue_orders, venue_orders.c.broker_id == BROKER),
                "orders_9999": count(venue_orders, venue_orders.c.broker_id == UNKNOWN),
                "orders_no_header": count(venue_orders, venue_orders.c.broker_id.is_(None)),
                "seen_9999": int(connection.execute(select(venue_broker_ids_seen.c.orders).where(
                    venue_broker_ids_seen.c.header == str(UNKNOWN))).scalar() or 0),
                "resting_at_end": count(venue_orders, venue_orders.c.status.in_(OPEN_STATUSES)),
            }
    finally:
        engine.dispose()
    problems = []
    if found["venue_fills"] != found["program_fills"]:
        problems.append("venue fills != broker program fills")
    for name, key in (("1400", "orders_1400"), ("9999", "orders_9999"), ("none", "orders_no_header")):
        if found[key] != sent[name]:
            problems.append(f"{key}: {found[key]} stored, {sent[name]} answered")
    if found["seen_9999"] != sent["9999"]:
        problems.append(f"venue_broker_ids_seen 9999: {found['seen_9999']}, {sent['9999']} answered")
    if problems:
        raise SystemExit(f"checks failed: {problems}")
    return {**found, "answered": sent, "ok": True}


# --- the report ------------------------------------------------------------------------------------

def print_table(report: dict[str, Any]) -> None:
    names = [name for name in ("sqlite", "postgresql") if name in report]
    book = report["book"]
    facts, code = report["machine"], report["source"]
    print(f"\nbkr venue benchmark, {report['date']}: {facts['nproc']} CPUs ({facts['cpu']}), {facts['ram_gb']} GB, "
          f"Python {facts['python']}, SQLite {facts['sqlite']}"
          + (f", PostgreSQL {facts['postgresql']['server_version']}" if "postgresql" in facts else ""))
    print(f"code: {code['package']} (commit {code['commit']}, files sha256 {code['src_sha256']}); "
          f"args: {report['args']}")
    print(f"\n1. OrderBook alone, {book['operations']:,} operations (mix {book['mix']}), "
          f"median of {book['runs']} runs:")
    print(f"   {book['ops_per_s']:,.0f} ops/s ({book['us_per_op']:.1f} us/op; runs {book['ops_per_s_min']:,.0f}-"
          f"{book['ops_per_s_max']:,.0f}); {book['trades']:,} trades, {book['resting_at_end']:,} orders resting at end")

    rows: list[tuple[str, list[str]]] = []

    def add(label: str, value: Callable[[dict[str, Any]], str]) -> None:
        cells = []
        for name in names:
            try:
                cells.append(value(report[name]))
            except KeyError:
                cells.append("-")
        rows.append((label, cells))

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}"

    first = report[names[0]] if names else {}
    if "venue" in first:
        per = first["venue"]["operations_per_round"]
        add(f"2. Venue in process, ops/s (median of {first['venue']['rounds']} x {per:,})", lambda r: "")
        for name in VARIANTS:
            add(f"   X-Broker-Id {name}", lambda r, n=name: f"{r['venue']['variants'][n]['ops_per_s']:,.0f}")
        add("   ms per operation (1400)", lambda r: f"{1000 / r['venue']['variants']['1400']['ops_per_s']:.2f}")
        add("   ratio 1400 / none", lambda r: ratio(r["venue"]["variants"]["1400"]["ops_per_s"],
                                                    r["venue"]["variants"]["none"]["ops_per_s"]))
        add("   ratio 9999 / none", lambda r: ratio(r["venue"]["variants"]["9999"]["ops_per_s"],
                                                    r["venue"]["variants"]["none"]["ops_per_s"]))
        add("   book / Venue (1400)",
            lambda r: f"{book['ops_per_s'] / r['venue']['variants']['1400']['ops_per_s']:,.0f}x")
    if "http" in first:
        http = first["http"]
        add(f"3. HTTP POST /api/v1/order, --workers {http['workers']}, median of {http['rounds']} x "
            f"{http['seconds']:g} s", lambda r: "")
        for count in CLIENT_COUNTS:
            for name in VARIANTS:
                add(f"   {count:>2} client(s), {name:>4}: orders/s", lambda r, c=count, n=name:
                    f"{r['http'][str(c)][n]['orders_per_s']:,.0f}")
                add("                     p50 / p99 ms", lambda r, c=count, n=name:
                    f"{r['http'][str(c)][n]['p50_ms']:.1f} / {r['http'][str(c)][n]['p99_ms']:.1f}")
        add("   failed requests (all)", lambda r: str(sum(r["http"][str(c)][n]["failed"] for c in CLIENT_COUNTS
                                                          for n in VARIANTS)))
        add("   HTTP 1 client / in process", lambda r: ratio(r["http"]["1"]["1400"]["orders_per_s"],
                                                             r["venue"]["variants"]["1400"]["ops_per_s"]))
        add("4. attribution: 1400 / none throughput", lambda r: "")
        for count in CLIENT_COUNTS:
            add(f"   {count:>2} client(s)", lambda r, c=count: ratio(r["http"][str(c)]["1400"]["orders_per_s"],
                                                                  r["http"][str(c)]["none"]["orders_per_s"]))
            add("      p50 1400 - none (ms)", lambda r, c=count:
                f"{r['http'][str(c)]['1400']['p50_ms'] - r['http'][str(c)]['none']['p50_ms']:+.2f}")
            add("      9999 / none throughput", lambda r, c=count: ratio(r["http"][str(c)]["9999"]["orders_per_s"],
                                                                       r["http"][str(c)]["none"]["orders_per_s"]))
            add("      p50 9999 - none (ms)", lambda r, c=count:
                f"{r['http'][str(c)]['9999']['p50_ms'] - r['http'][str(c)]['none']['p50_ms']:+.2f}")
        fanout = http["fanout"]
        add(f"5. WebSocket fan-out, {fanout['subscribers']} subscribers, {fanout['clients']} HTTP clients",
            lambda r: "")
        add("   messages/s delivered (all)", lambda r: f"{r['http']['fanout']['messages_per_s']:,.0f}")
        add("   per subscriber, messages/s", lambda r: f"{r['http']['fanout']['per_subscriber_per_s']:,.1f}")
        add("   REST orders/s, same phase", lambda r: f"{r['http']['fanout']['orders_per_s']:,.0f}")
        add("   REST orders/s, no subscriber", lambda r: f"{r['http']['fanout']['orders_per_s_without']:,.0f}")
        add("   trade delay p50 / p99 ms", lambda r: f"{r['http']['fanout']['trade_p50_ms']:.0f} / "
            f"{r['http']['fanout']['trade_p99_ms']:.0f}")
        add("   checks (fills in both, ids stored)", lambda r: "ok" if r["http"]["checks"]["ok"] else "FAILED")
        add("   resting orders at end", lambda r: f"{r['http']['checks']['resting_at_end']:,}")
    if rows:
        width = max(len(label) for label, _ in rows) + 2
        print()
        print(f"{'':{width}}" + "".join(f"{name:>16}" for name in names))
        for label, cells in rows:
            print(f"{label:{width}}" + "".join(f"{cell:>16}" for cell in cells))
    load = report["load"]
    print(f"\nload average (1 min) at start {load['start']:.1f}, at end {load['end']:.1f}")
    print("\nWhat this means: " + meaning(report, names))


def meaning(report: dict[str, Any], names: Sequence[str]) -> str:
    """The table read in a few sentences, with this run's own figures."""
    book = report["book"]["ops_per_s"]
    said = [f"The book alone matches about {book:,.0f} operations/s ({1e6 / book:.0f} us each)."]
    for name in names:
        figures = report[name]
        entry = figures["venue"]["variants"]["none"]["ops_per_s"]
        sentence = (f"On {name}, order entry in process runs at {entry:,.0f}/s ({1000 / entry:.1f} ms each): "
                    f"{book / entry:,.0f} times slower than matching, so the transaction around each order "
                    f"(the stream's lock, reads and writes of orders, balances and fills, the broker program's "
                    f"ingest, the commit) is the cost, not the book")
        if "http" in figures:
            http = figures["http"]
            one, many = http["1"]["none"], http[str(max(CLIENT_COUNTS))]["none"]
            sentence += (f"; over HTTP one client gets {one['orders_per_s']:,.0f} orders/s (p50 {one['p50_ms']:.1f} "
                         f"ms, {one['orders_per_s'] / entry:.0%} of in process: parsing, ED25519 verification, the "
                         f"key lookup, the round trip), and {max(CLIENT_COUNTS)} clients get "
                         f"{many['orders_per_s']:,.0f}/s with p50 {many['p50_ms']:.0f} ms: order entry is one "
                         f"serialized stream, so more clients queue rather than add throughput")
        said.append(sentence + ".")
        attributed = [figures["venue"]["variants"]["1400"]["ops_per_s"] / entry]
        unknown = [figures["venue"]["variants"]["9999"]["ops_per_s"] / entry]
        if "http" in figures:
            for count in CLIENT_COUNTS:
                variants = figures["http"][str(count)]
                attributed.append(variants["1400"]["orders_per_s"] / variants["none"]["orders_per_s"])
                unknown.append(variants["9999"]["orders_per_s"] / variants["none"]["orders_per_s"])
        said.append(f"Attribution on {name}: X-Broker-Id 1400 / no header = "
                    + ", ".join(f"{r:.2f}" for r in attributed) + " (in process, then HTTP by client count); "
                    "an unknown id under the ignore policy (one more upsert per order): "
                    + ", ".join(f"{r:.2f}" for r in unknown) + ".")
    said.append("The directory lookup that decides attribution is cached in memory, so differences of a few "
                "percent between the variants are within what the rounds vary on a shared 2-CPU machine; read the "
                "per-round figures in the JSON line before calling a difference real.")
    return " ".join(said)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg", metavar="URL", help="PostgreSQL server URL; a database is created and dropped")
    parser.add_argument("--orders", type=int, default=100_000, help="operations replayed on the bare book (100k)")
    parser.add_argument("--book-runs", type=int, default=5, help="replays of the book stream; the median (5)")
    parser.add_argument("--venue-orders", type=int, default=1_000,
                        help="operations per variant and round through Venue in process (1,000)")
    parser.add_argument("--seconds", type=float, default=10, help="length of one HTTP phase (10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the variants, in process and HTTP (3)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of HTTP orders not counted (2)")
    parser.add_argument("--workers", type=int, default=1, help="bkr serve --workers (1)")
    parser.add_argument("--subscribers", type=int, default=100, help="WebSocket subscribers of the fan-out (100)")
    parser.add_argument("--fanout-clients", type=int, default=8, help="HTTP clients sending orders meanwhile (8)")
    parser.add_argument("--quick", action="store_true", help="a short run, for a smoke check")
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tmp", type=Path, help="directory for the SQLite files and server logs")
    args = parser.parse_args()
    if args.quick:
        args.orders, args.book_runs, args.venue_orders = min(args.orders, 20_000), 3, min(args.venue_orders, 200)
        args.seconds, args.rounds, args.warmup = min(args.seconds, 2), 1, 1
    work = Path(tempfile.mkdtemp(prefix="bkr-bench-venue-", dir=args.tmp))
    backends: list[Backend] = [SqliteBackend(work)]
    if args.pg and not args.sqlite_only:
        postgres = PostgresBackend(args.pg)
        postgres.prefix = f"bkr_bench_venue_{os.getpid()}"
        backends.append(postgres)
    report: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "args": " ".join(sys.argv[1:]) or "(defaults)",
        "machine": machine(args.pg if args.pg and not args.sqlite_only else None), "source": source(),
        "load": {"start": os.getloadavg()[0]}}
    try:
        report["book"] = bench_book(args.orders, args.book_runs, args.seed)
        for backend in backends:
            report[backend.name] = {"venue": bench_venue(backend, args.venue_orders, args.rounds, args.seed)}
            if not args.skip_http:
                report[backend.name]["http"] = bench_http(backend, args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["load"]["end"] = os.getloadavg()[0]
    print_table(report)
    print(json.dumps(report, sort_keys=True, default=str))


if __name__ == "__main__":
    main()
