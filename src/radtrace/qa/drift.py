"""Drift: label prevalence per period against control limits from a baseline, and failure bursts.

**Label prevalence (p-chart).** For one label, each period *i* has ``n_i`` studies read and ``x_i`` of
them with the label present. The baseline periods give the centre line p̄ = Σx / Σn (pooled, so a busy day
weighs more than a quiet one); period *i*'s limits are p̄ ± z·√(p̄(1 - p̄)/n_i), clipped to [0, 1] — with
z = 1.96 a 95 % interval, narrower on busy days. A label *drifts* when its rate stays outside its limits, on
the same side, for ``run`` consecutive periods (default 7 days). Periods with no studies are skipped: they
neither extend nor end a run.

**Failure bursts.** Failures are rare, so a p-chart's lower limit is 0 and a baseline with no failure gives
limits of width 0. Instead a period is a *burst* when the lower end of its failure rate's Wilson interval
lies above the upper end of the baseline's: the period's failure rate is higher than the baseline's
beyond what chance explains at that confidence, however small either count is. A burst alerts on one
period, so its intervals are 99.9 % ones (z = 3.29): at a 1 % baseline and 100 studies a day, a day
without a real change is flagged about once in 5 years, where 95 % intervals would flag one in 50 days.

Everything here is pure: plain values in, plain values out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Final, Literal

from radtrace.qa.intervals import Z_95, Z_99_9, Proportion

__all__ = [
    "DEFAULT_RUN",
    "ChartPoint",
    "ControlLimits",
    "DriftAlert",
    "FailureBurst",
    "Period",
    "PeriodCount",
    "Side",
    "baseline_limits",
    "drift_alerts",
    "failure_bursts",
    "label_prevalence",
    "p_chart",
    "period_start",
    "runs_out_of_control",
]

DEFAULT_RUN: Final = 7
Side = Literal["above", "below"]
Period = Literal["day", "week"]


def period_start(when: date | datetime, period: Period = "day") -> date:
    """The first day of the period ``when`` falls in: the day itself, or the Monday of its ISO week."""
    day = when.date() if isinstance(when, datetime) else when
    return day - timedelta(days=day.weekday()) if period == "week" else day


@dataclass(frozen=True)
class PeriodCount:
    """``count`` of ``total`` studies in the period starting ``start``."""

    start: date
    count: int
    total: int


@dataclass(frozen=True)
class ControlLimits:
    """The centre line of a p-chart: the pooled baseline proportion, and the z the limits use."""

    centre: float
    baseline_count: int
    baseline_total: int
    z: float = Z_95

    def limits(self, total: int) -> tuple[float, float]:
        """(lower, upper) limits for a period of ``total`` studies (``(0, 1)`` for an empty one)."""
        if total <= 0:
            return 0.0, 1.0
        spread = self.z * math.sqrt(self.centre * (1 - self.centre) / total)
        return max(0.0, self.centre - spread), min(1.0, self.centre + spread)


@dataclass(frozen=True)
class ChartPoint:
    """One period on a p-chart."""

    start: date
    count: int
    total: int
    rate: float | None
    #: The baseline's rate and this period's limits; None when the baseline holds no reading
    #: (:func:`unlimited_prevalence`).
    centre: float | None
    lower: float | None
    upper: float | None
    side: Side | None  # where the rate lies outside its limits, or None when within (or no studies, or limits)


@dataclass(frozen=True)
class DriftAlert:
    """A label whose rate stayed outside its limits on one side for ``periods`` consecutive periods."""

    label: str
    side: Side
    first: date
    last: date
    periods: int


def baseline_limits(baseline: Iterable[PeriodCount], z: float = Z_95) -> ControlLimits:
    """The p-chart centre from the baseline periods (pooled: Σcount / Σtotal). Raises ValueError when the
    baseline holds no studies."""
    periods = list(baseline)
    count = sum(p.count for p in periods)
    total = sum(p.total for p in periods)
    if total <= 0:
        raise ValueError("the baseline period holds no studies")
    return ControlLimits(count / total, count, total, z)


def p_chart(periods: Iterable[PeriodCount], limits: ControlLimits) -> list[ChartPoint]:
    """Each period's rate against its limits, in period order."""
    points = []
    for period in sorted(periods, key=lambda p: p.start):
        lower, upper = limits.limits(period.total)
        rate = period.count / period.total if period.total else None
        side: Side | None = None
        if rate is not None and rate > upper:
            side = "above"
        elif rate is not None and rate < lower:
            side = "below"
        points.append(ChartPoint(period.start, period.count, period.total, rate, limits.centre, lower, upper, side))
    return points


