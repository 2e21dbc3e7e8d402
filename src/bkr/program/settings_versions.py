"""Program versions in the database: the program's rules, each version applying from a month.

Every use case that needs the program's rules for money — the close and its preview, the fill
writer (USD rates, plausibility), the venue (unknown-broker policy), settlement (approvals,
review days), the schedule — reads the version in force for the month in question from here,
never from a process's config. Versions are appended, never changed (the table refuses an
UPDATE or DELETE), by `apply_version`, which validates the whole version first (one validator,
`bkr.domain.program_settings.read_program`, for a file, a request and a stored version) and
refuses a version that would reach back:

- into a month already closed: its statements were issued under the rules then in force;
- before the latest version's month: versions apply in order;
- with other USD rates, into a month that already holds fills: those fills were priced at the
  rates then in force, and a month is priced at one set of rates.

Version 1 applies from the program's start, which no later version moves. A database that has no
version yet imports one (`import_first_version`): the settings of the config file the first
command ran with, or the defaults. On a database that bkr ran before versions existed, that first
version records the settings it is taken to have run with; statements already issued keep the
figures they were issued with.

Concurrency (PostgreSQL): `apply_version` takes the versions table in SHARE ROW EXCLUSIVE mode
and the venue's order stream, so that a close and a batch of fills (which hold the table in SHARE
mode from the start of their transactions, `hold_timeline`) and an order either see the new
version or commit before it is checked against them. SQLite serializes writers anyway.
"""

import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, func, select

from bkr.domain.config import ProgramConfig
from bkr.domain.errors import Conflict, InvalidInput, PeriodClosed, StoreNotReady
from bkr.domain.periods import Month
from bkr.domain.program_settings import changed_settings, program_document, read_program
from bkr.domain.program_versions import ProgramTimeline, ProgramVersion
from bkr.domain.statement_document import canonical_json
from bkr.program import audit
from bkr.program.periods import closed_months
from bkr.store.dialect import insert_for, locked
from bkr.store.tables import fills, program_versions, venue_state

MAX_REASON = 1000


class NoProgramVersion(StoreNotReady):
    """The database holds no program version yet: nothing says what the program's rules are."""

    code = "program_not_configured"


# --- reading -------------------------------------------------------------------------------------


_HISTORY = select(program_versions).order_by(program_versions.c.version)  # built once: every read asks


def history(connection: Connection) -> list[ProgramVersion]:
    """Every version, oldest first."""
    rows = connection.execute(_HISTORY)
    return [ProgramVersion(row.version, row.from_month, _config_of(row.document), row.reason, row.created_at,
                           row.created_by) for row in rows]


def load_timeline(connection: Connection) -> ProgramTimeline:
    """The program's versions, for reading (projections, reports, settlement)."""
    versions = history(connection)
    if not versions:
        raise NoProgramVersion("the program has no settings yet: run a bkr command with --config FILE (or none, for "
                               "the defaults) to import them, or `bkr program apply FILE.toml --from YYYY-MM "
                               "--reason TEXT`")
    return ProgramTimeline(tuple(versions))


def hold_timeline(connection: Connection) -> ProgramTimeline:
    """The program's versions, held until the transaction ends: no version is applied meanwhile
    (for a close and a batch of fills, whose figures must follow one set of versions)."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("LOCK TABLE program_versions IN SHARE MODE")
    return load_timeline(connection)


def version_for(connection: Connection, month: Month) -> ProgramVersion:
    """The version in force for `month`."""
    return load_timeline(connection).in_force(month)


def count_versions(connection: Connection) -> int:
    return int(connection.execute(select(func.count()).select_from(program_versions)).scalar_one())


def changes(before: ProgramVersion | None, after: ProgramVersion) -> list[str]:
    """The settings `after` changes from `before` (`program.cap`, `usd_rates.EUR`, `tier_schedules`)."""
    if before is None:
        return []
    return changed_settings(program_document(before.config), program_document(after.config))


def differs(timeline: ProgramTimeline, config: ProgramConfig) -> bool:
    """Whether `config` is not the latest version: applying it would store other settings (or be
    refused, for another start)."""
    as_stored = config if config.start is not None else _normalized(config, timeline.start)
    return as_stored != timeline.latest.config


@lru_cache(maxsize=64)
def _config_of(document: str) -> ProgramConfig:
    try:
        return read_program(json.loads(document))
    except (InvalidInput, json.JSONDecodeError) as error:  # bkr stored it: corrupt storage, not a user's mistake
        raise RuntimeError(f"stored program version does not read: {error}") from None


# --- writing -------------------------------------------------------------------------------------


def apply_version(connection: Connection, document: Mapping[str, Any], from_month: Month, reason: str, actor: str,
                  now: datetime) -> ProgramVersion:
    """Validate a whole version (the program sections of a document) and store it as the next
    version, applying from `from_month`. Nothing is stored unless all of it is valid and it
    reaches back into no closed month, no earlier version's month and no priced fill."""
    return _store(connection, read_program(document), from_month, reason, actor, now)


def apply_config(connection: Connection, config: ProgramConfig, from_month: Month, reason: str, actor: str,
                 now: datetime) -> ProgramVersion:
    """`apply_version` of a `ProgramConfig` (held to the same validator through its document)."""
    return apply_version(connection, program_document(config), from_month, reason, actor, now)


