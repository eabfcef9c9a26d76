"""Charts drawn on the server as inline SVG: time series with control limits, bars, and a stage timeline.

Small on purpose: the console's charts are a handful of lines, bars and bands, and a plotting library would bring
a JavaScript bundle (which the console's Content Security Policy and "no CDN" rule keep out) or a large dependency
for what is a few dozen lines of geometry. Each function returns one ``<svg>`` element as :class:`~markupsafe.Markup`
for a Jinja template; every piece of text in it (titles, labels, tooltips) is XML-escaped here, so a label taken
from data cannot inject markup. Colours are presentation attributes that ``console.css`` may override by class
(``chart-…``); no ``style`` attribute is used, which the CSP (``style-src 'self'``) would block.

* :func:`time_series_svg` — one or more series over ordered periods, with an optional band per period (a p-chart's
  control limits), a centre line, a target line, and flagged points drawn as larger red markers;
* :func:`bar_chart_svg` — stacked vertical bars per period (volume), one colour per stack;
* :func:`horizontal_bars_svg` — one bar per row with an optional interval whisker and target line (latency per
  stage, agreement shares);
* :func:`.chart_timeline.stage_timeline_svg` — one study's stages as a Gantt-like chart (in its own module).

Every chart carries ``role="img"``, a ``<title>`` and a ``<desc>`` for screen readers, the desc of a time series or
bar chart with every value, period by period; the numbers themselves are offered as CSV next to each chart by the
pages that draw them. Nothing is told by colour alone: a chart's second and later lines are dashed, each its own
way, and its second and later bar stacks hatched, each its own way, as their legend entries are.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from xml.sax.saxutils import escape, quoteattr

from markupsafe import Markup

__all__ = [
    "PALETTE",
    "Band",
    "Marker",
    "Series",
    "bar_chart_svg",
    "horizontal_bars_svg",
    "percent",
    "time_series_svg",
]

#: Okabe-Ito colours, distinguishable with the common colour-vision deficiencies.
PALETTE: Final = ("#56b4e9", "#e69f00", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7", "#999999")
FLAG_COLOUR: Final = "#ff5a4f"
TEXT_COLOUR: Final = "#c9d1d9"
GRID_COLOUR: Final = "#3a424d"
BAND_COLOUR: Final = "#4cc38a"
TARGET_COLOUR: Final = "#e3b341"
TARGET_DASH: Final = "6 3"
MARKER_COLOUR: Final = "#d2a8ff"
MARKER_DASH: Final = "4 2"
FONT: Final = 11
_MARGIN_LEFT: Final = 52
_MARGIN_RIGHT: Final = 12
_MARGIN_TOP: Final = 26
_MARGIN_BOTTOM: Final = 34
_ids = itertools.count(1)


@dataclass(frozen=True)
class Series:
    """One line: a value (or None for a gap) per x position, which positions are flagged, what each point's
    tooltip adds after its value (``notes``, e.g. "12 of 15 decisions": the n behind a share), and which points
    rest on too few cases to read much into (``few``: drawn hollow)."""

    name: str
    values: Sequence[float | None]
    flagged: Sequence[bool] = ()
    notes: Sequence[str | None] = ()
    few: Sequence[bool] = ()


@dataclass(frozen=True)
class Marker:
    """An event between periods, drawn as a vertical line at the start of period ``index`` (e.g. a model version
    first reading), titled ``name``; ``short`` is written beside it at the top of the plot."""

    index: int
    name: str
    short: str


@dataclass(frozen=True)
class Band:
    """A shaded band per x position (``lower[i]`` to ``upper[i]``, None where there is none) and its centre."""

    lower: Sequence[float | None]
    upper: Sequence[float | None]
    centre: float | None = None
    name: str = "control limits"


def _text(value: object) -> str:
    text = str(value)
    return _escaped(text) if len(text) <= 64 else escape(text)


@functools.lru_cache(maxsize=4096)
def _escaped(text: str) -> str:
    """A short text escaped, remembered: a year's charts escape the same period labels, names and values tens of
    thousands of times."""
    return escape(text)


def _attr(value: object) -> str:
    return quoteattr(str(value))


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _nice_step(value: float) -> float:
    """The smallest of 1, 2, 2.5 or 5 times a power of ten at or above ``value``."""
    power = 10.0 ** math.floor(math.log10(value))
    return next(step * power for step in (1.0, 2.0, 2.5, 5.0, 10.0) if value <= step * power * (1 + 1e-9))


def _ticks(value: float) -> list[float]:
    """Round axis ticks from 0 to at or above ``value``: at most six, a round step apart."""
    if value <= 0 or not math.isfinite(value):
        return [0.0, 0.25, 0.5, 0.75, 1.0]
    step = _nice_step(value / 5)
    return [step * i for i in range(math.ceil(value / step - 1e-9) + 1)]


def _axis_ticks(top: float) -> list[float]:
    """The ticks of an axis ending at ``top``: round ones when ``top`` is round, else quarters."""
    ticks = _ticks(top)
    return ticks if ticks[-1] == top else [top * i / 4 for i in range(5)]


def _nice_max(value: float) -> float:
    """A round upper end for an axis at or above ``value``."""
    return _ticks(value)[-1]


def _open(width: int, height: int, title: str, description: str, css_class: str) -> list[str]:
    ident = f"chart-{next(_ids)}"  # unique on a page: several charts may share a title
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {css_class}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-labelledby="{ident}-t {ident}-d">',
        f'<title id="{ident}-t">{_text(title)}</title>',
        f'<desc id="{ident}-d">{_text(description)}</desc>',
        f'<text class="chart-title" x="{_MARGIN_LEFT}" y="15" font-size="{FONT + 1}" fill="{TEXT_COLOUR}">'
        f"{_text(title)}</text>",
    ]


def _empty(parts: list[str], width: int, height: int, message: str) -> Markup:
    parts.append(
        f'<text class="chart-empty" x="{width / 2:.1f}" y="{height / 2:.1f}" text-anchor="middle" '
        f'font-size="{FONT}" fill="{TEXT_COLOUR}">{_text(message)}</text>'
    )
    return _close(parts)


def _close(parts: list[str]) -> Markup:
    parts.append("</svg>")
    # Safe: every text and attribute value from the caller went through _text/_attr; the rest is our own markup.
    return Markup("".join(parts))  # noqa: S704


def _y_axis(
    parts: list[str], top: float, bottom: float, left: float, right: float, y_max: float, fmt: Callable[[float], str]
) -> Callable[[float], float]:
    scale = (bottom - top) / y_max

    def y(value: float) -> float:
        return bottom - scale * (value if 0.0 <= value <= y_max else 0.0 if value < 0.0 else y_max)

    for value in _axis_ticks(y_max):
        at = y(value)
        parts.append(
            f'<line class="chart-grid" x1="{left:.1f}" x2="{right:.1f}" y1="{at:.1f}" y2="{at:.1f}" '
            f'stroke="{GRID_COLOUR}" stroke-width="1"/>'
            f'<text class="chart-axis" x="{left - 4:.1f}" y="{at + 4:.1f}" text-anchor="end" font-size="{FONT}" '
            f'fill="{TEXT_COLOUR}">{_text(fmt(value))}</text>'
        )
    return y


def _x_labels(parts: list[str], labels: Sequence[str], x: Callable[[int], float], baseline: float, room: float) -> None:
    """Period labels under the axis, as many as fit ``room`` pixels (about 48 each), the last one always."""
    if not labels:
        return
    fit = max(2, int(room // 48))
    step = max(1, math.ceil(len(labels) / fit))
    shown = list(range(0, len(labels), step))
    if shown[-1] != len(labels) - 1:
        if len(labels) - 1 - shown[-1] < step * 0.8 and len(shown) > 1:
            shown.pop()  # too close to the last label: make room for it
        shown.append(len(labels) - 1)
    for i in shown:
        parts.append(
            f'<text class="chart-axis" x="{x(i):.1f}" y="{baseline + 14:.1f}" text-anchor="middle" '
            f'font-size="{FONT}" fill="{TEXT_COLOUR}">{_text(labels[i])}</text>'
        )


def _legend_rows(entries: Sequence[tuple[str, str]], width: int, left: float) -> list[tuple[str, str, float, int]]:
    """Where each legend entry goes: (name, colour, x, row), wrapping at the chart's right edge."""
    placed = []
    x, row = left, 0
    for name, colour in entries:
        span = 36 + 7.0 * len(name)
        if x > left and x + span > width:
            x, row = left, row + 1
        placed.append((name, colour, x, row))
        x += span
    return placed