def runs_out_of_control(points: Sequence[ChartPoint], run: int = DEFAULT_RUN) -> list[tuple[Side, date, date, int]]:
    """Every maximal run of at least ``run`` consecutive periods (with studies) outside the limits on one
    side: ``(side, first, last, length)``."""
    if run < 1:
        raise ValueError("a run is at least one period long")
    found: list[tuple[Side, date, date, int]] = []
    current: list[ChartPoint] = []

    def close() -> None:
        if len(current) >= run and current[0].side is not None:
            found.append((current[0].side, current[0].start, current[-1].start, len(current)))

    for point in points:
        if point.total == 0:
            continue  # no studies: the period says nothing either way
        if point.side is not None and current and current[-1].side == point.side:
            current.append(point)
            continue
        close()
        current = [point] if point.side is not None else []
    close()
    return found


def label_prevalence(
    studies: Iterable[tuple[date | datetime, Iterable[str]]], period: Period = "day"
) -> tuple[dict[date, int], dict[str, dict[date, int]]]:
    """From (when read, labels present) per study: studies read per period, and per label the studies
    with it present per period."""
    totals: dict[date, int] = {}
    present: dict[str, dict[date, int]] = {}
    for when, labels in studies:
        start = period_start(when, period)
        totals[start] = totals.get(start, 0) + 1
        for label in set(labels):
            per_label = present.setdefault(label, {})
            per_label[start] = per_label.get(start, 0) + 1
    return totals, present


def drift_alerts(
    totals: Mapping[date, int],
    present: Mapping[str, Mapping[date, int]],
    *,
    baseline: tuple[date, date],
    monitored: tuple[date, date],
    run: int = DEFAULT_RUN,
    z: float = Z_95,
) -> tuple[dict[str, list[ChartPoint]], list[DriftAlert]]:
    """The p-chart of every label over the ``monitored`` periods (inclusive start and end dates) with limits
    from the ``baseline`` periods, and the labels that drifted. A label never present in the baseline has a
    centre of 0 and so drifts once it appears on ``run`` consecutive periods."""
    charts: dict[str, list[ChartPoint]] = {}
    alerts: list[DriftAlert] = []
    for label in sorted(present):
        counts = present[label]

        def series(first: date, last: date, counts: Mapping[date, int] = counts) -> list[PeriodCount]:
            return [
                PeriodCount(start, counts.get(start, 0), total)
                for start, total in totals.items()
                if first <= start <= last
            ]

        base = series(*baseline)
        if sum(p.total for p in base) == 0:
            continue
        points = p_chart(series(*monitored), baseline_limits(base, z))
        charts[label] = points
        alerts += [
            DriftAlert(label, side, first, last, length)
            for side, first, last, length in runs_out_of_control(points, run)
        ]
    return charts, alerts


def unlimited_prevalence(
    totals: Mapping[date, int], present: Mapping[str, Mapping[date, int]], *, monitored: tuple[date, date]
) -> dict[str, list[ChartPoint]]:
    """Each label's rate per period over the ``monitored`` periods with no centre, limits or side: for the labels
    :func:`drift_alerts` leaves out because the baseline holds no reading (a window that starts at go-live), so
    the window's own figures are still shown (before, their charts disappeared)."""
    first, last = monitored
    periods = sorted((start, total) for start, total in totals.items() if first <= start <= last)
    return {
        label: [
            ChartPoint(start, counts.get(start, 0), total, counts.get(start, 0) / total if total else None,
                       None, None, None, None)
            for start, total in periods
        ]
        for label, counts in sorted(present.items())
    }  # fmt: skip


@dataclass(frozen=True)
class FailureBurst:
    """A period whose failure rate is above the baseline's beyond chance."""

    start: date
    failures: Proportion
    baseline: Proportion


def failure_bursts(
    periods: Iterable[PeriodCount], baseline: Iterable[PeriodCount], z: float = Z_99_9
) -> list[FailureBurst]:
    """Periods whose failure share's Wilson lower bound lies above the baseline share's Wilson upper bound
    (``count`` = failed studies, ``total`` = studies that ended, read or failed)."""
    base = list(baseline)
    pooled = Proportion.of(sum(p.count for p in base), sum(p.total for p in base), z)
    bursts = []
    for period in sorted(periods, key=lambda p: p.start):
        share = Proportion.of(period.count, period.total, z)
        if period.total and share.low > pooled.high:
            bursts.append(FailureBurst(period.start, share, pooled))
    return bursts
