"""The `bkr` command: the operator's handle on the program.

Every command takes `--db URL` (or BKR_DATABASE_URL; default: ./bkr.db) and `--config FILE`
(or BKR_CONFIG). Errors a user can make end with exit status 1 and one line on stderr;
`--json` prints machine-readable output only.
"""

import csv
import json
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import ArgumentError, OperationalError

from bkr.domain.clock import system_clock
from bkr.domain.errors import BkrError, InvalidInput
from bkr.domain.money import D
from bkr.domain.periods import Month, parse_instant
from bkr.domain.registry import BrokerStatus, BrokerType
from bkr.ingest.readers import read_rows
from bkr.program import overview, registry, reports, review
from bkr.program.close import close_month, stored_statement
from bkr.program.exports import statement_csv
from bkr.program.importer import import_file
from bkr.program.writer import RowResult, Tally
from bkr.settings import load_config
from bkr.store import db

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__, pretty_exceptions_enable=False)
broker_app = typer.Typer(no_args_is_help=True, help="Enroll brokers and change their status.")
affiliate_app = typer.Typer(no_args_is_help=True, help="Enroll affiliates.")
referral_app = typer.Typer(no_args_is_help=True, help="Referral codes and their affiliate rebate rates.")
user_app = typer.Typer(no_args_is_help=True, help="Users and the referral code they signed up with.")
fills_app = typer.Typer(no_args_is_help=True, help="Import fills and review what was not accepted.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
app.add_typer(broker_app, name="broker")
app.add_typer(affiliate_app, name="affiliate")
app.add_typer(referral_app, name="referral")
app.add_typer(user_app, name="user")
app.add_typer(fills_app, name="fills")
app.add_typer(db_app, name="db")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

DbOption = Annotated[str, typer.Option("--db", envvar="BKR_DATABASE_URL", help="Database URL.")]
ConfigOption = Annotated[Path | None, typer.Option("--config", envvar="BKR_CONFIG", help="Program config (TOML).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output only.")]
AtOption = Annotated[str | None, typer.Option("--at", help="Effective time, ISO 8601 (default: now).")]


def _engine(url: str) -> Engine:
    return db.open_engine(url)


@contextmanager
def _transaction(url: str) -> Iterator[Connection]:
    with _engine(url).begin() as connection:
        yield connection


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def _moment(text: str | None) -> datetime:
    return system_clock() if text is None else parse_instant(text)


# --- db ----------------------------------------------------------------------------------------

@db_app.command("upgrade")
def db_upgrade(db_url: DbOption = db.DEFAULT_URL) -> None:
    """Create the schema or bring it to the latest migration."""
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    err.print(f"schema at {db.current_revision(engine)}")


# --- brokers -----------------------------------------------------------------------------------

@broker_app.command("add")
def broker_add(
    broker_id: Annotated[int, typer.Option("--id", help="The X-Broker-Id number, 1..65535.")],
    account: Annotated[str, typer.Option(help="The broker's business account.")],
    name: Annotated[str, typer.Option(help="Display name.")],
    broker_type: Annotated[str, typer.Option("--type", help=" | ".join(t.value for t in BrokerType))],
    db_url: DbOption = db.DEFAULT_URL,
) -> None:
    """Enroll a business account as a broker (status: pending)."""
    with _transaction(db_url) as connection:
        registry.enroll_broker(connection, broker_id, account, name, broker_type, system_clock())
    err.print(f"broker {broker_id} enrolled (pending); activate it with: bkr broker activate {broker_id}")


def _change_status(broker_id: int, status: BrokerStatus, at: str | None, db_url: str) -> None:
    with _transaction(db_url) as connection:
        view = registry.change_broker_status(connection, broker_id, status, _moment(at), system_clock())
    err.print(f"broker {broker_id} {status.value} from {_moment(at) if at else 'now'}; status now: {view.status}")


@broker_app.command("activate")
def broker_activate(broker_id: int, at: AtOption = None, db_url: DbOption = db.DEFAULT_URL) -> None:
    """Make a broker active: its API fills count from --at on."""
    _change_status(broker_id, BrokerStatus.ACTIVE, at, db_url)


@broker_app.command("suspend")
def broker_suspend(broker_id: int, at: AtOption = None, db_url: DbOption = db.DEFAULT_URL) -> None:
    """Suspend a broker: its fills stop counting from --at on."""
    _change_status(broker_id, BrokerStatus.SUSPENDED, at, db_url)


@broker_app.command("terminate")
def broker_terminate(broker_id: int, at: AtOption = None, db_url: DbOption = db.DEFAULT_URL) -> None:
    """End a broker's enrollment for good (its id is never reused)."""
    _change_status(broker_id, BrokerStatus.TERMINATED, at, db_url)


@broker_app.command("list")
def broker_list(db_url: DbOption = db.DEFAULT_URL, as_json: JsonOption = False) -> None:
    """All brokers with their current status."""
    with _transaction(db_url) as connection:
        views = registry.list_brokers(connection, system_clock())
    if as_json:
        _print_json([{"broker_id": v.broker_id, "account": v.account_id, "name": v.name, "type": v.type.value,
                      "status": v.status.value} for v in views])
        return
    table = Table("id", "name", "type", "account", "status")
    for v in views:
        table.add_row(str(v.broker_id), v.name, v.type.value, v.account_id, v.status.value)
    out.print(table)


@broker_app.command("show")
def broker_show(broker_id: int, db_url: DbOption = db.DEFAULT_URL, config_path: ConfigOption = None,
                as_json: JsonOption = False) -> None:
    """A broker, its status history, and where it stands this month."""
    config = load_config(config_path)
    with _transaction(db_url) as connection:
        summary = reports.broker_summary(connection, config, broker_id, system_clock())
    view = summary.broker
    document: dict[str, Any] = {
        "broker_id": view.broker_id, "account": view.account_id, "name": view.name, "type": view.type.value,
        "status": view.status.value,
        "history": [{"status": c.status.value, "effective_at": c.effective_at.isoformat()}
                    for c in view.timeline.changes],
        "month_to_date": {k: v for k, v in summary.to_document().items() if k not in ("broker_id", "name", "status")},
    }
    if as_json:
        _print_json(document)
        return
    out.print(f"[bold]{view.name}[/] (broker {view.broker_id}, {view.type.value}, account {view.account_id}): "
              f"[bold]{view.status.value}[/]")
    for change in view.timeline.changes:
        out.print(f"  {change.effective_at.isoformat()}  {change.status.value}")
    mtd = document["month_to_date"]
    out.print(f"{mtd['month']} so far: API volume ${mtd['api_volume']} (spot {mtd['spot_volume']}, futures "
              f"{mtd['futures_volume']}) → {mtd['tier']} at {mtd['broker_rate']}; payout if the month ended now "
              f"${mtd['payout']}" + (f"; ${mtd['volume_to_next_tier']} more for {mtd['next_tier']}"
                                      if mtd["next_tier"] else ""))
    if mtd["last_closed_month"]:
        out.print(f"{mtd['last_closed_month']} (last closed): {mtd['last_closed_tier']}")


broker_key_app = typer.Typer(no_args_is_help=True, help="A broker's API keys (ED25519, Backpack style).")
broker_app.add_typer(broker_key_app, name="key")


@broker_key_app.command("create")
def broker_key_create(broker_id: int, db_url: DbOption = db.DEFAULT_URL, as_json: JsonOption = False) -> None:
    """Make a key pair for a broker's API. The secret is shown once; bkr keeps only the public key."""
    from bkr.program import keys

    with _transaction(db_url) as connection:
        pair = keys.create_broker_key(connection, broker_id, system_clock())
    if as_json:
        _print_json({"broker_id": broker_id, "api_key": pair.api_key, "secret": pair.secret})
        return
    out.print(f"api key (X-API-Key): {pair.api_key}\nsecret:              {pair.secret}")
    err.print("The secret is not stored: keep it now. Sign requests as Backpack's API is signed (docs/api.md).")


@app.command("admin-key")
def admin_key(
    action: Annotated[str, typer.Argument(help="create")],
    role: Annotated[str, typer.Option(help="viewer (reads) or operator (reads and changes)")] = "viewer",
    db_url: DbOption = db.DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """Create an operator key for the HTTP API: `bkr admin-key create --role operator`."""
    from bkr.program import keys

    if action != "create":
        raise InvalidInput(f"admin-key: unknown action {action!r} (use: create)")
    with _transaction(db_url) as connection:
        key = keys.create_operator_key(connection, role, system_clock())
    if as_json:
        _print_json({"key_id": key.key_id, "role": key.role.value, "token": key.token})
        return
    out.print(key.token)
    err.print(f"{key.role.value} key {key.key_id}; send it as `Authorization: Bearer <key>`. It is shown only once.")


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1; BKR_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000; BKR_PORT).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default 1; BKR_WORKERS).")] = None,
    max_batch: Annotated[int | None, typer.Option(help="Most fills per POST /v1/fills (BKR_MAX_BATCH).")] = None,
    close_grace_minutes: Annotated[int | None, typer.Option(
        help="Close the previous month this long after 00:00 UTC on the 1st (BKR_CLOSE_GRACE_MINUTES).")] = None,
    scheduled_close: Annotated[bool | None, typer.Option(
        "--scheduled-close/--no-scheduled-close", help="Close months on schedule (BKR_SCHEDULED_CLOSE).")] = None,
    db_url: DbOption = db.DEFAULT_URL,
    config_path: ConfigOption = None,
) -> None:
    """Run the HTTP API: fill ingestion, the operator API and the broker API."""
    import os

    from bkr.api.server import run_server
    from bkr.settings import load_service_settings

    config = load_config(config_path)
    settings = load_service_settings(config_path, os.environ, {
        "host": host, "port": port, "workers": workers, "max_batch": max_batch,
        "close_grace_minutes": close_grace_minutes, "scheduled_close": scheduled_close})
    _engine(db_url).dispose()  # migrate an empty database, refuse one behind, before serving
    run_server(db_url, config_path, config, settings)


