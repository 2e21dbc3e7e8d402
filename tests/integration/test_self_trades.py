"""Self-trades from files, on both databases: a trade whose two sides (matched by `trade_id`)
belong to one user is stored and counted for nobody, whether its sides come in one file, in two
batches, or the second after the first one's month was paid; a trade cannot have a third side or
two on one side; and importing again changes nothing."""

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from integration_support import (
    BROKER,
    JUNE,
    MAY,
    NOW,
    add_broker,
    add_users,
    close,
    correction,
    fill,
    import_rows,
    operator_key,
    preview,
    stored_state,
    write_csv,
)
from sqlalchemy import Connection, Engine, select

from bkr.domain.config import DEFAULT_CONFIG
from bkr.domain.fills import Attribution
from bkr.domain.money import D
from bkr.domain.periods import Month
from bkr.domain.program_versions import ProgramTimeline
from bkr.ingest.readers import RawRow
from bkr.program import review
from bkr.program.attribution import reevaluate
from bkr.program.close import stored_statement
from bkr.program.reconcile import reconcile_month
from bkr.program.writer import RowResult, write_batch
from bkr.store import db
from bkr.store.tables import aggregate_totals, aggregates, daily_volumes, fill_rejections, fills

# bob's trade with carol: broker volume, 100 USD of it
OTHERS = [fill("f-bob", user="bob", trade_id="t-0", fee="0.1"),
          fill("f-carol", user="carol", side="Ask", is_maker=True, trade_id="t-0", fee="0.1", broker=None)]
# alice buys from herself through broker 1400: 250 USD each side
BUY = fill("f-buy", side="Bid", quantity="2.5", fee="0.25", trade_id="t-1")
SELL = fill("f-sell", side="Ask", quantity="2.5", fee="0.25", is_maker=True, trade_id="t-1")


def _attributions(engine: Engine) -> dict[str, tuple[str, Month]]:
    with engine.connect() as connection:
        return {r.fill_id: (r.attribution, r.period)
                for r in connection.execute(select(fills.c.fill_id, fills.c.attribution, fills.c.period))}


def _volume(engine: Engine, month: Month = MAY) -> str:
    """The broker's API volume of a month, as its statement would state it now."""
    return str(preview(engine, month)[BROKER]["api_volume"])


