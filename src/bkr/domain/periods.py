"""Periods: calendar months in UTC, `[YYYY-MM-01T00:00Z, first of next month)`."""

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from bkr.domain.errors import InvalidInput

_MONTH = re.compile(r"^(\d{4})-(\d{2})$", re.ASCII)  # ASCII: int() would read "２０２６" as 2026


@dataclass(frozen=True, order=True, slots=True)
class Month:
    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> "Month":
        return _parse_month(text)

    @classmethod
    def of(cls, moment: datetime) -> "Month":
        """The month a UTC moment falls in."""
        moment = as_utc(moment)
        return _month(moment.year, moment.month)

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """The first instant of the next month (exclusive bound)."""
        return self.next().start

    def next(self) -> "Month":
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    def previous(self) -> "Month":
        return Month(self.year - (self.month == 1), 12 if self.month == 1 else self.month - 1)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


@lru_cache(maxsize=1024)
def _month(year: int, month: int) -> Month:
    return Month(year, month)


def as_utc(moment: datetime) -> datetime:
    """A moment in UTC; a naive datetime is taken to be UTC already (as Backpack's API sends)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)


def parse_instant(text: str) -> datetime:
    """An ISO 8601 instant; without an offset it is UTC."""
    try:
        return as_utc(datetime.fromisoformat(text.strip().replace("z", "Z")))
    except ValueError:
        raise InvalidInput(f"not an ISO 8601 time: {text[:64]!r}") from None
    except OverflowError:  # 0001-01-01T00:00+00:01 is a year 0 moment in UTC
        raise InvalidInput(f"not a time bkr can hold: {text[:64]!r}") from None


def month_field(text: str, field: str = "month") -> Month:
    """`Month.parse` of a request's field: its error names the field, as a rejection must."""
    try:
        return Month.parse(text)
    except InvalidInput as error:
        raise InvalidInput(str(error), field=field) from None


# The months a text may name: from the epoch to the last month whose end a datetime can hold.
FIRST_YEAR, LAST_YEAR = 1970, 9998


@lru_cache(maxsize=4096)
def _parse_month(text: str) -> Month:
    # cached: a close parses the same few month strings once per aggregate row
    match = _MONTH.match(text.strip())
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise InvalidInput(f"not a month (YYYY-MM): {text[:32]!r}")
    if not FIRST_YEAR <= int(match.group(1)) <= LAST_YEAR:
        raise InvalidInput(f"not a month bkr keeps: {text.strip()} (years {FIRST_YEAR}..{LAST_YEAR})")
    return _month(int(match.group(1)), int(match.group(2)))
