"""Reconciliation of a closed month, link by link: the stored fills make the aggregates (and
their users-merged totals, which projections read), the aggregates make the statements' lines,
the lines make each statement's totals, each statement carries in what the broker's previous
one carried out, the paid statements are the ledger's payouts and their payout instructions, an
acknowledged instruction is the ledger's move from payable to paid, and the ledger balances.

Each check reports what differs (a `Difference` naming the link, the subject and both figures)
rather than stopping at the first: one run tells finance everything that does not add up. The
sums are exact: NUMERIC on PostgreSQL, the `dec_sum` aggregate over decimal text on SQLite. A
statement's own arithmetic (lines -> totals) is `bkr.domain.statement_checks.check`, the check
`bkr statement verify` runs on a signed statement: it works each statement out again from its own
document (its tier from its volume, each line's rate from the terms it carries, the payouts, the
totals and the rounding) and names every figure that differs.

The fills of an archived month (`bkr fills archive`) are read from its Parquet file instead of
the database, once the file's SHA-256 is shown to be the one recorded (`bkr.program.fill_archives`);
every other link is checked as for any month.
"""

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Connection, Table, func, select

from bkr.domain.errors import InvalidInput, NotFound
from bkr.domain.money import ZERO, add, canonical, neg, total
from bkr.domain.periods import Month
from bkr.domain.problems import Problem
from bkr.domain.statement_checks import check
from bkr.domain.statement_document import read_statement_text
from bkr.domain.statements import BrokerStatement
from bkr.ledger import journal
from bkr.ledger.postings import REBATE_EXPENSE, broker_account, broker_payable
from bkr.program import payouts
from bkr.program.close import carries
from bkr.program.fill_archives import archive_record, archived_by_broker, counted_by_broker
from bkr.program.periods import closed_months
from bkr.program.settlement import PAID
from bkr.store.dialect import exact_sum
from bkr.store.tables import aggregate_totals, aggregates, ledger_entries, ledger_groups, statements


@dataclass(frozen=True, slots=True)
class Difference:
    # "fills -> aggregates", "aggregates -> merged totals", "aggregates -> lines", "stored statement" (a
    # document that does not read), "lines -> totals", "statements -> next statement", "statements -> ledger",
    # "statements -> instructions", "instructions -> ledger", "ledger"
    link: str
    subject: str  # what was compared, e.g. "broker 1400 volume_usd"
    expected: str
    found: str

    def __str__(self) -> str:
        return f"{self.link}: {self.subject}: expected {self.expected}, found {self.found}"


@dataclass(frozen=True, slots=True)
class Reconciliation:
    month: Month
    statements: int
    fills: int
    differences: tuple[Difference, ...]
    archive: str | None = None  # the file the month's fills were read from, if it is archived

    @property
    def clean(self) -> bool:
        return not self.differences


_FIGURES = ("fills", "volume_usd", "fee_base")
_NOTHING = dict.fromkeys(_FIGURES, ZERO)


