"""The QA dashboard's figures, read with SQL aggregates and turned into :mod:`radtrace.qa` statistics.

Every query groups by the site's local day (``qa.time_zone``; :func:`.dashboard_queries.local_day`) in the
database (SQLite and PostgreSQL alike) and returns counts, never events: the dashboard over a million audit events
reads a few thousand aggregate rows. Weeks are folded from days here
(:func:`radtrace.qa.drift.period_start`), so both granularities share one set of queries. Where each figure
comes from:

* **volume** — the work tables: revisions opened (received), reported (read), skipped and failed (with their
  ``reason``), and draft SRs delivered (each revision once, on its first ``outbox`` row of kind ``sr``
  delivered); the queue now (``queued`` and ``processing`` revisions, oldest first); read by
  :mod:`.dashboard_operations`, with the failures below;
* **latency** — per revision read in the window, the instants the pipeline writes in the same transactions as the
  audit timeline's events: last image received (``instances``), queued, first claim, reported, first draft SR
  delivered to a PACS. The stages: *settle* (last image → queued), *queue wait*, *read and report* (the model's
  reading plus building the drafts), *dispatch* (→ SR at the PACS), and *total* (last image → SR at the PACS);
  p50/p95 by :func:`radtrace.qa.operations.stage_latencies`;
* **agreement** — ``finding_assessed`` and ``draft_assessed`` audit events recorded in the window that no later
  decision on the same (study, revision, label) replaced (copied into ``qa_decisions`` by
  :func:`~radtrace.console.dashboard_agreement.sync_decisions`), counted as
  :func:`radtrace.qa.agreement.agreement_by_label` counts; shares with Wilson 95 % intervals
  (:class:`radtrace.qa.intervals.Proportion`), read by :mod:`.dashboard_agreement`; the same split by the model
  version of the reading each decision was about (its last ``inference_completed`` before the decision), and per
  label per period; decisions on drafts withdrawn as wrong-patient are left out of all three and counted apart;
* **drift** — ``inference_completed`` events (their ``labels`` column: the labels found present) per day, in the
  window and the baseline before it, through :func:`radtrace.qa.drift.drift_alerts`; failures per day (revisions
  failed / failed + read) through :func:`radtrace.qa.drift.failure_bursts`;
* **input mix** — ``instances`` per day by transfer syntax, modality, body part, SOP class and sending AE; the
  reading's frontal view position from the worklist's projection (``review_items.view``);
* **outcome rates** — refusals and sanitised texts from the reading's flags (``review_items.flags``);
* **model versions** — ``inference_completed`` per day by model name and version.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Final, Literal

import sqlalchemy as sa

from radtrace.audit.events import EventType
from radtrace.audit.schema import AuditEventRow
from radtrace.console.dashboard_agreement import (
    LeftOut,
    read_agreement,
    read_agreement_by_model,
    read_agreement_by_period,
    read_left_out,
    read_left_out_by_model,
    read_left_out_by_period,
    sync_decisions,
)
from radtrace.console.dashboard_operations import FailedStudies, Queue, read_queue, read_volume
from radtrace.console.dashboard_queries import Window, as_date, has_item, local_day, seconds_between
from radtrace.console.schema import ReviewItem
from radtrace.qa.agreement import LabelAgreement
from radtrace.qa.drift import (
    ChartPoint,
    DriftAlert,
    FailureBurst,
    PeriodCount,
    drift_alerts,
    period_start,
    unlimited_prevalence,
)
from radtrace.qa.intervals import Proportion, percentile
from radtrace.qa.operations import LatencySummary, stage_latencies
from radtrace.qa.recorded_times import readable_time
from radtrace.store.engine import Store, is_postgresql
from radtrace.store.models import Instance, Job, OutboxMessage, Revision
from radtrace.worker.attempts import JOB_KIND

__all__ = [
    "LATENCY_STAGES",
    "LATENCY_TARGETS_S",
    "OTHER_REASONS",
    "SHOWN_REASONS",
    "Figures",
    "Queue",
    "Section",
    "read_figures",
    "shown_reasons",
]

#: The latency stages, in pipeline order, and how the dashboard names them.
LATENCY_STAGES: Final = {
    "settle": "last image → queued",
    "queue_wait": "queued → claimed",
    "read_and_report": "model reading + drafts",
    "dispatch": "drafts → SR at PACS",
    "total": "last image → SR at PACS",
}
#: Targets drawn against each stage's p95 (seconds). The listener waits ``listener.settle_seconds`` (10 s by
#: default) after the last image before queuing; a GPU worker reads a film in well under a minute; a PACS
#: answers a C-STORE in seconds. The whole path from the last image to the SR in the PACS should stay under
#: five minutes, so the draft is there before a radiologist opens the study.
LATENCY_TARGETS_S: Final = {"settle": 30.0, "queue_wait": 60.0, "read_and_report": 120.0, "dispatch": 60.0,
                            "total": 300.0}  # fmt: skip
#: Latency percentiles over more studies than this come from an evenly spread sample of about this many (every
#: k-th revision by ID): p95's standard error at 10,000 is about 0.2 percentile points, and the query stays fast.
LATENCY_SAMPLE: Final = 10_000
#: The dashboard's independent reads (:func:`read_figures` reads them all, or the few one chart's CSV needs).
Section = Literal["mix", "volume", "latency", "agreement", "agreement_by_model", "agreement_periods",
                  "agreement_left_out", "agreement_left_out_split", "drift", "rates", "models", "queue"]  # fmt: skip
#: Sections only a CSV needs, not read for the page: the split of the decisions left out per model and label (the
#: agreement CSVs' per-row column) costs an index-only count's five times on SQLite (74 against 14 ms at 2,000
#: withdrawn drafts among 22,000), and the page shows the total only.
CSV_ONLY: Final[frozenset[Section]] = frozenset({"agreement_left_out_split"})
#: Skip and failure reasons named one by one on the page and in the volume CSV; the rest count as one.
SHOWN_REASONS: Final = 10
OTHER_REASONS: Final = "(other reasons)"
#: PostgreSQL work_mem for the input mix's read only (SET LOCAL: this transaction); None keeps the server's.
MIX_WORK_MEM: Final[str | None] = "32MB"
#: How many of the dashboard's independent reads run at once (each on its own connection).
READERS: Final = 4
MIX_ATTRIBUTES: Final = (
    "view position", "manufacturer", "manufacturer's model name", "pixel spacing (mm)", "photometric interpretation",
    "transfer syntax", "modality", "body part", "SOP class", "sending AE",
)  # fmt: skip


@dataclass
class Figures:
    """Everything the dashboard draws, per period start (``periods``)."""

    window: Window
    periods: list[date]
    received: dict[date, int] = field(default_factory=dict)
    read: dict[date, int] = field(default_factory=dict)
    skipped: dict[date, Counter[str]] = field(default_factory=dict)
    #: Failed reading attempts (``study_failed`` events) per period, by reason; a retried study's too.
    failed: dict[date, Counter[str]] = field(default_factory=dict)
    #: Per period, the study revisions that failed in it; and in the whole window (each revision once).
    failed_studies: dict[date, FailedStudies] = field(default_factory=dict)
    failed_in_window: FailedStudies = field(default_factory=FailedStudies)
    delivered: dict[date, int] = field(default_factory=dict)
    queue: Queue = field(default_factory=lambda: Queue(0, 0, 0, None))
    latencies: list[LatencySummary] = field(default_factory=list)
    #: Per period: p50 and p95 of the whole path (last image → SR at the PACS), and how many studies.
    total_latency: dict[date, tuple[float, float, int]] = field(default_factory=dict)
    #: Studies read in the window, and k when the latencies come from every k-th of them (1: all).
    latency_sample: tuple[int, int] = (0, 1)
    agreement: list[LabelAgreement] = field(default_factory=list)
    #: The current decisions in the window left out of every agreement figure: on drafts withdrawn as wrong-patient.
    agreement_left_out: LeftOut = field(default_factory=LeftOut)
    #: The same per model (name and version) of the reading decided, models in name order.
    agreement_by_model: dict[str, list[LabelAgreement]] = field(default_factory=dict)
    #: Per model (as :attr:`agreement_by_model` names it), per label: the current decisions in the window left out
    #: (:attr:`agreement_left_out`'s decisions, split): the agreement CSVs' per-row column.
    agreement_left_out_by_model: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Per label, per period start: the current decisions recorded in that period, by decision.
    agreement_periods: dict[str, dict[date, Counter[str]]] = field(default_factory=dict)
    #: Per label, per period start: the current decisions recorded in that period left out of the agreement figures
    #: (on drafts withdrawn as wrong-patient); they sum to :attr:`agreement_left_out`'s decisions.
    agreement_periods_left_out: dict[str, dict[date, int]] = field(default_factory=dict)
    prevalence: dict[str, list[ChartPoint]] = field(default_factory=dict)
    drift: list[DriftAlert] = field(default_factory=list)
    failures: list[PeriodCount] = field(default_factory=list)
    bursts: list[FailureBurst] = field(default_factory=list)
    baseline_failures: Proportion | None = None
    mix: dict[str, dict[date, Counter[str]]] = field(default_factory=dict)
    refused: dict[date, Proportion] = field(default_factory=dict)
    sanitised: dict[date, Proportion] = field(default_factory=dict)
    models: dict[date, Counter[str]] = field(default_factory=dict)

    def skip_reasons(self) -> list[tuple[str, int]]:
        """The skip reasons in the window with their counts, most frequent first (see :func:`shown_reasons`)."""
        return shown_reasons(sum(self.skipped.values(), Counter[str]()))

    def failure_reasons(self) -> list[tuple[str, int]]:
        """The failure reasons in the window with their counts, most frequent first (see :func:`shown_reasons`)."""
        return shown_reasons(sum(self.failed.values(), Counter[str]()))


def shown_reasons(counts: Counter[str]) -> list[tuple[str, int]]:
    """The :data:`SHOWN_REASONS` most frequent reasons with their counts, then, when there are more, one entry
    :data:`OTHER_REASONS` with the rest's sum. A reason is free text (a model server's error message, an exception):
    before, a year of them made one table row and one volume CSV column each, hundreds of them."""
    ranked = counts.most_common()
    if len(ranked) <= SHOWN_REASONS:
        return ranked
    return [*ranked[: SHOWN_REASONS - 1], (OTHER_REASONS, sum(count for _, count in ranked[SHOWN_REASONS - 1 :]))]


# --- reading ---------------------------------------------------------------------------------------------------


def read_figures(store: Store, window: Window, now: datetime, sections: Collection[Section] | None = None) -> Figures:
    """Every figure of the dashboard for ``window`` (see the module doc), or only those of ``sections`` (one chart's
    CSV: before, each CSV read every figure, a year's input mix included, to write one table); ``now`` dates the
    queue's waits.

    The sections are independent reads, so they run side by side, each in its own session (SQLite in WAL mode
    and PostgreSQL both serve concurrent readers; the database does the work, with the GIL released)."""
    figures = Figures(window, window.periods())
    fold = _folder(window)
    sync_decisions(store)

    def section(read: Callable[[Any], None]) -> Callable[[], None]:
        def run() -> None:
            with store.session("reading the QA dashboard") as session:
                read(session)

        return run

    def queue(session: Any) -> None:
        figures.queue = read_queue(session, now)

    def agreement(session: Any) -> None:
        figures.agreement = read_agreement(session, window)

    def agreement_left_out(session: Any) -> None:  # the page's note
        figures.agreement_left_out = read_left_out(session, window)

    def agreement_left_out_split(session: Any) -> None:  # the agreement CSVs' per-row column
        figures.agreement_left_out, figures.agreement_left_out_by_model = read_left_out_by_model(session, window)

    def agreement_by_model(session: Any) -> None:
        figures.agreement_by_model = read_agreement_by_model(session, store, window)

    def agreement_periods(session: Any) -> None:
        for label, per_day in read_agreement_by_period(session, store, window).items():
            per_period = figures.agreement_periods.setdefault(label, {})
            for day, counts in per_day.items():
                per_period.setdefault(fold(day), Counter()).update(counts)
        for label, left_per_day in read_left_out_by_period(session, store, window).items():
            left = figures.agreement_periods_left_out.setdefault(label, {})
            for day, count in left_per_day.items():
                left[fold(day)] = left.get(fold(day), 0) + count

    reads: dict[Section, Callable[[Any], None]] = {
        "mix": lambda session: _mix(session, store, window, figures, fold),
        "volume": lambda session: read_volume(session, store, window, figures, fold),
        "latency": lambda session: _latencies(session, store, window, figures, fold),
        "agreement": agreement,
        "agreement_by_model": agreement_by_model,
        "agreement_periods": agreement_periods,
        "agreement_left_out": agreement_left_out,
        "agreement_left_out_split": agreement_left_out_split,
        "drift": lambda session: _drift(session, store, window, figures, fold),
        "rates": lambda session: _rates(session, store, window, figures, fold),
        "models": lambda session: _models(session, store, window, figures, fold),
        "queue": queue,
    }
    chosen = set(reads) - CSV_ONLY if sections is None else set(sections)
    wanted = [read for name, read in reads.items() if name in chosen]
    with ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="qa-dashboard") as pool:
        for done in [pool.submit(section(read)) for read in wanted]:
            done.result()  # re-raises a section's error here
    return figures


def _models(session: Any, store: Store, window: Window, figures: Figures, fold: Any) -> None:
    rows = session.execute(
        sa.select(local_day(store, window, AuditEventRow.recorded_at), AuditEventRow.model_name,
                  AuditEventRow.model_version, sa.func.count())
        .where(AuditEventRow.event_type == EventType.INFERENCE_COMPLETED.value,
               window.within(AuditEventRow.recorded_at, window.start, window.last),
               readable_time(store, AuditEventRow.recorded_at))
        .group_by(sa.literal_column("1"), AuditEventRow.model_name, AuditEventRow.model_version)
    )  # fmt: skip
    for day, name, version, count in rows:
        model = f"{name or '(unnamed)'} {version or ''}".strip()
        figures.models.setdefault(fold(day), Counter())[model] += count


def _folder(window: Window) -> Any:
    """The period start of a day as the queries give it (text or a date), remembered per value: the sections fold
    the same few hundred days over and over (the input mix once per attribute of each of its rows)."""
    starts: dict[str | date, date] = {}

    def fold(day: str | date) -> date:
        start = starts.get(day)
        if start is None:  # sections run in threads: a day folded twice at once is only computed twice
            start = starts[day] = period_start(as_date(day) if isinstance(day, str) else day, window.period)
        return start

    return fold


def _latencies(session: Any, store: Store, window: Window, figures: Figures, fold: Any) -> None:
    last_image = (
        sa.select(sa.func.max(Instance.received_at)).where(Instance.revision_id == Revision.id).scalar_subquery()
    )
    delivered = (
        sa.select(sa.func.min(OutboxMessage.delivered_at))
        .where(OutboxMessage.revision_id == Revision.id, OutboxMessage.kind == "sr",
               OutboxMessage.state == "delivered")
        .scalar_subquery()
    )  # fmt: skip
    # `radtrace study retry` queues a failed revision again (queued_at = the retry) and the worker keeps the first
    # claim's started_at: for such a revision the claim that read it is its first job after the retry, and the
    # settle time (last image -> the first queueing, written over) is unknown. Before, its queue wait came out
    # negative and the hours between failure and retry counted as the model's reading.
    requeued = Revision.started_at < Revision.queued_at
    claimed_again = (
        sa.select(sa.func.min(Job.started_at))
        .where(Job.revision_id == Revision.id, Job.kind == JOB_KIND, Job.started_at >= Revision.queued_at)
        .scalar_subquery()
    )
    claimed = sa.case((requeued, claimed_again), else_=Revision.started_at)
    settle = sa.case((requeued, sa.null()), else_=seconds_between(store, Revision.queued_at, last_image))
    in_window = window.within(Revision.reported_at, window.start, window.last)
    read = int(session.scalar(sa.select(sa.func.count()).select_from(Revision).where(in_window)) or 0)
    every = math.ceil(read / LATENCY_SAMPLE) if read > LATENCY_SAMPLE else 1
    sampled = [in_window] if every == 1 else [in_window, Revision.id % every == 0]
    figures.latency_sample = (read, every)
    rows = session.execute(
        sa.select(
            local_day(store, window, Revision.reported_at),
            settle,
            seconds_between(store, claimed, Revision.queued_at),
            seconds_between(store, Revision.reported_at, claimed),
            seconds_between(store, delivered, Revision.reported_at),
            seconds_between(store, delivered, last_image),
        ).where(*sampled)
    )
    names = list(LATENCY_STAGES)
    durations: list[tuple[str, float]] = []
    totals: dict[date, list[float]] = {}
    for day, *values in rows:
        durations += [(names[i], float(value)) for i, value in enumerate(values) if value is not None]
        if values[-1] is not None:
            totals.setdefault(fold(day), []).append(float(values[-1]))
    summaries = {s.stage: s for s in stage_latencies(durations, LATENCY_TARGETS_S)}
    figures.latencies = [summaries[name] for name in names if name in summaries]
    figures.total_latency = {
        start: (percentile(values, 50), percentile(values, 95), len(values)) for start, values in totals.items()
    }


def _drift(session: Any, store: Store, window: Window, figures: Figures, fold: Any) -> None:
    """Label prevalence p-charts per period; the drift rule always on days (as the Prometheus rule), so a weekly
    chart alerts on the same evidence as a daily one."""
    table = AuditEventRow
    base_first, base_last = window.baseline
    rows = session.execute(
        sa.select(local_day(store, window, table.recorded_at), table.labels, sa.func.count())
        .where(table.event_type == EventType.INFERENCE_COMPLETED.value,
               window.within(table.recorded_at, base_first, window.last), readable_time(store, table.recorded_at))
        .group_by(sa.literal_column("1"), table.labels)
    )  # fmt: skip
    totals: dict[date, int] = {}
    present: dict[str, dict[date, int]] = {}
    for text, labels, count in rows:
        day = as_date(text)
        totals[day] = totals.get(day, 0) + count
        for label in {part for part in (labels or "").split(",") if part}:
            per_label = present.setdefault(label, {})
            per_label[day] = per_label.get(day, 0) + count
    for offset in range((window.last - window.start).days + 1):  # a day without readings still has a place
        totals.setdefault(window.start + timedelta(days=offset), 0)
    monitored = (window.start, window.last)
    charts, figures.drift = drift_alerts(
        totals, present, baseline=(base_first, base_last), monitored=monitored, run=window.drift_run
    )
    if window.period == "day":
        figures.prevalence = _with_unlimited(charts, totals, present, monitored)
        return
    weekly: dict[date, int] = {}
    for day, count in totals.items():
        weekly[fold(day)] = weekly.get(fold(day), 0) + count
    weekly_present: dict[str, dict[date, int]] = {}
    for label, per_day in present.items():
        per_week = weekly_present.setdefault(label, {})
        for day, count in per_day.items():
            per_week[fold(day)] = per_week.get(fold(day), 0) + count
    weekly_charts, _ = drift_alerts(
        weekly, weekly_present, baseline=(base_first, base_last), monitored=monitored, run=window.drift_run
    )
    figures.prevalence = _with_unlimited(weekly_charts, weekly, weekly_present, (fold(window.start), window.last))


def _with_unlimited(
    charts: dict[str, list[ChartPoint]],
    totals: Mapping[date, int],
    present: Mapping[str, Mapping[date, int]],
    monitored: tuple[date, date],
) -> dict[str, list[ChartPoint]]:
    """``charts`` and, for each label present in the window that has none (no reading in the baseline), its
    rates without limits (:func:`radtrace.qa.drift.unlimited_prevalence`), in label order."""
    in_window = {
        label: counts for label, counts in present.items()
        if label not in charts and any(monitored[0] <= day <= monitored[1] and n for day, n in counts.items())
    }  # fmt: skip
    return dict(sorted({**charts, **unlimited_prevalence(totals, in_window, monitored=monitored)}.items()))


def _mix(session: Any, store: Store, window: Window, figures: Figures, fold: Any) -> None:
    first, last = window.start, window.last
    columns = {
        "transfer syntax": Instance.transfer_syntax_uid,
        "modality": Instance.modality,
        "body part": Instance.body_part,
        "SOP class": Instance.sop_class_uid,
        "sending AE": Instance.calling_ae,
        "manufacturer": Instance.manufacturer,
        "manufacturer's model name": Instance.manufacturer_model,
        "pixel spacing (mm)": Instance.pixel_spacing_mm,
        "photometric interpretation": Instance.photometric,
    }
    if MIX_WORK_MEM and is_postgresql(store.engine):
        # Ten grouping keys over a year's instances (100k): at PostgreSQL's default 4 MB the GROUP BY sorted on
        # disk (external merge, 13 MB); with room the planner hashes in memory (bench/qa_dashboard.py).
        session.execute(sa.text(f"SET LOCAL work_mem = '{MIX_WORK_MEM}'"))
    rows = session.execute(
        sa.select(local_day(store, window, Instance.received_at), *columns.values(), sa.func.count())
        .where(window.within(Instance.received_at, first, last))
        .group_by(*(sa.literal_column(str(i)) for i in range(1, len(columns) + 2)))
    )  # fmt: skip
    figures.mix = {name: {} for name in MIX_ATTRIBUTES}
    # One row per day and combination of the ten values (20,000 for a year of 160,000 studies): each row's period
    # and its attributes' counters are looked up once, not once per attribute. Before, the fold of the day and a
    # new Counter per attribute and row took 1.3 s of the year's 2 s read outside SQL (bench/qa_dashboard.py).
    per_period: dict[date, list[Counter[str]]] = {}
    for day, *values, count in rows:
        start = fold(day)
        counters = per_period.get(start)
        if counters is None:
            counters = per_period[start] = [Counter() for _ in columns]
        for counter, value in zip(counters, values, strict=True):
            counter[(f"{value:g}" if isinstance(value, float) else value) or "(none)"] += count
    for start, counters in per_period.items():
        for name, counter in zip(columns, counters, strict=True):
            figures.mix[name][start] = counter
    views = session.execute(
        sa.select(local_day(store, window, ReviewItem.reported_at), ReviewItem.view, sa.func.count())
        .where(window.within(ReviewItem.reported_at, first, last))
        .group_by(sa.literal_column("1"), ReviewItem.view)
    )
    for day, view, count in views:
        figures.mix["view position"].setdefault(fold(day), Counter())[view or "(none)"] += count


def _rates(session: Any, store: Store, window: Window, figures: Figures, fold: Any) -> None:
    flags = ReviewItem.flags
    rows = session.execute(
        sa.select(
            local_day(store, window, ReviewItem.reported_at),
            sa.func.count(),
            sa.func.sum(sa.case((has_item(store, flags, "refused"), 1), else_=0)),
            sa.func.sum(sa.case((has_item(store, flags, "text-sanitised"), 1), else_=0)),
        )
        .where(window.within(ReviewItem.reported_at, window.start, window.last))
        .group_by(sa.literal_column("1"))
    )
    per_period: dict[date, list[int]] = {}
    for day, total, refused, sanitised in rows:
        counts = per_period.setdefault(fold(day), [0, 0, 0])
        counts[0] += int(total)
        counts[1] += int(refused or 0)
        counts[2] += int(sanitised or 0)
    for start, (total, refused, sanitised) in per_period.items():
        figures.refused[start] = Proportion.of(refused, total)
        figures.sanitised[start] = Proportion.of(sanitised, total)


def top_values(per_period: Mapping[date, Counter[str]], most: int = 6) -> list[str]:
    """The ``most`` most frequent values over all periods (the rest are drawn as "other")."""
    total: Counter[str] = Counter()
    for counter in per_period.values():
        total.update(counter)
    return [value for value, _ in total.most_common(most)]
