"""`bkr affiliate`, `bkr referral` and `bkr user`: affiliates, the referral codes they own with
their rebate rates, and the users who signed up with those codes (and their venue keys).

Every change needs an operator key with the `operator` role (`--key` or BKR_OPERATOR_KEY), whose
operator the audit trail names; `list` needs none.

`bkr user key create` imports the venue when it runs: its accounts load `cryptography`, which
would otherwise add some 30 ms to every `bkr` invocation."""

import csv
import io
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bkr.cli.common import (
    ConfigOption,
    DbOption,
    InputFile,
    JsonOption,
    KeyOption,
    ReasonOption,
    RetroactiveOption,
    err,
    moment,
    operator_from_key,
    out,
    print_json,
    readable_file,
    retroactive_note,
    say,
    transaction,
)
from bkr.domain.clock import system_clock
from bkr.domain.errors import InvalidInput
from bkr.domain.money import D
from bkr.domain.operators import Role
from bkr.domain.registry import registry_text
from bkr.program import registry
from bkr.store import db

affiliate_app = typer.Typer(no_args_is_help=True, help="Enroll affiliates.")
referral_app = typer.Typer(no_args_is_help=True, help="Referral codes and their affiliate rebate rates.")
user_app = typer.Typer(no_args_is_help=True, help="Users and the referral code they signed up with.")


@affiliate_app.command("add")
def affiliate_add(account: Annotated[str, typer.Option(help="The affiliate's business account.")],
                  name: Annotated[str, typer.Option(help="Display name.")],
                  key: KeyOption = None, db_url: DbOption = db.DEFAULT_URL) -> None:
    """Enroll a business account as an affiliate."""
    with transaction(db_url) as connection:
        operator = operator_from_key(connection, key, Role.OPERATOR)
        registry.enroll_affiliate(connection, account, name, system_clock(), actor=operator.name)
    err.print(f"affiliate {account} enrolled")


@affiliate_app.command("list")
def affiliate_list(db_url: DbOption = db.DEFAULT_URL, as_json: JsonOption = False) -> None:
    """Affiliates and their referral codes."""
    with transaction(db_url) as connection:
        rows = registry.list_affiliates(connection)
    if as_json:
        print_json([{"account": a, "name": n, "codes": c} for a, n, c in rows])
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
    retroactive: RetroactiveOption = False,
    reason: ReasonOption = None,
    key: KeyOption = None,
    db_url: DbOption = db.DEFAULT_URL,
) -> None:
    """Create a referral code, or record a new rate for it from --from on."""
    try:
        amount = D(rate)
    except InvalidInput as error:
        raise InvalidInput(f"--rate: {error}") from None
    start = moment(effective_from, "--from")
    with transaction(db_url) as connection:
        operator = operator_from_key(connection, key, Role.OPERATOR)
        registry.set_referral_rate(connection, affiliate, code, amount, start, system_clock(), actor=operator.name,
                                   is_retroactive=retroactive, reason=reason)
    say(err, f"code {code.strip()}: rate {rate.strip()} from {effective_from or 'now'}"
             + retroactive_note(retroactive, reason))


@referral_app.command("cancel")
def referral_cancel(
    code: Annotated[str, typer.Option(help="The referral code.")],
    effective_from: Annotated[str, typer.Option("--from", help="The scheduled rate's start (ISO 8601).")],
    key: KeyOption = None,
    db_url: DbOption = db.DEFAULT_URL,
) -> None:
    """Cancel a rate scheduled for later."""
    when = moment(effective_from, "--from")
    with transaction(db_url) as connection:
        operator = operator_from_key(connection, key, Role.OPERATOR)
        registry.cancel_rate_change(connection, code, when, system_clock(), actor=operator.name)
    err.print(f"code {code}: the rate from {when.isoformat()} is cancelled")


