"""What every command group shares: the common options (`--db`, `--config`, `--json`, `--at`,
`--key`), the operator a key belongs to, the two consoles, a transaction on `--db`, JSON output,
and messages that are never wrapped."""

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from sqlalchemy import Connection
from sqlalchemy.engine import make_url

from bkr.domain.clock import system_clock
from bkr.domain.errors import Unauthenticated
from bkr.domain.operators import Role
from bkr.domain.periods import parse_instant
from bkr.store import db

if TYPE_CHECKING:
    from bkr.program.keys import Operator

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

DbOption = Annotated[str, typer.Option("--db", envvar="BKR_DATABASE_URL", help="Database URL.")]
ConfigOption = Annotated[Path | None, typer.Option("--config", envvar="BKR_CONFIG", help="Program config (TOML).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output only.")]
AtOption = Annotated[str | None, typer.Option("--at", help="Effective time, ISO 8601 (default: now).")]
KeyOption = Annotated[str | None, typer.Option(
    "--key", envvar="BKR_OPERATOR_KEY", show_default=False,
    help="Your operator key (bkr_op_…); better in BKR_OPERATOR_KEY than on a command line others may see.")]


def operator_from_key(connection: Connection, key: str | None, needed: Role) -> "Operator":
    """The operator whose `--key` (or BKR_OPERATOR_KEY) this is, checked exactly as the API checks
    a bearer key (`keys.authenticate_operator`: known, not revoked, not expired, its operator not
    disabled, a role that allows `needed`), and its use recorded. Anything else is a domain error:
    one line on stderr, exit status 1."""
    from bkr.program import keys  # lazy: the key use cases, which most commands do not need

    if key is None or not key.strip():
        raise Unauthenticated(f"this command needs an operator key with the {needed.value} role: pass --key or set "
                              "BKR_OPERATOR_KEY", code="credentials_missing")
    now = system_clock()
    operator = keys.authenticate_operator(connection, key, needed, now)
    if keys.use_is_stale(operator.key_last_used_at, now):
        keys.record_use(connection, operator.key_id, now)
    return operator


@contextmanager
def transaction(url: str) -> Iterator[Connection]:
    """A transaction on `--db` (an empty database is migrated first; one behind the code is refused)."""
    with db.open_engine(url).begin() as connection:
        yield connection


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def moment(text: str | None) -> datetime:
    """An `--at`/`--from` time, or now."""
    return system_clock() if text is None else parse_instant(text)


def say(console: Console, text: str) -> None:
    """One message, never wrapped (so that commands in it can be copied)."""
    console.print(text, soft_wrap=True)


def db_hint(db_url: str) -> str:
    """` --db URL` for a hint, or nothing for the default database (password hidden)."""
    return "" if db_url == db.DEFAULT_URL else f" --db {make_url(db_url).render_as_string(hide_password=True)}"