def _legend(
    parts: list[str], placed: Sequence[tuple[str, str, float, int]], y: float, marks: Mapping[str, str] | None = None
) -> None:
    """The legend; ``marks`` gives an entry the swatch that tells it apart without colour: a line's dash pattern
    (``dash:<dasharray>``) or a bar's hatching (``fill:<url>``)."""
    for name, colour, x, row in placed:
        at = y + 14 * row
        mark = (marks or {}).get(name, "")
        if mark.startswith("dash:"):
            parts.append(
                f'<line x1="{x:.1f}" x2="{x + 20:.1f}" y1="{at - 3:.1f}" y2="{at - 3:.1f}" stroke="{colour}" '
                f'stroke-width="2.4" stroke-dasharray="{mark[5:]}"/>'
            )
        else:
            parts.append(f'<rect x="{x:.1f}" y="{at - 8:.1f}" width="20" height="10" fill="{colour}"/>')
            if mark.startswith("fill:"):
                parts.append(f'<rect x="{x:.1f}" y="{at - 8:.1f}" width="20" height="10" fill="{mark[5:]}"/>')
        parts.append(
            f'<text class="chart-legend" x="{x + 24:.1f}" y="{at + 1:.1f}" font-size="{FONT}" fill="{TEXT_COLOUR}">'
            f"{_text(name)}</text>"
        )


