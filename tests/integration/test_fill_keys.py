"""`move_staged_fills`: the one way a writer holding new fills in a staging table stores them,
claiming each fill_id in `fill_keys`; on both databases."""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, MetaData, insert, select, text

from bkr.domain.periods import Month
from bkr.store.bulk import claimed_keys, move_staged_fills
from bkr.store.tables import fill_keys, fills

_STAGED = fills.to_metadata(MetaData(), name="staged_fills")  # fills' columns and types, for the inserts


def _row(fill_id: str, period: Month, key: str = "") -> dict[str, Any]:
    return {"fill_id": fill_id, "order_id": "o", "user_id": "alice", "symbol": "SOL_USDC", "market_type": "SPOT",
            "side": "Bid", "price": Decimal("100"), "quantity": Decimal("0.000000000000000001"),
            "fee": Decimal("0.1"), "fee_symbol": "USDC", "is_maker": False,
            "ts": datetime(period.year, period.month, 3, tzinfo=UTC), "broker_id": 1400, "via_api": True,
            "fill_type": "User", "volume_usd": Decimal("0.0000000000000001"), "fee_usd": Decimal("0.1"),
            "content_key": key or f"key-{fill_id}", "attribution": "counted", "affiliate_rate": Decimal("0"),
            "fill_month": period, "period": period, "import_id": None, "corrects": None, "fee_base_usd": None,
            "trade_id": None}


def test_staged_fills_whose_id_is_free_are_moved_and_claimed_the_others_left(engine: Engine) -> None:
    may, november = Month(2024, 5), Month(2024, 11)
    with engine.begin() as connection:
        connection.execute(insert(fill_keys).values(fill_id="taken", content_key="key-stored-earlier"))
        create = ("CREATE TEMP TABLE staged_fills (LIKE fills INCLUDING DEFAULTS)"
                  if connection.dialect.name == "postgresql" else
                  "CREATE TEMP TABLE staged_fills AS SELECT * FROM fills WHERE 0")
        connection.execute(text(create))
        connection.execute(insert(_STAGED), [_row("a", may), _row("b", november), _row("taken", may)])

        moved = move_staged_fills(connection, "staged_fills")

        assert moved == {"a", "b"}
        assert claimed_keys(connection, ["a", "b", "taken", "never"]) == {
            "a": "key-a", "b": "key-b", "taken": "key-stored-earlier"}
        stored = {row.fill_id: row for row in connection.execute(select(fills))}
        assert sorted(stored) == ["a", "b"]
        assert (stored["b"].period, stored["b"].quantity) == (november, Decimal("0.000000000000000001"))
        if connection.dialect.name == "postgresql":
            placed = dict(connection.execute(text("SELECT fill_id, tableoid::regclass::text FROM fills")).all())
            assert placed == {"a": "fills_2024_05", "b": "fills_2024_11"}
