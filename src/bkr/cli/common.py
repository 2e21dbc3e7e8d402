"""What every command group shares: the common options (`--db`, `--config`, `--json`, `--at`),
the two consoles, a transaction on `--db`, JSON output, and messages that are never wrapped."""

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from sqlalchemy import Connection
from sqlalchemy.engine import make_url

from bkr.domain.clock import system_clock
from bkr.domain.periods import parse_instant
from bkr.store import db

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

DbOption = Annotated[str, typer.Option("--db", envvar="BKR_DATABASE_URL", help="Database URL.")]
ConfigOption = Annotated[Path | None, typer.Option("--config", envvar="BKR_CONFIG", help="Program config (TOML).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output only.")]
AtOption = Annotated[str | None, typer.Option("--at", help="Effective time, ISO 8601 (default: now).")]


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