def reconcile_month(connection: Connection, month: Month, *, archive: Path | None = None,
                    elsewhere: Mapping[int, Mapping[str, Decimal]] | None = None,
                    differences_found: Sequence[Difference] = ()) -> Reconciliation:
    """Reconcile closed `month`; its fills from the database, or from its archive if it is
    archived (at `archive`, else where it was written). `elsewhere`: per broker, the counted
    fills paid in the month that are not stored (a lake month's, recounted by `bkr.lake.reconcile`,
    which passes the differences it found on the way as `differences_found`)."""
    if month not in closed_months(connection):
        raise NotFound(f"{month} is not closed; reconcile a closed month (bkr close --month {month})")
    differences: list[Difference] = list(differences_found)
    record = archive_record(connection, month)
    if record is None and archive is not None:
        raise InvalidInput(f"{month} is not archived: its fills are in the database (reconcile it without --archive)",
                           field="archive")
    source = None if record is None else (Path(record.path) if archive is None else archive)
    from_fills = counted_by_broker(connection, month) if record is None else archived_by_broker(record, source)
    for broker, figures in (elsewhere or {}).items():
        mine = from_fills.setdefault(broker, dict(_NOTHING))
        for name in _FIGURES:
            mine[name] = add(mine[name], figures[name])
    from_aggregates = _aggregates_by_broker(connection, month)
    differences += _compare("fills -> aggregates", from_fills, from_aggregates)
    differences += _compare("aggregates -> merged totals", from_aggregates,
                            _aggregates_by_broker(connection, month, aggregate_totals))
    rows = connection.execute(select(statements.c.broker_id, statements.c.document, statements.c.carried_in)
                              .where(statements.c.month == month).order_by(statements.c.broker_id)).all()
    issued: dict[int, BrokerStatement] = {}
    unreadable: list[Difference] = []
    for broker, text, _ in rows:
        statement, problems = read_statement_text(text)
        if statement is None:  # reported, and its lines count as missing below
            unreadable += [_difference("stored statement", broker, problem) for problem in problems]
        else:
            issued[int(broker)] = statement
    from_lines = {broker: _line_figures(statement) for broker, statement in issued.items()}
    differences += _compare("aggregates -> lines", from_aggregates, from_lines)
    differences += unreadable
    owed = carries(connection, month)  # what each broker's statement before this month carried out
    for broker, statement in issued.items():
        differences += [_difference("lines -> totals", broker, problem) for problem in check(statement)]
    differences += [difference for broker, _, stored in rows if broker in issued
                    for difference in _carried(broker, issued[broker], stored, owed.get(broker, ZERO))]
    differences += _ledger(connection, month)
    return Reconciliation(month, len(rows), sum(int(f["fills"]) for f in from_fills.values()),
                          tuple(differences), None if source is None else str(source))


def _difference(link: str, broker: int, problem: Problem) -> Difference:
    """A problem the reader or `check` found in a statement, as reconcile reports it: a figure
    that does not follow from the others with both values, anything else with what is wrong."""
    subject = f"broker {broker} {problem.subject}".rstrip()
    if problem.expected is not None and problem.found is not None:
        return Difference(link, subject, _figure(problem.expected), _figure(problem.found))
    return Difference(link, subject, "nothing wrong", problem.what)


def _figure(value: Decimal | str) -> str:
    return value if isinstance(value, str) else canonical(value)


def _aggregates_by_broker(connection: Connection, month: Month, table: Table = aggregates,
                          ) -> dict[int, dict[str, Decimal]]:
    """The month's aggregates per broker, or the same of their users-merged totals."""
    rows = connection.execute(
        select(table.c.broker_id, func.sum(table.c.fills), exact_sum(connection, table.c.volume_usd),
               exact_sum(connection, table.c.fee_base_usd))
        .where(table.c.period == month).group_by(table.c.broker_id))
    return {int(broker): {"fills": Decimal(count), "volume_usd": Decimal(volume), "fee_base": Decimal(fee_base)}
            for broker, count, volume, fee_base in rows}


def _line_figures(statement: BrokerStatement) -> dict[str, Decimal]:
    lines = statement.lines
    return {"fills": Decimal(sum(line.fills for line in lines)),
            "volume_usd": total(line.volume_usd for line in lines),
            "fee_base": total(line.fee_base for line in lines)}


def _compare(link: str, expected: dict[int, dict[str, Decimal]],
             found: dict[int, dict[str, Decimal]]) -> list[Difference]:
    differences = []
    for broker in sorted(set(expected) | set(found)):
        # a side without the broker has nothing: a statement with no lines (one that only carries a
        # shortfall on) matches no fills, and a broker with fills but no statement shows as missing
        want, have = expected.get(broker, _NOTHING), found.get(broker, _NOTHING)
        differences += [Difference(link, f"broker {broker} {name}", canonical(want[name]), canonical(have[name]))
                        for name in _FIGURES if want[name] != have[name]]
    return differences


