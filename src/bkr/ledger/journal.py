"""The stored ledger: posting a group at most once, and balances as sums of entries.

`post` inserts the group under its idempotency key with `ON CONFLICT DO NOTHING`; the unique key
is what makes a payment happen once across retries, crashes and concurrent settlers. A key
already stored with the same postings answers with the stored group; with other postings it is
an error, never a silent success.
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, select

from bkr.domain.errors import Conflict, NotFound
from bkr.domain.money import total
from bkr.ledger.postings import Posting, PostingGroup
from bkr.store.dialect import insert_for
from bkr.store.tables import ledger_entries, ledger_groups


class KeyReused(Conflict):
    """An idempotency key already stands for other postings."""

    code = "idempotency_key_reused"


@dataclass(frozen=True, slots=True)
class Posted:
    group_id: int
    key: str
    created: bool  # False: the key was already posted (with the same postings)


def post(connection: Connection, group: PostingGroup, now: datetime) -> Posted:
    """Store `group` once. The caller owns the transaction."""
    inserted = connection.execute(
        insert_for(connection, ledger_groups).values(
            key=group.key, kind=group.kind, digest=group.digest(), memo=group.memo, reverses=group.reverses,
            created_at=now).on_conflict_do_nothing(index_elements=["key"]).returning(ledger_groups.c.group_id)
    ).scalar()
    if inserted is None:
        stored = connection.execute(select(ledger_groups.c.group_id, ledger_groups.c.digest)
                                    .where(ledger_groups.c.key == group.key)).one()
        if stored.digest != group.digest():
            raise KeyReused(f"ledger: idempotency key {group.key!r} was already posted with other amounts; "
                            "a key stands for one transfer only")
        return Posted(int(stored.group_id), group.key, False)
    connection.execute(ledger_entries.insert(), [
        {"group_id": inserted, "account": p.account, "currency": p.currency, "amount": p.amount}
        for p in group.postings])
    return Posted(int(inserted), group.key, True)


def group(connection: Connection, key: str) -> PostingGroup:
    row = connection.execute(select(ledger_groups).where(ledger_groups.c.key == key)).first()
    if row is None:
        raise NotFound(f"ledger: no group {key!r}")
    postings = tuple(Posting(e.account, e.currency, e.amount) for e in connection.execute(
        select(ledger_entries).where(ledger_entries.c.group_id == row.group_id).order_by(ledger_entries.c.entry_id)))
    return PostingGroup(row.key, row.kind, postings, row.memo, row.reverses)


def balances(connection: Connection, account_prefix: str | None = None) -> dict[tuple[str, str], Decimal]:
    """Every (account, currency) balance, summed exactly from the entries."""
    query = select(ledger_entries.c.account, ledger_entries.c.currency, ledger_entries.c.amount)
    if account_prefix is not None:
        query = query.where(ledger_entries.c.account.startswith(account_prefix, autoescape=True))
    grouped: dict[tuple[str, str], list[Decimal]] = {}
    for account, currency, amount in connection.execute(query):
        grouped.setdefault((account, currency), []).append(amount)
    return {key: total(amounts) for key, amounts in sorted(grouped.items())}


def unbalanced_groups(connection: Connection) -> list[str]:
    """The keys of stored groups whose entries do not sum to zero in some currency (none, unless
    the database was edited behind bkr's back)."""
    sums: dict[tuple[int, str], list[Decimal]] = {}
    for group_id, currency, amount in connection.execute(
            select(ledger_entries.c.group_id, ledger_entries.c.currency, ledger_entries.c.amount)):
        sums.setdefault((group_id, currency), []).append(amount)
    bad = {group_id for (group_id, _), amounts in sums.items() if total(amounts) != 0}
    if not bad:
        return []
    return sorted(connection.execute(select(ledger_groups.c.key).where(ledger_groups.c.group_id.in_(bad))).scalars())
