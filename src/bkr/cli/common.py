"""What every command group shares: the common options (`--db`, `--config`, `--json`, `--at`),
the two consoles, a transaction on `--db`, the program's settings in it (`open_program`), the
acting operator, JSON output, and messages that are never wrapped."""

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import make_url

from bkr.domain.clock import system_clock
from bkr.domain.periods import parse_instant
from bkr.domain.program_settings import read_program
from bkr.program import settings_versions
from bkr.settings import program_sections, read_toml
from bkr.store import db

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

DbOption = Annotated[str, typer.Option("--db", envvar="BKR_DATABASE_URL", help="Database URL.")]
ConfigOption = Annotated[Path | None, typer.Option(
    "--config", envvar="BKR_CONFIG", help="Config file (TOML): the process's settings; its program settings are "
                                          "imported if the database has none yet.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output only.")]
AtOption = Annotated[str | None, typer.Option("--at", help="Effective time, ISO 8601 (default: now).")]


@contextmanager
def transaction(url: str) -> Iterator[Connection]:
    """A transaction on `--db` (an empty database is migrated first; one behind the code is refused)."""
    with db.open_engine(url).begin() as connection:
        yield connection


def acting_operator() -> str:
    """Who the command line acts as, for what it records (who applied a program version)."""
    return "cli"


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
            imported = settings_versions.import_first_version(connection, config, source, acting_operator(),
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

