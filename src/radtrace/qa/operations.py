"""Operational QA figures: outcome rates (failures, refusals, sanitised text), stage latencies, input mix.

Each function takes plain records that a caller reads from the work tables or the audit log:

* :class:`StudyOutcome` — how one study revision ended (from ``report_created``, ``study_failed``,
  ``study_skipped`` and the reading's flags in ``inference_completed``);
* (stage, seconds) pairs — the stage durations of the audit timeline
  (:data:`radtrace.audit.queries.STAGES`: ``receive_to_queue``, ``queue_wait``, ``inference``, ``report``,
  ``dispatch``, ``total``), e.g. from :func:`stage_durations` over :func:`radtrace.audit.queries.build_timeline`;
* (when, attributes) pairs — one per input image, the attributes to count (manufacturer, model, view
  position, transfer syntax, pixel spacing, photometric interpretation, …).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

from radtrace.audit.queries import STAGES, Timeline
from radtrace.qa.drift import Period, PeriodCount, period_start
from radtrace.qa.intervals import Z_95, Proportion, percentile

__all__ = [
    "LatencySummary",
    "OutcomeRates",
    "StudyOutcome",
    "failure_counts",
    "input_mix",
    "outcome_rates",
    "stage_durations",
    "stage_latencies",
]

Ending = Literal["reported", "failed", "skipped"]


@dataclass(frozen=True)
class StudyOutcome:
    """How one study revision ended: read and reported (``refused`` / ``sanitised`` from its flags), failed
    (``reason``), or skipped (``reason``, e.g. no frontal chest image)."""

    when: date | datetime
    ending: Ending
    reason: str | None = None
    refused: bool = False
    sanitised: bool = False


@dataclass(frozen=True)
class OutcomeRates:
    """One period's outcomes: ``failed`` of the studies that ended read or failed; ``refused`` and
    ``sanitised`` of those read; ``skipped`` of all; the reasons counted."""

    start: date
    ended: int
    failed: Proportion
    skipped: Proportion
    refused: Proportion
    sanitised: Proportion
    failure_reasons: Mapping[str, int]
    skip_reasons: Mapping[str, int]


def outcome_rates(outcomes: Iterable[StudyOutcome], period: Period = "day", z: float = Z_95) -> list[OutcomeRates]:
    """Per period (in order): failure, skip, refusal and sanitised-text rates with Wilson intervals."""
    by_period: dict[date, list[StudyOutcome]] = {}
    for outcome in outcomes:
        by_period.setdefault(period_start(outcome.when, period), []).append(outcome)
    rates = []
    for start in sorted(by_period):
        group = by_period[start]
        read = [o for o in group if o.ending == "reported"]
        failed = [o for o in group if o.ending == "failed"]
        skipped = [o for o in group if o.ending == "skipped"]
        rates.append(
            OutcomeRates(
                start=start,
                ended=len(group),
                failed=Proportion.of(len(failed), len(read) + len(failed), z),
                skipped=Proportion.of(len(skipped), len(group), z),
                refused=Proportion.of(sum(o.refused for o in read), len(read), z),
                sanitised=Proportion.of(sum(o.sanitised for o in read), len(read), z),
                failure_reasons=dict(Counter(o.reason or "unknown" for o in failed)),
                skip_reasons=dict(Counter(o.reason or "unknown" for o in skipped)),
            )
        )
    return rates


def failure_counts(rates: Iterable[OutcomeRates]) -> list[PeriodCount]:
    """The failure counts of each period, for :func:`radtrace.qa.drift.failure_bursts`."""
    return [PeriodCount(r.start, r.failed.count, r.failed.total) for r in rates]


@dataclass(frozen=True)
class LatencySummary:
    """One stage's durations: how many, p50 and p95 (seconds), and the share over ``target_s`` if given."""

    stage: str
    count: int
    p50: float
    p95: float
    target_s: float | None = None
    over_target: Proportion | None = None


def stage_durations(timelines: Iterable[Timeline]) -> list[tuple[str, float]]:
    """Every (stage, seconds) the audit timelines hold."""
    return [(stage.name, stage.seconds) for timeline in timelines for stage in timeline.stages]


def stage_latencies(
    durations: Iterable[tuple[str, float]], targets: Mapping[str, float] | None = None
) -> list[LatencySummary]:
    """p50 and p95 per stage, in the timeline's stage order (stages with no duration left out; unknown
    stage names after, sorted)."""
    by_stage: dict[str, list[float]] = {}
    for stage, seconds in durations:
        by_stage.setdefault(stage, []).append(seconds)
    known = [name for name, _, _ in STAGES]
    order = [name for name in known if name in by_stage] + sorted(set(by_stage) - set(known))
    summaries = []
    for stage in order:
        values = by_stage[stage]
        target = (targets or {}).get(stage)
        over = Proportion.of(sum(v > target for v in values), len(values)) if target is not None else None
        summaries.append(
            LatencySummary(stage, len(values), percentile(values, 50), percentile(values, 95), target, over)
        )
    return summaries


def input_mix(
    images: Iterable[tuple[date | datetime, Mapping[str, str | None]]], period: Period = "day"
) -> dict[date, dict[str, dict[str, int]]]:
    """Per period, per attribute, how many input images had each value (a missing value counts as
    ``"(none)"``)."""
    mix: dict[date, dict[str, Counter[str]]] = {}
    for when, attributes in images:
        per_period = mix.setdefault(period_start(when, period), {})
        for name, value in attributes.items():
            per_period.setdefault(name, Counter())[value if value not in (None, "") else "(none)"] += 1
    return {
        start: {name: dict(sorted(counter.items())) for name, counter in sorted(mix[start].items())}
        for start in sorted(mix)
    }
