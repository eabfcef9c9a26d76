"""The drift and failure rules as Prometheus gauges, so the site's alerting sees them.

Read from the audit log (the only place that keeps every reading's labels and every ending):

* readings — ``inference_completed`` events: when, and the labels the model found present (the event's
  ``labels`` column);
* endings — ``report_created`` (read and reported) and ``study_failed`` (failed after its retries).

Days are the site's local calendar days in ``qa.time_zone`` (default UTC), the days the QA dashboard counts, so
the drift alert fires on the run of days the dashboard's drift chart shows (before, the rules counted UTC days and,
outside UTC, a run could start or end a day apart from the chart's). The *monitored* days are the last
``qa.monitored_days`` (today, local, included); the *baseline* the ``qa.baseline_days`` before them. The failure
rate and burst look at the last 24 hours, whatever the zone. :func:`evaluate_rules` (pure) applies
:mod:`radtrace.qa.drift` to them; :class:`QaRuleCollector` reads the rows, calls it at most every
``qa.refresh_s`` seconds, and yields:

=============================================================  ===============================================
``radtrace_label_prevalence{label}``                            share of the latest monitored day's readings
                                                                with the label present
``radtrace_label_prevalence_baseline{label}``                   the baseline share (the p-chart's centre)
``radtrace_label_prevalence_out_of_control_days{label}``        days in a row, up to the latest day with
                                                                readings, outside the 95 % limits on one side
``radtrace_label_prevalence_out_of_control{label}``             1 while that run is ``qa.drift_run_days`` or
                                                                longer: the drift alert
``radtrace_failure_rate``                                       failed / (failed + reported) in the last 24 h
``radtrace_failure_burst``                                      1 when the last 24 h's failure share is above
                                                                the baseline's beyond chance (99.9 % Wilson)
``radtrace_qa_rules_up``                                        1 when the rules could be read
=============================================================  ===============================================
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from radtrace.audit.events import EventType
from radtrace.audit.schema import AuditEventRow
from radtrace.config import QaSettings, Settings
from radtrace.errors import RadtraceError
from radtrace.qa.drift import PeriodCount, drift_alerts, failure_bursts, label_prevalence
from radtrace.qa.recorded_times import readable_time
from radtrace.store.base import utc_now
from radtrace.store.engine import Store

__all__ = ["LabelRule", "QaRuleCollector", "RuleState", "evaluate_rules", "read_rule_inputs"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelRule:
    """One label's state under the drift rule."""

    label: str
    rate: float | None
    baseline: float
    out_of_control_days: int
    alert: bool


@dataclass(frozen=True)
class RuleState:
    """Every rule's state at one moment."""

    labels: tuple[LabelRule, ...]
    failure_rate: float
    failure_burst: bool


def _local(when: datetime, zone: ZoneInfo) -> datetime:
    """``when`` (aware, or naive UTC as SQLite gives it back) in the site's zone."""
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(zone)


def first_local_midnight(now: datetime, days: int, zone: ZoneInfo) -> datetime:
    """The UTC instant the local day ``days - 1`` days before ``now``'s local day starts: the rules read from it."""
    day = _local(now, zone).date() - timedelta(days=days - 1)
    return datetime.combine(day, datetime.min.time(), tzinfo=zone).astimezone(UTC)


def _labels(column: str | None) -> tuple[str, ...]:
    return tuple(part for part in (column or "").split(",") if part)


def evaluate_rules(
    readings: Iterable[tuple[datetime, Sequence[str]]],
    endings: Iterable[tuple[datetime, bool]],
    now: datetime,
    rules: QaSettings,
) -> RuleState:
    """The rules' state at ``now`` from (when read, labels present) per reading and (when ended, failed)
    per ending (pure), by local days of ``rules.time_zone``."""
    zone = ZoneInfo(rules.time_zone)
    today = _local(now, zone).date()
    readings = ((_local(when, zone), labels) for when, labels in readings)
    monitored = (today - timedelta(days=rules.monitored_days - 1), today)
    baseline = (monitored[0] - timedelta(days=rules.baseline_days), monitored[0] - timedelta(days=1))
    totals, present = label_prevalence(readings)
    charts, _ = drift_alerts(totals, present, baseline=baseline, monitored=monitored, run=rules.drift_run_days)
    states = []
    for label, points in charts.items():
        with_studies = [point for point in points if point.total]
        run = 0
        if with_studies and with_studies[-1].side is not None:
            side = with_studies[-1].side
            for point in reversed(with_studies):
                if point.side != side:
                    break
                run += 1
        latest = with_studies[-1].rate if with_studies else None
        centre = (points[0].centre if points else None) or 0.0  # drift_alerts charts only labels with a baseline
        # The run that reaches the latest day is what an alert means now; past runs are the dashboard's.
        states.append(LabelRule(label, latest, centre, run, run >= rules.drift_run_days))

    recent = now - timedelta(hours=24)
    failed_recent = ended_recent = 0
    per_day: dict[date, list[int]] = {}
    for when, failed in endings:
        if when > recent:
            ended_recent += 1
            failed_recent += failed
        day = _local(when, zone).date()
        if baseline[0] <= day <= baseline[1]:
            counts = per_day.setdefault(day, [0, 0])
            counts[0] += failed
            counts[1] += 1
    base = [PeriodCount(day, failed, total) for day, (failed, total) in per_day.items()]
    burst = bool(base) and bool(failure_bursts([PeriodCount(today, failed_recent, ended_recent)], base))
    rate = failed_recent / ended_recent if ended_recent else 0.0
    return RuleState(tuple(states), rate, burst)


