"""`bkr operator` and `bkr key`: named operators with a role, and every key bkr issued.

Each command needs an admin's key (`--key` or BKR_OPERATOR_KEY), except the first admin's
`bkr operator add NAME --role admin`, accepted without one while no admin holds a working key
(`bkr.program.operators`).
"""

from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from bkr.cli.common import DbOption, JsonOption, KeyOption, err, operator_from_key, out, print_json, say, transaction
from bkr.domain.clock import system_clock
from bkr.domain.operators import MAX_KEY_DAYS, Role, key_expiry, parse_role
from bkr.program import keys, operators
from bkr.store import db

operator_app = typer.Typer(no_args_is_help=True, help="Operators: named people with a role, each holding keys.")
key_app = typer.Typer(no_args_is_help=True, help="Every key bkr issued: operators', brokers' and venue users'.")

ExpiresOption = Annotated[str | None, typer.Option(
    "--expires", show_default=False,
    help=f"When the key stops working: a number of days (1..{MAX_KEY_DAYS}) or an ISO 8601 time (default: never, "
         "until revoked).")]


def _when(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _print_new_key(key: keys.NewOperatorKey, as_json: bool, what: str) -> None:
    if as_json:
        print_json({"operator": key.operator, "role": key.role.value, "key_id": key.key_id, "token": key.token,
                    "expires_at": _when(key.expires_at)})
        return
    out.print(key.token, soft_wrap=True)
    expiry = f", expires {key.expires_at:%Y-%m-%d %H:%M} UTC" if key.expires_at else ""
    say(err, f"{what}: {key.operator} ({key.role.value}), key {key.key_id}{expiry}. It is shown only once: give it "
             "to its operator, who sends it as `Authorization: Bearer <key>` or sets BKR_OPERATOR_KEY.")


@operator_app.command("add")
def add_operator(
    name: Annotated[str, typer.Argument(help="1 to 64 of a-z 0-9 . _ @ -; never reused.")],
    role: Annotated[str, typer.Option(help="viewer, operator, approver or admin (docs/operators.md).")],
    expires: ExpiresOption = None,
    key: KeyOption = None,
    db_url: DbOption = db.DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """Add an operator and print its first key. Needs an admin's key, except for the first admin."""
    wanted = parse_role(role)
    now = system_clock()
    expires_at = None if expires is None else key_expiry(expires, now)
    with transaction(db_url) as connection:
        if key is None or not key.strip():
            operators.check_bootstrap(connection, wanted, now)
            created_by = None
        else:
            created_by = operator_from_key(connection, key, Role.ADMIN).name
        new = operators.add_operator(connection, name, wanted, now, created_by=created_by, expires_at=expires_at)
    _print_new_key(new, as_json, "new operator" if created_by else "first admin, added without a key")


@operator_app.command("list")
def list_operators(key: KeyOption = None, db_url: DbOption = db.DEFAULT_URL, as_json: JsonOption = False) -> None:
    """Every operator with its role, who added it, and how many working keys it holds."""
    with transaction(db_url) as connection:
        operator_from_key(connection, key, Role.ADMIN)
        views = operators.list_operators(connection, system_clock())
    if as_json:
        print_json([{"name": v.name, "role": v.role.value, "created_at": _when(v.created_at),
                     "created_by": v.created_by, "disabled_at": _when(v.disabled_at), "active_keys": v.active_keys}
                    for v in views])
        return
    table = Table("name", "role", "created", "by", "disabled", "working keys", title="operators")
    for v in views:
        table.add_row(v.name, v.role.value, f"{v.created_at:%Y-%m-%d %H:%M}", v.created_by or "-",
                      f"{v.disabled_at:%Y-%m-%d %H:%M}" if v.disabled_at else "", str(v.active_keys))
    out.print(table)


@operator_app.command("disable")
def disable_operator(
    name: Annotated[str, typer.Argument(help="The operator's name.")],
    key: KeyOption = None,
    db_url: DbOption = db.DEFAULT_URL,
) -> None:
    """Disable an operator: every key of it is refused from its next request on."""
    with transaction(db_url) as connection:
        admin = operator_from_key(connection, key, Role.ADMIN)
        operators.disable_operator(connection, name.strip(), system_clock(), actor=admin.name)
    say(err, f"operator {name.strip()} disabled: its keys are refused from their next request on")


def _key_document(view: keys.KeyView) -> dict[str, Any]:
    return {"key_id": view.key_id, "kind": view.kind.value, "owner": view.owner,
            "role": None if view.role is None else view.role.value, "created_at": _when(view.created_at),
            "last_used_at": _when(view.last_used_at), "expires_at": _when(view.expires_at),
            "revoked_at": _when(view.revoked_at), "status": view.status.value}


@key_app.command("list")
def list_keys(key: KeyOption = None, db_url: DbOption = db.DEFAULT_URL, as_json: JsonOption = False) -> None:
    """Every key: id, owner, role, when it was made, last used, expires and was revoked."""
    with transaction(db_url) as connection:
        operator_from_key(connection, key, Role.ADMIN)
        views = keys.list_keys(connection, system_clock())
    if as_json:
        print_json([_key_document(view) for view in views])
        return
    table = Table("id", "kind", "owner", "role", "created", "last used", "expires", "status", title="keys")

    def minute(moment: datetime | None) -> str:
        return "" if moment is None else f"{moment:%Y-%m-%d %H:%M}"

    for view in views:
        table.add_row(view.key_id, view.kind.value, view.owner, view.role.value if view.role else "",
                      minute(view.created_at), minute(view.last_used_at), minute(view.expires_at),
                      view.status.value + (f" {minute(view.revoked_at)}" if view.revoked_at else ""))
    out.print(table)


@key_app.command("create")
def create_key(
    operator: Annotated[str, typer.Option("--operator", help="The operator the key is for.")],
    expires: ExpiresOption = None,
    key: KeyOption = None,
    db_url: DbOption = db.DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """Make another key for an operator and print it (to rotate a key: make one, then revoke the old)."""
    now = system_clock()
    expires_at = None if expires is None else key_expiry(expires, now)
    with transaction(db_url) as connection:
        admin = operator_from_key(connection, key, Role.ADMIN)
        new = keys.create_operator_key(connection, operator.strip(), now, expires_at, actor=admin.name)
    _print_new_key(new, as_json, "new key")


@key_app.command("revoke")
def revoke_key(
    key_id: Annotated[str, typer.Argument(help="The key's id, as `bkr key list` shows it (any kind of key).")],
    key: KeyOption = None,
    db_url: DbOption = db.DEFAULT_URL,
) -> None:
    """Revoke a key: refused from its next request on, by every running server."""
    with transaction(db_url) as connection:
        admin = operator_from_key(connection, key, Role.ADMIN)
        keys.revoke_key(connection, key_id.strip(), system_clock(), actor=admin.name)
    say(err, f"key {key_id.strip()} revoked: refused from its next request on")
