"""The audit trail's entries and their hash chain.

Every change an operator (or the scheduler, as `system`) makes to what decides money is one
entry: when, who, what, to which subject, the values before and after, and the reason where one
was asked. Each entry's hash covers its content and the previous entry's hash, so an entry edited
or removed after the fact breaks the chain at that point (`check_chain`). Removing entries from
the end leaves a shorter chain that is still whole: the head (the count and the last hash) is
what an exchange notes elsewhere to detect that too.
"""

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bkr.domain.problems import Problem

GENESIS = "0" * 64  # the previous hash of the first entry


@dataclass(frozen=True, slots=True)
class AuditEntry:
    entry_id: int  # 1, 2, 3, …: consecutive, so a removed entry leaves a gap
    at: datetime
    actor: str  # an operator's name, or `system` (bkr.domain.operators.SYSTEM)
    action: str  # "broker.status", "program.apply", "key.revoke", "month.close", …
    subject: str  # what was changed: "broker 1400", "2026-11", "key 3f2a…"
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    reason: str | None
    previous_hash: str
    hash: str

    def to_document(self) -> dict[str, Any]:
        return {"id": self.entry_id, "at": _instant(self.at), "actor": self.actor, "action": self.action,
                "subject": self.subject, "before": self.before, "after": self.after, "reason": self.reason,
                "previous_hash": self.previous_hash, "hash": self.hash}


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def content_json(value: Mapping[str, Any] | None) -> str | None:
    """Before/after values as stored: canonical JSON of plain values (strings, integers, booleans,
    lists, objects). Money is given as its exact decimal text by the caller, never a float."""
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def entry_hash(entry_id: int, at: datetime, actor: str, action: str, subject: str, before: str | None,
               after: str | None, reason: str | None, previous_hash: str) -> str:
    """SHA-256 of the entry's content and the previous hash, hex: one canonical JSON array, so no
    two contents share a pre-image by moving text from one field to the next."""
    payload = json.dumps([entry_id, _instant(at), actor, action, subject, before, after, reason, previous_hash],
                         separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def hash_of(entry: AuditEntry) -> str:
    return entry_hash(entry.entry_id, entry.at, entry.actor, entry.action, entry.subject,
                      content_json(entry.before), content_json(entry.after), entry.reason, entry.previous_hash)


@dataclass(frozen=True, slots=True)
class ChainHead:
    entries: int
    hash: str  # the last entry's hash; GENESIS for an empty trail


def check_chain(entries: Iterable[AuditEntry]) -> tuple[ChainHead, list[Problem]]:
    """Walk the trail in id order: every entry's hash must be its content's, its previous hash
    the hash of the entry before, and ids must follow one another from 1. Returns the head and
    every problem found."""
    problems: list[Problem] = []
    expected_id, previous, count = 1, GENESIS, 0
    for entry in entries:
        count += 1
        where = f"entry {entry.entry_id}"
        if entry.entry_id != expected_id:
            missing = f"entry {expected_id}" if entry.entry_id == expected_id + 1 else \
                f"entries {expected_id}..{entry.entry_id - 1}"
            problems.append(Problem(where, f"{missing} removed: ids jump from {expected_id - 1} to {entry.entry_id}"))
        if entry.previous_hash != previous:
            problems.append(Problem(where, "does not follow the entry before it: its previous hash is "
                                           f"{entry.previous_hash[:16]}…, that entry's hash {previous[:16]}…"))
        if hash_of(entry) != entry.hash:
            problems.append(Problem(where, "edited: its content does not give its stored hash"))
        expected_id, previous = entry.entry_id + 1, entry.hash
    return ChainHead(count, previous), problems
