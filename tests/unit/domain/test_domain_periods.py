"""Periods: calendar months in UTC and the parsing of instants."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bkr.domain.errors import InvalidInput
from bkr.domain.periods import Month, as_utc, month_field, parse_instant

MONTHS = st.builds(Month, st.integers(min_value=1970, max_value=9998), st.integers(min_value=1, max_value=12))


@pytest.mark.parametrize(("text", "month"), [
    ("2024-01", Month(2024, 1)),
    ("2024-12", Month(2024, 12)),
    (" 1999-07 ", Month(1999, 7)),
])
def test_month_parses_year_dash_month(text: str, month: Month) -> None:
    assert Month.parse(text) == month


@pytest.mark.parametrize("text", ["2024-13", "2024-00", "2024-1", "24-01", "2024/01", "2024-01-01", "", "january"])
def test_month_parse_refuses_anything_but_a_real_yyyy_mm(text: str) -> None:
    with pytest.raises(InvalidInput, match="not a month"):
        Month.parse(text)


def test_month_prints_as_yyyy_mm() -> None:
    assert str(Month(2024, 3)) == "2024-03"
    assert str(Month(987, 11)) == "0987-11"


def test_next_month_of_december_is_january_of_the_next_year() -> None:
    assert Month(2024, 12).next() == Month(2025, 1)


def test_previous_month_of_january_is_december_of_the_year_before() -> None:
    assert Month(2025, 1).previous() == Month(2024, 12)


@pytest.mark.parametrize(("month", "following"), [
    (Month(2024, 1), Month(2024, 2)),
    (Month(2024, 11), Month(2024, 12)),
    (Month(2024, 12), Month(2025, 1)),
])
def test_next_and_previous_step_one_month(month: Month, following: Month) -> None:
    assert month.next() == following
    assert following.previous() == month


def test_month_starts_on_the_first_at_midnight_utc() -> None:
    assert Month(2024, 2).start == datetime(2024, 2, 1, tzinfo=UTC)


def test_month_ends_at_the_first_instant_of_the_next_month() -> None:
    assert Month(2024, 2).end == datetime(2024, 3, 1, tzinfo=UTC)
    assert Month(2024, 12).end == datetime(2025, 1, 1, tzinfo=UTC)


def test_months_order_chronologically() -> None:
    assert Month(2023, 12) < Month(2024, 1) < Month(2024, 2)
    assert max([Month(2024, 1), Month(2023, 12), Month(2024, 10)]) == Month(2024, 10)


def test_month_of_a_moment_is_taken_in_utc() -> None:
    late_evening_in_brazil = datetime(2024, 1, 31, 23, 0, tzinfo=timezone(timedelta(hours=-3)))
    assert Month.of(late_evening_in_brazil) == Month(2024, 2)
    assert Month.of(datetime(2024, 1, 31, 23, 59, 59)) == Month(2024, 1)


@settings(max_examples=100)
@given(month=MONTHS)
def test_month_bounds_are_contiguous_and_contain_their_own_instants(month: Month) -> None:
    assert month.next().previous() == month
    assert month.previous().next() == month
    assert month.end == month.next().start
    assert month.previous().end == month.start
    assert Month.of(month.start) == month
    assert Month.of(month.end - timedelta(microseconds=1)) == month
    assert Month.of(month.end) == month.next()
    assert Month.parse(str(month)) == month


# --- instants ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "instant"), [
    ("2024-03-01T00:00:00Z", datetime(2024, 3, 1, tzinfo=UTC)),
    ("2024-03-01T00:00:00z", datetime(2024, 3, 1, tzinfo=UTC)),
    ("2024-03-01T00:00:00+00:00", datetime(2024, 3, 1, tzinfo=UTC)),
    ("2024-03-01T02:00:00+02:00", datetime(2024, 3, 1, tzinfo=UTC)),
    ("2024-02-29T21:30:00-02:30", datetime(2024, 3, 1, tzinfo=UTC)),
    ("2024-03-01T00:00:00", datetime(2024, 3, 1, tzinfo=UTC)),  # naive: UTC, as Backpack sends
    ("2024-03-01T00:00:00.123456Z", datetime(2024, 3, 1, 0, 0, 0, 123456, tzinfo=UTC)),
    (" 2024-03-01T00:00:00Z ", datetime(2024, 3, 1, tzinfo=UTC)),
])
def test_parse_instant_reads_z_offsets_and_naive_times_as_utc(text: str, instant: datetime) -> None:
    parsed = parse_instant(text)
    assert parsed == instant
    assert parsed.utcoffset() == timedelta(0)


def test_parse_instant_with_an_offset_can_fall_in_another_month_than_its_local_date() -> None:
    assert Month.of(parse_instant("2024-03-01T01:00:00+02:00")) == Month(2024, 2)


@pytest.mark.parametrize("text", ["", "yesterday", "2024-13-01T00:00:00Z", "2024-03-01T25:00:00Z", "1709251200"])
def test_parse_instant_refuses_text_that_is_not_iso_8601(text: str) -> None:
    with pytest.raises(InvalidInput, match="not an ISO 8601 time"):
        parse_instant(text)


def test_as_utc_converts_aware_moments_and_labels_naive_ones() -> None:
    aware = datetime(2024, 1, 1, 12, tzinfo=timezone(timedelta(hours=5)))
    assert as_utc(aware) == datetime(2024, 1, 1, 7, tzinfo=UTC)
    assert as_utc(aware).utcoffset() == timedelta(0)
    assert as_utc(datetime(2024, 1, 1, 12)) == datetime(2024, 1, 1, 12, tzinfo=UTC)


def test_a_month_field_names_the_field_its_text_came_in() -> None:
    assert month_field("2024-05") == Month(2024, 5)
    with pytest.raises(InvalidInput) as error:
        month_field("2024-13", field="from")
    assert (str(error.value), error.value.field) == ("not a month (YYYY-MM): '2024-13'", "from")


@pytest.mark.parametrize("text", ["0000-01", "0001-12", "1969-12", "9999-12"])
def test_a_month_outside_the_years_a_date_can_hold_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput, match=r"^not a month bkr keeps: .* \(years 1970\.\.9998\)$"):
        Month.parse(text)
