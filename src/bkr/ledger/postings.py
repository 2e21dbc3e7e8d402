"""Posting groups, pure: what a transfer is before it is stored.

A group is a list of postings (account, currency, signed amount) that sums to zero in every
currency, with a client-supplied idempotency key: the same key always means the same postings,
so a retried payment is recognised, and a key reused for other amounts is an error. Debits are
positive, credits negative.

A broker's payout goes through two groups. Settling its statement debits `program:rebate_expense`
by P and credits `broker:<id>:payable` by P: owed, and handed to the exchange's wallet system as a
payout instruction. When the wallet acknowledges the transfer, `payout/<id>/<month>/paid` moves P
from the payable account to `broker:<id>`, the broker's business account: paid. A broker's payable
balance is what it is owed and not yet transferred; minus the sum of `broker:<id>`'s entries is what
has reached its account. (Statements paid before instructions existed credited `broker:<id>` in
their one group.)
"""

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from bkr.domain.errors import InvalidInput
from bkr.domain.money import ZERO, canonical, neg, total

REBATE_EXPENSE = "program:rebate_expense"


def broker_account(broker_id: int) -> str:
    """The broker's business account at the exchange, where its rebates are credited."""
    return f"broker:{broker_id}"


def broker_payable(broker_id: int) -> str:
    """What the program owes the broker and has not yet transferred to its business account."""
    return f"broker:{broker_id}:payable"


def payout_key(broker_id: int, month: str) -> str:
    """The idempotency key of a statement's payout: its ledger group and its payout instruction."""
    return f"payout/{broker_id}/{month}"


def payout_sent_key(broker_id: int, month: str) -> str:
    """The idempotency key of the group that records the payout's transfer as acknowledged."""
    return f"{payout_key(broker_id, month)}/paid"


@dataclass(frozen=True, slots=True)
class Posting:
    account: str
    currency: str
    amount: Decimal  # debit > 0, credit < 0


@dataclass(frozen=True, slots=True)
class PostingGroup:
    key: str  # the idempotency key: one group per key, ever
    kind: str  # "payout", "reversal", ...
    postings: tuple[Posting, ...]
    memo: str = ""
    reverses: str | None = None  # the key of the group this one corrects

    def __post_init__(self) -> None:
        check(self)

    def digest(self) -> str:
        """What the key stands for: the postings, order-free, in canonical text."""
        lines = sorted(f"{p.account}|{p.currency}|{canonical(p.amount)}" for p in self.postings)
        text = "\n".join([self.kind, self.reverses or "", *lines])
        return hashlib.sha256(text.encode()).hexdigest()

    def reversal(self, key: str, memo: str = "") -> "PostingGroup":
        """The group that undoes this one: every posting negated, linked to what it corrects."""
        negated = tuple(Posting(p.account, p.currency, neg(p.amount)) for p in self.postings)
        return PostingGroup(key, "reversal", negated, memo or f"reverses {self.key}", reverses=self.key)


def check(group: PostingGroup) -> None:
    if not group.key.strip():
        raise InvalidInput("ledger: a posting group needs an idempotency key", field="key")
    if not group.postings:
        raise InvalidInput(f"ledger: group {group.key} has no postings")
    sums: dict[str, list[Decimal]] = defaultdict(list)
    for posting in group.postings:
        if not posting.amount.is_finite() or posting.amount == ZERO:
            raise InvalidInput(f"ledger: group {group.key}: a posting to {posting.account} of {posting.amount}")
        sums[posting.currency].append(posting.amount)
    for currency, amounts in sums.items():
        if total(amounts) != ZERO:
            raise InvalidInput(f"ledger: group {group.key} does not balance in {currency}: "
                               f"{canonical(total(amounts))}")


def balances(postings: Iterable[Posting]) -> dict[tuple[str, str], Decimal]:
    """The balance of every (account, currency): the exact sum of its postings."""
    grouped: dict[tuple[str, str], list[Decimal]] = defaultdict(list)
    for posting in postings:
        grouped[(posting.account, posting.currency)].append(posting.amount)
    return {key: total(amounts) for key, amounts in grouped.items()}


def payout(broker_id: int, month: str, amount: Decimal) -> PostingGroup:
    """A statement's payment: the program's rebate expense, owed to the broker (payable) in USD."""
    return PostingGroup(payout_key(broker_id, month), "payout",
                        (Posting(REBATE_EXPENSE, "USD", amount),
                         Posting(broker_payable(broker_id), "USD", neg(amount))),
                        memo=f"broker {broker_id} rebate for {month}")


def payout_sent(broker_id: int, month: str, amount: Decimal) -> PostingGroup:
    """The payout's transfer, acknowledged by the wallet: from payable to the broker's account."""
    return PostingGroup(payout_sent_key(broker_id, month), "payout_sent",
                        (Posting(broker_payable(broker_id), "USD", amount),
                         Posting(broker_account(broker_id), "USD", neg(amount))),
                        memo=f"broker {broker_id} rebate for {month}, transferred")