@user_app.command("add")
def user_add(user_id: Annotated[str, typer.Option("--id", help="The exchange's user id.")],
             referral_code: Annotated[str | None, typer.Option(help="The code the user signed up with.")] = None,
             retroactive: RetroactiveOption = False, reason: ReasonOption = None, key: KeyOption = None,
             db_url: DbOption = db.DEFAULT_URL) -> None:
    """Register a user (and the referral code it signed up with, if any). A user whose waiting
    fills belong to a closed month needs --retroactive and --reason."""
    with transaction(db_url) as connection:
        operator = operator_from_key(connection, key, Role.OPERATOR)
        registry.add_users(connection, [(user_id, referral_code)], system_clock(), actor=operator.name,
                           is_retroactive=retroactive, reason=reason)
    say(err, f"user {user_id} registered" + retroactive_note(retroactive, reason))


user_key_app = typer.Typer(no_args_is_help=True, help="A user's venue API keys (ED25519, Backpack style).")
user_app.add_typer(user_key_app, name="key")


@user_key_app.command("create")
def user_key_create(user_id: str,
                    referral_code: Annotated[str | None, typer.Option(help="The code the user signed up with.")] = None,
                    key: KeyOption = None, db_url: DbOption = db.DEFAULT_URL, config_path: ConfigOption = None,
                    as_json: JsonOption = False) -> None:
    """Make a key pair to trade on the venue as USER (registering the user and opening its
    account, with the configured play money, if needed; needs the operator role). The secret is
    shown once."""
    from bkr.venue.accounts import create_user_key  # lazy: cryptography
    from bkr.venue.settings import load_venue_config

    user_id = registry_text(user_id, "user_id")  # the registry's rule, before the venue opens an account
    venue_config = load_venue_config(config_path)
    with transaction(db_url) as connection:
        operator = operator_from_key(connection, key, Role.OPERATOR)
        pair = create_user_key(connection, venue_config, user_id, system_clock(), actor=operator.name,
                               referral_code=referral_code)
    if as_json:
        print_json({"user_id": user_id, "api_key": pair.api_key, "secret": pair.secret})
        return
    out.print(f"api key (X-API-Key): {pair.api_key}\nsecret:              {pair.secret}")
    err.print("The secret is not stored: keep it now. It is the `secret` of ccxt's backpack client (docs/brokers.md).")


@user_app.command("import")
def user_import(file: InputFile, retroactive: RetroactiveOption = False, reason: ReasonOption = None,
                key: KeyOption = None, db_url: DbOption = db.DEFAULT_URL, as_json: JsonOption = False) -> None:
    """Register users from a CSV with columns user_id,referral_code (UTF-8, with or without a
    byte-order mark). Users whose waiting fills belong to a closed month need --retroactive and
    --reason."""
    entries = _read_users(readable_file(file))
    with transaction(db_url) as connection:
        operator = operator_from_key(connection, key, Role.OPERATOR)
        new = registry.add_users(connection, entries, system_clock(), actor=operator.name,
                                 source=os.fsencode(file.name).decode("utf-8", "backslashreplace"),
                                 is_retroactive=retroactive, reason=reason)
    if as_json:
        print_json({"users": len(entries), "new": new})
    else:
        say(err, f"{len(entries)} users read, {new} new" + retroactive_note(retroactive, reason))


def _read_users(file: Path) -> list[tuple[str, str | None]]:
    """The (user_id, referral_code) rows of a users CSV; a file that is not one is `InvalidInput`
    naming the file and the line."""
    data = file.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise InvalidInput(f"{file.name}: line {line}: not UTF-8 text") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        if not reader.fieldnames or "user_id" not in reader.fieldnames:
            raise InvalidInput(f"{file.name}: needs a header with user_id (and referral_code)")
        return [(row.get("user_id") or "", row.get("referral_code")) for row in reader]
    except csv.Error as error:
        raise InvalidInput(f"{file.name}: not a CSV of users ({error})") from None