#: Dash patterns of a chart's second, third, … line (the first is solid): lines told apart without colour.
#: Not the target line's "6 3" nor the centre line's "3 3".
DASHES: Final = ("", "2 2", "10 3 2 3", "1 4", "12 4", "4 2 1 2")
#: Hatching of a stacked bar chart's second, third, … stack (the first is plain): (angle, crossed).
HATCHES: Final = ((45, False), (-45, False), (0, False), (90, False), (45, True))


def _hatch_defs(parts: list[str], count: int) -> list[str]:
    """Patterns for ``count`` stacks (the first plain), added to ``parts`` as ``<defs>``; returns each stack's
    ``url(#…)`` (empty for the first)."""
    fills = [""]
    defs = []
    for n in range(1, count):
        angle, crossed = HATCHES[(n - 1) % len(HATCHES)]
        ident = f"chart-hatch-{next(_ids)}"
        lines = '<line x1="0" y1="0" x2="0" y2="6" stroke="#10141a" stroke-width="1.6" stroke-opacity="0.7"/>'
        if crossed:
            lines += '<line x1="0" y1="3" x2="6" y2="3" stroke="#10141a" stroke-width="1.6" stroke-opacity="0.7"/>'
        defs.append(
            f'<pattern id="{ident}" patternUnits="userSpaceOnUse" width="6" height="6" '
            f'patternTransform="rotate({angle})">{lines}</pattern>'
        )
        fills.append(f"url(#{ident})")
    if defs:
        parts.append(f"<defs>{''.join(defs)}</defs>")
    return fills