# --- affiliates, referral codes, users ------------------------------------------------------------

@affiliate_app.command("add")
def affiliate_add(account: Annotated[str, typer.Option(help="The affiliate's business account.")],
                  name: Annotated[str, typer.Option(help="Display name.")],
                  db_url: DbOption = db.DEFAULT_URL) -> None:
    """Enroll a business account as an affiliate."""
    with _transaction(db_url) as connection:
        registry.enroll_affiliate(connection, account, name, system_clock())
    err.print(f"affiliate {account} enrolled")


@affiliate_app.command("list")
def affiliate_list(db_url: DbOption = db.DEFAULT_URL, as_json: JsonOption = False) -> None:
    """Affiliates and their referral codes."""
    with _transaction(db_url) as connection:
        rows = registry.list_affiliates(connection)
    if as_json:
        _print_json([{"account": a, "name": n, "codes": c} for a, n, c in rows])
        return
    table = Table("account", "name", "codes")
    for account, name, codes in rows:
        table.add_row(account, name, ", ".join(codes))
    out.print(table)


@referral_app.command("add")
def referral_add(
    affiliate: Annotated[str, typer.Option(help="The affiliate's account.")],
    code: Annotated[str, typer.Option(help="The referral code.")],
    rate: Annotated[str, typer.Option(help="Affiliate rebate rate, a fraction such as 0.10.")],
    effective_from: Annotated[str | None, typer.Option("--from", help="ISO 8601 (default: now).")] = None,
    db_url: DbOption = db.DEFAULT_URL,
) -> None:
    """Create a referral code, or record a new rate for it from --from on."""
    with _transaction(db_url) as connection:
        registry.set_referral_rate(connection, affiliate, code, D(rate), _moment(effective_from), system_clock())
    err.print(f"code {code}: rate {rate} from {effective_from or 'now'}")


