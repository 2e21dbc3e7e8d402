"""Column types that keep money exact and time in UTC on both SQLite and PostgreSQL.

SQLAlchemy's `Numeric` is stored as a float by SQLite; `Money` stores the canonical decimal
text there instead, and NUMERIC on PostgreSQL. The one sum bkr does in SQL, the aggregate
upsert (`bkr.store.bulk`), adds with NUMERIC `+` on PostgreSQL and, on SQLite, with a Python
function over `Decimal` registered on every connection (`bkr.store.db`). Never compare or
sum money in plain SQL on SQLite: the column is text there.
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
