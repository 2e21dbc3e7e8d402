"""The order-preserving text of an amount (`bkr.store.types.ordered_key`): SQLite sorts money by
it, byte by byte, so its order must be the amounts' order exactly, for any sign, size and
number of decimal places, and it must read back as the amount it was made of."""

from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bkr.domain.money import canonical
from bkr.store.types import from_ordered_key, ordered_key

# every amount bkr keeps (up to 51 integer digits and 72 places, bkr.domain.bounds), and beyond
amounts = st.decimals(allow_nan=False, allow_infinity=False, min_value=Decimal("-1e60"), max_value=Decimal("1e60"),
                      places=None).map(lambda d: Decimal(canonical(d)))
small = st.integers(-10**6, 10**6).flatmap(lambda n: st.integers(0, 20).map(lambda p: Decimal(n).scaleb(-p)))


@given(st.lists(st.one_of(amounts, small), min_size=2, max_size=30))
@example([Decimal("0.5"), Decimal("0.51"), Decimal("-0.5"), Decimal("-0.51"), Decimal(0), Decimal("-0.0000001")])
@example([Decimal("-100"), Decimal("-5"), Decimal("-99.99"), Decimal("100"), Decimal("5"), Decimal("99.99")])
def test_the_keys_sort_as_the_amounts_do(values: list[Decimal]) -> None:
    by_key = sorted(values, key=lambda v: ordered_key(v).encode())
    assert [ordered_key(v) for v in by_key] == [ordered_key(v) for v in sorted(values)]


@given(st.one_of(amounts, small))
@example(Decimal("-0"))
@example(Decimal("1E+3"))
@example(Decimal("0.000000000000000001"))
def test_a_key_reads_back_as_its_amount_and_equal_amounts_have_one_key(value: Decimal) -> None:
    assert from_ordered_key(ordered_key(value)) == value
    with_zeros = Decimal(canonical(value) + ("000" if "." in canonical(value) else ".000"))  # 1.5 and 1.5000
    assert ordered_key(with_zeros) == ordered_key(value)


def test_an_amount_too_large_for_a_key_is_refused_not_misordered() -> None:
    assert ordered_key(Decimal("-" + "9" * 99)) < ordered_key(Decimal("9" * 99))  # the largest keyed amounts
    with pytest.raises(ValueError, match="100 integer digits"):
        ordered_key(Decimal("1" + "0" * 99))
