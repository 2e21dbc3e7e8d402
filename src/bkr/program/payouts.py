"""Payout instructions: the outbox between bkr's ledger and the exchange's wallet system.

Settling a statement (`bkr.program.settlement`) writes, in the transaction that posts its payout
to the ledger as payable, one instruction: the idempotency key `payout/<broker>/<month>` (the
ledger group's), the broker's business account, the amount and the currency. The wallet system
takes the pending instructions (`instructions`) and acknowledges each with its own transfer
reference; `acknowledge_payout` is the one place an instruction becomes acknowledged: it records
the reference, who acknowledged and when, posts the hand-off from payable to the broker's account
(`payout/<broker>/<month>/paid`) and appends to the audit trail, all in the caller's transaction.

Acknowledging is idempotent the way a ledger key is: the same reference again changes nothing and
answers as the first time; another reference for an acknowledged instruction, or a reference that
already acknowledged another instruction, is refused (`PayoutConflict`), since a reference names
one transfer.

A program whose version for the month says `payout_target = "venue"` (the sandbox) has bkr do the
wallet's part itself: `deliver_pending` hands each pending instruction of the month to a `Wallet`
(the venue's, `bkr.venue.payouts`, which the composition passes in: this layer does not import the
venue) and acknowledges it with the transfer reference the wallet answers, one transaction per
instruction.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, Row, select, update
from sqlalchemy.exc import IntegrityError

from bkr.domain.errors import Conflict, InvalidInput, NotFound
from bkr.domain.money import canonical
from bkr.domain.periods import Month
from bkr.domain.registry import registry_text
from bkr.ledger import journal
from bkr.ledger.postings import payout_key, payout_sent
from bkr.program import audit, webhooks
from bkr.store.dialect import insert_for, locked
from bkr.store.tables import brokers, payout_instructions

PENDING, ACKNOWLEDGED = "pending", "acknowledged"
STATES = (PENDING, ACKNOWLEDGED)
CURRENCY = "USD"
MAX_REFERENCE = 200


class PayoutConflict(Conflict):
    """An acknowledgement that contradicts one already recorded."""

    code = "payout_reference_conflict"


@dataclass(frozen=True, slots=True)
class PayoutInstruction:
    instruction_id: int
    key: str  # payout/<broker>/<month>
    broker_id: int
    month: Month
    account_id: str  # the broker's business account at the exchange
    amount: Decimal
    currency: str
    state: str  # pending | acknowledged
    created_at: datetime
    reference: str | None = None  # the wallet's transfer reference, once acknowledged
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None

    def to_document(self) -> dict[str, Any]:
        return {"id": self.instruction_id, "key": self.key, "broker_id": self.broker_id, "month": str(self.month),
                "account_id": self.account_id, "amount": canonical(self.amount), "currency": self.currency,
                "state": self.state, "created_at": self.created_at.isoformat(), "reference": self.reference,
                "acknowledged_by": self.acknowledged_by,
                "acknowledged_at": None if self.acknowledged_at is None else self.acknowledged_at.isoformat()}


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    instruction: PayoutInstruction
    already_acknowledged: bool  # the same reference was recorded before: nothing changed


class Wallet(Protocol):
    """Who transfers a payout when bkr does it itself: answers the transfer's reference. Called in
    the transaction that acknowledges the instruction; the same instruction again must give the
    same reference and transfer nothing more."""

    def transfer(self, connection: Connection, instruction: PayoutInstruction, now: datetime) -> str: ...


def _instruction(row: Row[Any]) -> PayoutInstruction:
    return PayoutInstruction(row.instruction_id, row.key, row.broker_id, row.month, row.account_id, row.amount,
                             row.currency, row.state, row.created_at, row.reference, row.acknowledged_by,
                             row.acknowledged_at)


def write_instruction(connection: Connection, broker_id: int, month: Month, amount: Decimal,
                      now: datetime) -> PayoutInstruction:
    """The instruction of a statement's payout, written once (in the caller's transaction, the one
    that posts the payout): a second call finds it."""
    key = payout_key(broker_id, str(month))
    account = connection.execute(select(brokers.c.account_id).where(brokers.c.broker_id == broker_id)).scalar_one()
    connection.execute(insert_for(connection, payout_instructions).values(
        key=key, broker_id=broker_id, month=month, account_id=account, amount=amount, currency=CURRENCY,
        state=PENDING, created_at=now).on_conflict_do_nothing(index_elements=["key"]))
    return find(connection, key)


def find(connection: Connection, key_or_id: str, *, lock: bool = False) -> PayoutInstruction:
    """An instruction by its key (`payout/1400/2026-10`) or its id (`17`)."""
    by_id = key_or_id.isascii() and key_or_id.isdigit() and len(key_or_id) <= 9
    where = (payout_instructions.c.instruction_id == int(key_or_id) if by_id
             else payout_instructions.c.key == key_or_id)
    query = select(payout_instructions).where(where)
    row = connection.execute(locked(query) if lock else query).first()
    if row is None:
        raise NotFound(f"no payout instruction {key_or_id!r}", code="payout_not_found")
    return _instruction(row)


def instructions(connection: Connection, *, month: Month | None = None, state: str | None = None,
                 broker_id: int | None = None) -> list[PayoutInstruction]:
    """Instructions, oldest first, filtered by month, state and broker."""
    if state is not None and state not in STATES:
        raise InvalidInput(f"state: {state!r} is not {' or '.join(STATES)}", field="state")
    t = payout_instructions.c
    query = select(payout_instructions)
    if month is not None:
        query = query.where(t.month == month)
    if state is not None:
        query = query.where(t.state == state)
    if broker_id is not None:
        query = query.where(t.broker_id == broker_id)
    return [_instruction(row) for row in connection.execute(query.order_by(t.month, t.broker_id))]


def check_reference(reference: str) -> str:
    text = registry_text(reference, "reference")
    if len(text) > MAX_REFERENCE:
        raise InvalidInput(f"reference: at most {MAX_REFERENCE} characters", field="reference")
    return text


def acknowledge_payout(connection: Connection, key_or_id: str, reference: str, actor: str,
                       now: datetime) -> Acknowledgement:
    """Record the wallet's transfer of an instruction under `reference`, as `actor`: the one place
    an instruction becomes acknowledged. In the caller's transaction, with the ledger's hand-off
    from payable to the broker's account and the audit entry."""
    reference = check_reference(reference)
    instruction = find(connection, key_or_id, lock=True)
    if instruction.state == ACKNOWLEDGED:
        if instruction.reference == reference:
            return Acknowledgement(instruction, already_acknowledged=True)
        raise PayoutConflict(f"payout {instruction.key} was already acknowledged with reference "
                             f"{instruction.reference!r}; {reference!r} is another transfer and is refused")
    other = connection.execute(select(payout_instructions.c.key).where(
        payout_instructions.c.reference == reference)).scalar()
    if other is not None:
        raise PayoutConflict(f"reference {reference!r} already acknowledged payout {other}; a reference names one "
                             f"transfer, so it cannot also acknowledge {instruction.key}")
    try:
        with connection.begin_nested():  # another instruction may take the reference meanwhile (PostgreSQL)
            connection.execute(update(payout_instructions)
                               .where(payout_instructions.c.instruction_id == instruction.instruction_id)
                               .values(state=ACKNOWLEDGED, reference=reference, acknowledged_by=actor,
                                       acknowledged_at=now))
    except IntegrityError:
        raise PayoutConflict(f"reference {reference!r} was just used to acknowledge another payout; a reference "
                             f"names one transfer, so it cannot also acknowledge {instruction.key}") from None
    journal.post(connection, payout_sent(instruction.broker_id, str(instruction.month), instruction.amount), now)
    webhooks.payout_sent(connection, instruction.broker_id, instruction.month, instruction.amount, reference, now)
    audit.record(connection, actor=actor, action="payout.acknowledge", subject=instruction.key, at=now,
                 before={"state": PENDING},
                 after={"state": ACKNOWLEDGED, "reference": reference, "amount": instruction.amount,
                        "currency": instruction.currency, "account_id": instruction.account_id})
    return Acknowledgement(find(connection, instruction.key), already_acknowledged=False)


def deliver_pending(engine: Engine, month: Month, wallet: Wallet, now: datetime, *, actor: str,
                    ) -> list[PayoutInstruction]:
    """Have `wallet` transfer every pending instruction of `month` and acknowledge each with its
    reference, one transaction per instruction (a crash leaves each either pending and untransferred
    or acknowledged). Returns those acknowledged by this call."""
    with engine.connect() as connection:
        keys: Sequence[str] = [i.key for i in instructions(connection, month=month, state=PENDING)]
    done = []
    for key in keys:
        with engine.begin() as connection:
            instruction = find(connection, key, lock=True)
            if instruction.state != PENDING:  # another settler delivered it meanwhile
                continue
            reference = wallet.transfer(connection, instruction, now)
            done.append(acknowledge_payout(connection, key, reference, actor, now).instruction)
    return done