def _values_text(
    labels: Sequence[str], columns: Mapping[str, Sequence[float | None]], fmt: Callable[[float], str]
) -> str:
    """Every value as text, period by period ("29 Nov: read 49, failed 0; 30 Nov: …"): a chart's description for
    a reader who cannot tell its colours apart, or cannot see it."""
    periods = []
    for i, label in enumerate(labels):
        values = [(name, column[i] if i < len(column) else None) for name, column in columns.items()]
        shown = [f"{name} {fmt(value)}" for name, value in values if value is not None]
        if shown:
            periods.append(f"{label}: {', '.join(shown)}")
    return "; ".join(periods)


def percent(value: float) -> str:
    """An axis/tooltip format: a share as a whole percentage (``0.25`` → ``25%``)."""
    return f"{value * 100:.0f}%"


def time_series_svg(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    band: Band | None = None,
    target: float | None = None,
    target_name: str = "target",
    y_format: Callable[[float], str] = _num,
    y_max: float | None = None,
    width: int = 640,
    height: int = 220,
    css_class: str = "chart-series",
    markers: Sequence[Marker] = (),
) -> Markup:
    """Lines over ordered periods (``labels``, e.g. dates), each point titled with its value and its note; flagged
    points are drawn larger, in red, with class ``chart-flag``, points on few cases hollow (``chart-few``).
    ``band`` shades per-period limits and draws its centre dashed; ``target`` draws a horizontal line; each of
    ``markers`` a vertical dashed line (``chart-marker``) at its period's start. ``y_max`` fixes the axis top
    (else a round value above the data)."""
    description = f"{len(labels)} periods; series: " + ", ".join(s.name for s in series)
    values_text = _values_text(labels, {s.name: s.values for s in series}, y_format)
    description += f". {values_text}" if values_text else ""
    entries = [(s.name, PALETTE[n % len(PALETTE)]) for n, s in enumerate(series)]
    marks = {s.name: f"dash:{DASHES[n % len(DASHES)]}" for n, s in enumerate(series) if len(series) > 1}
    if target is not None:
        marks[target_name] = f"dash:{TARGET_DASH}"
    if band is not None:
        entries.append((band.name, BAND_COLOUR))
    if target is not None:
        entries.append((target_name, TARGET_COLOUR))
    shown_markers = [m for m in markers if 0 <= m.index < len(labels)]
    if shown_markers:
        entries.append(("model version change", MARKER_COLOUR))
        marks["model version change"] = f"dash:{MARKER_DASH}"
    legend = _legend_rows(entries, width, _MARGIN_LEFT)
    plot_bottom = height - _MARGIN_BOTTOM
    height += 14 * (legend[-1][3] if legend else 0)
    parts = _open(width, height, title, description, css_class)
    values = [v for s in series for v in s.values if v is not None]
    if not labels or not values:
        return _empty(parts, width, height, "no data in this period")
    left, right, top, bottom = _MARGIN_LEFT, width - _MARGIN_RIGHT, _MARGIN_TOP, plot_bottom
    extra = [target or 0.0] + ([u for u in band.upper if u is not None] if band else [])
    top_value = y_max if y_max is not None else _nice_max(max(values + extra) * 1.05)
    y = _y_axis(parts, top, bottom, left, right, top_value, y_format)
    count = len(labels)

    def x(i: int) -> float:
        return left + (right - left) * ((i + 0.5) / count)

    if band is not None:
        _band(parts, band, x, y, count, y_format)
    if target is not None:
        parts.append(
            f'<line class="chart-target" x1="{left}" x2="{right}" y1="{y(target):.1f}" y2="{y(target):.1f}" '
            f'stroke="{TARGET_COLOUR}" stroke-width="1.5" stroke-dasharray="{TARGET_DASH}">'
            f"<title>{_text(target_name)}: {_text(y_format(target))}</title></line>"
        )
    half = (x(1) - x(0)) / 2 if count > 1 else (right - left) / 2
    for marker in shown_markers:
        at = x(marker.index) - half
        parts.append(
            f'<line class="chart-marker" x1="{at:.1f}" x2="{at:.1f}" y1="{top:.1f}" y2="{bottom:.1f}" '
            f'stroke="{MARKER_COLOUR}" stroke-width="1.5" stroke-dasharray="{MARKER_DASH}">'
            f"<title>{_text(marker.name)}</title></line>"
            f'<text class="chart-marker-label" x="{at + 3:.1f}" y="{top + 9:.1f}" font-size="{FONT - 1}" '
            f'fill="{MARKER_COLOUR}">{_text(marker.short)}</text>'
        )
    for n, line in enumerate(series):
        colour = PALETTE[n % len(PALETTE)]
        _polyline(parts, line, x, y, colour, n)
        name = _text(line.name)
        for i, value in enumerate(line.values[:count]):
            if value is None:
                continue
            flagged = i < len(line.flagged) and line.flagged[i]
            few = not flagged and i < len(line.few) and line.few[i]
            note = line.notes[i] if i < len(line.notes) else None
            if flagged:
                kind, look = "chart-flag", f'r="4" fill="{FLAG_COLOUR}"'
            elif few:
                kind, look = "chart-few", f'r="2.6" fill="none" stroke="{colour}"'
            else:
                kind, look = "chart-point", f'r="2.2" fill="{colour}"'
            after = f" ({_text(note)})" if note else ""
            after += " (flagged)" if flagged else " (few cases)" if few else ""
            parts.append(
                f'<circle class="{kind}" cx="{x(i):.1f}" cy="{y(value):.1f}" {look}>'
                f"<title>{name}, {_text(labels[i])}: {_text(y_format(value))}{after}</title></circle>"
            )
    _x_labels(parts, labels, x, bottom, right - left)
    _legend(parts, legend, plot_bottom + _MARGIN_BOTTOM - 5, marks)
    return _close(parts)


