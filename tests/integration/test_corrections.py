"""Corrections of fills, on both databases: a busted or corrected fill of a paid month reaches
the next statement as a labelled correction line, the paid statement stays byte for byte, and
a correction is stored once, checked against the fill it names, and follows that fill."""

from decimal import Decimal
from pathlib import Path
from typing import Any

from integration_support import (
    BROKER,
    JUNE,
    MAY,
    NOW,
    add_broker,
    add_users,
    approve_all,
    close,
    correction,
    fill,
    import_rows,
    preview,
)
from sqlalchemy import Engine, select

from bkr.domain.money import D
from bkr.program import settlement
from bkr.program.close import stored_statement
from bkr.program.reconcile import reconcile_month
from bkr.store.tables import aggregates, fill_rejections, fills

ORIGINAL = fill("f-1", quantity="2", fee="10")


def _lines(document: dict[str, Any]) -> list[tuple[str, str, str, str, str, int]]:
    return [(line["kind"], line["fill_month"], line["user_id"], line["fee_base"], line["volume_usd"], line["fills"])
            for line in document["lines"]]


def _stored(engine: Engine, broker: int, month: Any) -> str:
    with engine.connect() as connection:
        return stored_statement(connection, broker, month)


def _reasons(engine: Engine) -> dict[str | None, str]:
    with engine.connect() as connection:
        return dict(connection.execute(select(fill_rejections.c.fill_id, fill_rejections.c.reason)).all())  # type: ignore[arg-type]


def test_a_bust_in_a_paid_month_is_a_correction_line_on_the_next_statement(engine: Engine, tmp_path: Path) -> None:
    add_broker(engine)
    add_users(engine, "alice")
    import_rows(engine, tmp_path / "may.csv", [ORIGINAL, fill("f-2", fee="5")])
    may = close(engine, MAY)[BROKER]
    approve_all(engine)
    settlement.settle_month(engine, MAY, NOW)
    paid = _stored(engine, BROKER, MAY)

    tally = import_rows(engine, tmp_path / "bust.csv", [
        correction(ORIGINAL, "f-1-bust", quantity="-2", fee="-10"),
        fill("f-3", at="2024-06-03T08:00:00Z", fee="100"),
    ])
    june = close(engine, JUNE)[BROKER]

    assert tally.counts() == {"accepted": 2, "duplicates": 0, "conflicts": 0, "rejected": 0}
    assert _stored(engine, BROKER, MAY) == paid  # nothing paid is edited
    assert _lines(june) == [("regular", "2024-06", "alice", "100", "100", 1),
                            ("correction", "2024-05", "alice", "-10", "-200", 1)]
    (line,) = [line for line in june["lines"] if line["kind"] == "correction"]
    assert (line["tier"], line["effective_rate"]) == (may["tier"], may["lines"][0]["effective_rate"])
    rate = D(line["effective_rate"])
    assert D(june["payout_exact"]) == D("100") * rate - D("10") * rate
    assert (june["api_volume"], june["fee_base"], june["adjustment_fee_base"]) == ("100", "100", "-10")
    with engine.connect() as connection:
        assert reconcile_month(connection, JUNE).differences == ()
        assert reconcile_month(connection, MAY).differences == ()


def test_a_correction_in_an_open_month_joins_its_fill_line(engine: Engine, tmp_path: Path) -> None:
    add_broker(engine)
    add_users(engine, "alice")
    import_rows(engine, tmp_path / "may.csv", [ORIGINAL, correction(ORIGINAL, "f-1-c", quantity="-0.5", fee="-2.5")])

    assert _lines(preview(engine, MAY)[BROKER]) == [("regular", "2024-05", "alice", "7.5", "150", 2)]


