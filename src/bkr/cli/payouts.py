"""Payouts for the treasury: `bkr payouts list` shows the payout instructions settling wrote,
`bkr payouts ack KEY --reference REF` records the wallet's transfer of one (approver role: `--key`
or BKR_OPERATOR_KEY), and `bkr statements --month` lists every statement of a month with its
status, payout and instruction, as a table, CSV or JSON."""

from typing import Annotated

import typer
from rich.table import Table

from bkr.cli.common import DbOption, JsonOption, KeyOption, err, operator_from_key, out, print_json, say, transaction
from bkr.domain.clock import system_clock
from bkr.domain.errors import InvalidInput
from bkr.domain.money import canonical
from bkr.domain.operators import Role
from bkr.domain.periods import Month
from bkr.program import payouts, treasury
from bkr.store import db

payouts_app = typer.Typer(no_args_is_help=True, help="Payout instructions for the exchange's wallet system.")
treasury_app = typer.Typer()  # no name: `bkr statements` is a command of its own


@payouts_app.command("list")
def list_payouts(
    month: Annotated[str | None, typer.Option(help="YYYY-MM", show_default=False)] = None,
    state: Annotated[str | None, typer.Option(help="pending | acknowledged", show_default=False)] = None,
    db_url: DbOption = db.DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """The payout instructions, oldest month first, by broker: key, account, amount, state and the
    wallet's transfer reference once acknowledged."""
    target = None if month is None else Month.parse(month)
    with db.snapshot(db.open_engine(db_url)) as connection:
        found = payouts.instructions(connection, month=target, state=state)
    if as_json:
        print_json({"payouts": [i.to_document() for i in found]})
        return
    table = Table("id", "key", "account", "amount", "currency", "state", "reference", "acknowledged by",
                  title="payout instructions")
    for i in found:
        table.add_row(str(i.instruction_id), i.key, i.account_id, canonical(i.amount), i.currency, i.state,
                      i.reference or "-", i.acknowledged_by or "-")
    out.print(table)


@payouts_app.command("ack")
def acknowledge(
    instruction: Annotated[str, typer.Argument(metavar="KEY", help="The instruction's key (payout/1400/2026-10) "
                                                                   "or id.")],
    reference: Annotated[str, typer.Option("--reference", help="The wallet's transfer reference.")],
    key: KeyOption = None,
    db_url: DbOption = db.DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """Record that the wallet transferred an instruction's payout, under its transfer reference (as
    the operator of --key, approver role). The same reference again changes nothing; another one is
    refused."""
    with transaction(db_url) as connection:
        operator = operator_from_key(connection, key, Role.APPROVER)
        done = payouts.acknowledge_payout(connection, instruction, reference, operator.name, system_clock())
    if as_json:
        print_json({**done.instruction.to_document(), "already_acknowledged": done.already_acknowledged})
        return
    i = done.instruction
    what = "was already acknowledged with this reference; nothing changed" if done.already_acknowledged else \
        f"acknowledged by {operator.name}"
    say(err, f"{i.key}: {canonical(i.amount)} {i.currency} to {i.account_id}, reference {i.reference}: {what}")


@treasury_app.command("statements")
def list_statements(
    month: Annotated[str, typer.Option(help="YYYY-MM")],
    output_format: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table",
    db_url: DbOption = db.DEFAULT_URL,
) -> None:
    """Every statement of a month, by broker: status, payout, and its payout instruction's key,
    state and transfer reference. The same rows as GET /v1/admin/statements and the dashboard's
    month page."""
    target = Month.parse(month)
    try:
        shape = treasury.ListFormat(output_format)
    except ValueError:
        raise InvalidInput(f"--format: {output_format!r} is not table, csv or json") from None
    with db.snapshot(db.open_engine(db_url)) as connection:
        rows = treasury.month_statements(connection, target)
    if shape is treasury.ListFormat.JSON:
        out.file.write(treasury.rows_json(target, rows))
    elif shape is treasury.ListFormat.CSV:
        out.file.write(treasury.rows_csv(rows))
    else:
        table = Table(*(name.replace("_", " ") for name in treasury.TABLE_COLUMNS), title=f"statements of {target}")
        for cells in treasury.rows_table(rows):
            table.add_row(*cells)
        out.print(table)
        if not rows:
            say(err, f"{target}: no statements (is it closed? bkr close --month {target})")