def read_rule_inputs(
    store: Store, since: datetime
) -> tuple[list[tuple[datetime, tuple[str, ...]]], list[tuple[datetime, bool]]]:
    """(readings, endings) recorded at or after ``since``, from the audit log."""
    table = AuditEventRow
    kinds = [EventType.INFERENCE_COMPLETED.value, EventType.REPORT_CREATED.value, EventType.STUDY_FAILED.value]
    with store.session("reading the QA rules' inputs") as session:
        rows = session.execute(
            sa.select(table.recorded_at, table.event_type, table.labels).where(
                table.recorded_at >= since, table.event_type.in_(kinds), readable_time(store, table.recorded_at)
            )
        ).all()
    readings = [(at, _labels(labels)) for at, kind, labels in rows if kind == EventType.INFERENCE_COMPLETED.value]
    endings = [(at, kind == EventType.STUDY_FAILED.value) for at, kind, _ in rows if kind != kinds[0]]
    return readings, endings


class QaRuleCollector(Collector):
    """The drift and failure rules' gauges, recomputed at most every ``qa.refresh_s`` seconds."""

    def __init__(self, settings: Settings, store: Store, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.rules = settings.qa
        self.store = store
        self.clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, RuleState] | None = None

    def state(self) -> RuleState:
        """The rules' state, from the cache when it is fresh. Raises RadtraceError when the store fails."""
        with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < self.rules.refresh_s:
                return self._cached[1]
            now = self.clock()
            days = self.rules.baseline_days + self.rules.monitored_days
            since = first_local_midnight(now, days, ZoneInfo(self.rules.time_zone))
            readings, endings = read_rule_inputs(self.store, since)
            state = evaluate_rules(readings, endings, now, self.rules)
            self._cached = (time.monotonic(), state)
            return state

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("radtrace_qa_rules_up", "Whether the QA drift and failure rules could be read")
        try:
            state = self.state()
        except RadtraceError as exc:
            log.warning("QA rules not evaluated: %s", exc.reason)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        families = {
            "rate": GaugeMetricFamily(
                "radtrace_label_prevalence",
                "Share of the latest day's readings with the label present",
                labels=["label"],
            ),
            "baseline": GaugeMetricFamily(
                "radtrace_label_prevalence_baseline", "The label's share over the baseline days", labels=["label"]
            ),
            "days": GaugeMetricFamily(
                "radtrace_label_prevalence_out_of_control_days",
                "Days in a row the label's daily share lay outside its 95 % control limits on one side",
                labels=["label"],
            ),
            "alert": GaugeMetricFamily(
                "radtrace_label_prevalence_out_of_control",
                "1 while the label's share has been outside its control limits for qa.drift_run_days days",
                labels=["label"],
            ),
        }
        for rule in state.labels:
            if rule.rate is not None:
                families["rate"].add_metric([rule.label], rule.rate)
            families["baseline"].add_metric([rule.label], rule.baseline)
            families["days"].add_metric([rule.label], rule.out_of_control_days)
            families["alert"].add_metric([rule.label], 1.0 if rule.alert else 0.0)
        yield from families.values()
        rate = GaugeMetricFamily("radtrace_failure_rate", "Failed / (failed + reported) studies in the last 24 h")
        rate.add_metric([], state.failure_rate)
        yield rate
        burst = GaugeMetricFamily(
            "radtrace_failure_burst", "1 when the last 24 h's failure share is above the baseline's beyond chance"
        )
        burst.add_metric([], 1.0 if state.failure_burst else 0.0)
        yield burst
