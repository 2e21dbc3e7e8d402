"""The audit trail: `record` appends one entry in the caller's transaction, so the entry exists
exactly when the change it describes does; `entries` reads them back; `verify` walks the chain.

Appends are serialized: on PostgreSQL by a transaction-level advisory lock (held until the
change commits), on SQLite by its single writer. The unique previous hash is the database's own
guard against two entries following the same one.
"""

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlalchemy import Connection, insert, select, text

from bkr.domain.audit import GENESIS, AuditEntry, ChainHead, check_chain, content_json, entry_hash
from bkr.domain.errors import InvalidInput
from bkr.domain.money import canonical
from bkr.domain.periods import Month
from bkr.domain.problems import Problem
from bkr.store.tables import audit_entries

_APPEND_LOCK = 0x626B72_6175  # "bkr" "au": one advisory lock key for the whole trail
MAX_PAGE = 10_000


def plain(value: Any) -> Any:
    """A value as the trail stores it: exact decimals and months as their text, instants in ISO
    8601, enums by value; mappings and sequences element by element."""
    if isinstance(value, Decimal):
        return canonical(value)
    if isinstance(value, Enum):
        return plain(value.value)
    if isinstance(value, datetime | date | Month):
        return value.isoformat() if not isinstance(value, Month) else str(value)
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [plain(item) for item in value]
        return sorted(items, key=str) if isinstance(value, set | frozenset) else items
    if value is None or isinstance(value, str | int | bool):
        return value
    raise TypeError(f"the audit trail stores no {type(value).__name__}")


def record(connection: Connection, *, actor: str, action: str, subject: str, at: datetime,
           before: Mapping[str, Any] | None = None, after: Mapping[str, Any] | None = None,
           reason: str | None = None) -> AuditEntry:
    """Append one entry to the trail, in the caller's transaction."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _APPEND_LOCK})
    last = connection.execute(select(audit_entries.c.entry_id, audit_entries.c.hash)
                              .order_by(audit_entries.c.entry_id.desc()).limit(1)).first()
    entry_id, previous = (1, GENESIS) if last is None else (last.entry_id + 1, last.hash)
    old, new = plain(before) if before is not None else None, plain(after) if after is not None else None
    digest = entry_hash(entry_id, at, actor, action, subject, content_json(old), content_json(new), reason, previous)
    connection.execute(insert(audit_entries).values(
        entry_id=entry_id, at=at, actor=actor, action=action, subject=subject, before=content_json(old),
        after=content_json(new), reason=reason, previous_hash=previous, hash=digest))
    return AuditEntry(entry_id, at, actor, action, subject, old, new, reason, previous, digest)


def _entry(row: Any) -> AuditEntry:
    return AuditEntry(row.entry_id, row.at, row.actor, row.action, row.subject,
                      None if row.before is None else json.loads(row.before),
                      None if row.after is None else json.loads(row.after),
                      row.reason, row.previous_hash, row.hash)


@dataclass(frozen=True, slots=True)
class AuditQuery:
    since: datetime | None = None
    actor: str | None = None
    action: str | None = None  # an action, or a family of them: "broker" matches "broker.status"
    after: int | None = None  # entries after this id (the next page)
    limit: int = 100


def entries(connection: Connection, query: AuditQuery) -> list[AuditEntry]:
    """Entries in the order they were made, filtered, a page at a time."""
    if not 1 <= query.limit <= MAX_PAGE:
        raise InvalidInput(f"limit: 1..{MAX_PAGE}, got {query.limit}", field="limit")
    t = audit_entries.c
    statement = select(audit_entries)
    if query.since is not None:
        statement = statement.where(t.at >= query.since)
    if query.actor is not None:
        statement = statement.where(t.actor == query.actor)
    if query.action is not None:
        statement = statement.where((t.action == query.action) | t.action.startswith(f"{query.action}.",
                                                                                   autoescape=True))
    if query.after is not None:
        statement = statement.where(t.entry_id > query.after)
    return [_entry(row) for row in connection.execute(statement.order_by(t.entry_id).limit(query.limit))]


def _all(connection: Connection) -> Iterator[AuditEntry]:
    after = 0
    while True:
        page = connection.execute(select(audit_entries).where(audit_entries.c.entry_id > after)
                                  .order_by(audit_entries.c.entry_id).limit(MAX_PAGE)).all()
        if not page:
            return
        for row in page:
            yield _entry(row)
        after = page[-1].entry_id


def verify(connection: Connection) -> tuple[ChainHead, list[Problem]]:
    """The whole trail checked: its head, and every entry edited, removed or out of the chain."""
    return check_chain(_all(connection))

