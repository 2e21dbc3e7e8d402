"""Column types that keep money exact and time in UTC on both SQLite and PostgreSQL.

SQLAlchemy's `Numeric` is stored as a float by SQLite; `Money` stores the canonical decimal
text there instead, and NUMERIC on PostgreSQL. The one sum bkr does in SQL, the aggregate
upsert (`bkr.store.bulk`), adds with NUMERIC `+` on PostgreSQL and, on SQLite, with a Python
function over `Decimal` registered on every connection (`bkr.store.db`). Never compare or
sum money in plain SQL on SQLite: the column is text there. A column that SQL must sort by
(`OrderedMoney`) holds, on SQLite, `ordered_key`'s text, whose byte order is the amounts' order.
"""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Dialect, Numeric, Text
from sqlalchemy.dialects.postgresql import TIMESTAMP
from sqlalchemy.types import TypeDecorator, TypeEngine

from bkr.domain.money import canonical
from bkr.domain.periods import Month


class Money(TypeDecorator[Decimal]):
    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Numeric(asdecimal=True))
        return dialect.type_descriptor(Text())

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "postgresql":
            return value
        return canonical(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None or isinstance(value, Decimal):
            return value
        # bkr wrote this text itself (`canonical`): exact, finite, no need for `D`'s checks,
        # which cost more than the read on a close of 100,000 lines
        return Decimal(value)


_LENGTH_DIGITS = 2  # the integer part's length, written first: 99 integer digits at most
_NINES = str.maketrans("0123456789", "9876543210")
_NEGATIVE_END = ":"  # sorts after every digit: ends a negative's key (see `ordered_key`)


def ordered_key(amount: Decimal) -> str:
    """Text whose order (byte by byte, as SQLite's BINARY collation compares) is the order of the
    amounts, exact for any amount of up to 99 integer digits and any number of decimal places.

    A non-negative amount is "1", its integer part's length in two digits, its integer digits
    (none below 1) and its decimal places (no trailing zeros): the length decides between
    integer parts of different sizes, the digits between the rest, and a shorter fraction that
    is a prefix of a longer one is the smaller amount, as its text is. A negative amount is "0"
    (below every non-negative key), then its magnitude's key with every digit complemented to 9,
    which reverses the order, and ":", above every digit, so that a larger magnitude whose key
    extends a smaller one's still sorts first."""
    text = canonical(amount)
    negative = text.startswith("-")
    whole, _, fraction = text.removeprefix("-").partition(".")
    if whole == "0":
        whole = ""
    if len(whole) >= 10**_LENGTH_DIGITS:
        raise ValueError(f"an amount of {len(whole)} integer digits has no ordered key")
    magnitude = f"{len(whole):0{_LENGTH_DIGITS}d}{whole}{fraction}"
    return f"0{magnitude.translate(_NINES)}{_NEGATIVE_END}" if negative else f"1{magnitude}"


def from_ordered_key(key: str) -> Decimal:
    """The amount `ordered_key` made `key` of."""
    negative = key.startswith("0")
    magnitude = key[1:-1].translate(_NINES) if negative else key[1:]
    length = int(magnitude[:_LENGTH_DIGITS])
    whole = magnitude[_LENGTH_DIGITS:_LENGTH_DIGITS + length] or "0"
    fraction = magnitude[_LENGTH_DIGITS + length:]
    return Decimal(f"{'-' if negative else ''}{whole}{'.' + fraction if fraction else ''}")


class OrderedMoney(TypeDecorator[Decimal]):
    """Money that SQL sorts by, exactly: NUMERIC on PostgreSQL, `ordered_key`'s text on SQLite.
    Not for sums on SQLite (the text is not a number there); keep the amount in a `Money`
    column beside it."""

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Numeric(asdecimal=True))
        return dialect.type_descriptor(Text())

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None or dialect.name == "postgresql":
            return value
        return ordered_key(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None or isinstance(value, Decimal):
            return value
        return from_ordered_key(value)


class MonthText(TypeDecorator[Month]):
    """A month, stored as its `YYYY-MM` text on both databases (which sorts as the months do) and
    read back as a `Month`: code above the store compares and passes months, never their text."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Month | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if not isinstance(value, Month):
            raise TypeError(f"a month column takes a Month, not {value!r}")
        return str(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Month | None:
        return None if value is None else Month.parse(value)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch: how SQLite stores a UTC instant."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class UtcTimestamp(TypeDecorator[datetime]):
    """TIMESTAMPTZ on PostgreSQL; integer microseconds since the epoch on SQLite (exact, sortable)."""

    impl = BigInteger
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(TIMESTAMP(timezone=True))
        return dialect.type_descriptor(BigInteger())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        if dialect.name == "postgresql":
            return value
        return to_micros(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            return value.astimezone(UTC)
        seconds, micros = divmod(int(value), 1_000_000)
        return datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)
