"""Column types that keep money exact and time in UTC on both SQLite and PostgreSQL.

SQLAlchemy's `Numeric` is stored as a float by SQLite; `Money` stores the canonical decimal
text there instead, and NUMERIC on PostgreSQL. Arithmetic on money in SQL goes through
`exact_sum` and `exact_add`, which are PostgreSQL's own exact operators and, on SQLite,
Python functions over `Decimal` registered on every connection (see `bkr.store.db`).
Never compare money in SQL on SQLite: the column is text there.
"""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Dialect, Numeric, Text
from sqlalchemy.dialects.postgresql import TIMESTAMP
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import GenericFunction
from sqlalchemy.types import TypeDecorator, TypeEngine

from bkr.domain.money import D, canonical


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
        if value is None:
            return None
        return D(value) if not isinstance(value, Decimal) else value


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
        delta = value - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            return value.astimezone(UTC)
        seconds, micros = divmod(int(value), 1_000_000)
        return datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)


class exact_sum(GenericFunction[Decimal]):
    """SUM that stays exact: NUMERIC sum on PostgreSQL, a Decimal aggregate on SQLite."""

    type = Money()
    inherit_cache = True
    name = "exact_sum"


@compiles(exact_sum)
def _exact_sum_default(element: exact_sum, compiler: Any, **kw: Any) -> str:
    return f"sum({compiler.process(element.clauses, **kw)})"


@compiles(exact_sum, "sqlite")
def _exact_sum_sqlite(element: exact_sum, compiler: Any, **kw: Any) -> str:
    return f"dec_sum({compiler.process(element.clauses, **kw)})"


class exact_add(GenericFunction[Decimal]):
    """a + b on money columns, exact on both databases."""

    type = Money()
    inherit_cache = True
    name = "exact_add"


@compiles(exact_add)
def _exact_add_default(element: exact_add, compiler: Any, **kw: Any) -> str:
    left, right = list(element.clauses)
    return f"({compiler.process(left, **kw)} + {compiler.process(right, **kw)})"


@compiles(exact_add, "sqlite")
def _exact_add_sqlite(element: exact_add, compiler: Any, **kw: Any) -> str:
    return f"dec_add({compiler.process(element.clauses, **kw)})"
