"""The dashboard's pure pieces: how figures are written, and the SVG charts."""

from decimal import ROUND_HALF_UP, Context, Decimal, localcontext

import pytest

from bkr.api.dashboard.charts import Bar, Series, progress_fraction, stacked_bars
from bkr.api.dashboard.format import amount, rate
from bkr.domain.money import D


@pytest.mark.parametrize(("value", "places", "compact", "shown"), [
    (D("1234567.891"), 2, False, "1,234,567.89"), (D("0.005"), 2, False, "0.00"), (D("0.015"), 2, False, "0.02"),
    (D("5000000"), 0, True, "5M"), (D("2500000"), 0, True, "2.5M"), (D("999"), 0, True, "999"),
    (D("-1500"), 2, True, "-1.5k"),
])
def test_amounts_are_written_for_people(value: Decimal, places: int, compact: bool, shown: str) -> None:
    assert amount(value, places=places, compact=compact) == shown


def test_amounts_round_half_even_whatever_the_threads_decimal_context() -> None:
    """ccxt, in the same process as the venue's tests, leaves ROUND_HALF_UP on the thread's context."""
    with localcontext() as context:
        context.rounding = ROUND_HALF_UP
        assert (amount(D("0.005")), amount(D("0.015")), amount(D("2250000"), places=0, compact=True)) == (
            "0.00", "0.02", "2.2M")


def test_pages_draw_the_same_under_a_hostile_decimal_context(hostile_decimal_context: Context) -> None:
    """Figures, rates, progress and charts of amounts with every digit the bounds allow come out
    the same whatever the thread's context: nothing here rounds (or raises) in it."""
    big, small = D("999999999999999.999999999999999999"), D("0.000000000000000001")

    def draw() -> list[str]:
        bars = [Bar("01", (big, small)), Bar("02", (D("1234567.891"), D(0)))]
        return [amount(big), amount(small, places=18), amount(D("-2500000.5"), places=0, compact=True),
                rate(D("0.123456789012345678")), str(progress_fraction(D("7000000.000000000000000001"),
                                                                      D(5_000_000), D(10_000_000))),
                str(stacked_bars("c", "t", "d", (Series("Spot", "spot"), Series("Futures", "futures")), bars))]

    expected = draw()
    with localcontext(hostile_decimal_context):
        assert draw() == expected
    assert expected[:4] == ["1,000,000,000,000,000.00", "0.000000000000000001", "-2.5M", "12.3456789012345678%"]


@pytest.mark.parametrize(("value", "shown"), [(D("0.35"), "35%"), (D("0.125"), "12.5%"), (D("0"), "0%"),
                                              (D("1"), "100%")])
def test_rates_are_percentages(value: Decimal, shown: str) -> None:
    assert rate(value) == shown


def test_progress_is_clamped_between_the_two_tiers() -> None:
    low, high = D(5_000_000), D(10_000_000)
    assert progress_fraction(D(7_500_000), low, high) == D("0.5")
    assert progress_fraction(D(10_000_000), low, high) == 1  # the threshold itself is reached
    assert progress_fraction(D(1), low, high) == 0
    assert progress_fraction(D(1), high, high) == 1  # the top tier: nothing left to reach


def test_a_chart_has_a_name_a_description_and_one_titled_group_per_bar() -> None:
    svg = str(stacked_bars("c1", "Volume <by> day", "Spot & futures", (Series("Spot", "spot"),
                                                                      Series("Futures", "futures")),
                           [Bar("01", (D("1.5"), D("2"))), Bar("02", (D(0), D(0)))], slots=30))
    assert svg.startswith('<svg class="chart" id="c1"') and 'role="img"' in svg
    assert 'aria-labelledby="c1-title c1-desc"' in svg
    assert "<title id=\"c1-title\">Volume &lt;by&gt; day</title>" in svg and "Spot &amp; futures" in svg
    assert svg.count('<g class="bar">') == 2
    assert "<title>01: Spot 1.50 USD, Futures 2.00 USD</title>" in svg
    assert svg.count("<rect") == 2  # an empty day draws no rectangle


def test_an_empty_chart_still_draws_its_axis() -> None:
    svg = str(stacked_bars("c2", "Nothing yet", "No volume", (Series("Spot", "spot"),), []))
    assert svg.count('class="grid"') == 3 and "<rect" not in svg
