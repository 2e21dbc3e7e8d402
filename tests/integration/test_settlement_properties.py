"""Property test of the whole settlement path against a plain model: any sequence of fills (late
ones included), corrections, closes, settles and retried settles pays every statement once, keeps
every ledger group at zero and each broker's balance at the sum of what it was paid, never edits a
paid statement, and in the end pays exactly the fee base the fills finally have, at the tier's rate.

Each example gets its own broker, user and four months on the shared database, so that examples
do not see one another's closes."""

import itertools
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from integration_support import NOW, add_broker, add_users, approve_all, import_file, write_fills
from sqlalchemy import Engine, select

from bkr.domain.money import ZERO, D, round_down, total
from bkr.domain.payout import fee_base
from bkr.domain.periods import Month
from bkr.ledger import journal
from bkr.ledger.postings import broker_payable
from bkr.program import settlement
from bkr.program.close import close_month
from bkr.program.reconcile import reconcile_month
from bkr.store.tables import ledger_groups, statements
from program_support import use_program

_runs = itertools.count()
_RATE = D("0.20")  # BKR 0's: the volumes here stay far below BKR 1

fees = st.decimals(min_value=D("-5"), max_value=D("50"), places=2)
steps = st.lists(st.one_of(
    st.tuples(st.just("fill"), st.integers(0, 2), fees),                  # a fill in month 0..2
    st.tuples(st.just("correct"), st.integers(0, 30), st.sampled_from(["bust", "half", "fee"]), fees),
    st.tuples(st.just("close")),                                           # the next month still open
    st.tuples(st.just("settle"), st.integers(0, 3)),                       # a closed month, run once or twice
), min_size=1, max_size=14)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=steps)
def test_settlement_matches_a_plain_model(engine: Engine, tmp_path_factory: pytest.TempPathFactory,
                                          plan: list[tuple[object, ...]]) -> None:
    run = next(_runs)
    broker, user = 2000 + run, f"user-{run}"
    first = Month(2000 + run // 3, 1 + 4 * (run % 3))  # four months of their own, from 2000 on
    months = [first, first.next(), first.next().next(), first.next().next().next()]
    use_program(engine)
    # active from its own first month: earlier runs' months are closed, and an activation reaching into
    # them would be a retroactive change
    add_broker(engine, broker, since=f"{first}-01T00:00:00Z")
    add_users(engine, user)
    model: dict[str, list[Decimal]] = {}  # fill id -> [quantity, fee] as corrected, as the model accepted them
    rows: dict[str, dict[str, object]] = {}
    closed = 0
    paid_documents: dict[str, str] = {}
    counter = itertools.count()

    def send(row: dict[str, object]) -> int:
        path = write_fills(tmp_path_factory.mktemp("fills") / "f.csv", [row])
        return import_file(engine, path, clock=lambda: NOW, actor="ops").accepted

    for step in plan:
        if step[0] == "fill":
            month, fee = months[int(step[1])], step[2]  # type: ignore[call-overload]
            fill_id = f"r{run}-f{next(counter)}"
            rows[fill_id] = {
                "fill_id": fill_id, "order_id": f"o-{fill_id}", "user_id": user, "symbol": "SOL_USDC",
                "market_type": "SPOT", "side": "Bid", "price": "100", "quantity": "2", "fee": str(fee),
                "fee_symbol": "USDC", "is_maker": "false", "timestamp": f"{month}-10T12:00:00Z",
                "broker_id": broker}
            assert send(rows[fill_id]) == 1
            model[fill_id] = [D("2"), D(str(fee))]
        elif step[0] == "correct" and model:
            target = sorted(model)[int(step[1]) % len(model)]  # type: ignore[call-overload]
            quantity, fee = model[target]
            change = {"bust": (-quantity, -fee), "half": (-quantity / 2, -fee / 2),
                      "fee": (ZERO, D(str(step[3])))}[str(step[2])]
            if change == (ZERO, ZERO):
                continue
            row = {**rows[target], "fill_id": f"r{run}-c{next(counter)}", "corrects": target,
                   "quantity": str(change[0]), "fee": str(change[1])}
            assert send(row) == 1
            model[target] = [quantity + change[0], fee + change[1]]
        elif step[0] == "close" and closed < 3:
            close_month(engine, months[closed], now=NOW)
            closed += 1
        elif step[0] == "settle" and closed:
            month = months[int(step[1]) % closed]  # type: ignore[call-overload]
            approve_all(engine)
            for _ in range(2):  # a retry pays nothing more
                settlement.settle_month(engine, month, NOW)
        with engine.connect() as connection:
            for month_text, document in connection.execute(
                    select(statements.c.month, statements.c.document)
                    .where((statements.c.broker_id == broker) & (statements.c.status == settlement.PAID))):
                assert paid_documents.setdefault(month_text, document) == document

    for month in months[closed:]:  # every late fill and correction lands by August's close
        close_month(engine, month, now=NOW)
    approve_all(engine)
    for month in months:
        settlement.settle_month(engine, month, NOW)

    with engine.connect() as connection:
        issued = connection.execute(select(statements.c.month, statements.c.payout, statements.c.payout_exact,
                                           statements.c.status, statements.c.carried_in)
                                    .where(statements.c.broker_id == broker).order_by(statements.c.month)).all()
        keys = connection.execute(select(ledger_groups.c.key)
                                  .where(ledger_groups.c.key.startswith(f"payout/{broker}/"))).scalars().all()
        balance = journal.balances(connection, broker_payable(broker)).get((broker_payable(broker), "USD"), ZERO)
        unbalanced = journal.unbalanced_groups(connection)
        differences = [d for m in months for d in reconcile_month(connection, m).differences]
    assert all(s.status == settlement.PAID for s in issued)
    assert sorted(keys) == sorted(f"payout/{broker}/{s.month}" for s in issued if s.payout > 0)
    carried = ZERO  # what each statement leaves to the next: the model's own bookkeeping
    for s in issued:
        assert s.carried_in == carried
        assert s.payout == round_down(max(ZERO, s.payout_exact + carried), D("0.01"))
        carried = min(ZERO, s.payout_exact + carried)
    assert -balance == total(s.payout for s in issued)
    assert unbalanced == [] and differences == []
    # the exact payouts add up to the fills as finally corrected, at BKR 0's rate; what was paid is
    # that, less what is still carried, less under a cent of rounding per statement
    earned = total(fee_base(fee) for _, fee in model.values()) * _RATE
    assert total(s.payout_exact for s in issued) == earned
    gap = earned - carried - total(s.payout for s in issued)
    assert gap == ZERO or ZERO < gap < D("0.01") * len(issued)
