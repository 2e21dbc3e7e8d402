"""Charts as inline SVG, drawn on the server: no script, no library, nothing fetched.

Each chart is an `<svg role="img">` whose `<title>` and `<desc>` say what it shows, with a
`<title>` on every bar for a pointer's tooltip; the page puts the same figures in a table beside
it, which is the text alternative a screen reader reads. Amounts arrive as `Decimal` and are
turned into floats only to place pixels: no figure a person reads is computed here.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal
from html import escape

from markupsafe import Markup

from bkr.api.dashboard.format import amount
from bkr.domain.money import MONEY, mul, sub, total

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 64, 8, 10, 28  # room for the axis labels
MAX_BAR = 72  # a lone bar stays a bar, not a wall
# A proportion drawn (a progress bar's width) rounds here, never in the thread's context, which a
# library in the same process may have changed.
_PROPORTION = Context(prec=28, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    css_class: str  # the colour, from the stylesheet (so that it follows the page's contrast rules)


@dataclass(frozen=True, slots=True)
class Bar:
    label: str  # under the bar (a day, a month, a tier)
    values: tuple[Decimal, ...]  # one per series, stacked bottom-up


def _pixels(value: Decimal, scale: Decimal, span: int) -> float:
    # geometry only: a bar's height in pixels, never shown as a figure
    return 0.0 if scale <= 0 else float(value) / float(scale) * span


def _nice_ceiling(value: Decimal) -> Decimal:
    """The axis maximum: the smallest 1, 2 or 5 × 10ⁿ at or above the tallest bar."""
    if value <= 0:
        return Decimal(1)
    exponent = value.adjusted()
    for step in (1, 2, 5, 10):
        ceiling = Decimal(step).scaleb(exponent, context=MONEY)
        if ceiling >= value:
            return ceiling
    return Decimal(10).scaleb(exponent, context=MONEY)


def stacked_bars(chart_id: str, title: str, description: str, series: Sequence[Series], bars: Sequence[Bar], *,
                 slots: int | None = None, label_every: int = 1, unit: str = "USD", places: int = 2) -> Markup:
    """A bar chart, one bar per entry, its values stacked in series order. `slots` keeps room for
    bars still to come (the rest of a month's days), so that a bar's width means one day all month."""
    tallest = max((total(bar.values) for bar in bars), default=Decimal(0))
    ceiling = _nice_ceiling(tallest)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(slots or 0, len(bars), 1)
    gap = max(min(slot * 0.2, 6.0), slot - MAX_BAR)
    parts = [f'<svg class="chart" id="{escape(chart_id)}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-labelledby="{escape(chart_id)}-title {escape(chart_id)}-desc" preserveAspectRatio="xMidYMid meet">',
             f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
             f'<desc id="{escape(chart_id)}-desc">{escape(description)}</desc>']
    for fraction in (Decimal(0), Decimal("0.5"), Decimal(1)):  # gridlines with their value
        y = TOP + plot_h - _pixels(mul(ceiling, fraction), ceiling, plot_h)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                     f"{escape(amount(mul(ceiling, fraction), places=0, compact=True))}</text>")
    for index, bar in enumerate(bars):
        x = LEFT + index * slot + gap / 2
        base = float(TOP + plot_h)
        tooltip = ", ".join(f"{s.name} {amount(v, places=places)} {unit}"
                            for s, v in zip(series, bar.values, strict=True))
        parts.append(f'<g class="bar"><title>{escape(bar.label)}: {escape(tooltip)}</title>')
        for kind, value in zip(series, bar.values, strict=True):
            height = _pixels(value, ceiling, plot_h)
            if height > 0:
                base -= height
                parts.append(f'<rect class="{escape(kind.css_class)}" x="{x:.1f}" y="{base:.1f}" '
                             f'width="{slot - gap:.1f}" height="{height:.1f}"/>')
        parts.append("</g>")
        if index % label_every == 0:
            parts.append(f'<text class="axis" x="{x + (slot - gap) / 2:.1f}" y="{HEIGHT - 10}" '
                         f'text-anchor="middle">{escape(bar.label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # every text in it was escaped above


def progress_fraction(value: Decimal, low: Decimal, high: Decimal) -> Decimal:
    """How far `value` is from `low` to `high`, in [0, 1]: the width of a tier progress bar."""
    if high <= low:
        return Decimal(1)
    return min(Decimal(1), max(Decimal(0), _PROPORTION.divide(sub(value, low), sub(high, low))))
