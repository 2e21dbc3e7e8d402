"""The `bkr` command: the operator's handle on the program.

This module assembles the Typer app from one module per command group and runs it (`run`, and
`main` for the `bkr` script); `common` holds what the groups share. A command parses its options,
calls use cases of `bkr.program` and shapes their answer: no rule or query lives here.
"""

import os
import sys

import typer
from sqlalchemy.exc import ArgumentError, DBAPIError

from bkr.cli.audit import audit_app
from bkr.cli.brokers import broker_app
from bkr.cli.fills import fills_app
from bkr.cli.lake import lake_app
from bkr.cli.month_end import month_end_app
from bkr.cli.operators import key_app, operator_app
from bkr.cli.payouts import payouts_app, treasury_app
from bkr.cli.program import program_app
from bkr.cli.referrals import affiliate_app, referral_app, user_app
from bkr.cli.schema import db_app
from bkr.cli.service import service_app
from bkr.cli.simulation import simulation_app
from bkr.cli.statements import statement_app, statement_key_app
from bkr.cli.webhooks import webhooks_app
from bkr.domain.errors import BkrError

HELP = """The `bkr` command: the operator's handle on the program.

Every command takes `--db URL` (or BKR_DATABASE_URL; default: ./bkr.db); those that run the
program take `--config FILE` (or BKR_CONFIG), the process's settings. The program's rules are
stored in the database, version by version: `bkr program show|apply|history`. Commands that act
as an operator (close, approve, settle, program apply, operator, key) take its key: `--key` or
BKR_OPERATOR_KEY. Errors a user can make end with exit status 1 and one line on stderr; `--json`
prints machine-readable output only.
"""

app = typer.Typer(no_args_is_help=True, add_completion=False, help=HELP, pretty_exceptions_enable=False)
# `bkr --help` lists commands in this order: the top-level ones (groups added without a name), then the groups.
app.add_typer(service_app)
app.add_typer(month_end_app)
app.add_typer(simulation_app)
app.add_typer(treasury_app)
app.add_typer(program_app, name="program")
app.add_typer(broker_app, name="broker")
app.add_typer(affiliate_app, name="affiliate")
app.add_typer(referral_app, name="referral")
app.add_typer(user_app, name="user")
app.add_typer(fills_app, name="fills")
app.add_typer(lake_app, name="lake")
app.add_typer(db_app, name="db")
app.add_typer(statement_app, name="statement")
app.add_typer(statement_key_app, name="statement-key")
app.add_typer(payouts_app, name="payouts")
app.add_typer(audit_app, name="audit")
app.add_typer(operator_app, name="operator")
app.add_typer(key_app, name="key")
app.add_typer(webhooks_app, name="webhooks")


def _fail(message: str) -> int:
    sys.stderr.write("error: " + " ".join(message.split()) + "\n")  # one line, never wrapped
    return 1


def run(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit status: domain errors, and what the database or
    the file system refuses, become one line on stderr and status 1; usage errors are Typer's own
    (a message and status 2)."""
    try:
        app(args=argv)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BkrError as error:
        return _fail(str(error))
    except DBAPIError as error:  # unreachable, not a database (a SQLite URL on another file), ...
        return _fail(f"database: {(str(error.orig).strip().splitlines() or [type(error.orig).__name__])[0]}")
    except UnicodeEncodeError as error:  # a name or id to look up, with a byte the shell could not decode
        text = error.object if isinstance(error.object, str) else ""
        shown = os.fsencode(text[:64]) if text else b""
        return _fail(f"not UTF-8 text: {shown!r}; names, codes and ids are UTF-8")
    except OSError as error:  # a file the command writes or reads, refused by the system
        where = f"{error.filename}: " if error.filename is not None else ""
        return _fail(f"{where}{error.strerror or error}")
    except ArgumentError as error:
        return _fail(f"--db: {error}")
    except KeyboardInterrupt:
        return _fail("interrupted; what was committed is kept, run the same command again to finish")
    return 0


def main() -> None:
    sys.exit(run())
