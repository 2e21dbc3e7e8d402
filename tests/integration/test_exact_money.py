"""Money stays exact through both databases: 18-decimal amounts and sums above $10^10 are stored,
summed and put on a statement digit for digit (a 28-digit Decimal context or a float would not)."""

from decimal import Decimal, localcontext
from pathlib import Path

from integration_support import MAY, add_broker, add_users, fill, import_rows, preview
from sqlalchemy import Engine, select

from bkr.store.tables import aggregates, fills

# Each fill is about $1.2 × 10^10 of volume with 36 decimals: sums need about 47 significant digits.
ROWS = [
    fill("f-1", user="alice", price="99999.999999999999999999", quantity="123456.789012345678901234",
         fee="12345.678901234567890123"),
    fill("f-2", user="alice", price="99999.999999999999999999", quantity="123456.789012345678901234",
         fee="0.000000000000000001"),
    fill("f-3", user="bob", market="PERP", price="87654.321098765432109876", quantity="150000.000000000000000001",
         fee="98765.432109876543210987"),
    fill("f-4", user="bob", market="PERP", price="0.000000000000000001", quantity="1", fee="-0.000000000000000001",
         is_maker=True),
]


def reference() -> dict[str, Decimal]:
    with localcontext() as context:
        context.prec = 100
        volume = {row["fill_id"]: Decimal(row["price"]) * Decimal(row["quantity"]) for row in ROWS}
        spot = volume["f-1"] + volume["f-2"]
        futures = volume["f-3"] + volume["f-4"]
        fee_base = sum((Decimal(row["fee"]) for row in ROWS if Decimal(row["fee"]) > 0), Decimal(0))
        return {"spot": spot, "futures": futures, "api": spot + futures, "fee_base": fee_base,
                "payout_exact": fee_base * Decimal("0.5")}  # BKR 5: 50%, no affiliate


def text(amount: Decimal) -> str:
    with localcontext() as context:
        context.prec = 100  # normalize() rounds to the context's precision too
        return format(amount.normalize(), "f")


def test_the_reference_needs_more_than_28_digits() -> None:
    with localcontext() as context:
        context.prec = 28
        rounded = sum((Decimal(r["price"]) * Decimal(r["quantity"]) for r in ROWS), Decimal(0))
    assert rounded != reference()["api"]


def test_18_decimal_amounts_and_sums_above_ten_billion_come_back_digit_for_digit(engine: Engine,
                                                                                  tmp_path: Path) -> None:
    add_broker(engine)
    add_users(engine, "alice", "bob")

    import_rows(engine, tmp_path / "fills.csv", ROWS)

    expected = reference()
    with engine.connect() as connection:
        stored = {r.fill_id: r for r in connection.execute(select(fills))}
        lines = connection.execute(select(aggregates.c.volume_usd, aggregates.c.fee_base_usd)).all()
    for row in ROWS:
        assert (stored[row["fill_id"]].price, stored[row["fill_id"]].quantity, stored[row["fill_id"]].fee) == (
            Decimal(row["price"]), Decimal(row["quantity"]), Decimal(row["fee"]))
    with localcontext() as context:
        context.prec = 100
        assert sum((volume for volume, _ in lines), Decimal(0)) == expected["api"]
        assert sum((fee_base for _, fee_base in lines), Decimal(0)) == expected["fee_base"]
    statement = preview(engine, MAY)[1400]
    assert statement["tier"] == "BKR 5"
    assert {k: statement[k] for k in ("spot_volume", "futures_volume", "api_volume", "fee_base", "payout_exact")} == {
        "spot_volume": "24691357802.469135780246553086421975308642197532",
        "futures_volume": "13148148164.814814816481487655321098765432109876",
        "api_volume": "37839505967.283950596728040741743074074074307408",
        "fee_base": "111111.111011111111101111",
        "payout_exact": "55555.5555055555555505555",
    }
    assert statement["api_volume"] == text(expected["api"])
