"""Fills: validation of raw rows, identity of content, USD pricing and attribution."""

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from bkr.domain.config import DEFAULT_USD_RATES
from bkr.domain.errors import InvalidInput
from bkr.domain.fills import (
    FIELDS,
    REQUIRED,
    SYSTEM_FILL_TYPES,
    Attribution,
    Fill,
    MarketType,
    Side,
    attribute,
    parse_fill,
    price_in_usd,
)
from bkr.domain.money import D
from bkr.domain.periods import Month


def raw_row(**overrides: object) -> dict[str, object]:
    """A valid row as it comes out of a CSV file: every value is text."""
    row: dict[str, object] = {
        "fill_id": "f-1",
        "order_id": "o-1",
        "user_id": "u-1",
        "symbol": "SOL_USDC",
        "market_type": "SPOT",
        "side": "Bid",
        "price": "150.25",
        "quantity": "2",
        "fee": "0.3005",
        "fee_symbol": "USDC",
        "is_maker": "false",
        "timestamp": "2024-03-15T12:00:00Z",
        "broker_id": "1400",
        "via_api": "true",
        "fill_type": "User",
    }
    row.update(overrides)
    return row


def a_fill(**overrides: Any) -> Fill:
    return replace(parse_fill(raw_row()), **overrides)


# --- parse_fill: a valid row ---------------------------------------------------------------------

def test_parse_fill_reads_a_valid_row() -> None:
    fill = parse_fill(raw_row())
    assert fill == Fill(
        fill_id="f-1", order_id="o-1", user_id="u-1", symbol="SOL_USDC", market_type=MarketType.SPOT,
        side=Side.BID, price=D("150.25"), quantity=D("2"), fee=D("0.3005"), fee_symbol="USDC", is_maker=False,
        timestamp=datetime(2024, 3, 15, 12, tzinfo=UTC), broker_id=1400, via_api=True, fill_type="User",
    )
    assert fill.month == Month(2024, 3)
    assert fill.base_asset == "SOL"
    assert fill.quote_asset == "USDC"


def test_parse_fill_accepts_typed_values_as_from_json() -> None:
    fill = parse_fill(raw_row(price=Decimal("150.25"), quantity=2, fee="0.3005", is_maker=True, broker_id=1400,
                              via_api=False, timestamp=datetime(2024, 3, 15, 13, tzinfo=UTC)))
    assert (fill.price, fill.quantity, fill.is_maker, fill.broker_id, fill.via_api) == (
        D("150.25"), D(2), True, 1400, False)
    assert fill.timestamp == datetime(2024, 3, 15, 13, tzinfo=UTC)


def test_parse_fill_defaults_optional_fields() -> None:
    row = raw_row()
    for name in ("broker_id", "via_api", "fill_type"):
        del row[name]
    fill = parse_fill(row)
    assert fill.broker_id is None
    assert fill.via_api is True
    assert fill.fill_type == "User"


def test_parse_fill_treats_an_empty_broker_id_as_none() -> None:
    assert parse_fill(raw_row(broker_id="")).broker_id is None


def test_parse_fill_normalizes_case_of_symbol_market_type_side_and_fee_symbol() -> None:
    fill = parse_fill(raw_row(symbol="sol_usdc_perp", market_type="perp", side="ask", fee_symbol="usdc"))
    assert fill.symbol == "SOL_USDC_PERP"
    assert fill.market_type is MarketType.PERP
    assert fill.side is Side.ASK
    assert fill.fee_symbol == "USDC"


def test_parse_fill_accepts_a_negative_fee_as_a_maker_rebate() -> None:
    assert parse_fill(raw_row(fee="-0.01", is_maker="true")).fee == D("-0.01")


def test_parse_fill_takes_a_naive_timestamp_as_utc() -> None:
    assert parse_fill(raw_row(timestamp="2024-03-15T12:00:00")).timestamp == datetime(2024, 3, 15, 12, tzinfo=UTC)


@pytest.mark.parametrize(("market_type", "is_futures"), [("SPOT", False), ("PERP", True), ("IPERP", True),
                                                         ("DATED", True)])
def test_only_spot_is_not_futures(market_type: str, is_futures: bool) -> None:
    assert parse_fill(raw_row(market_type=market_type)).market_type.is_futures is is_futures


# --- parse_fill: invalid rows --------------------------------------------------------------------

@pytest.mark.parametrize("name", REQUIRED)
@pytest.mark.parametrize("absent", ["missing", None, "", "   "])
def test_parse_fill_names_a_missing_required_field_first(name: str, absent: str | None) -> None:
    row = raw_row()
    if absent == "missing":
        del row[name]
    else:
        row[name] = absent
    with pytest.raises(InvalidInput) as error:
        parse_fill(row)
    assert str(error.value).startswith(f"{name}:")
    assert "missing" in str(error.value)


