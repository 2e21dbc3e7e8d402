"""`bkr statement` prints one broker's statement of a closed month (json, csv, signed, html) and
`bkr statement verify` checks a signed one; `bkr statement-key` manages the key that signs them.
`print_statements` is the table of a month's statements that `bkr demo` ends with.

The signing and rendering use cases are imported by the commands, when they run: they load
`cryptography` (and the renderer `jinja2`), which would otherwise add some 30 ms to every `bkr`
invocation."""

import os
import sys
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table
from sqlalchemy import Engine

from bkr.cli.common import (
    ConfigOption,
    DbOption,
    JsonOption,
    checked_broker_id,
    err,
    out,
    print_json,
    say,
    transaction,
)
from bkr.domain.clock import system_clock
from bkr.domain.errors import InvalidInput, StatementNotIssued
from bkr.domain.money import canonical, plain, total
from bkr.domain.periods import Month
from bkr.domain.statements import BrokerStatement
from bkr.settings import statement_key_file
from bkr.store import db

statement_app = typer.Typer(invoke_without_command=True, help="Print one broker's statement of a closed month, "
                            "or check a signed one (`bkr statement verify FILE`).")
STATEMENT_FORMATS = ("json", "csv", "signed", "html")


@statement_app.callback()
def statement(
    ctx: typer.Context,
    broker: Annotated[int | None, typer.Option("--broker", help="Broker id.", show_default=False,
                                               callback=checked_broker_id)] = None,
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
    BKR_STATEMENT_KEY_FILE. `bkr statement verify FILE` checks a signed statement. The output is
    what the broker API and the dashboard hand out for the same statement, byte for byte."""
    from bkr.program.exports import StatementFormat, render_statement  # lazy: cryptography, jinja2
    from bkr.program.statement_signing import load_signing_key

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
    try:
        with transaction(db_url) as connection:
            rendered = render_statement(connection, broker, target, StatementFormat(output_format), key)
    except StatementNotIssued as error:
        if not error.month_open:
            raise
        raise StatementNotIssued(f"{error}; preview: bkr close --month {target} --dry-run", month_open=True) from None
    sys.stdout.write(rendered.body)
    if not rendered.body.endswith("\n") and sys.stdout.isatty():  # JSON ends without one; a prompt should not
        sys.stdout.write("\n")
    if output_format == "html" and key is None:
        say(err, "warning: no statement key is configured, so this page is not signed "
                  "(bkr statement-key create; docs/operators.md)")


@statement_app.command("verify")
def statement_verify(
    file: Annotated[Path, typer.Argument(readable=False, help="A signed statement (`bkr statement --format "
                                                              "signed`, or the broker API's `format=signed`); - "
                                                              "reads standard input.")],
    db_url: Annotated[str | None, typer.Option(
        "--db", envvar="BKR_DATABASE_URL", show_default=False,
        help="Also check that the signing key is one the exchange published (its statement_keys).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Check a signed statement: its signature, and every figure worked out again from it.

    The signature is ED25519 over the statement's canonical bytes (docs/statements.md). The
    figures are worked out from the document alone: the tier from the volume and the schedule the
    statement carries, each line's rate from its tier and affiliate rate under the cap, each
    line's payout, the totals, the carry and the rounding. Prints OK with the figures, or every
    figure that differs (stated, then worked out) and every other problem, and exits with status 1.
    A statement issued before statements carried their program version is checked for its sums
    only, and the output says so."""
    from bkr.domain.statement_signing import KeyStanding  # lazy: cryptography
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
    problems = [*map(str, verification.problems), *extra]
    statement, found = verification.statement, verification.restated  # found: the statement worked out again
    terms = None if statement is None else statement.program
    if as_json:
        print_json({
            "ok": not problems, "broker_id": verification.broker_id, "month": verification.month,
            "key_id": verification.key_id, "signature_valid": verification.signature_valid,
            "key": verification.key_standing.value, "lines": 0 if statement is None else len(statement.lines),
            "program_version": None if terms is None else terms.version,
            "tier": None if found is None else found.tier_name,
            "payout_exact": None if found is None else canonical(found.payout_exact),
            "quantum": None if found is None else str(found.quantum),
            "payout": None if found is None else plain(found.payout), "problems": problems,
            "differences": [{"where": p.where, "figure": p.figure, "stated": _figure(p.found),
                             "recomputed": _figure(p.expected)}
                            for p in verification.problems if p.figure is not None],
            "unchecked": list(verification.unchecked)})
    whose = f"the statement of broker {verification.broker_id} for {verification.month}"
    if problems:
        if not as_json:
            sys.stdout.write(f"FAILED: {whose} does not verify\n" + "".join(f"  - {p}\n" for p in problems))
            if found is not None and statement is not None and found.payout != statement.payout:
                sys.stdout.write(f"  worked out again, it pays {plain(found.payout)}, not {plain(statement.payout)}\n")
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
    assert found is not None  # no problem: the statement was read and checked
    what = ("every figure follows from its lines and the program terms it carries" if terms is not None
            else "its payout follows from its lines")
    sys.stdout.write(f"OK: {whose} is signed, and {what}\n"
                     f"  signature  ed25519, key {verification.key_id}: {standing}\n")
    if terms is not None:
        volume = ("" if found.tier_volume is None
                  else f" for a volume of {canonical(found.tier_volume)} ({found.tier_basis.value})")
        sys.stdout.write(f"  program    version {terms.version}: {found.tier_name}{volume} at "
                         f"{canonical(found.broker_rate)}, cap {canonical(terms.cap)}, each line at its tier's rate "
                         "under the cap\n")
    sys.stdout.write(
        f"  lines      {len(found.lines)}; their payouts sum to {canonical(found.payout_exact)} = payout_exact\n"
        f"  payout     {plain(found.payout)} = {canonical(found.payout_exact)} rounded down to "
        f"{found.quantum}\n" + "".join(f"  unchecked  {note}\n" for note in verification.unchecked))


def _figure(value: Decimal | str | None) -> str | None:
    return value if value is None or isinstance(value, str) else canonical(value)


def _existing_database(url: str) -> Engine:
    """An engine on a database that exists (never creates one: a verifier only reads)."""
    path = db.sqlite_path(url)
    if path is not None and not path.exists():
        raise InvalidInput(f"--db: no database file {path}")
    return db.make_engine(url)


statement_key_app = typer.Typer(no_args_is_help=True, help="The exchange's statement key, which signs the "
                                "statements brokers verify.")


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
    from bkr.program.statement_signing import create_statement_key  # lazy: cryptography

    with transaction(db_url) as connection:
        key, path = create_statement_key(connection, out_file, system_clock())
    if as_json:
        print_json({"key_id": key.key_id, "public_key": key.public_key, "file": str(path)})
        return
    out.print(key.key_id)
    say(err, f"statement key {key.key_id} created: private key in {path} (mode 0600), public key published. "
             f"Sign with it: `[statements] signing_key_file = \"{path.resolve()}\"` in the --config file, "
             f"or BKR_STATEMENT_KEY_FILE={path.resolve()}. Keep the file secret and backed up.")


@statement_key_app.command("list")
def statement_key_list(db_url: DbOption = db.DEFAULT_URL, as_json: JsonOption = False) -> None:
    """The statement keys the exchange publishes, retired ones included (they still verify)."""
    from bkr.program.statement_signing import published_keys  # lazy: cryptography

    with transaction(db_url) as connection:
        found = published_keys(connection)
    if as_json:
        print_json([{"key_id": k.key_id, "public_key": k.public_key, "created_at": k.created_at.isoformat(),
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
    from bkr.program.statement_signing import retire_statement_key  # lazy: cryptography

    with transaction(db_url) as connection:
        retire_statement_key(connection, key_id, system_clock())
    err.print(f"statement key {key_id} retired: it signs no more; what it signed still verifies")

def print_statements(month: Month, statements: list[BrokerStatement], names: dict[int, str]) -> None:
    adjusted = any(s.adjustment_payout_exact for s in statements)
    table = Table(title=f"Statements of {month} (USD)", box=box.SIMPLE_HEAD)
    table.add_column("broker", no_wrap=True, overflow="ellipsis", max_width=24)
    for heading in ("tier", "API volume", "fee base", *(["adjustments"] if adjusted else []), "payout"):
        table.add_column(heading, justify="right", no_wrap=True)
    for s in statements:
        table.add_row(f"{s.broker_id} {names.get(s.broker_id, '')}", s.tier_name, f"{s.api_volume:,.0f}",
                      f"{s.fee_base:,.2f}", *([f"{s.adjustment_payout_exact:,.2f}"] if adjusted else []),
                      f"{s.payout:,.2f}")
    table.add_section()
    table.add_row(f"{len(statements)} brokers", "", "", "", *([""] if adjusted else []),
                  f"{total(s.payout for s in statements):,.2f}")
    out.print(table)
