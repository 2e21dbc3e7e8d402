"""Property test of the stored ledger against a plain model: any sequence of payouts, retries,
reused keys and reversals leaves every group balanced, each key posted once, and every balance
equal to the sum of what was accepted."""

import itertools
from collections import defaultdict
from decimal import Decimal

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from integration_support import NOW
from sqlalchemy import Engine

from bkr.domain.money import D
from bkr.ledger import journal
from bkr.ledger.postings import REBATE_EXPENSE, payout

_runs = itertools.count()

amounts = st.decimals(min_value=D("0.01"), max_value=D("99999.99"), places=2)
actions = st.lists(st.one_of(
    st.tuples(st.just("pay"), st.integers(1, 4), st.sampled_from(["2024-05", "2024-06"]), amounts),
    st.tuples(st.just("retry"), st.integers(0, 20)),
    st.tuples(st.just("reuse"), st.integers(0, 20), amounts),
    st.tuples(st.just("reverse"), st.integers(0, 20)),
), max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=actions)
@example(steps=[("pay", 1, "2024-05", D("0.02")), ("reuse", 0, D("0.01"))])  # a "reuse" of the same amount
def test_the_ledger_matches_a_plain_model(engine: Engine, steps: list[tuple[object, ...]]) -> None:
    run = next(_runs)  # keys of this example, apart from earlier examples' on the same database
    posted: dict[str, object] = {}  # key -> group, as the model accepted them
    order: list[str] = []
    paid: dict[str, Decimal] = {}  # key -> the amount of its payout
    expected: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    with engine.begin() as connection:
        before = journal.balances(connection)
        for step in steps:
            if step[0] == "pay":
                _, broker, month, amount = step
                group = payout(int(broker) + 10 * run, f"{month}-{run}", amount)  # type: ignore[arg-type]
                if group.key in posted:
                    continue
                assert journal.post(connection, group, NOW).created
                posted[group.key] = group
                paid[group.key] = amount  # type: ignore[assignment]
                order.append(group.key)
                for p in group.postings:
                    expected[(p.account, p.currency)] += p.amount
            elif not order:
                continue
            elif step[0] == "retry":
                key = order[int(step[1]) % len(order)]  # type: ignore[call-overload]
                assert not journal.post(connection, posted[key], NOW).created  # type: ignore[arg-type]
            elif step[0] == "reuse":
                key = order[int(step[1]) % len(order)]  # type: ignore[call-overload]
                original = posted[key]
                if original.kind != "payout":  # type: ignore[attr-defined]
                    continue
                broker, month = key.split("/")[1:]
                amount = step[2] + D("0.01")  # type: ignore[operator]
                if amount == paid[key]:  # the same payout again is a retry, not a reuse
                    amount += D("0.01")
                other = payout(int(broker), month, amount)
                try:
                    journal.post(connection, other, NOW)
                except journal.KeyReused:
                    pass
                else:
                    raise AssertionError("a reused key with other amounts was accepted")
            else:
                key = order[int(step[1]) % len(order)]  # type: ignore[call-overload]
                reversal_key = f"reversal-of/{key}"
                if reversal_key in posted or posted[key].kind != "payout":  # type: ignore[attr-defined]
                    continue
                reversal = posted[key].reversal(reversal_key)  # type: ignore[attr-defined]
                assert journal.post(connection, reversal, NOW).created
                posted[reversal_key] = reversal
                order.append(reversal_key)
                for p in reversal.postings:
                    expected[(p.account, p.currency)] += p.amount
        after = journal.balances(connection)
        assert journal.unbalanced_groups(connection) == []
    for account in set(after) | set(expected):
        assert after.get(account, Decimal(0)) - before.get(account, Decimal(0)) == expected.get(account, 0)
    assert after.get((REBATE_EXPENSE, "USD"), 0) == -sum(
        (v for (a, c), v in after.items() if a.startswith("broker:") and c == "USD"), Decimal(0))
