"""`bkr audit`: read the audit trail, and check that no entry was edited or removed."""

from typing import Annotated

import typer
from rich.table import Table

from bkr.cli.common import DbOption, JsonOption, err, out, print_json, transaction
from bkr.domain.periods import parse_instant
from bkr.program import audit
from bkr.store import db

audit_app = typer.Typer(invoke_without_command=True, help="The audit trail: who changed what, when, and why "
                        "(`bkr audit verify` checks its hash chain).")


@audit_app.callback()
def audit_entries(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(help="Entries from this instant (ISO 8601).", show_default=False)]
    = None,
    actor: Annotated[str | None, typer.Option(help="One operator's entries (or `system`).", show_default=False)]
    = None,
    action: Annotated[str | None, typer.Option(help="One action (`broker.status`) or family (`broker`).",
                                               show_default=False)] = None,
    after: Annotated[int | None, typer.Option(min=0, max=2**31 - 1, help="Entries after this id (the next page).",
                                              show_default=False)] = None,
    limit: Annotated[int, typer.Option(min=1, max=audit.MAX_PAGE, help="Entries per page.")] = 100,
    db_url: DbOption = db.DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """The audit trail in the order it was written: `bkr audit [--since ISO] [--actor NAME]
    [--action NAME] [--json]`."""
    if ctx.invoked_subcommand is not None:
        return
    query = audit.AuditQuery(since=None if since is None else parse_instant(since), actor=actor, action=action,
                             after=after, limit=limit)
    with transaction(db_url) as connection:
        found = audit.entries(connection, query)
    if as_json:
        print_json({"entries": [entry.to_document() for entry in found],
                    "next_after": found[-1].entry_id if len(found) == limit else None})
        return
    table = Table("id", "at (UTC)", "actor", "action", "subject", "change", "reason", title="audit trail")
    for entry in found:
        change = " → ".join(part for part in (_values(entry.before), _values(entry.after)) if part)
        table.add_row(str(entry.entry_id), f"{entry.at:%Y-%m-%d %H:%M:%S}", entry.actor, entry.action,
                      entry.subject, change, entry.reason or "")  # the consoles read no markup
    out.print(table)
    if len(found) == limit:
        out.print(f"More: bkr audit --after {found[-1].entry_id}", markup=False, highlight=False)


def _values(values: object) -> str:
    if not isinstance(values, dict):
        return ""
    return ", ".join(f"{key}={value}" for key, value in values.items())


@audit_app.command("verify")
def audit_verify(db_url: DbOption = db.DEFAULT_URL, as_json: JsonOption = False) -> None:
    """Recompute every entry's hash and its link to the one before: an entry edited or removed in
    the database is reported, with exit status 1. Prints the head (entries and last hash), which
    an exchange notes elsewhere to detect entries removed from the end as well."""
    with transaction(db_url) as connection:
        head, problems = audit.verify(connection)
    if as_json:
        print_json({"ok": not problems, "entries": head.entries, "head": head.hash,
                    "problems": [str(problem) for problem in problems]})
    else:
        for problem in problems:
            err.print(f"error: {problem}", markup=False, highlight=False)
        verdict = "FAILED" if problems else "OK"
        out.print(f"{verdict}: {head.entries:,} entries, head {head.hash}", markup=False, highlight=False)
    if problems:
        raise typer.Exit(1)
