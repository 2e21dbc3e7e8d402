"""Fuzzing the doors fills come in by: whatever the bytes of a file or a request body, and whatever
the values of a record, a reader yields rows (each readable or rejected with its reason) and the
fill parser, pricing and plausibility either accept a fill or refuse it with `InvalidInput`. Any
other exception would stop an import: hypothesis searches for one, within a bounded budget
(`EXAMPLES` cases per door, every `make test`), and every crash it found is a test of its own in
tests/integration/test_ingest.py or tests/unit/domain/."""

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bkr.domain.bounds import AMOUNT, digits_of
from bkr.domain.config import DEFAULT_USD_RATES, ProgramConfig
from bkr.domain.errors import BkrError, InvalidInput
from bkr.domain.fills import FIELDS, check_plausible, parse_fill, price_in_usd
from bkr.ingest.readers import RawRow, read_rows
from bkr.program.feed import BatchFormat, read_batch

EXAMPLES = 300
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
RULES = ProgramConfig().plausibility
HEADER = ",".join(FIELDS).encode()

# Values a record's field may hold: text of every kind, numbers far past the bounds, and JSON's
# other types, as a file or a body could carry them.
values = st.one_of(
    st.none(), st.booleans(), st.text(max_size=40), st.integers(min_value=-(2**80), max_value=2**80),
    st.decimals(allow_nan=True, allow_infinity=True), st.floats(),
    st.sampled_from(["1e-72", "1E+30", "1." + "3" * 43, "-0", "NaN", "Infinity", "0x10", "1_000", "２", "",
                     "2099-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "65536", "Bid", "ask", "SOL_USDC", "PERP"]),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
plausible = {"fill_id": "f-1", "order_id": "o-1", "user_id": "alice", "symbol": "SOL_USDC", "market_type": "SPOT",
             "side": "Bid", "price": "150.25", "quantity": "2", "fee": "0.3", "fee_symbol": "USDC",
             "is_maker": "false", "timestamp": "2026-11-10T12:00:00Z", "broker_id": "1400"}
records = st.fixed_dictionaries({}, optional={name: values for name in FIELDS}).map(lambda r: plausible | r)


def read_all(path: Path) -> list[RawRow]:
    try:
        return list(read_rows(path))
    except InvalidInput:  # a file refused whole (its header, its format) is one clear line
        return []


@FUZZ
@given(body=st.binary(max_size=400))
def test_any_bytes_after_a_csv_header_are_rows_or_rejections(tmp_path: Path, body: bytes) -> None:
    path = tmp_path / "fills.csv"
    path.write_bytes(HEADER + b"\n" + body)
    for row in read_all(path):
        assert (row.values is None) == (row.error is not None)


@FUZZ
@given(body=st.binary(max_size=400))
def test_any_bytes_as_ndjson_are_rows_or_rejections(tmp_path: Path, body: bytes) -> None:
    path = tmp_path / "fills.ndjson"
    path.write_bytes(body)
    for row in read_all(path):
        assert (row.values is None) == (row.error is not None)


@FUZZ
@given(body=st.binary(max_size=400), as_ndjson=st.booleans())
def test_any_body_is_a_batch_or_refused_with_a_reason(body: bytes, as_ndjson: bool) -> None:
    try:
        rows = read_batch(body, BatchFormat.NDJSON if as_ndjson else BatchFormat.JSON, max_items=100)
    except BkrError:
        return
    assert all((row.values is None) == (row.error is not None) for row in rows)


@FUZZ
@given(record=records)
def test_any_record_is_a_plausible_priced_fill_or_refused_naming_a_field(record: dict[str, object]) -> None:
    try:
        fill = parse_fill(record)
        priced = price_in_usd(fill, DEFAULT_USD_RATES)
        check_plausible(priced, NOW, RULES)
    except InvalidInput as error:
        assert str(error).split(":", 1)[0] in FIELDS or "not a fill field" in str(error), str(error)
        return
    for amount in (fill.price, fill.quantity, fill.fee):  # what is accepted is within its bounds
        integer, places = digits_of(amount)
        assert isinstance(amount, Decimal) and integer <= AMOUNT.integer_digits and places <= AMOUNT.decimal_places


@pytest.mark.parametrize("name", ["price", "quantity", "fee"])
def test_a_float_amount_is_refused_never_rounded(name: str) -> None:
    with pytest.raises(InvalidInput, match=f"^{name}: a float"):
        parse_fill(plausible | {name: 0.1})
