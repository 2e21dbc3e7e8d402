"""`bkr program`: the program's settings as the database holds them, version by version.

`show` prints the version in force for a month, `history` every version, and `apply` stores a
new version from a TOML file (the program sections of a config file) from a month on.
"""

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from bkr.cli.common import (
    ConfigOption,
    DbOption,
    JsonOption,
    KeyOption,
    err,
    open_program,
    operator_from_key,
    out,
    print_json,
    say,
    transaction,
)
from bkr.domain.clock import system_clock
from bkr.domain.errors import InvalidInput
from bkr.domain.money import canonical
from bkr.domain.operators import Role
from bkr.domain.periods import Month
from bkr.domain.program_settings import PROGRAM_SECTIONS, program_document
from bkr.domain.program_versions import ProgramTimeline, ProgramVersion
from bkr.program import settings_versions
from bkr.settings import program_sections, read_toml
from bkr.store import db

program_app = typer.Typer(no_args_is_help=True, help="The program's settings: the version in force, every "
                                                     "version, a new version.")

MonthOption = Annotated[str | None, typer.Option("--month", help="YYYY-MM (default: the current month).")]


def version_json(version: ProgramVersion, previous: ProgramVersion | None) -> dict[str, Any]:
    return {"version": version.number, "from_month": str(version.from_month), "reason": version.reason,
            "created_at": version.created_at.isoformat(), "created_by": version.created_by,
            "changes": settings_versions.changes(previous, version), "settings": program_document(version.config)}


@program_app.command("show")
def program_show(month: MonthOption = None, db_url: DbOption = db.DEFAULT_URL, config_path: ConfigOption = None,
                 as_json: JsonOption = False) -> None:
    """The program version in force for a month: its settings, who applied it, when and why."""
    target = Month.parse(month) if month is not None else Month.of(system_clock())
    with db.snapshot(open_program(db_url, config_path)) as connection:
        versions = settings_versions.history(connection)
    version = ProgramTimeline(tuple(versions)).in_force(target)
    previous = versions[version.number - 2] if version.number > 1 else None
    if as_json:
        print_json({"month": str(target)} | version_json(version, previous))
        return
    config = version.config
    say(out, f"[bold]program version {version.number}[/], in force for {target}: applies from "
             f"{version.from_month}; applied {version.created_at:%Y-%m-%d %H:%M} UTC by {version.created_by} "
             f"({version.reason})")
    try:
        schedule = config.schedule_for(target)
    except InvalidInput:
        say(out, f"no tier schedule is in force in {target}: it is before the program's start ({config.first_month})")
    else:
        table = Table("tier", "monthly API volume from (USD)", "broker rate",
                      title=f"tier schedule from {schedule.effective_from}")
        for tier in schedule.tiers:
            table.add_row(tier.name, canonical(tier.min_volume), canonical(tier.rate))
        out.print(table)
    rates = ", ".join(f"{asset} {canonical(rate)}" for asset, rate in sorted(config.usd_rates.items()))
    for line in (f"tier basis {config.tier_basis.value}; cap {canonical(config.cap)}; payouts rounded down to "
                 f"{canonical(config.rounding_quantum)}",
                 f"unknown broker ids: {config.unknown_broker_policy.value}",
                 f"statements final after {config.review_days} day(s) or {config.approvals_required} distinct "
                 "approval(s)",
                 f"fills accepted from {config.first_month}, at most "
                 f"{int(config.future_tolerance.total_seconds())} s ahead, with a fee at most "
                 f"{canonical(config.max_fee_share)} × their notional",
                 f"USD rates: {rates}"):
        say(out, line)
    later = [v for v in versions if v.from_month > target]
    if later:
        say(out, "later: " + "; ".join(f"version {v.number} from {v.from_month}" for v in later))


@program_app.command("history")
def program_history(db_url: DbOption = db.DEFAULT_URL, config_path: ConfigOption = None,
                    as_json: JsonOption = False) -> None:
    """Every program version, oldest first, with the settings each changed."""
    with db.snapshot(open_program(db_url, config_path)) as connection:
        versions = settings_versions.history(connection)
    entries = [(version, versions[index - 1] if index else None) for index, version in enumerate(versions)]
    if as_json:
        print_json([version_json(version, previous) for version, previous in entries])
        return
    table = Table("version", "from", "applied (UTC)", "by", "reason", "changes")
    for version, previous in entries:
        changed = settings_versions.changes(previous, version)
        table.add_row(str(version.number), str(version.from_month), f"{version.created_at:%Y-%m-%d %H:%M}",
                      version.created_by, version.reason, ", ".join(changed) if previous else "(first)")
    out.print(table)


@program_app.command("apply")
def program_apply(
    file: Annotated[Path, typer.Argument(help="A TOML file with the program's sections ([program], [usd_rates], "
                                              "[[tier_schedules]]); other sections of a config file are ignored.")],
    from_month: Annotated[str, typer.Option("--from", help="YYYY-MM: the first month the version applies to.")],
    reason: Annotated[str, typer.Option("--reason", help="Why the settings change (kept with the version).")],
    key: KeyOption = None,
    db_url: DbOption = db.DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """Store the file's settings as the next program version, from a month on (needs the operator
    role). The whole version is validated first; a month already closed, or before the latest
    version's, is refused. What the file leaves out takes the defaults, not the previous version's."""
    sections = program_sections(read_toml(file))
    if not sections:
        raise InvalidInput(f"{file}: no program settings to apply (it has none of the sections "
                           f"{', '.join(PROGRAM_SECTIONS)})")
    target = Month.parse(from_month)
    with transaction(db_url) as connection:
        operator = operator_from_key(connection, key, Role.OPERATOR)
        previous = settings_versions.history(connection)
        version = settings_versions.apply_version(connection, sections, target, reason, operator.name,
                                                  system_clock())
    latest = previous[-1] if previous else None
    if as_json:
        print_json(version_json(version, latest))
        return
    changed = settings_versions.changes(latest, version)
    say(err, f"program version {version.number} applies from {version.from_month}"
             + (f" (version {latest.number} before it); changes: {', '.join(changed) or 'none'}" if latest else "")
             + f". See it with: bkr program show --month {version.from_month}")