def _band(
    parts: list[str],
    band: Band,
    x: Callable[[int], float],
    y: Callable[[float], float],
    count: int,
    fmt: Callable[[float], str],
) -> None:
    half = (x(1) - x(0)) / 2 if count > 1 else 10.0
    for i in range(min(count, len(band.lower), len(band.upper))):
        low, high = band.lower[i], band.upper[i]
        if low is None or high is None:
            continue
        parts.append(
            f'<rect class="chart-band" x="{x(i) - half:.1f}" y="{y(high):.1f}" width="{2 * half:.1f}" '
            f'height="{max(0.0, y(low) - y(high)):.1f}" fill="{BAND_COLOUR}" fill-opacity="0.18">'
            f"<title>{_text(band.name)}: {_text(fmt(low))} to {_text(fmt(high))}</title></rect>"
        )
    if band.centre is not None:
        parts.append(
            f'<line class="chart-centre" x1="{x(0) - half:.1f}" x2="{x(count - 1) + half:.1f}" '
            f'y1="{y(band.centre):.1f}" y2="{y(band.centre):.1f}" stroke="{BAND_COLOUR}" stroke-width="1" '
            f'stroke-dasharray="3 3"><title>baseline: {_text(fmt(band.centre))}</title></line>'
        )


def _polyline(
    parts: list[str], line: Series, x: Callable[[int], float], y: Callable[[float], float], colour: str, n: int
) -> None:
    runs: list[list[str]] = [[]]
    for i, value in enumerate(line.values):
        if value is None:
            runs.append([])  # a period without data breaks the line
        else:
            runs[-1].append(f"{x(i):.1f},{y(value):.1f}")
    for run in runs:
        if len(run) > 1:
            dash = DASHES[n % len(DASHES)]
            parts.append(
                f'<polyline class="chart-line chart-line-{n}" points="{" ".join(run)}" fill="none" '
                f'stroke="{colour}" stroke-width="1.6"{f" stroke-dasharray={quoteattr(dash)}" if dash else ""}/>'
            )


