"""What every command group shares: the common options (`--db`, `--config`, `--json`, `--at`,
`--key`), the operator a key belongs to, the checks of what a command is given (a broker id, a
file to read, a time, a number in its range), the two consoles, a transaction on `--db`, the
program's settings in it (`open_program`), JSON output, and messages that are never wrapped.

The consoles read no markup: names, ids and file names come from outside, and `[/]` in a broker's
name must neither stop a command nor style its output. Styles are given as styles."""

import json
import os
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import make_url

from bkr.domain.clock import system_clock
from bkr.domain.errors import InvalidInput, Unauthenticated
from bkr.domain.operators import SYSTEM, Role
from bkr.domain.periods import parse_instant
from bkr.domain.program_settings import read_program
from bkr.domain.registry import BROKER_ID_RANGE, BrokerId, as_broker_id
from bkr.program import settings_versions
from bkr.settings import program_sections, read_toml
from bkr.store import db

if TYPE_CHECKING:
    from bkr.program.keys import Operator

out = Console(highlight=False, markup=False)
err = Console(stderr=True, highlight=False, markup=False)


def checked_broker_id(value: int | None) -> BrokerId | None:
    """The callback of a broker id option: a number past 2^63 would otherwise reach the database,
    which cannot even compare it."""
    return None if value is None else as_broker_id(value, "broker id")


DbOption = Annotated[str, typer.Option("--db", envvar="BKR_DATABASE_URL", help="Database URL.")]
# Files a command reads are checked when it reads them (`readable_file`, the settings' reader): an
# unreadable one is then a refusal like any other (one line, status 1), not Typer's usage error.
ConfigOption = Annotated[Path | None, typer.Option(
    "--config", envvar="BKR_CONFIG", help="Config file (TOML): the process's settings; its program settings are "
                                          "imported if the database has none yet.", readable=False)]
InputFile = Annotated[Path, typer.Argument(readable=False, show_default=False)]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output only.")]
AtOption = Annotated[str | None, typer.Option("--at", help="Effective time, ISO 8601 (default: now).")]
BrokerIdArgument = Annotated[int, typer.Argument(metavar="BROKER_ID", callback=checked_broker_id,
                                                 help=f"The broker's X-Broker-Id, {BROKER_ID_RANGE}.")]
KeyOption = Annotated[str | None, typer.Option(
    "--key", envvar="BKR_OPERATOR_KEY", show_default=False,
    help="Your operator key (bkr_op_…); better in BKR_OPERATOR_KEY than on a command line others may see.")]
RetroactiveOption = Annotated[bool, typer.Option(
    "--retroactive", help="Record a change that reaches into a closed month (needs --reason): its statements stand, "
                          "and what it changes about the fills they paid reaches the next open month.")]
ReasonOption = Annotated[str | None, typer.Option(
    "--reason", show_default=False, help="Why (kept on the audit trail); required with --retroactive.")]


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


def open_program(url: str, config_path: Path | None) -> Engine:
    """An engine on `--db` whose database holds the program's settings. A database without a
    program version imports the config file's program sections (or the defaults) as version 1,
    and says so on stderr; one with versions keeps them, and a config file whose program sections
    would change them is ignored with a warning that names `bkr program apply`."""
    sections = program_sections(read_toml(config_path))
    config = read_program(sections)  # a config file's program settings are valid, whether used or not
    engine = db.open_engine(url)
    with db.snapshot(engine) as connection:
        stored = settings_versions.count_versions(connection)
    if not stored:
        source = str(config_path) if sections else "defaults"
        with engine.begin() as connection:
            imported = settings_versions.import_first_version(connection, config, source, SYSTEM,
                                                              system_clock())
        if imported is not None:
            say(err, f"program settings: none were stored yet; imported {source} as program version 1, in force "
                     f"from {imported.from_month} (see them with `bkr program show`; change them with "
                     "`bkr program apply`)")
        return engine
    if sections:
        with db.snapshot(engine) as connection:
            timeline = settings_versions.load_timeline(connection)
        if settings_versions.differs(timeline, config):
            latest = timeline.latest
            say(err, f"warning: the program settings in {config_path} differ from program version {latest.number} "
                     f"(in force from {latest.from_month}), which bkr uses: the file's are ignored. To use them: "
                     f"bkr program apply {config_path} --from YYYY-MM --reason TEXT")
    return engine


def retroactive_note(retroactive: bool, reason: str | None) -> str:
    """What the message of a registry change adds when it was recorded as retroactive."""
    if not retroactive:
        return ""
    return (f"; recorded as retroactive ({(reason or '').strip()}): the closed months' statements stand, and what it "
            "changes about their fills is paid in the next open month (docs/statements.md)")


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def moment(text: str | None, flag: str = "--at") -> datetime:
    """An `--at`/`--from` time, or now."""
    if text is None:
        return system_clock()
    try:
        return parse_instant(text)
    except InvalidInput as error:
        raise InvalidInput(f"{flag}: {error}") from None


def within(value: int, low: int, high: int, flag: str) -> int:
    """`value` if it is in low..high, else `InvalidInput` naming the flag."""
    if not low <= value <= high:
        raise InvalidInput(f"{flag}: {value} is outside {low}..{high}")
    return value


def readable_file(path: Path) -> Path:
    """`path` if it is a regular file this process can open, else `InvalidInput` saying what it is."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such file") from None
    except OSError as error:
        raise InvalidInput(f"{path}: {error.strerror}") from None
    if stat.S_ISDIR(mode):
        raise InvalidInput(f"{path}: is a directory, not a file")
    if not stat.S_ISREG(mode):
        raise InvalidInput(f"{path}: not a regular file")
    try:
        path.open("rb").close()
    except OSError as error:
        raise InvalidInput(f"{path}: cannot be read ({error.strerror})") from None
    return path


def say(console: Console, text: str, style: str | None = None) -> None:
    """One message, never wrapped (so that commands in it can be copied)."""
    console.print(text, soft_wrap=True, style=style)


def db_hint(db_url: str) -> str:
    """` --db URL` for a hint, or nothing for the default database (password hidden)."""
    return "" if db_url == db.DEFAULT_URL else f" --db {make_url(db_url).render_as_string(hide_password=True)}"

