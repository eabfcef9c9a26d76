"""One study's stages as a Gantt-like chart (label, start offset, duration, seconds): the audit explorer's
study timeline, drawn with the helpers of :mod:`radtrace.console.charts` (escaped text, axis, grid)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup

from radtrace.console.charts import (
    _MARGIN_TOP,
    FONT,
    PALETTE,
    TEXT_COLOUR,
    _attr,
    _close,
    _empty,
    _nice_max,
    _open,
    _text,
    _x_grid,
)

__all__ = ["Stage", "stage_timeline_svg"]


@dataclass(frozen=True)
class Stage:
    """One stage of one study: what it is, when it started (seconds after the first event), how long it took."""

    label: str
    start_s: float
    duration_s: float


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def stage_timeline_svg(
    stages: Sequence[Stage],
    *,
    title: str = "Stages",
    width: int = 640,
    row_height: int = 22,
    label_width: int = 130,
    css_class: str = "chart-timeline",
) -> Markup:
    """One study's stages as horizontal bars on a common time axis (seconds from its first event): each bar starts
    at ``start_s`` and lasts ``duration_s``, titled and labelled with its duration. Stages are drawn in the order
    given (e.g. :data:`radtrace.audit.queries.STAGES`' order); negative times are treated as 0."""
    height = _MARGIN_TOP + row_height * max(1, len(stages)) + 22
    parts = _open(width, height, title, f"{len(stages)} stages", css_class)
    if not stages:
        return _empty(parts, width, height, "no stage recorded")
    left, right = label_width, width - 70
    end = max(max(0.0, s.start_s) + max(0.0, s.duration_s) for s in stages)
    top_value = _nice_max(end) if end > 0 else 1.0

    def x(value: float) -> float:
        return left + (right - left) * (max(0.0, value) / top_value)

    _x_grid(parts, x, top_value, height, _duration)
    for i, stage in enumerate(stages):
        top = _MARGIN_TOP + i * row_height
        start, duration = max(0.0, stage.start_s), max(0.0, stage.duration_s)
        colour = PALETTE[i % len(PALETTE)]
        parts.append(
            f'<g class="chart-stage" data-stage={_attr(stage.label)}>'
            f'<text class="chart-axis" x="{left - 6}" y="{top + row_height / 2 + 4:.1f}" text-anchor="end" '
            f'font-size="{FONT}" fill="{TEXT_COLOUR}">{_text(stage.label)}</text>'
            f'<rect class="chart-bar chart-bar-{i % len(PALETTE)}" x="{x(start):.1f}" y="{top + 3:.1f}" '
            f'width="{max(1.0, x(start + duration) - x(start)):.1f}" height="{row_height - 6}" fill="{colour}">'
            f"<title>{_text(stage.label)}: {_text(_duration(duration))}, from {_text(_duration(start))}</title>"
            f"</rect>"
            f'<text class="chart-value" x="{x(start + duration) + 4:.1f}" y="{top + row_height / 2 + 4:.1f}" '
            f'font-size="{FONT}" fill="{TEXT_COLOUR}">{_text(_duration(duration))}</text></g>'
        )
    return _close(parts)