def _counted_rows(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as connection:
        return {table.name: [tuple(r) for r in connection.execute(select(table).order_by(*table.primary_key.columns))]
                for table in (aggregates, aggregate_totals, daily_volumes)}


def _reasons(engine: Engine) -> dict[str | None, str]:
    with engine.connect() as connection:
        return dict(connection.execute(select(fill_rejections.c.fill_id, fill_rejections.c.reason)).all())  # type: ignore[arg-type]


@pytest.fixture
def program(engine: Engine) -> Engine:
    add_broker(engine)
    add_users(engine, "alice", "bob", "carol")
    return engine


@pytest.mark.parametrize("suffix", [".csv", ".ndjson", ".parquet"])
def test_a_self_trade_from_a_file_leaves_the_broker_s_volume_unchanged(program: Engine, tmp_path: Path,
                                                                        suffix: str) -> None:
    import_rows(program, tmp_path / f"others{suffix}", OTHERS)
    before = (_volume(program), _counted_rows(program))

    tally = import_rows(program, tmp_path / f"alice{suffix}", [BUY, SELL])

    assert (tally.accepted, tally.counted, tally.self_trades) == (2, 0, 2)
    assert (_volume(program), _counted_rows(program)) == before
    assert _volume(program) == "100"
    assert _attributions(program)["f-buy"] == _attributions(program)["f-sell"] == ("self_trade", MAY)
    with program.connect() as connection:
        assert review.review_counts(connection).self_trades == 2


def test_backpack_s_integer_trade_ids_in_parquet_match_too(program: Engine, tmp_path: Path) -> None:
    tally = import_rows(program, tmp_path / "fills.parquet", [{**BUY, "trade_id": 4242}, {**SELL, "trade_id": 4242}])

    assert tally.self_trades == 2
    with program.connect() as connection:
        assert set(connection.execute(select(fills.c.trade_id)).scalars()) == {"4242"}


def test_a_trade_between_two_users_counts_as_before(program: Engine, tmp_path: Path) -> None:
    tally = import_rows(program, tmp_path / "fills.csv", [BUY, {**SELL, "user_id": "bob"}])

    assert (tally.counted, tally.self_trades) == (2, 0)
    assert _volume(program) == "500"


def test_the_second_side_in_another_batch_takes_back_what_the_first_counted(program: Engine, tmp_path: Path) -> None:
    import_rows(program, tmp_path / "others.csv", OTHERS)
    before = _counted_rows(program)
    bust = correction(BUY, "f-buy-c", quantity="-0.5", fee="-0.05")
    first = import_rows(program, tmp_path / "first.csv", [BUY, {**bust, "trade_id": "t-1"}])
    assert (first.counted, _volume(program)) == (2, "300")  # counted until its other side is known

    second = import_rows(program, tmp_path / "second.csv", [SELL])

    assert (second.accepted, second.self_trades) == (1, 1)
    assert _counted_rows(program) == before
    assert {f: a for f, (a, _) in _attributions(program).items() if f.startswith("f-buy") or f == "f-sell"} == {
        "f-buy": "self_trade", "f-buy-c": "self_trade", "f-sell": "self_trade"}


def test_sides_in_separate_batches_of_one_file_are_matched(program: Engine, tmp_path: Path) -> None:
    import_rows(program, tmp_path / "others.csv", OTHERS)

    tally = import_rows(program, tmp_path / "fills.csv", [BUY, fill("f-x", user="bob"), SELL], batch_size=1)

    assert (tally.accepted, tally.self_trades) == (3, 1)  # the first side was counted when its batch committed
    assert _attributions(program)["f-buy"][0] == _attributions(program)["f-sell"][0] == "self_trade"
    assert _volume(program) == "200"  # bob's 100 and f-x's 100


def test_the_second_side_after_the_first_was_paid_is_taken_back_on_the_next_statement(program: Engine,
                                                                                     tmp_path: Path) -> None:
    import_rows(program, tmp_path / "may.csv", [*OTHERS, BUY])
    may = close(program, MAY)[BROKER]
    assert may["api_volume"] == "350"
    with program.connect() as connection:
        paid = stored_statement(connection, BROKER, MAY)

    tally = import_rows(program, tmp_path / "late.csv", [SELL, fill("f-june", user="bob", at="2024-06-03T08:00:00Z")])
    june = preview(program, JUNE)[BROKER]

    assert (tally.accepted, tally.self_trades) == (2, 1)
    stored = _attributions(program)
    assert stored["f-buy"] == ("counted", MAY)  # as May's statement paid it
    assert stored["f-sell"] == ("self_trade", JUNE)
    assert stored["f-buy#self-trade"] == ("counted", JUNE)  # its reversal
    lines = [(line["kind"], line["fill_month"], line["user_id"], line["volume_usd"], line["fee_base"], line["fills"])
             for line in june["lines"]]
    assert lines == [("regular", "2024-06", "bob", "100", "0.1", 1),
                     ("correction", "2024-05", "alice", "-250", "-0.25", 1)]
    (reversal,) = [line for line in june["lines"] if line["kind"] == "correction"]
    assert (reversal["tier"], reversal["effective_rate"]) == (may["tier"], may["lines"][0]["effective_rate"])
    assert june["api_volume"] == "100"  # a correction does not count towards June's tier
    rate = D(reversal["effective_rate"])
    assert D(june["payout_exact"]) == D("0.1") * rate - D("0.25") * rate

    close(program, JUNE)
    with program.connect() as connection:
        assert stored_statement(connection, BROKER, MAY) == paid  # nothing paid is edited
        assert reconcile_month(connection, MAY).differences == ()
        assert reconcile_month(connection, JUNE).differences == ()
    state = stored_state(program)
    again = import_rows(program, tmp_path / "again.csv", [*OTHERS, BUY, SELL])
    assert (again.accepted, again.duplicates) == (0, 4)
    assert stored_state(program) == state


def test_a_correction_of_a_side_that_was_taken_back_counts_for_nobody(program: Engine, tmp_path: Path) -> None:
    import_rows(program, tmp_path / "may.csv", [*OTHERS, BUY])
    close(program, MAY)
    import_rows(program, tmp_path / "late.csv", [SELL])
    before = _counted_rows(program)

    # a bust of the trade itself: what the reversal took back is no part of the trade's standing
    bust = import_rows(program, tmp_path / "bust.csv", [correction(BUY, "f-buy-bust", quantity="-2.5", fee="-0.25")])

    assert (bust.accepted, bust.counted, bust.self_trades) == (1, 0, 1)
    assert _counted_rows(program) == before


def test_the_name_of_a_reversal_is_bkr_s_own(program: Engine, tmp_path: Path) -> None:
    """A correction may not take the name bkr gives a reversal; a fill that holds it anyway keeps
    its trade from being taken back, so the side that completes that trade is refused."""
    named = import_rows(program, tmp_path / "named.csv", [BUY, correction(BUY, "f-buy#self-trade", quantity="-1",
                                                                          fee="-0.1")])
    import_rows(program, tmp_path / "squatter.csv", [fill("f-buy#self-trade", user="bob")])
    close(program, MAY)
    late = import_rows(program, tmp_path / "late.csv", [SELL])

    assert (named.accepted, named.rejected, late.rejected) == (1, 1, 1)
    reasons = _reasons(program)
    assert reasons["f-buy#self-trade"].startswith("fill_id: 'f-buy#self-trade' is the name bkr gives the reversal")
    assert reasons["f-sell"] == ("trade_id: makes fill 'f-buy' one side of a self-trade, but the fill_id "
                                 "'f-buy#self-trade' its reversal needs is taken by another fill")
    assert _attributions(program)["f-buy"][0] == "counted"


def test_a_self_trade_stays_one_when_the_registry_changes(engine: Engine, tmp_path: Path) -> None:
    add_broker(engine)
    import_rows(engine, tmp_path / "fills.csv", [BUY])
    assert _attributions(engine)["f-buy"][0] == "awaiting_user"  # alice is not registered yet
    import_rows(engine, tmp_path / "more.csv", [SELL])

    add_users(engine, "alice")  # registering her re-evaluates her waiting fills
    with engine.begin() as connection:
        reevaluate(connection, fills.c.user_id == "alice")

    assert _attributions(engine)["f-buy"][0] == _attributions(engine)["f-sell"][0] == "self_trade"
    assert _counted_rows(engine) == {"aggregates": [], "aggregate_totals": [], "daily_volumes": []}


def test_importing_again_is_idempotent_and_a_changed_trade_id_is_a_conflict(program: Engine, tmp_path: Path) -> None:
    import_rows(program, tmp_path / "fills.csv", [*OTHERS, BUY, SELL])
    state = stored_state(program)

    again = import_rows(program, tmp_path / "again.csv", [*OTHERS, BUY, SELL])
    each_alone = [import_rows(program, tmp_path / f"{row['fill_id']}.csv", [row]) for row in (SELL, BUY)]
    changed = import_rows(program, tmp_path / "changed.csv", [{**SELL, "trade_id": "t-2"}, {**BUY, "trade_id": None}])

    assert again.counts() == {"accepted": 0, "duplicates": 4, "conflicts": 0, "rejected": 0}
    assert [t.duplicates for t in each_alone] == [1, 1]
    assert changed.counts() == {"accepted": 0, "duplicates": 0, "conflicts": 2, "rejected": 0}
    assert stored_state(program) == state


def test_a_third_side_or_a_second_on_one_side_is_rejected_with_its_reason(program: Engine, tmp_path: Path) -> None:
    import_rows(program, tmp_path / "first.csv", [BUY])
    tally = import_rows(program, tmp_path / "fills.csv", [
        fill("f-buy-2", user="bob", trade_id="t-1"),  # a second Bid of t-1
        SELL,
        fill("f-third", user="bob", side="Ask", trade_id="t-1"),
        fill("f-u", user="bob", trade_id="t-9"), fill("f-v", user="carol", trade_id="t-9"),
    ])

    assert tally.counts() == {"accepted": 2, "duplicates": 0, "conflicts": 0, "rejected": 3}
    assert tally.reasons == {"trade_id": 3}
    assert _reasons(program) == {
        "f-buy-2": "trade_id: trade 't-1' of SOL_USDC already has its Bid side ('f-buy'); the other side of a trade "
                   "is the opposite one",
        "f-third": "trade_id: trade 't-1' of SOL_USDC already has two sides ('f-buy' and 'f-sell'); a trade has two",
        "f-v": "trade_id: trade 't-9' of SOL_USDC already has its Bid side ('f-u'); the other side of a trade is "
               "the opposite one"}


def test_one_trade_id_in_two_markets_is_two_trades(program: Engine, tmp_path: Path) -> None:
    tally = import_rows(program, tmp_path / "fills.csv", [BUY, {**SELL, "symbol": "SOL_USDT"}])

    assert (tally.accepted, tally.counted, tally.self_trades) == (2, 2, 0)


@pytest.mark.postgres
def test_two_sides_written_at_once_are_matched_whichever_commits_first(pg_url: str) -> None:
    engine, other = db.open_engine(pg_url), db.open_engine(pg_url)
    add_broker(engine)
    add_users(engine, "alice")

    def write(connection: Connection, row: dict[str, Any]) -> list[RowResult]:
        return write_batch(connection, [RawRow(1, row, row["fill_id"])],
                           ProgramTimeline.single(DEFAULT_CONFIG, created_at=NOW), source="test", now=NOW)

    second: list[RowResult] = []
    written = threading.Event()

    def write_the_other_side() -> None:
        with other.begin() as connection:
            second.extend(write(connection, SELL))
        written.set()

    thread = threading.Thread(target=write_the_other_side)
    with engine.begin() as connection:
        (first,) = write(connection, BUY)
        thread.start()
        assert not written.wait(1.0)  # the other side waits for this one's transaction, not past it
    thread.join(timeout=30)

    assert first.attribution is Attribution.COUNTED and second[0].attribution is Attribution.SELF_TRADE
    assert _attributions(engine)["f-buy"][0] == "self_trade"
    assert _counted_rows(engine) == {"aggregates": [], "aggregate_totals": [], "daily_volumes": []}
    engine.dispose()
    other.dispose()


def test_the_command_line_says_how_many_sides_of_self_trades_it_stored(program: Engine, db_url: str, bkr: Any,
                                                                        tmp_path: Path) -> None:
    path = write_csv(tmp_path / "fills.csv", [*OTHERS, BUY, SELL])

    imported = bkr("fills", "import", str(path), "--db", db_url, "--key", operator_key(program, "operator"))
    listed = bkr("fills", "rejected", "--db", db_url, "--json")

    assert imported.code == 0, imported.err
    said = " ".join(imported.out.split())  # as wrapped for the terminal's width
    assert "4 accepted (1 broker volume, 0 awaiting their user, 2 of self-trades)" in said
    assert json.loads(listed.out)["counts"]["self_trades"] == 2