@user_app.command("add")
def user_add(user_id: Annotated[str, typer.Option("--id", help="The exchange's user id.")],
             referral_code: Annotated[str | None, typer.Option(help="The code the user signed up with.")] = None,
             db_url: DbOption = db.DEFAULT_URL) -> None:
    """Register a user (and the referral code it signed up with, if any)."""
    with _transaction(db_url) as connection:
        registry.add_users(connection, [(user_id, referral_code)], system_clock())
    err.print(f"user {user_id} registered")


user_key_app = typer.Typer(no_args_is_help=True, help="A user's venue API keys (ED25519, Backpack style).")
user_app.add_typer(user_key_app, name="key")


@user_key_app.command("create")
def user_key_create(user_id: str,
                    referral_code: Annotated[str | None, typer.Option(help="The code the user signed up with.")] = None,
                    db_url: DbOption = db.DEFAULT_URL, config_path: ConfigOption = None,
                    as_json: JsonOption = False) -> None:
    """Make a key pair to trade on the venue as USER (registering the user and opening its
    account, with the configured play money, if needed). The secret is shown once."""
    from bkr.venue.accounts import create_user_key
    from bkr.venue.settings import load_venue_config

    venue_config = load_venue_config(config_path)
    with _transaction(db_url) as connection:
        pair = create_user_key(connection, venue_config, user_id, system_clock(), referral_code=referral_code)
    if as_json:
        _print_json({"user_id": user_id.strip(), "api_key": pair.api_key, "secret": pair.secret})
        return
    out.print(f"api key (X-API-Key): {pair.api_key}\nsecret:              {pair.secret}")
    err.print("The secret is not stored: keep it now. It is the `secret` of ccxt's backpack client (docs/brokers.md).")


@user_app.command("import")
def user_import(file: Path, db_url: DbOption = db.DEFAULT_URL, as_json: JsonOption = False) -> None:
    """Register users from a CSV with columns user_id,referral_code."""
    try:
        with file.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "user_id" not in reader.fieldnames:
                raise InvalidInput(f"{file.name}: needs a header with user_id (and referral_code)")
            entries = [(row["user_id"] or "", row.get("referral_code")) for row in reader]
    except FileNotFoundError:
        raise InvalidInput(f"{file}: no such file") from None
    with _transaction(db_url) as connection:
        new = registry.add_users(connection, entries, system_clock())
    if as_json:
        _print_json({"users": len(entries), "new": new})
    else:
        err.print(f"{len(entries)} users read, {new} new")


# --- fills -----------------------------------------------------------------------------------

@fills_app.command("import")
def fills_import(
    file: Path,
    db_url: DbOption = db.DEFAULT_URL,
    config_path: ConfigOption = None,
    file_format: Annotated[str | None, typer.Option("--format", help="csv | ndjson | parquet (default: by name)")]
    = None,
    batch_size: Annotated[int, typer.Option(help="Fills per transaction.")] = 5_000,
    as_json: JsonOption = False,
) -> None:
    """Import fills from CSV, NDJSON or Parquet. Safe to repeat and to interrupt."""
    config = load_config(config_path)
    engine = _engine(db_url)
    read_rows(file, file_format)  # fail on a missing file or unknown type before any progress bar
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[rate]}"),
                  TimeElapsedColumn(), console=err, disable=as_json or not err.is_terminal) as progress:
        task = progress.add_task(f"importing {file.name}", total=None, rate="")
        started = datetime.now()

        def report(tally: Tally, _results: list[RowResult]) -> None:
            seen = tally.accepted + tally.duplicates + tally.conflicts + tally.rejected
            seconds = max((datetime.now() - started).total_seconds(), 1e-9)
            progress.update(task, completed=seen, rate=f"{seen:,} rows, {seen / seconds:,.0f}/s")

        tally = import_file(engine, config, file, clock=system_clock, batch_size=batch_size,
                            file_format=file_format, on_batch=report)
    if as_json:
        _print_json(tally.counts())
        return
    out.print(f"{file.name}: {tally.accepted:,} accepted ({tally.counted:,} broker volume, "
              f"{tally.awaiting_user:,} awaiting their user), {tally.duplicates:,} duplicates, "
              f"{tally.conflicts:,} conflicts, {tally.rejected:,} rejected")
    if tally.rejected or tally.conflicts:
        out.print("See them with: bkr fills rejected")