def bar_chart_svg(
    labels: Sequence[str],
    stacks: Mapping[str, Sequence[float]],
    *,
    title: str,
    y_format: Callable[[float], str] = _num,
    colours: Mapping[str, str] | None = None,
    width: int = 640,
    height: int = 220,
    css_class: str = "chart-bars",
) -> Markup:
    """Stacked vertical bars, one per period (``labels``), one colour per stack (``colours``, else the palette in
    ``stacks``' order); each segment titled with its stack, period and value."""
    chosen = {name: (colours or {}).get(name, PALETTE[n % len(PALETTE)]) for n, name in enumerate(stacks)}
    description = f"{len(labels)} periods; stacked: " + ", ".join(stacks)
    values_text = _values_text(labels, stacks, y_format)
    description += f". {values_text}" if values_text else ""
    legend = _legend_rows(list(chosen.items()), width, _MARGIN_LEFT)
    plot_bottom = height - _MARGIN_BOTTOM
    height += 14 * (legend[-1][3] if legend else 0)
    parts = _open(width, height, title, description, css_class)
    hatches = _hatch_defs(parts, len(stacks))
    marks = {name: f"fill:{hatches[n]}" for n, name in enumerate(stacks) if hatches[n]}
    totals = [sum(values[i] for values in stacks.values() if i < len(values)) for i in range(len(labels))]
    if not labels or not any(totals):
        return _empty(parts, width, height, "no data in this period")
    left, right, top, bottom = _MARGIN_LEFT, width - _MARGIN_RIGHT, _MARGIN_TOP, plot_bottom
    y = _y_axis(parts, top, bottom, left, right, _nice_max(max(totals) * 1.05), y_format)
    slot = (right - left) / len(labels)
    bar = max(1.0, slot * 0.72)

    def x(i: int) -> float:
        return left + slot * (i + 0.5)

    # Each stack's opening and name, each period's label, escaped once (a year of 6 stacks: 2,190 segments).
    openings = [(f'<rect class="chart-bar chart-bar-{n}" ', f'fill="{chosen[name]}"><title>{_text(name)}, ',
                 hatches[n], values) for n, (name, values) in enumerate(stacks.items())]  # fmt: skip
    width_text = f'width="{bar:.1f}"'
    for i, label in enumerate(labels):
        base, shown, left_x = 0.0, _text(label), f'x="{x(i) - bar / 2:.1f}"'
        for opening, fill, hatch, values in openings:
            value = values[i] if i < len(values) else 0.0
            if value <= 0:
                continue
            upper = y(base + value)
            box = f'{left_x} y="{upper:.1f}" {width_text} height="{max(0.5, y(base) - upper):.1f}"'
            parts.append(f"{opening}{box} {fill}{shown}: {_text(y_format(value))}</title></rect>")
            if hatch:  # told apart without colour too
                parts.append(f'<rect class="chart-hatch" {box} fill="{hatch}" pointer-events="none"/>')
            base += value
    _x_labels(parts, labels, x, bottom, right - left)
    _legend(parts, legend, plot_bottom + _MARGIN_BOTTOM - 5, marks)
    return _close(parts)


def _x_grid(
    parts: list[str], x: Callable[[float], float], top_value: float, height: int, fmt: Callable[[float], str]
) -> None:
    """The vertical grid lines and their values under a horizontal chart."""
    for value in _axis_ticks(top_value):
        at = x(value)
        parts.append(
            f'<line class="chart-grid" x1="{at:.1f}" x2="{at:.1f}" y1="{_MARGIN_TOP - 4}" y2="{height - 18}" '
            f'stroke="{GRID_COLOUR}" stroke-width="1"/>'
            f'<text class="chart-axis" x="{at:.1f}" y="{height - 6}" text-anchor="middle" font-size="{FONT}" '
            f'fill="{TEXT_COLOUR}">{_text(fmt(value))}</text>'
        )


