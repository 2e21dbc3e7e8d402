"""The fill writer's two doors: rows of files and request bodies (`write_batch`) and the typed
fills of the venue's order entry (`write_decided_fills`). Behind both is one store step; what
differs is only how a fill gets in, and these tests hold the typed door to the row door's outcomes."""

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest
from integration_support import NOW, add_broker, add_code, add_users, fill
from sqlalchemy import Engine, select

from bkr.domain.config import DEFAULT_CONFIG
from bkr.domain.fills import parse_fill
from bkr.domain.money import D
from bkr.domain.program_versions import ProgramTimeline
from bkr.ingest.readers import RawRow
from bkr.program.writer import DecidedFill, Outcome, write_batch, write_decided_fills
from bkr.store.tables import fill_rejections, fills

PROGRAM = ProgramTimeline.single(DEFAULT_CONFIG, created_at=NOW)  # the defaults, as version 1


def test_a_fill_whose_broker_its_order_entry_judged_is_not_judged_again(engine: Engine) -> None:
    """The venue judges an order's broker when the order comes in; the program takes that as it
    is (here against what the registry says) and reads only the user and its rate."""
    add_broker(engine, 1400)
    add_code(engine, "FRIEND", "0.1")
    add_users(engine, "alice", code="FRIEND")
    judged = [("f-active", "alice", True), ("f-inactive", "alice", False), ("f-unknown", "alice", None),
              ("f-stranger", "stranger", True)]
    with engine.begin() as connection:
        results = write_decided_fills(
            connection, [DecidedFill(parse_fill(fill(fill_id, user=user)), active) for fill_id, user, active in judged],
            PROGRAM, source="venue", now=NOW)
        stored = dict(connection.execute(select(fills.c.fill_id, fills.c.attribution)).all())
        rate = connection.execute(select(fills.c.affiliate_rate).where(fills.c.fill_id == "f-active")).scalar()
    assert [(r.line, r.fill_id, r.outcome.value) for r in results] == [
        (1, "f-active", "accepted"), (2, "f-inactive", "accepted"), (3, "f-unknown", "accepted"),
        (4, "f-stranger", "accepted")]
    assert stored == {"f-active": "counted", "f-inactive": "broker_inactive", "f-unknown": "broker_unknown",
                      "f-stranger": "awaiting_user"}
    assert rate == D("0.1")


def test_a_typed_fill_beyond_the_bounds_is_rejected_as_the_same_row_is(engine: Engine) -> None:
    tiny = "0." + "0" * 18 + "1"  # 19 decimal places: more than any amount may have
    add_broker(engine, 1400)
    add_users(engine, "alice")
    row = fill("f-row", fee=tiny)
    typed = replace(parse_fill(fill("f-typed")), fee=Decimal(tiny))  # as a venue could compute it
    with engine.begin() as connection:
        from_the_row = write_batch(connection, [RawRow(1, row, "")], PROGRAM, source="file",
                                   now=NOW)
        from_the_venue = write_decided_fills(connection, [DecidedFill(typed, True)], PROGRAM,
                                             source="venue", now=NOW)
        kept = connection.execute(select(fill_rejections.c.fill_id, fill_rejections.c.reason)
                                  .order_by(fill_rejections.c.fill_id)).all()
        assert connection.execute(select(fills)).all() == []
    assert [r.outcome for r in from_the_row + from_the_venue] == [Outcome.REJECTED, Outcome.REJECTED]
    assert from_the_venue[0].reason == from_the_row[0].reason
    assert from_the_venue[0].reason.startswith("fee: ") and "decimal places" in from_the_venue[0].reason
    assert [fill_id for fill_id, _ in kept] == ["f-row", "f-typed"]


IMPLAUSIBLE = {
    "a fee above the notional": dict(price="100", quantity="1", fee="101"),
    "a time ahead of the clock": dict(at=(NOW + timedelta(hours=1)).isoformat()),
    "a time before the program": dict(at="1999-12-31T23:59:59Z"),  # it starts in 2000
}


@pytest.mark.parametrize("case", list(IMPLAUSIBLE))
def test_an_implausible_typed_fill_is_rejected_as_the_same_row_is(engine: Engine, case: str) -> None:
    row = fill("f-1", **IMPLAUSIBLE[case])  # type: ignore[arg-type]
    with engine.begin() as connection:
        from_the_row = write_batch(connection, [RawRow(1, row, "")], PROGRAM, source="file",
                                   now=NOW)
        from_the_venue = write_decided_fills(connection, [DecidedFill(parse_fill(row), True)], PROGRAM,
                                             source="venue", now=NOW)
        assert connection.execute(select(fills)).all() == []
    assert [r.outcome for r in from_the_row + from_the_venue] == [Outcome.REJECTED, Outcome.REJECTED]
    assert from_the_venue[0].reason == from_the_row[0].reason