def import_first_version(connection: Connection, config: ProgramConfig, source: str, actor: str,
                         now: datetime) -> ProgramVersion | None:
    """Store `config` as version 1, from its first month, if the database has no version yet
    (`source`: the config file it came from, or "defaults"). Returns the version imported, or None
    when there was one already (also when a concurrent process imported it first)."""
    if count_versions(connection):
        return None
    document = program_document(config)
    reason = f"imported from {source}"
    _check_reason(reason)
    config = _normalized(read_program(document), config.first_month)
    return _insert(connection, 1, config, config.first_month, reason, actor, now)


def _store(connection: Connection, config: ProgramConfig, from_month: Month, reason: str, actor: str,
           now: datetime) -> ProgramVersion:
    reason = _check_reason(reason)
    if not actor.strip():
        raise InvalidInput("actor: a version is applied by a named operator", field="actor")
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("LOCK TABLE program_versions IN SHARE ROW EXCLUSIVE MODE")
        connection.execute(locked(select(venue_state.c.id))).all()  # orders wait, or are seen (`_priced_fills`)
    versions = history(connection)
    if not versions:
        if config.start is not None and config.start != from_month:
            raise InvalidInput(f"program.start: version 1 applies from the program's start; start {config.start} is "
                               f"not {from_month} (leave start out, or apply from it)", field="program.start")
        config = _normalized(config, from_month)
        _check_schedule(config, from_month)
        return _inserted(connection, 1, config, from_month, reason, actor, now)
    timeline = ProgramTimeline(tuple(versions))
    latest = timeline.latest
    if config.start is not None and config.start != timeline.start:
        raise InvalidInput(f"program.start: the program started in {timeline.start} (version 1); a version cannot "
                           "move its start (leave start out)", field="program.start")
    config = _normalized(config, timeline.start)
    if from_month < latest.from_month:
        raise InvalidInput(f"from_month: {from_month} is before {latest.from_month}, the month version "
                           f"{latest.number} applies from; versions apply in order (from {latest.from_month} or "
                           "later)", field="from_month")
    _check_schedule(config, from_month)
    closed = closed_months(connection)
    reached = sorted(month for month in closed if month >= from_month)
    if reached:
        raise PeriodClosed(f"from_month: {reached[-1]} is closed and its statements were issued under version "
                           f"{timeline.in_force(reached[-1]).number}; a new version applies from "
                           f"{reached[-1].next()} at the earliest", field="from_month")
    if config.usd_rates != latest.config.usd_rates:
        _refuse_repricing(connection, from_month, latest)
    return _inserted(connection, latest.number + 1, config, from_month, reason, actor, now)


def _refuse_repricing(connection: Connection, from_month: Month, latest: ProgramVersion) -> None:
    """A change of USD rates from a month that already holds fills is refused: they were priced
    at the rates of the version then in force."""
    priced: Month | None = connection.execute(
        select(func.max(fills.c.fill_month)).where(fills.c.fill_month >= from_month)).scalar()
    if priced is not None:
        raise Conflict(f"usd_rates: fills of {priced} are already stored, priced at version {latest.number}'s rates; "
                       f"a change of USD rates applies from a month without fills ({priced.next()} or later)",
                       field="usd_rates", code="fills_priced")


def _inserted(connection: Connection, number: int, config: ProgramConfig, from_month: Month, reason: str, actor: str,
              now: datetime) -> ProgramVersion:
    version = _insert(connection, number, config, from_month, reason, actor, now)
    if version is None:
        raise Conflict(f"version {number} was applied by someone else at the same time: see `bkr program history` "
                       "and apply again", code="version_taken")
    return version


def _insert(connection: Connection, number: int, config: ProgramConfig, from_month: Month, reason: str, actor: str,
            now: datetime) -> ProgramVersion | None:
    """Insert the version numbered `number`; None if that number is taken (by a concurrent apply)."""
    inserted = connection.execute(
        insert_for(connection, program_versions).values(
            version=number, from_month=from_month, document=canonical_json(program_document(config)), reason=reason,
            created_at=now, created_by=actor.strip())
        .on_conflict_do_nothing(index_elements=["version"]).returning(program_versions.c.version)).scalar()
    if inserted is None:
        return None
    audit.record(connection, actor=actor.strip(), action="program.apply" if number > 1 else "program.import",
                 subject=f"program version {number}", at=now, after={"version": number, "from_month": from_month},
                 reason=reason)
    return ProgramVersion(number, from_month, config, reason, now, actor.strip())


def _check_schedule(config: ProgramConfig, from_month: Month) -> None:
    try:
        config.schedule_for(from_month)
    except InvalidInput:
        raise InvalidInput(f"tier_schedules: none is in force in {from_month}, the version's first month",
                           field="tier_schedules") from None


def _normalized(config: ProgramConfig, start: Month) -> ProgramConfig:
    """`config` as a version of a program that starts in `start` stores it: with that start."""
    return replace(config, start=start)


def _check_reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise InvalidInput("reason: say why the program's settings change", field="reason")
    if len(reason) > MAX_REASON or any(ord(c) < 32 and c not in "\t" for c in reason):
        raise InvalidInput(f"reason: at most {MAX_REASON} characters on one line", field="reason")
    return reason