def horizontal_bars_svg(
    rows: Sequence[tuple[str, float, float | None, float | None]],
    *,
    title: str,
    x_format: Callable[[float], str] = _num,
    x_max: float | None = None,
    target: float | None = None,
    target_name: str = "target",
    width: int = 640,
    row_height: int = 20,
    label_width: int = 150,
    flagged: Sequence[bool] = (),
    css_class: str = "chart-hbars",
) -> Markup:
    """One horizontal bar per row ``(label, value, low, high)``: ``low``/``high`` (both or neither) draw an
    interval whisker (a confidence interval, or p50 → p95); ``target`` a vertical line; flagged rows in red."""
    height = _MARGIN_TOP + row_height * max(1, len(rows)) + 22
    parts = _open(width, height, title, f"{len(rows)} rows", css_class)
    if not rows:
        return _empty(parts, width, height, "no data in this period")
    left, right = label_width, width - 60
    ends = [max(v, h or 0.0) for _, v, _, h in rows] + [target or 0.0]
    top_value = x_max if x_max is not None else _nice_max(max(ends) * 1.05)

    def x(value: float) -> float:
        return left + (right - left) * (min(max(value, 0.0), top_value) / top_value)

    _x_grid(parts, x, top_value, height, x_format)
    for i, (label, value, low, high) in enumerate(rows):
        top = _MARGIN_TOP + i * row_height
        middle = top + row_height / 2
        is_flagged = i < len(flagged) and flagged[i]
        colour = FLAG_COLOUR if is_flagged else PALETTE[0]
        has_interval = low is not None and high is not None
        interval = f" ({_text(x_format(low or 0.0))} to {_text(x_format(high or 0.0))})" if has_interval else ""
        parts.append(
            f'<text class="chart-axis" x="{left - 6}" y="{middle + 4:.1f}" text-anchor="end" font-size="{FONT}" '
            f'fill="{TEXT_COLOUR}">{_text(label)}</text>'
            f'<rect class="{"chart-flag" if is_flagged else "chart-bar chart-bar-0"}" x="{left}" '
            f'y="{top + 3:.1f}" width="{max(0.5, x(value) - left):.1f}" height="{row_height - 6}" fill="{colour}">'
            f"<title>{_text(label)}: {_text(x_format(value))}{interval}</title></rect>"
            f'<text class="chart-value" x="{x(max(value, high or 0.0)) + 4:.1f}" y="{middle + 4:.1f}" '
            f'font-size="{FONT}" fill="{TEXT_COLOUR}">{_text(x_format(value))}</text>'
        )
        if low is not None and high is not None:
            parts.append(
                f'<line class="chart-whisker" x1="{x(low):.1f}" x2="{x(high):.1f}" y1="{middle:.1f}" '
                f'y2="{middle:.1f}" stroke="{TEXT_COLOUR}" stroke-width="1.5"/>'
                f'<line class="chart-whisker" x1="{x(low):.1f}" x2="{x(low):.1f}" y1="{middle - 4:.1f}" '
                f'y2="{middle + 4:.1f}" stroke="{TEXT_COLOUR}" stroke-width="1.5"/>'
                f'<line class="chart-whisker" x1="{x(high):.1f}" x2="{x(high):.1f}" y1="{middle - 4:.1f}" '
                f'y2="{middle + 4:.1f}" stroke="{TEXT_COLOUR}" stroke-width="1.5"/>'
            )
    if target is not None:
        parts.append(
            f'<line class="chart-target" x1="{x(target):.1f}" x2="{x(target):.1f}" y1="{_MARGIN_TOP - 4}" '
            f'y2="{height - 18}" stroke="{TARGET_COLOUR}" stroke-width="1.5" stroke-dasharray="{TARGET_DASH}">'
            f"<title>{_text(target_name)}: {_text(x_format(target))}</title></line>"
        )
    return _close(parts)
