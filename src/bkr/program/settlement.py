"""A statement's life after the close: draft → final → paid, each payment exactly once.

A close writes drafts. A draft becomes final when `approvals_required` distinct operators have
approved it, or when `review_days` have passed since the close: both are the program version's
in force for the statement's month (`bkr.program.settings_versions`), which no later version
can change once the month is closed. An approval is an authenticated operator's (the callers check
its key and role); with two approvals or more required, an operator who took part in making the
month (who closed it, or applied the program version it is paid under) may not be one of them
(separation of duties).

`settle_month` pays every final statement of a month: one transaction per statement that locks
its row, posts the payout to the ledger as payable under the idempotency key
`payout/<broker>/<month>`, writes the payout instruction for the exchange's wallet system under
the same key (`bkr.program.payouts`) and marks it paid. The unique keys make a second payment
impossible whatever happens (two settlers, a crash between any two steps and a retry): a retry
finds the statement paid, or finds the key posted with the same amounts and only marks it.

`paid` is the statement's last status: bkr has settled it, its payout is owed in the ledger and
handed to the wallet. Whether the money has reached the broker's account is the instruction's
state (`pending`, then `acknowledged` with the wallet's transfer reference), not the statement's.
When the month's program version pays to the venue (`payout_target = "venue"`, the sandbox) and
the caller passes the venue's `Wallet`, settling also transfers and acknowledges every pending
instruction of the month, a rerun those that a crash left pending.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, func, insert, select, update

from bkr.domain.config import PayoutTarget
from bkr.domain.errors import Conflict, NotFound
from bkr.domain.money import ZERO
from bkr.domain.operators import SYSTEM, check_may_approve
from bkr.domain.periods import Month
from bkr.ledger import journal
from bkr.ledger.postings import payout
from bkr.program import audit, payouts, webhooks
from bkr.program.periods import closed_months
from bkr.program.settings_versions import version_for
from bkr.store.dialect import locked
from bkr.store.tables import periods, statement_approvals, statements

DRAFT, FINAL, PAID = "draft", "final", "paid"


@dataclass(frozen=True, slots=True)
class Approval:
    broker_id: int
    month: Month
    status: str  # the statement's status after the approval
    approvals: int  # distinct approvers so far
    required: int  # distinct approvers the program requires
    already_approved: bool = False  # this approver had approved it before: nothing changed


@dataclass
class SettleResult:
    month: Month
    paid: list[int] = field(default_factory=list)  # broker ids paid by this run
    already_paid: list[int] = field(default_factory=list)
    not_final: list[int] = field(default_factory=list)  # drafts still under review
    transferred: list[int] = field(default_factory=list)  # paid to the venue and acknowledged by this run

    def to_document(self) -> dict[str, object]:
        return {"month": str(self.month), "paid": self.paid, "already_paid": self.already_paid,
                "not_final": self.not_final, "transferred": self.transferred}


def month_closer(connection: Connection, month: Month) -> Iterable[tuple[str, str]]:
    """The operator who closed `month` (none for the scheduler, or a close bkr did not record)."""
    closer = connection.execute(select(periods.c.closed_by).where(periods.c.month == month)).scalar()
    return [] if closer is None or closer == SYSTEM else [(closer, f"closed {month}")]


def program_author(connection: Connection, month: Month) -> Iterable[tuple[str, str]]:
    """The operator who applied the program version `month` is paid under."""
    version = version_for(connection, month)
    author = version.created_by
    return [] if author == SYSTEM else [(author, f"applied program version {version.number}")]


# Who may not approve a month's statements when two approvals or more are required: each source
# names operators with what they did. Another source of the month's making is one more line here.
BARRED_FROM_APPROVING: tuple[Callable[[Connection, Month], Iterable[tuple[str, str]]], ...] = (
    month_closer,
    program_author,
)


def barred_from_approving(connection: Connection, month: Month) -> dict[str, str]:
    return {name: reason for source in BARRED_FROM_APPROVING for name, reason in source(connection, month)}


def approve(connection: Connection, broker_id: int, month: Month, approver: str, now: datetime) -> Approval:
    """Record the approval of a draft by `approver`, an authenticated operator's name; with enough
    distinct approvers it becomes final. The same operator approving again changes nothing (the
    answer says so); with two approvals or more required, the operators who made the month (closed it,
    applied its program version) may not approve (`separation_of_duties`)."""
    row = connection.execute(locked(select(statements.c.status).where(
        (statements.c.broker_id == broker_id) & (statements.c.month == month)))).first()
    if row is None:
        raise NotFound(f"no statement for broker {broker_id} in {month} (close the month first)")
    if row.status != DRAFT:
        raise Conflict(f"the statement of broker {broker_id} for {month} is already {row.status}",
                       code=f"statement_{row.status}")
    required = approvals_required(connection, month)
    check_may_approve(approver, required, barred_from_approving(connection, month))
    mine = (statement_approvals.c.broker_id == broker_id) & (statement_approvals.c.month == month)
    # the statement's row is locked: no other approval of it is being recorded meanwhile
    already = connection.execute(select(statement_approvals.c.approver).where(
        mine & (statement_approvals.c.approver == approver))).first() is not None
    if not already:
        connection.execute(insert(statement_approvals).values(broker_id=broker_id, month=month, approver=approver,
                                                               approved_at=now))
    count = connection.execute(select(func.count()).select_from(statement_approvals).where(mine)).scalar_one()
    status = DRAFT
    if count >= required:
        connection.execute(update(statements).where(
            (statements.c.broker_id == broker_id) & (statements.c.month == month)
            & (statements.c.status == DRAFT)).values(status=FINAL, finalized_at=now))
        status = FINAL
        webhooks.statement_final(connection, broker_id, month, now, reason="approved")
    if not already:
        audit.record(connection, actor=approver, action="statement.approve", subject=f"broker {broker_id} {month}",
                     at=now, after={"status": status, "approvals": int(count), "required": required})
    return Approval(broker_id, month, status, int(count), required, already_approved=already)


def approvers(connection: Connection, month: Month) -> dict[int, list[str]]:
    """Who approved each statement of `month`, by broker id, in the order they approved."""
    found: dict[int, list[str]] = {}
    for broker_id, approver in connection.execute(
            select(statement_approvals.c.broker_id, statement_approvals.c.approver)
            .where(statement_approvals.c.month == month)
            .order_by(statement_approvals.c.broker_id, statement_approvals.c.approved_at,
                      statement_approvals.c.approver)):
        found.setdefault(broker_id, []).append(approver)
    return found


def approvals_required(connection: Connection, month: Month) -> int:
    """The distinct approvals a statement of `month` needs: its program version's."""
    return version_for(connection, month).config.approvals_required