@pytest.mark.parametrize("name", ["price", "quantity", "fee"])
def test_parse_fill_refuses_floats_for_amounts(name: str) -> None:
    with pytest.raises(InvalidInput) as error:
        parse_fill(raw_row(**{name: 1.5}))
    assert str(error.value).startswith(f"{name}:")
    assert "float" in str(error.value)


@pytest.mark.parametrize("value", [0, 65536, -1, 100000, "0", "65536", 1400.0, True, "abc", "14.5"])
def test_parse_fill_refuses_a_broker_id_outside_1_to_65535(value: object) -> None:
    with pytest.raises(InvalidInput) as error:
        parse_fill(raw_row(broker_id=value))
    assert str(error.value).startswith("broker_id:")


@pytest.mark.parametrize("value", [1, 65535, "1", " 65535 ", 2200])
def test_parse_fill_accepts_broker_ids_at_the_ends_of_the_range(value: object) -> None:
    assert parse_fill(raw_row(broker_id=value)).broker_id == int(str(value).strip())


@pytest.mark.parametrize(("name", "value"), [
    ("side", "Buy"),
    ("side", "sell"),
    ("market_type", "FUTURES"),
    ("market_type", "MARGIN"),
    ("symbol", "SOLUSDC"),
    ("symbol", "SOL_"),
    ("is_maker", "maybe"),
    ("via_api", "sometimes"),
    ("fill_type", "Manual"),
    ("timestamp", "yesterday"),
    ("price", "abc"),
    ("fee", "NaN"),
    ("quantity", "Infinity"),
])
def test_parse_fill_refuses_a_bad_value_naming_its_field(name: str, value: str) -> None:
    with pytest.raises(InvalidInput) as error:
        parse_fill(raw_row(**{name: value}))
    assert str(error.value).startswith(f"{name}:")


@pytest.mark.parametrize("name", ["price", "quantity"])
@pytest.mark.parametrize("value", ["0", "0.000", "-1", "-0.000000000000000001"])
def test_parse_fill_refuses_a_price_or_quantity_that_is_not_positive(name: str, value: str) -> None:
    with pytest.raises(InvalidInput) as error:
        parse_fill(raw_row(**{name: value}))
    assert str(error.value).startswith(f"{name}: must be positive")


def test_a_correction_may_reduce_the_quantity_and_the_fee() -> None:
    fill = parse_fill(raw_row(fill_id="f-1-bust", corrects="f-1", quantity="-2", fee="-0.3005"))
    assert (fill.corrects, fill.quantity, fill.fee) == ("f-1", D("-2"), D("-0.3005"))


def test_a_correction_of_the_fee_alone_keeps_the_quantity_at_zero() -> None:
    assert parse_fill(raw_row(fill_id="f-1-fee", corrects="f-1", quantity="0", fee="0.01")).quantity == 0


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"fill_id": "f-1-c", "corrects": "f-1", "quantity": "0", "fee": "0"},
     "corrects: a correction must change the quantity or the fee; both are 0"),
    ({"corrects": "f-1"}, "corrects: a fill cannot correct itself ('f-1')"),
    ({"quantity": "-2"}, "quantity: must be positive, got -2"),
])
def test_parse_fill_refuses_empty_or_self_corrections_and_negative_fills(overrides: dict[str, object],
                                                                        reason: str) -> None:
    with pytest.raises(InvalidInput) as error:
        parse_fill(raw_row(**overrides))
    assert str(error.value) == reason


def test_an_empty_corrects_is_an_ordinary_fill() -> None:
    assert parse_fill(raw_row(corrects="  ")) == parse_fill(raw_row())


# --- content_key ---------------------------------------------------------------------------------

@pytest.mark.parametrize("rewritten", [
    {"price": "150.250"},
    {"price": " 150.25 "},
    {"fee": "0.30050000"},
    {"quantity": "2.0"},
    {"quantity": 2},
    {"side": "bid"},
    {"side": "BID"},
    {"market_type": "spot"},
    {"symbol": "sol_usdc"},
    {"fee_symbol": "usdc"},
    {"is_maker": "0"},
    {"is_maker": False},
    {"via_api": "1"},
    {"broker_id": 1400},
    {"timestamp": "2024-03-15T14:00:00+02:00"},
    {"timestamp": "2024-03-15T12:00:00.000000"},
    {"timestamp": datetime(2024, 3, 15, 12, tzinfo=UTC)},
])
def test_content_key_is_equal_for_the_same_content_written_differently(rewritten: dict[str, object]) -> None:
    assert parse_fill(raw_row(**rewritten)).content_key() == parse_fill(raw_row()).content_key()


