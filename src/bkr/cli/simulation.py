"""Synthetic data: `bkr simulate` writes a month of fills (or, with --live, trades on a running
venue) and `bkr demo` loads a closed month and the current one into an empty database.

Both generate sample data, and what they record (brokers, affiliates, users, keys, imports, the
demo's close) is on the audit trail as the operator whose `--key` (or BKR_OPERATOR_KEY, with the
`operator` role) they were given, or else as `system`: a generator's run, not an operator's change.

The simulator (`bkr.simulate`) and the venue's live traders (`bkr.venue`, httpx) are imported by
the commands that use them, not here: every `bkr` invocation imports this module, and they would
add a tenth of a second to each.
"""

import tempfile
import time
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from bkr.cli.common import (
    ConfigOption,
    DbOption,
    JsonOption,
    db_hint,
    err,
    moment,
    open_program,
    operator_from_key,
    out,
    print_json,
    say,
    transaction,
)
from bkr.cli.statements import print_statements
from bkr.domain.clock import system_clock
from bkr.domain.errors import InvalidInput
from bkr.domain.money import D
from bkr.domain.operators import SYSTEM, Role
from bkr.domain.periods import Month
from bkr.program import overview, registry
from bkr.program.close import close_month, issued_statements
from bkr.program.importer import import_file
from bkr.program.periods import closed_months
from bkr.program.writer import RowResult, Tally
from bkr.store import db

if TYPE_CHECKING:
    from bkr.simulate import Simulation
    from bkr.venue.live import Cast, LiveStats

simulation_app = typer.Typer()  # no name: its commands are bkr's own (`bkr simulate`, `bkr demo`)

GeneratorKeyOption = Annotated[str | None, typer.Option(
    "--key", envvar="BKR_OPERATOR_KEY", show_default=False,
    help="An operator key (operator role) to record what is generated as its operator's; without one it is "
         "recorded as `system`.")]


def generator_actor(db_url: str, key: str | None) -> str:
    """Who a generator's run is recorded as: the operator of `key`, checked as every command
    checks one, or `system` without a key."""
    if key is None or not key.strip():
        return SYSTEM
    with transaction(db_url) as connection:
        return operator_from_key(connection, key, Role.OPERATOR).name


@simulation_app.command("simulate")
def simulate_command(
    ctx: typer.Context,
    month: Annotated[str | None, typer.Option(help="The month to simulate, YYYY-MM (required without --live).",
                                              show_default=False)] = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="The fill file to write: .csv, .ndjson/.jsonl or "
                                                                ".parquet (required without --live).")] = None,
    fill_count: Annotated[int, typer.Option("--fills", min=1, max=100_000_000,
                                            help="Rows in the file, a few planted bad ones included.")] = 10_000,
    seed: Annotated[int, typer.Option(help="The same seed writes the same file, byte for byte.")] = 1,
    until: Annotated[str | None, typer.Option(help="End of the simulated span, ISO 8601 (default: the month's end; "
                                                   "now for the current month).")] = None,
    register: Annotated[bool, typer.Option("--register/--no-register", help="Record the simulated brokers, "
                                           "affiliates, referral codes and users in --db.")] = True,
    db_url: DbOption = db.DEFAULT_URL,
    as_json: JsonOption = False,
    live: Annotated[bool, typer.Option("--live", help="Instead: trade on a running `bkr serve` through its "
                                                      "Backpack API (makers, takers with broker ids).")] = False,
    url: Annotated[str | None, typer.Option(help="--live: the venue's URL [default: http://127.0.0.1:8000]",
                                            show_default=False)] = None,
    duration: Annotated[float | None, typer.Option(min=0, help="--live: seconds to trade (default: until "
                                                               "Ctrl-C).")] = None,
    rate: Annotated[float | None, typer.Option(min=0.1, max=1_000, help="--live: orders per second, maker quotes "
                                                             "included [default: 20]", show_default=False)] = None,
    config_path: ConfigOption = None,
    key: GeneratorKeyOption = None,
) -> None:
    """Write a synthetic month of fills, and register its brokers, affiliates and users; or, with
    --live, make makers and takers trade on a running venue so that the current month grows."""
    from bkr import simulate

    if live:
        if month is not None or out_file is not None or until is not None or as_json:
            raise InvalidInput("--live: trades on a running venue; --month, --out, --until and --json do not apply")
        _simulate_live(url, duration, rate, seed, db_url, config_path, key)
        return
    for flag, required in (("--month", month), ("--out", out_file)):
        if required is None:  # a usage error (status 2), as when these options were required
            raise typer.BadParameter("missing (required without --live)", ctx=ctx, param_hint=f"'{flag}'")
    for flag, live_only in (("--url", url), ("--duration", duration), ("--rate", rate)):
        if live_only is not None:
            raise InvalidInput(f"{flag}: only with --live")
    assert month is not None and out_file is not None
    now = system_clock()
    target = Month.parse(month)
    if target > Month.of(now):
        raise InvalidInput(f"--month: {target} is in the future")
    end = moment(until, "--until") if until is not None else (now if target == Month.of(now) else None)
    simulation = simulate.plan_simulation(target, fill_count, seed, end)
    simulate.file_format_of(out_file)
    if not out_file.parent.is_dir():
        raise InvalidInput(f"--out: no directory {out_file.parent}")
    registration = None
    if register:  # first, so that a database problem stops us before a long write
        actor = generator_actor(db_url, key)
        with transaction(db_url) as connection:
            registration = simulate.register_simulated_registry(connection, simulation.registry, system_clock(),
                                                                actor=actor)
    _write_simulation(simulation, out_file, quiet=as_json)
    summary = simulation.summary()
    if as_json:
        print_json(summary | {"file": str(out_file),
                               "registered": None if registration is None else registration.to_document()})
        return
    say(out, f"{out_file}: {summary['rows']:,} fills of {target} ({summary['by_category']['broker_api']:,} "
              f"broker API fills; planted: {summary['malformed']} malformed rows, {summary['duplicates']} duplicates, "
              f"{summary['conflicts']} conflicting duplicate)")
    if registration is not None:
        say(out, f"registered: {registration.brokers} brokers, {registration.status_changes} status changes, "
                  f"{registration.affiliates} affiliates, {registration.rates} referral rates, "
                  f"{registration.users:,} users (new; existing ones kept); "
                  f"{summary['users']['unregistered']} users left unregistered on purpose: their fills wait")
    db_flag = db_hint(db_url)
    say(out, f"next: bkr fills import {out_file}{db_flag}, then bkr close --month {target}{db_flag}")