def test_a_correction_is_stored_once_and_checked_against_its_fill(engine: Engine, tmp_path: Path) -> None:
    add_broker(engine)
    add_users(engine, "alice")
    import_rows(engine, tmp_path / "may.csv", [ORIGINAL])
    half = correction(ORIGINAL, "f-1-half", quantity="-1", fee="-5")
    first = import_rows(engine, tmp_path / "first.csv", [half])

    again = import_rows(engine, tmp_path / "again.csv", [
        half,                                                       # the same correction: a duplicate
        {**half, "fee": "-4"},                                      # its id with other content: a conflict
        correction(ORIGINAL, "f-1-much", quantity="-1.5", fee="0"),  # 2 - 1 - 1.5 < 0
        {**correction(ORIGINAL, "f-1-where", quantity="-1", fee="0"), "user_id": "bob"},
        correction(fill("f-9"), "f-9-c", quantity="-1", fee="0"),    # corrects nothing stored
        correction(half, "f-1-half-c", quantity="-1", fee="0"),     # corrects a correction
    ])

    assert first.counts() == {"accepted": 1, "duplicates": 0, "conflicts": 0, "rejected": 0}
    assert again.counts() == {"accepted": 0, "duplicates": 1, "conflicts": 1, "rejected": 4}
    assert _reasons(engine) == {
        "f-1-much": "quantity: would take fill 'f-1' below zero (it stands at 1; this changes it by -1.5)",
        "f-1-where": "corrects: user_id differs from fill 'f-1''s ('bob' here, 'alice' there)",
        "f-9-c": "corrects: no fill 'f-9' is stored; send a fill before its corrections",
        "f-1-half-c": "corrects: 'f-1-half' is itself a correction (of 'f-1'); correct that fill",
    }
    assert _lines(preview(engine, MAY)[BROKER]) == [("regular", "2024-05", "alice", "5", "100", 2)]


def test_a_rebate_fill_counts_its_fee_base_as_corrected(engine: Engine, tmp_path: Path) -> None:
    """A fill's fee base is its fee, or 0 for a maker rebate: a correction changes it by what the
    corrected fee's base differs from the current one, not by the fee's change."""
    add_broker(engine)
    add_users(engine, "alice")
    rebate = fill("f-r", fee="-1", is_maker=True)
    import_rows(engine, tmp_path / "may.csv", [rebate])
    import_rows(engine, tmp_path / "up.csv", [correction(rebate, "f-r-up", quantity="0", fee="3")])  # fee 2
    assert _lines(preview(engine, MAY)[BROKER])[0][3] == "2"
    import_rows(engine, tmp_path / "down.csv", [correction(rebate, "f-r-down", quantity="0", fee="-5")])  # fee -3

    with engine.connect() as connection:
        changes = dict(connection.execute(select(fills.c.fill_id, fills.c.fee_base_usd)
                                          .where(fills.c.corrects == "f-r")).all())
        (base,) = connection.execute(select(aggregates.c.fee_base_usd)).scalars()
    assert changes == {"f-r-up": Decimal("2"), "f-r-down": Decimal("-2")}
    assert base == 0


def test_a_correction_waits_with_its_fill_for_the_user_and_then_counts_with_it(engine: Engine,
                                                                                 tmp_path: Path) -> None:
    add_broker(engine)
    unknown = fill("f-z", user="zoe", quantity="2", fee="10")
    import_rows(engine, tmp_path / "may.csv", [unknown, correction(unknown, "f-z-c", quantity="-1", fee="-5")])
    assert BROKER not in preview(engine, MAY)

    add_users(engine, "zoe")

    assert _lines(preview(engine, MAY)[BROKER]) == [("regular", "2024-05", "zoe", "5", "100", 2)]
    with engine.connect() as connection:
        assert set(connection.execute(select(fills.c.attribution)).scalars()) == {"counted"}


def test_a_shortfall_is_carried_through_a_quiet_month_to_the_next_payout(engine: Engine, tmp_path: Path) -> None:
    """May pays 20 (fee 100 at BKR 0's 20%); its fill is busted in June, which earns 1: June pays 0 and
    carries 19 out; July has no volume but a statement all the same, carrying it on; August's 25
    pays 6."""
    add_broker(engine)
    add_users(engine, "alice")
    may_fill = fill("f-1", fee="100")
    import_rows(engine, tmp_path / "may.csv", [may_fill])
    assert close(engine, MAY)[BROKER]["payout"] == "20.00"
    import_rows(engine, tmp_path / "june.csv", [correction(may_fill, "f-1-bust", quantity="-1", fee="-100"),
                                                fill("f-2", at="2024-06-10T12:00:00Z", fee="5")])
    june = close(engine, JUNE)[BROKER]
    july = close(engine, JUNE.next())[BROKER]
    import_rows(engine, tmp_path / "august.csv", [fill("f-3", at="2024-08-10T12:00:00Z", fee="125", price="1000")])
    august = close(engine, JUNE.next().next())[BROKER]

    assert [(s["payout_exact"], s["carried_in"], s["carried_out"], s["payout"]) for s in (june, july, august)] == [
        ("-19", "0", "-19", "0.00"), ("0", "-19", "-19", "0.00"), ("25", "-19", "0", "6.00")]
    assert (july["lines"], july["tier"]) == ([], "BKR 0")
    with engine.connect() as connection:
        for month in (JUNE, JUNE.next(), JUNE.next().next()):
            assert reconcile_month(connection, month).differences == ()