def test_content_key_is_equal_for_1_50_and_1_5() -> None:
    assert parse_fill(raw_row(price="1.50")).content_key() == parse_fill(raw_row(price="1.5")).content_key()


CHANGED = {
    "fill_id": "f-2",
    "order_id": "o-2",
    "user_id": "u-2",
    "symbol": "SOL_USDT",
    "market_type": "PERP",
    "side": "Ask",
    "price": "150.26",
    "quantity": "2.000000000000000001",
    "fee": "0.3006",
    "fee_symbol": "SOL",
    "is_maker": "true",
    "timestamp": "2024-03-15T12:00:00.000001Z",
    "broker_id": "2200",
    "via_api": "false",
    "fill_type": "Liquidation",
    "corrects": "f-0",
    "trade_id": "t-1",
}


def test_every_fill_field_has_a_changed_value_in_the_content_key_test() -> None:
    assert set(CHANGED) == set(FIELDS)


@pytest.mark.parametrize(("name", "value"), CHANGED.items())
def test_content_key_differs_when_any_field_differs(name: str, value: str) -> None:
    assert parse_fill(raw_row(**{name: value})).content_key() != parse_fill(raw_row()).content_key()


def test_content_key_differs_between_no_broker_and_a_broker() -> None:
    assert parse_fill(raw_row(broker_id="")).content_key() != parse_fill(raw_row()).content_key()


def test_a_fill_without_a_trade_id_keeps_the_key_it_had_before_the_field_existed() -> None:
    """Fills stored before `trade_id` existed are duplicates, not conflicts, when sent again."""
    assert parse_fill(raw_row(trade_id="")).content_key() == "349faf4c65167b19c7ac273bb4893e3b"  # as computed before


def test_content_key_tells_a_trade_id_from_a_corrects_of_the_same_text() -> None:
    named_trade = parse_fill(raw_row(trade_id="trade_id=x")).content_key()
    assert named_trade != parse_fill(raw_row(corrects="trade_id=x")).content_key()
    assert parse_fill(raw_row(trade_id="x")).content_key() != parse_fill(raw_row(corrects="trade_id=x")).content_key()


@pytest.mark.parametrize(("value", "expected"), [("17", "17"), (17, "17"), (" t-9 ", "t-9"), ("", None), (None, None)])
def test_trade_id_is_read_as_text_from_text_or_an_integer(value: object, expected: str | None) -> None:
    assert parse_fill(raw_row(trade_id=value)).trade_id == expected


def test_a_boolean_is_not_a_trade_id() -> None:
    with pytest.raises(InvalidInput, match=r"^trade_id: not an id: True"):
        parse_fill(raw_row(trade_id=True))


# --- price_in_usd --------------------------------------------------------------------------------

def test_price_in_usd_takes_volume_as_price_times_quantity_in_the_quote() -> None:
    priced = price_in_usd(a_fill(price=D("150.25"), quantity=D("2")), DEFAULT_USD_RATES)
    assert priced.volume_usd == D("300.50")


def test_price_in_usd_converts_a_fee_in_the_quote_asset_at_the_quote_rate() -> None:
    fill = a_fill(symbol="SOL_USDT", price=D("100"), quantity=D("3"), fee=D("0.12"), fee_symbol="USDT")
    priced = price_in_usd(fill, {"USDT": D("0.999")})
    assert priced.volume_usd == D("299.7")
    assert priced.fee_usd == D("0.11988")
    assert priced.fill == fill


def test_price_in_usd_converts_a_fee_in_the_base_asset_at_price_times_the_quote_rate() -> None:
    fill = a_fill(symbol="SOL_USDC", price=D("150"), quantity=D("1"), fee=D("0.001"), fee_symbol="SOL")
    assert price_in_usd(fill, DEFAULT_USD_RATES).fee_usd == D("0.15")
    assert price_in_usd(fill, {"USDC": D("0.998")}).fee_usd == D("0.1497")


def test_price_in_usd_converts_a_fee_in_another_asset_at_its_configured_rate() -> None:
    fill = a_fill(symbol="SOL_USDC", fee=D("0.5"), fee_symbol="BPX")
    assert price_in_usd(fill, {"USDC": D(1), "BPX": D("0.42")}).fee_usd == D("0.21")


def test_price_in_usd_rejects_a_fee_asset_without_a_rate_with_the_reason() -> None:
    fill = a_fill(symbol="SOL_USDC", fee=D("0.5"), fee_symbol="BPX")
    with pytest.raises(InvalidInput, match=r"^fee_symbol: no USD rate configured for fee asset BPX$"):
        price_in_usd(fill, DEFAULT_USD_RATES)