def _simulate_live(url: str | None, duration: float | None, rate: float | None, seed: int, db_url: str,
                   config_path: Path | None, key: str | None) -> None:
    """`bkr simulate --live`: a status line every few seconds, a table of volume per broker at the end."""
    import httpx

    from bkr.venue import live as venue_live
    from bkr.venue.settings import load_venue_config

    base = (url or venue_live.DEFAULT_URL).rstrip("/")
    try:
        parsed = httpx.URL(base)
    except httpx.InvalidURL as error:
        raise InvalidInput(f"--url: not a URL: {base!r} ({error})") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidInput(f"--url: {base!r} is not http(s)://HOST[:PORT], the address of a running `bkr serve`")
    pace = venue_live.DEFAULT_RATE if rate is None else D(str(rate))
    venue_config = load_venue_config(config_path)
    with httpx.Client(base_url=base, timeout=30) as http:
        markets = venue_live.load_markets(http, base)  # before touching --db: a venue that is down stops us here
    actor = generator_actor(db_url, key)
    with transaction(db_url) as connection:
        cast = venue_live.open_traders(connection, venue_config, system_clock(), actor=actor)
    names = cast.broker_names
    columns = venue_live.brokers_in_order(cast)
    if not names:
        say(err, "no active broker in --db: every taker trades unattributed (bkr broker activate ID)")
    say(out, f"trading on {base}: {len(cast.makers)} makers, {len(cast.takers)} takers "
              f"({', '.join(f'{t.user_id} → {venue_live.broker_label(t.broker_id, names)}' for t in cast.takers)}), "
              f"{len(markets)} markets, {pace} orders/s" + ("" if duration is None else f" for {duration:g} s")
              + ("" if duration is not None else "; Ctrl-C stops"))

    def status(stats: venue_live.LiveStats, elapsed: float) -> None:
        line = Text.assemble((f"{elapsed:6.1f}s", "dim"), f"  orders {stats.orders:,} ({stats.rejected:,} rejected)  "
                             f"filled taker orders {stats.total_filled:,}  volume USDC:")
        for broker in columns:
            line.append(f"  {venue_live.broker_label(broker, names)} ")
            line.append(f"{stats.volume.get(broker, Decimal(0)):,.2f}", "bold")
        out.print(line, soft_wrap=True)

    simulation = venue_live.LiveSimulation(base, cast, markets, rate=pace, seed=seed)
    started = time.monotonic()
    try:
        simulation.run(duration, status)
    finally:
        simulation.stop()
        if simulation.stats.orders:
            _print_live_summary(simulation.stats, cast, names, columns, time.monotonic() - started)
    db_flag = db_hint(db_url)
    if names:
        say(out, f"the program counts it: bkr broker show {min(names)}{db_flag}")


