"""A month's end: `bkr close` computes its statements, `bkr approve` approves the drafts,
`bkr reconcile` checks it link by link, `bkr settle` pays the final statements through the ledger.

Closing needs an operator key with the `operator` role, approving and settling one with the
`approver` role (an `admin` may do all three): `--key` or BKR_OPERATOR_KEY."""

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import Connection

from bkr.cli.common import (
    ConfigOption,
    DbOption,
    JsonOption,
    KeyOption,
    checked_broker_id,
    err,
    open_program,
    operator_from_key,
    out,
    print_json,
    say,
    transaction,
)
from bkr.domain.clock import system_clock
from bkr.domain.money import canonical, plain
from bkr.domain.operators import Role
from bkr.domain.periods import Month
from bkr.program import settlement
from bkr.program.close import close_month
from bkr.program.reconcile import Reconciliation, reconcile_month
from bkr.store import db, lake

month_end_app = typer.Typer()  # no name: its commands are bkr's own (`bkr close`, `bkr settle`, ...)


@month_end_app.command("close")
def close(
    month: Annotated[str, typer.Option(help="YYYY-MM")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Compute everything, write nothing.")] = False,
    key: KeyOption = None,
    db_url: DbOption = db.DEFAULT_URL,
    config_path: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Close a month: tiers, payouts, one statement per broker, under the program version in force
    for the month. Idempotent. Needs the operator role; who closes is recorded (with four eyes, it
    may not approve the statements)."""
    target = Month.parse(month)  # the arguments and the key are checked before the program is opened
    with transaction(db_url) as connection:
        actor = operator_from_key(connection, key, Role.OPERATOR).name
    result = close_month(open_program(db_url, config_path), target, now=system_clock(), dry_run=dry_run, actor=actor)
    if as_json:
        document = result.to_document()
        print_json({"month": document["month"], "dry_run": result.dry_run, "projection": result.projection,
                     "already_closed": result.already_closed,
                     "awaiting_user_fills": result.awaiting_user_fills, "statements": document["statements"]})
        return
    verb = ("projection, if it ended now, of" if result.projection else "preview of" if dry_run
            else "already closed:" if result.already_closed else "closed")
    table = Table("broker", "tier", "rate", "spot volume", "futures volume", "fee base", "adjustments",
                  "payout (exact)", "payout", title=f"{verb} {month}")
    for s in result.statements:
        table.add_row(str(s.broker_id), s.tier_name, canonical(s.broker_rate), canonical(s.spot_volume),
                      canonical(s.futures_volume), canonical(s.fee_base), canonical(s.adjustment_payout_exact),
                      canonical(s.payout_exact), plain(s.payout))
    out.print(table)
    if result.awaiting_user_fills:
        err.print(f"warning: {result.awaiting_user_fills:,} broker fills of {month} wait for their user and are "
                  "not in these statements (bkr fills rejected)")


@month_end_app.command("approve")
def approve(
    month: Annotated[str, typer.Option(help="YYYY-MM")],
    broker: Annotated[int | None, typer.Option(help="One broker's statement (default: every draft of the "
                                                    "month).", callback=checked_broker_id)] = None,
    key: KeyOption = None,
    db_url: DbOption = db.DEFAULT_URL,
    config_path: ConfigOption = None,
) -> None:
    """Approve draft statements as the operator of --key (approver role); with the approvals the
    program requires, by distinct operators, they become final."""
    target = Month.parse(month)
    with transaction(db_url) as connection:
        operator = operator_from_key(connection, key, Role.APPROVER)
    with open_program(db_url, config_path).begin() as connection:
        done = settlement.approve_month(connection, target, operator.name, system_clock(), broker_id=broker)
        required = settlement.approvals_required(connection, target)
    again = [a for a in done if a.already_approved]
    for approval in again:
        say(err, f"broker {approval.broker_id}: {operator.name} had approved this statement already; it stays "
                 f"{approval.status} ({approval.approvals} of {approval.required} approvals: another operator "
                 "must approve it)")
    final = sum(a.status == settlement.FINAL for a in done)
    say(err, f"{month}: {len(done) - len(again)} statement(s) approved by {operator.name}; {final} now final "
             f"({required} distinct approval(s) required)")


@month_end_app.command("reconcile")
def reconcile(
    month: Annotated[str, typer.Option(help="YYYY-MM (a closed month)")],
    db_url: DbOption = db.DEFAULT_URL,
    config_path: ConfigOption = None,
    archive: Annotated[Path | None, typer.Option(
        "--archive", help="An archived month's Parquet file, if not where it was written.", show_default=False)]
    = None,
    master: Annotated[str, typer.Option(
        "--master", envvar="BKR_SPARK_MASTER", help="Spark master for a lake-fed month's recount.")] = "local[*]",
    as_json: JsonOption = False,
) -> None:
    """Check a closed month link by link: fills -> aggregates -> statement lines -> totals, paid
    statements -> ledger payouts, and that the ledger balances. An archived month's fills are
    read from its file, whose SHA-256 must be the one recorded; a lake-fed month's are recounted
    in the lake with Spark (`bkr lake aggregate`). Exits 1 if anything differs."""
    # `--config` is taken as by every month-end command; reconcile needs none: the statements carry
    # their quantum, and the stored rows the rest
    with db.snapshot(db.open_engine(db_url)) as connection:  # one consistent state, without holding writers up
        if lake.lake_fed(connection, Month.parse(month)):
            result = _reconcile_lake_month(connection, Month.parse(month), master)
        else:
            result = reconcile_month(connection, Month.parse(month), archive=archive)
    if as_json:
        print_json({"month": str(result.month), "statements": result.statements, "fills": result.fills,
                     "archive": result.archive, "clean": result.clean, "differences": [
                         {"link": d.link, "subject": d.subject, "expected": d.expected, "found": d.found}
                         for d in result.differences]})
    else:
        for difference in result.differences:
            out.print(str(difference), markup=False, highlight=False)
        source = f" (from the archive {result.archive})" if result.archive is not None else ""
        err.print(f"{month}: {result.statements} statements, {result.fills:,} counted fills{source}: "
                  + ("everything reconciles" if result.clean else f"{len(result.differences)} difference(s)"))
    if not result.clean:
        raise typer.Exit(1)


def _reconcile_lake_month(connection: Connection, month: Month, master: str) -> Reconciliation:
    from bkr.lake.job import session  # Spark (and its JVM) only for a lake-fed month
    from bkr.lake.reconcile import reconcile_lake_month

    spark = session(master)
    try:
        return reconcile_lake_month(connection, spark, month)
    finally:
        spark.stop()


@month_end_app.command("settle")
def settle(
    month: Annotated[str, typer.Option(help="YYYY-MM")],
    key: KeyOption = None,
    db_url: DbOption = db.DEFAULT_URL,
    config_path: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Pay every final statement of a month through the ledger, each exactly once (safe to rerun),
    writing a payout instruction for each (`bkr payouts list`); with the program's `payout_target =
    "venue"`, the venue of --config is credited and the instructions acknowledged. Needs the
    approver role."""
    from bkr.venue.payouts import VenueWallet  # lazy: the venue, which only a sandbox program pays to
    from bkr.venue.settings import load_venue_config

    target = Month.parse(month)
    with transaction(db_url) as connection:
        settler = operator_from_key(connection, key, Role.APPROVER).name
    wallet = VenueWallet(load_venue_config(config_path))
    result = settlement.settle_month(open_program(db_url, config_path), target, system_clock(), actor=settler,
                                     wallet=wallet)
    if as_json:
        print_json(result.to_document())
        return
    transferred = f", transferred to the venue {len(result.transferred)}" if result.transferred else ""
    err.print(f"{month}: paid {len(result.paid)}, already paid {len(result.already_paid)}, "
              f"still in review {len(result.not_final)}{transferred}")