@fills_app.command("rejected")
def fills_rejected(db_url: DbOption = db.DEFAULT_URL, limit: Annotated[int, typer.Option()] = 50,
                   as_json: JsonOption = False) -> None:
    """Rows that were rejected (with their reason), conflicting fills, and fills awaiting their user."""
    with _transaction(db_url) as connection:
        rejections = review.rejected_rows(connection, limit=limit)
        conflicts = review.conflict_rows(connection, limit=limit)
        counts = review.review_counts(connection).to_document()
    if as_json:
        _print_json({"counts": counts,
                     "rejected": [{"source": r.source, "line": r.line, "fill_id": r.fill_id, "reason": r.reason,
                                   "raw": r.raw} for r in rejections],
                     "conflicts": [{"source": c.source, "line": c.line, "fill_id": c.fill_id, "raw": c.raw}
                                   for c in conflicts]})
        return
    table = Table("source", "line", "fill_id", "reason", title=f"rejected rows ({counts['rejected']:,})")
    for r in rejections:
        table.add_row(r.source, str(r.line or ""), r.fill_id or "", r.reason)
    out.print(table)
    table = Table("source", "line", "fill_id", "received", title=f"conflicts ({counts['conflicts']:,}): "
                  "same fill_id, other content; not applied")
    for c in conflicts:
        table.add_row(c.source, str(c.line or ""), c.fill_id, c.raw[:80])
    out.print(table)
    if counts["awaiting_user"]:
        out.print(f"{counts['awaiting_user']:,} broker fills wait for their user to be registered "
                  "(bkr user add / bkr user import); they are paid once it is.")


# --- close and statements -------------------------------------------------------------------------