def _carried(broker: int, statement: BrokerStatement, stored: Decimal, expected: Decimal) -> list[Difference]:
    """What a statement carried in, in its document and its row, is what the broker's previous
    statement carried out."""
    return [Difference("statements -> next statement", f"broker {broker} carried_in{where}", canonical(expected),
                       canonical(found))
            for where, found in (("", statement.carried_in), (" (stored row)", stored))
            if found != expected]


def _ledger(connection: Connection, month: Month) -> list[Difference]:
    """Every paid statement's payout is one ledger group of exactly that amount, owed to the broker
    (payable), and one payout instruction of that amount; an acknowledged instruction is one more
    group moving it from payable to the broker's account, a pending one none yet. No payout group
    or instruction of the month is without a paid statement; every group balances. (A statement
    paid before instructions existed credited the broker's account in its one group, and has none.)"""
    differences = []
    paid = {int(b): (payout, key) for b, payout, key in connection.execute(
        select(statements.c.broker_id, statements.c.payout, statements.c.payout_key)
        .where((statements.c.month == month) & (statements.c.status == PAID)))}
    instructed = {i.broker_id: i for i in payouts.instructions(connection, month=month)}
    prefix, suffix, sent = "payout/", f"/{month}", f"/{month}/paid"
    posted: dict[int, dict[str, list[Decimal]]] = defaultdict(lambda: defaultdict(list))
    transferred: dict[int, dict[str, list[Decimal]]] = defaultdict(lambda: defaultdict(list))
    for key, account, amount in connection.execute(
            select(ledger_groups.c.key, ledger_entries.c.account, ledger_entries.c.amount)
            .join(ledger_entries, ledger_entries.c.group_id == ledger_groups.c.group_id)
            .where(ledger_groups.c.key.startswith(prefix)
                   & (ledger_groups.c.key.endswith(suffix) | ledger_groups.c.key.endswith(sent)))):
        if key.endswith(sent):
            transferred[int(key[len(prefix):-len(sent)])][account].append(amount)
        else:
            posted[int(key[len(prefix):-len(suffix)])][account].append(amount)
    for broker in sorted(set(paid) | set(posted) | set(transferred) | set(instructed)):
        payout, key = paid.get(broker, (None, None))
        entries, moved, instruction = posted.get(broker), transferred.get(broker), instructed.get(broker)
        if payout is None:
            found = "a payout group" if entries or moved else "a payout instruction"
            differences.append(Difference("statements -> ledger", f"broker {broker}", "no payout (not paid)", found))
            continue
        expected_key = f"{prefix}{broker}{suffix}" if payout > 0 else None
        if key != expected_key:
            differences.append(Difference("statements -> ledger", f"broker {broker} payout key",
                                          str(expected_key), str(key)))
        entries = entries or {}
        legacy = broker_account(broker) in entries  # paid before instructions: credited at once
        owed = neg(total([*entries.get(broker_payable(broker), []), *entries.get(broker_account(broker), [])]))
        expensed = total(entries.get(REBATE_EXPENSE, []))
        for name, amount in (("owed to the broker", owed), ("rebate expense", expensed)):
            if amount != payout:
                differences.append(Difference("statements -> ledger", f"broker {broker} {name}", canonical(payout),
                                              canonical(amount)))
        if payout > 0 and not legacy:
            shown = "none" if instruction is None else canonical(instruction.amount)
            if shown != canonical(payout):
                differences.append(Difference("statements -> instructions", f"broker {broker} payout instruction",
                                              canonical(payout), shown))
        acknowledged = instruction is not None and instruction.state == payouts.ACKNOWLEDGED
        expected_move = payout if acknowledged else ZERO
        credited = neg(total((moved or {}).get(broker_account(broker), [])))
        if credited != expected_move:
            state = "no instruction" if instruction is None else f"instruction {instruction.state}"
            differences.append(Difference("instructions -> ledger", f"broker {broker} transferred ({state})",
                                          canonical(expected_move), canonical(credited)))
    differences += [Difference("ledger", f"group {key}", "balanced", "unbalanced")
                    for key in journal.unbalanced_groups(connection)]
    return differences