def _print_live_summary(stats: "LiveStats", cast: "Cast", names: Mapping[int, str], columns: list[int | None],
                        elapsed: float) -> None:
    from bkr.venue.live import broker_label

    table = Table(title=f"Live simulation: {elapsed:.1f} s, {stats.orders:,} orders sent, {stats.rejected:,} "
                        f"rejected, {stats.failures:,} failed", title_justify="left")
    table.add_column("broker (X-Broker-Id)")
    for heading in ("takers", "taker orders", "filled", "volume (USDC)"):
        table.add_column(heading, justify="right", no_wrap=True)
    for broker_id in columns:
        table.add_row(broker_label(broker_id, names), str(sum(1 for t in cast.takers if t.broker_id == broker_id)),
                      f"{stats.taker_orders.get(broker_id, 0):,}", f"{stats.filled.get(broker_id, 0):,}",
                      f"{stats.volume.get(broker_id, Decimal(0)):,.2f}")
    out.print(table)



def _write_simulation(simulation: "Simulation", path: Path, *, quiet: bool) -> None:
    from bkr import simulate

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, disable=quiet or not err.is_terminal) as progress:
        task = progress.add_task(f"writing {path.name}", total=simulation.fills)
        simulate.write_fills(simulation, path, on_progress=lambda done: progress.update(task, completed=done))


@simulation_app.command("demo")
def demo(
    db_url: DbOption = db.DEFAULT_URL,
    config_path: ConfigOption = None,
    previous_fills: Annotated[int, typer.Option(min=1, help="Fills of the closed month.")] = 50_000,
    current_fills: Annotated[int, typer.Option(min=1, help="Fills of the current month so far.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Seed of the simulation.")] = 7,
    key: GeneratorKeyOption = None,
) -> None:
    """Load a demo into an empty database (last month, closed, and this month so far), then print
    the statements of the latest closed month and what to try next."""
    from bkr import simulate

    actor = generator_actor(db_url, key)
    engine = open_program(db_url, config_path)
    with engine.connect() as connection:
        empty = not overview.has_fills(connection)
    if empty:
        now = system_clock()
        started = time.monotonic()
        current = Month.of(now)
        with tempfile.TemporaryDirectory(prefix="bkr-demo-") as workdir:
            for month, count, until in ((current.previous(), previous_fills, None), (current, current_fills, now)):
                if until == month.start:
                    continue  # the current month has not begun to have fills
                simulation = simulate.plan_simulation(month, count, seed, until)
                with engine.begin() as connection:
                    simulate.register_simulated_registry(connection, simulation.registry, system_clock(), actor=actor)
                path = Path(workdir) / f"fills-{month}.csv"
                _write_simulation(simulation, path, quiet=False)
                with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TimeElapsedColumn(), console=err, disable=not err.is_terminal) as progress:
                    task = progress.add_task(f"importing {month}", total=count)

                    def report(tally: Tally, _results: list[RowResult], task: Any = task, bar: Any = progress) -> None:
                        bar.update(task, completed=tally.accepted + tally.duplicates + tally.conflicts + tally.rejected)

                    tally = import_file(engine, path, clock=system_clock, actor=actor, on_batch=report)
                say(err, f"{month}: {count:,} simulated fills imported ({tally.counted:,} broker volume, "
                          f"{tally.awaiting_user:,} awaiting their user, {tally.rejected} rejected, "
                          f"{tally.duplicates} duplicates, {tally.conflicts} conflicts)")
                if until is None:
                    result = close_month(engine, month, now=system_clock(), actor=actor)
                    say(err, f"{month}: closed, {len(result.statements)} statements")
        say(err, f"demo loaded in {time.monotonic() - started:.1f} s")
    with transaction(db_url) as connection:
        closed = closed_months(connection)
        latest = max(closed) if closed else None
        statements = issued_statements(connection, latest) if latest is not None else []
        names = {view.broker_id: view.name for view in registry.list_brokers(connection, system_clock())}
    db_flag = db_hint(db_url)
    if latest is None:
        say(out, "No month is closed yet. Close one, with an operator's key in BKR_OPERATOR_KEY: "
                  f"bkr close --month {Month.of(system_clock()).previous()}{db_flag}")
        return
    print_statements(latest, statements, names)
    top = max(statements, key=lambda s: s.payout).broker_id if statements else 1400
    say(out, "\nWhat to try next", style="bold")
    for command, why in (
        (f"bkr statement --broker {top} --month {latest} --format csv{db_flag}", "one statement, line by line"),
        (f"bkr broker show {top}{db_flag}", "its status history and this month so far"),
        (f"bkr broker list{db_flag}", "every broker (one pending, one suspended)"),
        (f"bkr fills rejected{db_flag}", "the planted bad rows, the conflict, fills waiting for their user"),
        (f"bkr user add --id user-new-1 --referral-code BETA-25 --retroactive --reason 'signup found late'{db_flag}",
         f"register a waiting user (with an operator's key in BKR_OPERATOR_KEY): its fills of {latest}, closed, are "
         "paid as adjustments next month"),
        (f"bkr close --month {latest}{db_flag}",
         "closing again changes nothing (with an operator's key in BKR_OPERATOR_KEY: `make run` prints some)"),
    ):
        say(out, f"  {command}")
        say(out, f"      {why}", style="dim")
