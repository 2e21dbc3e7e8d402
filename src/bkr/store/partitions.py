"""The monthly partitions of `fills` on PostgreSQL (SQLite keeps one table; every function here
does nothing there).

`fills` is partitioned by LIST on `period`, the statement month a fill is paid in, one partition
per month named `fills_YYYY_MM`. There is no DEFAULT partition: each writer makes sure, before it
inserts, that the months it writes into have theirs (`ensure_fill_partitions`). A partition is
made in a short transaction of its own on another connection: the table is created outside the
partitioned table and then attached, which takes only a SHARE UPDATE EXCLUSIVE lock on `fills`,
so it waits for no reader or writer of fills (theirs are ACCESS SHARE and ROW EXCLUSIVE) and
the writer's own transaction, which may hold such locks already, cannot block it. Two processes
making the same month's partition are serialized by an advisory lock and the second finds it
made. Without a DEFAULT partition there is nothing to scan when a month is attached, and a
month's rows are always in its own partition, which `bkr fills archive` then drops whole.

Which months have a partition is remembered per engine: a writer asks the catalog once per
month and process. Partitions are only ever dropped for archived months, which are closed, so no
writer writes into them again.
"""

import re
import weakref
from collections.abc import Iterable, MutableMapping
from typing import Any

from sqlalchemy import Connection, Engine, text

from bkr.domain.periods import Month

PARENT = "fills"
_NAME = re.compile(r"^fills_(\d{4})_(\d{2})$")
_LOCK_BASE = 0x626B72_7000_0000  # "bkr" "p": advisory locks of partition creation, one per month
_known: "weakref.WeakKeyDictionary[Engine, set[Month]]" = weakref.WeakKeyDictionary()

_PARTITIONS = text(
    "SELECT child.relname FROM pg_inherits JOIN pg_class child ON child.oid = pg_inherits.inhrelid "
    "JOIN pg_class parent ON parent.oid = pg_inherits.inhparent "
    "WHERE parent.relname = :parent AND parent.relnamespace = to_regnamespace(current_schema())::oid")


def partitioned(connection: Connection) -> bool:
    return connection.dialect.name == "postgresql"


def partition_name(month: Month) -> str:
    return f"{PARENT}_{month.year:04d}_{month.month:02d}"


def declared_name(name: str | None, type_: str, _parents: MutableMapping[Any, str | None]) -> bool:
    """Alembic's `include_name` hook: a month's partition is part of `fills`, not a table of the
    schema of its own, and schema comparisons (autogenerate, the migration tests) skip it."""
    return not (type_ == "table" and name is not None and _NAME.match(name) is not None)


def fill_partitions(connection: Connection) -> set[Month]:
    """The months that have a partition (none on SQLite)."""
    if not partitioned(connection):
        return set()
    months = set()
    for (name,) in connection.execute(_PARTITIONS, {"parent": PARENT}):
        found = _NAME.match(name)
        if found is not None:
            months.add(Month(int(found.group(1)), int(found.group(2))))
    return months


def ensure_fill_partitions(connection: Connection, months: Iterable[Month]) -> None:
    """Make sure each of `months` has its partition before rows of it are written on
    `connection`; call it before the insert (or the update that moves rows) in the same
    transaction. A missing partition is made and committed at once, on another connection."""
    if not partitioned(connection):
        return
    known = _known.setdefault(connection.engine, set())
    wanted = set(months) - known
    if not wanted:
        return
    known.update(fill_partitions(connection))
    for month in sorted(wanted - known):
        with connection.engine.begin() as own:
            create_partition(own, month)
        known.add(month)


def create_partition(connection: Connection, month: Month) -> bool:
    """Make `month`'s partition in the caller's transaction unless it exists; True if made."""
    name = partition_name(month)
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_BASE + month.year * 12 + month.month})
    if month in fill_partitions(connection):
        return False
    # made outside `fills` with the partition's constraint, then attached: no scan validates it,
    # and only SHARE UPDATE EXCLUSIVE is taken on `fills` (see the module's docstring); ATTACH
    # makes the partition's indexes from the partitioned table's
    connection.execute(text(f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS)"))
    connection.execute(text(f"ALTER TABLE {name} ADD CONSTRAINT {name}_period CHECK (period = '{month}')"))
    connection.execute(text(f"ALTER TABLE {PARENT} ATTACH PARTITION {name} FOR VALUES IN ('{month}')"))
    connection.execute(text(f"ALTER TABLE {name} DROP CONSTRAINT {name}_period"))  # its bound holds it now
    return True


def drop_partition(connection: Connection, month: Month) -> None:
    """Detach and drop `month`'s partition, in the caller's transaction (an archived month's):
    this takes an ACCESS EXCLUSIVE lock on `fills` until the transaction ends."""
    name = partition_name(month)
    # queued behind every reader and writer of fills, and ahead of the ones that come next: give
    # up (and roll back) rather than hold them all up for long
    connection.execute(text("SET LOCAL lock_timeout = '30s'"))
    connection.execute(text(f"ALTER TABLE {PARENT} DETACH PARTITION {name}"))
    connection.execute(text(f"DROP TABLE {name}"))
    known = _known.get(connection.engine)
    if known is not None:
        known.discard(month)