def draft_broker_ids(connection: Connection, month: Month) -> list[int]:
    """The brokers whose statement of `month` is still a draft, by id."""
    return list(connection.execute(select(statements.c.broker_id)
                                   .where((statements.c.month == month) & (statements.c.status == DRAFT))
                                   .order_by(statements.c.broker_id)).scalars())


def approve_month(connection: Connection, month: Month, approver: str, now: datetime, *,
                  broker_id: int | None = None) -> list[Approval]:
    """Record `approver`'s approval of one broker's statement of `month` or, without `broker_id`, of
    every draft of the month. A month with no draft left approves nothing: that is not an error,
    so that approving a month twice is harmless."""
    brokers = [broker_id] if broker_id is not None else draft_broker_ids(connection, month)
    return [approve(connection, b, month, approver, now) for b in brokers]


def finalize_reviewed(connection: Connection, month: Month, now: datetime) -> int:
    """Make final the drafts of `month` whose review window (its program version's) has passed.
    Returns how many."""
    review_days = version_for(connection, month).config.review_days
    if review_days == 0:
        return 0
    cutoff = now - timedelta(days=review_days)
    lapsed = connection.execute(update(statements).where(
        (statements.c.month == month) & (statements.c.status == DRAFT) & (statements.c.created_at <= cutoff))
        .values(status=FINAL, finalized_at=now).returning(statements.c.broker_id)).scalars().all()
    for broker_id in sorted(lapsed):
        webhooks.statement_final(connection, broker_id, month, now, reason="review_lapsed")
    return len(lapsed)


def settle_month(engine: Engine, month: Month, now: datetime, *, actor: str = SYSTEM,
                 wallet: payouts.Wallet | None = None) -> SettleResult:
    """Pay every final statement of `month`, each in its own transaction. Safe to run again, to
    run concurrently, and to rerun after a crash at any point. `actor`: who settles, for the
    audit trail (an approver's name, or `system`). `wallet`: the venue's, used only when the
    month's program version says `payout_target = "venue"`."""
    with engine.begin() as connection:
        if month not in closed_months(connection):
            raise NotFound(f"{month} is not closed: close it first (bkr close --month {month})")
        finalize_reviewed(connection, month, now)
        to_venue = version_for(connection, month).config.payout_target is PayoutTarget.VENUE
        rows = connection.execute(select(statements.c.broker_id, statements.c.status)
                                  .where(statements.c.month == month).order_by(statements.c.broker_id)).all()
    result = SettleResult(month)
    for broker_id, status in rows:
        if status == DRAFT:
            result.not_final.append(broker_id)
            continue
        if status == PAID:  # paid is final: no transaction needed to know it
            result.already_paid.append(broker_id)
            continue
        with engine.begin() as connection:
            paid_now = _pay(connection, broker_id, month, now, actor)
        (result.paid if paid_now else result.already_paid).append(broker_id)
    if to_venue and wallet is not None:
        result.transferred = [i.broker_id for i in payouts.deliver_pending(engine, month, wallet, now, actor=actor)]
    return result


def _pay(connection: Connection, broker_id: int, month: Month, now: datetime, actor: str) -> bool:
    row = connection.execute(locked(select(statements.c.status, statements.c.payout).where(
        (statements.c.broker_id == broker_id) & (statements.c.month == month)))).one()
    if row.status == PAID:
        return False
    key = None
    if row.payout > ZERO:  # a statement of nothing is settled without a transfer
        key = journal.post(connection, payout(broker_id, str(month), row.payout), now).key
        payouts.write_instruction(connection, broker_id, month, row.payout, now)
    connection.execute(update(statements).where(
        (statements.c.broker_id == broker_id) & (statements.c.month == month))
        .values(status=PAID, paid_at=now, payout_key=key))
    if key is None:  # nothing to transfer: paid now; a transfer is announced when the wallet acknowledges it
        webhooks.payout_sent(connection, broker_id, month, row.payout, None, now)
    audit.record(connection, actor=actor, action="statement.settle", subject=f"broker {broker_id} {month}", at=now,
                 after={"payout": row.payout, "ledger_key": key})
    return True