def test_price_in_usd_rejects_a_quote_asset_without_a_rate_with_the_reason() -> None:
    fill = a_fill(symbol="SOL_EUR", fee_symbol="EUR")
    with pytest.raises(InvalidInput, match=r"^symbol: no USD rate configured for quote asset EUR$"):
        price_in_usd(fill, DEFAULT_USD_RATES)


def test_price_in_usd_keeps_a_negative_fee_negative() -> None:
    assert price_in_usd(a_fill(fee=D("-0.02")), DEFAULT_USD_RATES).fee_usd == D("-0.02")


def test_price_in_usd_is_exact_for_18_decimal_amounts() -> None:
    fill = a_fill(price=D("98765.123456789012345678"), quantity=D("123456.000000000000000001"),
                  fee=D("0.000000000000000001"), fee_symbol="SOL")
    priced = price_in_usd(fill, DEFAULT_USD_RATES)
    assert priced.volume_usd == D("12193147081.481344308148121933123456789012345678")
    assert priced.fee_usd == D("0.000000000000098765123456789012345678")


def test_usdc_usdt_and_usd_are_one_dollar_by_default() -> None:
    assert dict(DEFAULT_USD_RATES) == {"USDC": D(1), "USDT": D(1), "USD": D(1)}


# --- attribute -----------------------------------------------------------------------------------

def attribution_of(fill: Fill, broker_active: bool | None, user_known: bool, self_trade: bool = False) -> Attribution:
    return attribute(fill.broker_id, fill.fill_type, fill.via_api, broker_active=broker_active,
                     user_known=user_known, self_trade=self_trade)


@pytest.mark.parametrize(("overrides", "broker_active", "user_known", "expected"), [
    ({}, True, True, Attribution.COUNTED),
    ({}, True, False, Attribution.AWAITING_USER),
    ({"broker_id": None}, True, True, Attribution.NO_BROKER),
    ({"broker_id": None}, None, False, Attribution.NO_BROKER),
    ({"via_api": False}, True, True, Attribution.WEB),
    ({"fill_type": "Liquidation"}, True, True, Attribution.SYSTEM),
    ({"fill_type": "Adl"}, True, True, Attribution.SYSTEM),
    ({"fill_type": "Backstop"}, True, True, Attribution.SYSTEM),
    ({"fill_type": "CollateralConversion"}, True, True, Attribution.SYSTEM),
    ({"fill_type": "Liquidation", "via_api": False}, True, True, Attribution.SYSTEM),
    ({}, False, True, Attribution.BROKER_INACTIVE),
    ({}, False, False, Attribution.BROKER_INACTIVE),
    ({}, None, True, Attribution.BROKER_UNKNOWN),
    ({}, None, False, Attribution.BROKER_UNKNOWN),
    ({"via_api": False}, None, True, Attribution.WEB),
])
def test_attribute_decides_whether_a_fill_is_broker_volume(overrides: dict[str, Any], broker_active: bool | None,
                                                           user_known: bool, expected: Attribution) -> None:
    assert attribution_of(a_fill(**overrides), broker_active, user_known) is expected


@pytest.mark.parametrize("fill_type", sorted(SYSTEM_FILL_TYPES))
def test_system_fills_are_never_broker_volume(fill_type: str) -> None:
    assert attribution_of(a_fill(fill_type=fill_type), True, True) is Attribution.SYSTEM


@pytest.mark.parametrize(("overrides", "broker_active", "user_known"), [
    ({}, True, True), ({}, True, False), ({"broker_id": None}, None, True), ({"via_api": False}, True, True),
    ({"fill_type": "Liquidation"}, True, True), ({}, False, True), ({}, None, False),
])
def test_a_side_of_a_self_trade_is_never_broker_volume_whatever_else_holds(
        overrides: dict[str, Any], broker_active: bool | None, user_known: bool) -> None:
    assert attribution_of(a_fill(**overrides), broker_active, user_known, self_trade=True) is Attribution.SELF_TRADE


def test_every_attribution_outcome_is_reachable() -> None:
    cases = [
        (a_fill(), True, True, False), (a_fill(), True, False, False), (a_fill(broker_id=None), True, True, False),
        (a_fill(via_api=False), True, True, False), (a_fill(fill_type="Adl"), True, True, False),
        (a_fill(), False, True, False), (a_fill(), None, True, False), (a_fill(), True, True, True),
    ]
    outcomes = {attribution_of(fill, active, known, self_trade) for fill, active, known, self_trade in cases}
    assert outcomes == set(Attribution)