@app.command("close")
def close(
    month: Annotated[str, typer.Option(help="YYYY-MM")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Compute everything, write nothing.")] = False,
    db_url: DbOption = db.DEFAULT_URL,
    config_path: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Close a month: tiers, payouts, one statement per broker. Idempotent."""
    config = load_config(config_path)
    result = close_month(_engine(db_url), config, Month.parse(month), now=system_clock(), dry_run=dry_run)
    document = result.to_document()
    if as_json:
        _print_json({"month": document["month"], "dry_run": result.dry_run,
                     "already_closed": result.already_closed,
                     "awaiting_user_fills": result.awaiting_user_fills, "statements": document["statements"]})
        return
    verb = "preview of" if dry_run else ("already closed:" if result.already_closed else "closed")
    table = Table("broker", "tier", "rate", "spot volume", "futures volume", "fee base", "adjustments",
                  "payout (exact)", "payout", title=f"{verb} {month}")
    for s in document["statements"]:
        table.add_row(str(s["broker_id"]), s["tier"], s["broker_rate"], s["spot_volume"], s["futures_volume"],
                      s["fee_base"], s["adjustment_payout_exact"], s["payout_exact"], s["payout"])
    out.print(table)
    if result.awaiting_user_fills:
        err.print(f"warning: {result.awaiting_user_fills:,} broker fills of {month} wait for their user and are "
                  "not in these statements (bkr fills rejected)")


@app.command("approve")
def approve(
    month: Annotated[str, typer.Option(help="YYYY-MM")],
    by: Annotated[str, typer.Option("--by", help="Who approves (an operator's name): approvals count per "
                                                 "distinct approver.")],
    broker: Annotated[int | None, typer.Option(help="One broker's statement (default: every draft of the "
                                                    "month).")] = None,
    db_url: DbOption = db.DEFAULT_URL,
    config_path: ConfigOption = None,
) -> None:
    """Approve draft statements; with the approvals the program requires they become final."""
    from bkr.program import settlement

    config = load_config(config_path)
    target = Month.parse(month)
    with _transaction(db_url) as connection:
        done = settlement.approve_month(connection, config, target, by.strip() or "-", system_clock(), broker_id=broker)
    final = sum(a.status == settlement.FINAL for a in done)
    err.print(f"{month}: {len(done)} statement(s) approved by {by}; {final} now final "
              f"({config.approvals_required} distinct approval(s) required)")


@app.command("reconcile")
def reconcile(
    month: Annotated[str, typer.Option(help="YYYY-MM (a closed month)")],
    db_url: DbOption = db.DEFAULT_URL,
    config_path: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check a closed month link by link: fills -> aggregates -> statement lines -> totals, paid
    statements -> ledger payouts, and that the ledger balances. Exits 1 if anything differs."""
    from bkr.program.reconcile import reconcile_month

    with db.snapshot(_engine(db_url)) as connection:  # one consistent state, without holding writers up
        result = reconcile_month(connection, load_config(config_path), Month.parse(month))
    if as_json:
        _print_json({"month": str(result.month), "statements": result.statements, "fills": result.fills,
                     "clean": result.clean, "differences": [
                         {"link": d.link, "subject": d.subject, "expected": d.expected, "found": d.found}
                         for d in result.differences]})
    else:
        for difference in result.differences:
            out.print(str(difference), markup=False, highlight=False)
        err.print(f"{month}: {result.statements} statements, {result.fills:,} counted fills: "
                  + ("everything reconciles" if result.clean else f"{len(result.differences)} difference(s)"))
    if not result.clean:
        raise typer.Exit(1)


@app.command("settle")
def settle(
    month: Annotated[str, typer.Option(help="YYYY-MM")],
    db_url: DbOption = db.DEFAULT_URL,
    config_path: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Pay every final statement of a month through the ledger, each exactly once (safe to rerun)."""
    from bkr.program.settlement import settle_month

    result = settle_month(_engine(db_url), load_config(config_path), Month.parse(month), system_clock())
    if as_json:
        _print_json(result.to_document())
        return
    err.print(f"{month}: paid {len(result.paid)}, already paid {len(result.already_paid)}, "
              f"still in review {len(result.not_final)}")


statement_app = typer.Typer(invoke_without_command=True, help="Print one broker's statement of a closed month, "
                            "or check a signed one (`bkr statement verify FILE`).")
app.add_typer(statement_app, name="statement")
STATEMENT_FORMATS = ("json", "csv", "signed", "html")


@statement_app.callback()
def statement(
    ctx: typer.Context,
    broker: Annotated[int | None, typer.Option("--broker", help="Broker id.", show_default=False)] = None,
    month: Annotated[str | None, typer.Option(help="YYYY-MM", show_default=False)] = None,
    output_format: Annotated[str, typer.Option("--format", help="json (the stored document) | csv | signed (with "
                                                                "the exchange's signature) | html (printable)")]
    = "json",
    db_url: DbOption = db.DEFAULT_URL,
    config_path: ConfigOption = None,
) -> None:
    """Print one broker's statement for a closed month, with its lines per user and market type:
    `bkr statement --broker N --month YYYY-MM [--format json|csv|signed|html]`. `signed` and
    `html` are signed with the statement key of `[statements] signing_key_file` or
    BKR_STATEMENT_KEY_FILE. `bkr statement verify FILE` checks a signed statement."""
    import os

    from bkr.program.exports import statement_html
    from bkr.program.statement_signing import load_signing_key, signed_statement
    from bkr.settings import statement_key_file

    if ctx.invoked_subcommand is not None:
        if broker is not None or month is not None:
            raise InvalidInput(f"--broker and --month belong to `bkr statement`, not to `bkr statement "
                               f"{ctx.invoked_subcommand}`")
        return
    for flag, value in (("--broker", broker), ("--month", month)):
        if value is None:  # a usage error (status 2), as when these options were required
            raise typer.BadParameter("missing", ctx=ctx, param_hint=f"'{flag}'")
    assert broker is not None and month is not None
    if output_format not in STATEMENT_FORMATS:
        raise InvalidInput(f"--format: {output_format!r} is not one of {', '.join(STATEMENT_FORMATS)}")
    target = Month.parse(month)
    key = None
    if output_format in ("signed", "html"):
        key_file = statement_key_file(config_path, os.environ)
        if output_format == "signed" or key_file is not None:  # an unsigned printout is allowed, said so
            key = load_signing_key(key_file)
    with _transaction(db_url) as connection:
        text = stored_statement(connection, broker, target)
        envelope = signed_statement(connection, broker, target, key) if key is not None else None
        name = registry.get_broker(connection, broker, system_clock()).name if output_format == "html" else None
    document = json.loads(text)
    if output_format == "json":
        _print_json(document)
    elif output_format == "csv":
        sys.stdout.write(statement_csv(document))
    elif output_format == "signed":
        _print_json(envelope)
    else:
        sys.stdout.write(statement_html(document, signature=None if envelope is None else envelope["signature"],
                                        broker_name=name))
        if envelope is None:
            _say(err, "warning: no statement key is configured, so this page is not signed "
                      "(bkr statement-key create; docs/operators.md)")


@statement_app.command("verify")
def statement_verify(
    file: Annotated[Path, typer.Argument(help="A signed statement (`bkr statement --format signed`, or the broker "
                                              "API's `format=signed`); - reads standard input.")],
    db_url: Annotated[str | None, typer.Option(
        "--db", envvar="BKR_DATABASE_URL", show_default=False,
        help="Also check that the signing key is one the exchange published (its statement_keys).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Check a signed statement: its signature, and its payout recomputed from its lines.

    The signature is ED25519 over the statement's canonical bytes (docs/statements.md). Prints OK
    with the figures, or every problem found and exits with status 1."""
    from bkr.domain.money import canonical
    from bkr.domain.statement_signing import KeyStanding
    from bkr.program.statement_signing import read_signed_statement, verify_against

    envelope = read_signed_statement(file)
    extra: list[str] = []
    if db_url is None:
        verification, _ = verify_against(envelope, None)
    else:
        engine = _existing_database(db_url)
        try:
            with engine.connect() as connection:
                verification, checked = verify_against(envelope, connection)
        finally:
            engine.dispose()
        if not checked:
            extra.append("key: cannot be checked: --db records no statement keys (no statement_keys table; "
                         "bkr db upgrade)")
    problems = [*verification.problems, *extra]
    found = verification.recomputation
    if as_json:
        _print_json({
            "ok": not problems, "broker_id": verification.broker_id, "month": verification.month,
            "key_id": verification.key_id, "signature_valid": verification.signature_valid,
            "key": verification.key_standing.value, "lines": found.lines,
            "payout_exact": None if found.payout_exact is None else canonical(found.payout_exact),
            "quantum": None if found.quantum is None else str(found.quantum),
            "payout": None if found.payout is None else format(found.payout, "f"), "problems": problems})
    whose = f"the statement of broker {verification.broker_id} for {verification.month}"
    if problems:
        if not as_json:
            sys.stdout.write(f"FAILED: {whose} does not verify\n" + "".join(f"  - {p}\n" for p in problems))
        raise typer.Exit(1)
    if as_json:
        return
    standing = {
        KeyStanding.PUBLISHED: "one of the exchange's published statement keys",
        KeyStanding.RETIRED: "one of the exchange's published statement keys (retired since; what it signed "
                             "stays valid)",
        KeyStanding.NOT_CHECKED: "not checked against the exchange's published keys: give --db, or compare the "
                                 "key id and public key with GET /v1/statement-keys",
    }[verification.key_standing]
    assert found.payout_exact is not None and found.payout is not None
    sys.stdout.write(
        f"OK: {whose} is signed, and its payout follows from its lines\n"
        f"  signature  ed25519, key {verification.key_id}: {standing}\n"
        f"  lines      {found.lines}; their payouts sum to {canonical(found.payout_exact)} = payout_exact\n"
        f"  payout     {format(found.payout, 'f')} = {canonical(found.payout_exact)} rounded down to "
        f"{found.quantum}\n")


def _existing_database(url: str) -> Engine:
    """An engine on a database that exists (never creates one: a verifier only reads)."""
    path = db.sqlite_path(url)
    if path is not None and not path.exists():
        raise InvalidInput(f"--db: no database file {path}")
    return db.make_engine(url)


statement_key_app = typer.Typer(no_args_is_help=True, help="The exchange's statement key, which signs the "
                                "statements brokers verify.")
app.add_typer(statement_key_app, name="statement-key")


@statement_key_app.command("create")
def statement_key_create(
    out_file: Annotated[Path | None, typer.Option("--out", show_default=False, help=(
        "File for the private key (base64 of the ED25519 seed, mode 0600; never overwritten) "
        "[default: ./statement-key-<key id>.key]"))] = None,
    db_url: DbOption = db.DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """Make a statement key pair: the private key goes to a file only you can read, the public key
    is published (GET /v1/statement-keys) for brokers to verify signed statements with."""
    from bkr.program.statement_signing import create_statement_key

    with _transaction(db_url) as connection:
        key, path = create_statement_key(connection, out_file, system_clock())
    if as_json:
        _print_json({"key_id": key.key_id, "public_key": key.public_key, "file": str(path)})
        return
    from rich.markup import escape

    out.print(key.key_id)
    _say(err, escape(f"statement key {key.key_id} created: private key in {path} (mode 0600), public key published. "
                     f"Sign with it: `[statements] signing_key_file = \"{path.resolve()}\"` in the --config file, "
                     f"or BKR_STATEMENT_KEY_FILE={path.resolve()}. Keep the file secret and backed up."))


@statement_key_app.command("list")
def statement_key_list(db_url: DbOption = db.DEFAULT_URL, as_json: JsonOption = False) -> None:
    """The statement keys the exchange publishes, retired ones included (they still verify)."""
    from bkr.program.statement_signing import published_keys

    with _transaction(db_url) as connection:
        found = published_keys(connection)
    if as_json:
        _print_json([{"key_id": k.key_id, "public_key": k.public_key, "created_at": k.created_at.isoformat(),
                      "retired_at": None if k.retired_at is None else k.retired_at.isoformat()} for k in found])
        return
    table = Table("key id", "public key", "created", "retired")
    for k in found:
        table.add_row(k.key_id, k.public_key, f"{k.created_at:%Y-%m-%d %H:%M}",
                      "" if k.retired_at is None else f"{k.retired_at:%Y-%m-%d %H:%M}")
    out.print(table)


@statement_key_app.command("retire")
def statement_key_retire(key_id: str, db_url: DbOption = db.DEFAULT_URL) -> None:
    """Stop signing with a key (after pointing the signing key file at its successor). It stays
    published: the statements it signed still verify."""
    from bkr.program.statement_signing import retire_statement_key

    with _transaction(db_url) as connection:
        retire_statement_key(connection, key_id, system_clock())
    err.print(f"statement key {key_id} retired: it signs no more; what it signed still verifies")


# --- synthetic data ---------------------------------------------------------------------------------
# (imports are local to these commands: this section is owned separately from the rest of the file)

@app.command("simulate")
def simulate_command(
    ctx: typer.Context,
    month: Annotated[str | None, typer.Option(help="The month to simulate, YYYY-MM (required without --live).",
                                              show_default=False)] = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="The fill file to write: .csv, .ndjson/.jsonl or "
                                                                ".parquet (required without --live).")] = None,
    fill_count: Annotated[int, typer.Option("--fills", min=1, help="Rows in the file, a few planted bad ones "
                                                                   "included.")] = 10_000,
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
    rate: Annotated[float | None, typer.Option(min=0.1, help="--live: orders per second, maker quotes "
                                                             "included [default: 20]", show_default=False)] = None,
    config_path: ConfigOption = None,
) -> None:
    """Write a synthetic month of fills, and register its brokers, affiliates and users; or, with
    --live, make makers and takers trade on a running venue so that the current month grows."""
    from bkr import simulate

    if live:
        if month is not None or out_file is not None or until is not None or as_json:
            raise InvalidInput("--live: trades on a running venue; --month, --out, --until and --json do not apply")
        _simulate_live(url, duration, rate, seed, db_url, config_path)
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
    end = parse_instant(until) if until is not None else (now if target == Month.of(now) else None)
    simulation = simulate.plan_simulation(target, fill_count, seed, end)
    simulate.file_format_of(out_file)
    if not out_file.parent.is_dir():
        raise InvalidInput(f"--out: no directory {out_file.parent}")
    registration = None
    if register:  # first, so that a database problem stops us before a long write
        with _transaction(db_url) as connection:
            registration = simulate.register_simulated_registry(connection, simulation.registry, system_clock())
    _write_simulation(simulation, out_file, quiet=as_json)
    summary = simulation.summary()
    if as_json:
        _print_json(summary | {"file": str(out_file),
                               "registered": None if registration is None else registration.to_document()})
        return
    _say(out, f"{out_file}: {summary['rows']:,} fills of {target} ({summary['by_category']['broker_api']:,} "
              f"broker API fills; planted: {summary['malformed']} malformed rows, {summary['duplicates']} duplicates, "
              f"{summary['conflicts']} conflicting duplicate)")
    if registration is not None:
        _say(out, f"registered: {registration.brokers} brokers, {registration.status_changes} status changes, "
                  f"{registration.affiliates} affiliates, {registration.rates} referral rates, "
                  f"{registration.users:,} users (new; existing ones kept); "
                  f"{summary['users']['unregistered']} users left unregistered on purpose: their fills wait")
    db_flag = _db_flag(db_url)
    _say(out, f"next: bkr fills import {out_file}{db_flag}, then bkr close --month {target}{db_flag}")


def _simulate_live(url: str | None, duration: float | None, rate: float | None, seed: int, db_url: str,
                   config_path: Path | None) -> None:
    """`bkr simulate --live`: a status line every few seconds, a table of volume per broker at the end."""
    import time
    from decimal import Decimal

    import httpx

    from bkr.venue import live as venue_live
    from bkr.venue.settings import load_venue_config

    base = (url or venue_live.DEFAULT_URL).rstrip("/")
    pace = venue_live.DEFAULT_RATE if rate is None else D(str(rate))
    venue_config = load_venue_config(config_path)
    with httpx.Client(base_url=base, timeout=30) as http:
        markets = venue_live.load_markets(http, base)  # before touching --db: a venue that is down stops us here
    with _transaction(db_url) as connection:
        cast = venue_live.open_traders(connection, venue_config, system_clock())
    names = cast.broker_names
    columns = venue_live.brokers_in_order(cast)
    if not names:
        _say(err, "no active broker in --db: every taker trades unattributed (bkr broker activate ID)")
    _say(out, f"trading on {base}: {len(cast.makers)} makers, {len(cast.takers)} takers "
              f"({', '.join(f'{t.user_id} → {venue_live.broker_label(t.broker_id, names)}' for t in cast.takers)}), "
              f"{len(markets)} markets, {pace} orders/s" + ("" if duration is None else f" for {duration:g} s")
              + ("" if duration is not None else "; Ctrl-C stops"))

    def status(stats: venue_live.LiveStats, elapsed: float) -> None:
        volumes = "  ".join(f"{venue_live.broker_label(b, names)} [bold]{stats.volume.get(b, Decimal(0)):,.2f}[/]"
                            for b in columns)
        _say(out, f"[dim]{elapsed:6.1f}s[/]  orders {stats.orders:,} ({stats.rejected:,} rejected)  "
                  f"filled taker orders {stats.total_filled:,}  volume USDC: {volumes}")

    simulation = venue_live.LiveSimulation(base, cast, markets, rate=pace, seed=seed)
    started = time.monotonic()
    try:
        simulation.run(duration, status)
    finally:
        simulation.stop()
        if simulation.stats.orders:
            _print_live_summary(simulation.stats, cast, names, columns, time.monotonic() - started)
    db_flag = _db_flag(db_url)
    if names:
        _say(out, f"the program counts it: bkr broker show {min(names)}{db_flag}")


def _print_live_summary(stats: Any, cast: Any, names: Mapping[int, str], columns: list[int | None],
                        elapsed: float) -> None:
    from decimal import Decimal

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


def _say(console: Console, text: str) -> None:
    """One message, never wrapped (so that commands in it can be copied)."""
    console.print(text, soft_wrap=True)


def _db_flag(db_url: str) -> str:
    """` --db URL` for a hint, or nothing for the default database (password hidden)."""
    from sqlalchemy.engine import make_url

    return "" if db_url == db.DEFAULT_URL else f" --db {make_url(db_url).render_as_string(hide_password=True)}"


def _write_simulation(simulation: Any, path: Path, *, quiet: bool) -> None:
    from rich.progress import MofNCompleteColumn

    from bkr import simulate

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, disable=quiet or not err.is_terminal) as progress:
        task = progress.add_task(f"writing {path.name}", total=simulation.fills)
        simulate.write_fills(simulation, path, on_progress=lambda done: progress.update(task, completed=done))


@app.command("demo")
def demo(
    db_url: DbOption = db.DEFAULT_URL,
    config_path: ConfigOption = None,
    previous_fills: Annotated[int, typer.Option(min=1, help="Fills of the closed month.")] = 50_000,
    current_fills: Annotated[int, typer.Option(min=1, help="Fills of the current month so far.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Seed of the simulation.")] = 7,
) -> None:
    """Load a demo into an empty database (last month, closed, and this month so far), then print
    the statements of the latest closed month and what to try next."""
    import tempfile
    import time

    from rich.progress import MofNCompleteColumn

    from bkr import simulate
    from bkr.program.close import stored_documents
    from bkr.program.periods import closed_months

    config = load_config(config_path)
    engine = _engine(db_url)
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
                    simulate.register_simulated_registry(connection, simulation.registry, system_clock())
                path = Path(workdir) / f"fills-{month}.csv"
                _write_simulation(simulation, path, quiet=False)
                with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TimeElapsedColumn(), console=err, disable=not err.is_terminal) as progress:
                    task = progress.add_task(f"importing {month}", total=count)

                    def report(tally: Tally, _results: list[RowResult], task: Any = task, bar: Any = progress) -> None:
                        bar.update(task, completed=tally.accepted + tally.duplicates + tally.conflicts + tally.rejected)

                    tally = import_file(engine, config, path, clock=system_clock, on_batch=report)
                _say(err, f"{month}: {count:,} simulated fills imported ({tally.counted:,} broker volume, "
                          f"{tally.awaiting_user:,} awaiting their user, {tally.rejected} rejected, "
                          f"{tally.duplicates} duplicates, {tally.conflicts} conflicts)")
                if until is None:
                    result = close_month(engine, config, month, now=system_clock())
                    _say(err, f"{month}: closed, {len(result.documents)} statements")
        _say(err, f"demo loaded in {time.monotonic() - started:.1f} s")
    with _transaction(db_url) as connection:
        closed = closed_months(connection)
        latest = max(closed) if closed else None
        documents = stored_documents(connection, latest) if latest is not None else []
        names = {view.broker_id: view.name for view in registry.list_brokers(connection, system_clock())}
    db_flag = _db_flag(db_url)
    if latest is None:
        _say(out, "No month is closed yet. Close one with: "
                  f"bkr close --month {Month.of(system_clock()).previous()}{db_flag}")
        return
    _print_statements(latest, documents, names)
    top = max(documents, key=lambda d: D(d["payout"]))["broker_id"] if documents else 1400
    _say(out, "\n[bold]What to try next[/]")
    for command, why in (
        (f"bkr statement --broker {top} --month {latest} --format csv{db_flag}", "one statement, line by line"),
        (f"bkr broker show {top}{db_flag}", "its status history and this month so far"),
        (f"bkr broker list{db_flag}", "every broker (one pending, one suspended)"),
        (f"bkr fills rejected{db_flag}", "the planted bad rows, the conflict, fills waiting for their user"),
        (f"bkr user add --id user-new-1 --referral-code BETA-25{db_flag}",
         f"register a waiting user: its fills of {latest} are paid as adjustments next month"),
        (f"bkr close --month {latest}{db_flag}", "closing again changes nothing"),
    ):
        _say(out, f"  {command}\n      [dim]{why}[/]")


def _print_statements(month: Month, documents: list[dict[str, Any]], names: dict[int, str]) -> None:
    from rich import box

    from bkr.domain.money import total

    adjusted = any(D(document["adjustment_payout_exact"]) for document in documents)
    table = Table(title=f"Statements of {month} (USD)", box=box.SIMPLE_HEAD)
    table.add_column("broker", no_wrap=True, overflow="ellipsis", max_width=24)
    for heading in ("tier", "API volume", "fee base", *(["adjustments"] if adjusted else []), "payout"):
        table.add_column(heading, justify="right", no_wrap=True)
    for document in documents:
        table.add_row(f"{document['broker_id']} {names.get(document['broker_id'], '')}", document["tier"],
                      f"{D(document['api_volume']):,.0f}", f"{D(document['fee_base']):,.2f}",
                      *([f"{D(document['adjustment_payout_exact']):,.2f}"] if adjusted else []),
                      f"{D(document['payout']):,.2f}")
    table.add_section()
    table.add_row(f"{len(documents)} brokers", "", "", "", *([""] if adjusted else []),
                  f"{total(D(document['payout']) for document in documents):,.2f}")
    out.print(table)


def _fail(message: str) -> int:
    sys.stderr.write("error: " + " ".join(message.split()) + "\n")  # one line, never wrapped
    return 1


def run(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit status: domain errors become one line on
    stderr and status 1; usage errors are Typer's own (a message and status 2)."""
    try:
        app(args=argv)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BkrError as error:
        return _fail(str(error))
    except OperationalError as error:
        return _fail(f"database: {str(error.orig).strip().splitlines()[0]}")
    except ArgumentError as error:
        return _fail(f"--db: {error}")
    except KeyboardInterrupt:
        return _fail("interrupted; what was committed is kept, run the same command again to finish")
    return 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
