"""QA statistics pinned against hand-computed and published values.

Wilson intervals: Newcombe (1998), "Two-sided confidence intervals for the single proportion", Stat Med
17:857-872, table I, method 3 (score interval without continuity correction): 81/263, 15/148, 0/20, 1/29.
p-chart limits and percentiles: worked by hand in each test's comments.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from radtrace.audit.events import EventType
from radtrace.audit.queries import AuditRecord, build_timeline
from radtrace.qa.agreement import agreement_by_label, assessment_from_event
from radtrace.qa.drift import (
    ChartPoint,
    PeriodCount,
    baseline_limits,
    drift_alerts,
    failure_bursts,
    label_prevalence,
    p_chart,
    period_start,
    runs_out_of_control,
)
from radtrace.qa.intervals import Z_95, Proportion, percentile, wilson_interval
from radtrace.qa.operations import StudyOutcome, input_mix, outcome_rates, stage_durations, stage_latencies

pytestmark = pytest.mark.unit

D0 = date(2026, 3, 2)  # a Monday


@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_interval_matches_newcombes_table(successes: int, trials: int, low: float, high: float) -> None:
    got = wilson_interval(successes, trials)
    assert got == (pytest.approx(low, abs=5e-5), pytest.approx(high, abs=5e-5))


def test_wilson_interval_by_hand_and_at_the_edges() -> None:
    # 8/10, z = 1.96: centre (0.8 + 0.19208) / 1.38415 = 0.71674; half 1.96/1.38415 * sqrt(0.016 + 0.0096040)
    # = 1.41602 * 0.16001 = 0.22658  ->  (0.49016, 0.94332)
    assert wilson_interval(8, 10) == (pytest.approx(0.49016, abs=1e-5), pytest.approx(0.94332, abs=1e-5))
    assert wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="not a proportion"):
        wilson_interval(3, 2)
    share = Proportion.of(8, 10)
    assert (share.rate, share.low, share.high) == (0.8, *wilson_interval(8, 10))
    assert Proportion.of(0, 0).rate is None


def test_percentiles_interpolate_between_closest_ranks() -> None:
    values = [float(v) for v in range(10, 0, -1)]  # 10 … 1, unsorted on purpose
    assert percentile(values, 50) == 5.5  # rank (10 - 1) * 0.5 = 4.5: halfway between 5 and 6
    assert percentile(values, 95) == pytest.approx(9.55)  # rank 8.55: 9 + 0.55 * (10 - 9)
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 10.0
    assert percentile([7.0], 95) == 7.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_p_chart_limits_from_a_pooled_baseline() -> None:
    # baseline 10 + 12 + 8 = 30 of 300: centre 0.1. n = 100: sigma = sqrt(0.1 * 0.9 / 100) = 0.03,
    # limits 0.1 -/+ 1.96 * 0.03 = (0.0412, 0.1588). n = 25: sigma 0.06, limits (0, 0.2176) (0 after clipping).
    limits = baseline_limits([PeriodCount(D0, 10, 100), PeriodCount(D0, 12, 100), PeriodCount(D0, 8, 100)])
    assert limits.centre == pytest.approx(0.1)
    assert limits.limits(100) == (pytest.approx(0.041201, abs=1e-6), pytest.approx(0.158799, abs=1e-6))
    assert limits.limits(25) == (0.0, pytest.approx(0.217598, abs=1e-6))
    points = p_chart(
        [
            PeriodCount(D0 + timedelta(days=3), 5, 25),  # 0.20 < 0.2176: within
            PeriodCount(D0 + timedelta(days=1), 20, 100),  # 0.20 > 0.1588: above
            PeriodCount(D0 + timedelta(days=2), 3, 100),  # 0.03 < 0.0412: below
            PeriodCount(D0 + timedelta(days=4), 0, 0),  # no studies: no verdict
        ],
        limits,
    )
    assert [(p.start, p.rate, p.side) for p in points] == [
        (D0 + timedelta(days=1), 0.2, "above"),
        (D0 + timedelta(days=2), 0.03, "below"),
        (D0 + timedelta(days=3), 0.2, None),
        (D0 + timedelta(days=4), None, None),
    ]
    with pytest.raises(ValueError, match="no studies"):
        baseline_limits([PeriodCount(D0, 0, 0)])


def _point(day: int, side: str | None, total: int = 10) -> ChartPoint:
    return ChartPoint(D0 + timedelta(days=day), 0, total, 0.0 if total else None, 0.1, 0.0, 0.2, side)  # type: ignore[arg-type]


def test_a_run_is_consecutive_days_on_one_side_and_empty_days_neither_extend_nor_end_it() -> None:
    points = [
        _point(0, "above"),
        _point(1, "above"),
        _point(2, "above"),
        _point(3, None),  # ends the first run (3 days)
        _point(4, "above"),
        _point(5, None, total=0),  # no studies: skipped
        _point(6, "above"),
        _point(7, "below"),  # the other side ends it (2 days: 4 and 6)
        _point(8, "below"),
    ]
    assert runs_out_of_control(points, run=2) == [
        ("above", D0, D0 + timedelta(days=2), 3),
        ("above", D0 + timedelta(days=4), D0 + timedelta(days=6), 2),
        ("below", D0 + timedelta(days=7), D0 + timedelta(days=8), 2),
    ]
    assert runs_out_of_control(points, run=3) == [("above", D0, D0 + timedelta(days=2), 3)]


def test_label_prevalence_counts_studies_per_period_and_a_week_starts_on_monday() -> None:
    when = datetime(2026, 3, 5, 23, 59, tzinfo=UTC)  # a Thursday
    assert period_start(when, "week") == D0
    assert period_start(when) == date(2026, 3, 5)
    totals, present = label_prevalence(
        [(when, ["Edema", "Edema"]), (when, []), (D0, ["Edema", "Pneumothorax"])], period="week"
    )
    assert totals == {D0: 3}
    assert present == {"Edema": {D0: 2}, "Pneumothorax": {D0: 1}}


def test_drift_alert_needs_the_whole_run_outside_the_limits() -> None:
    # 20 studies a day; the label in 2 of them (0.1) for 10 baseline days, then 10 of 20 (0.5) for 3 days.
    # Limits at n = 20: 0.1 +/- 1.96 * sqrt(0.09 / 20) = (0, 0.2315): 0.5 is above on each of the 3 days.
    totals = {D0 + timedelta(days=d): 20 for d in range(13)}
    counts = {D0 + timedelta(days=d): (2 if d < 10 else 10) for d in range(13)}
    baseline = (D0, D0 + timedelta(days=9))
    monitored = (D0 + timedelta(days=10), D0 + timedelta(days=12))
    charts, alerts = drift_alerts(totals, {"Edema": counts}, baseline=baseline, monitored=monitored, run=3)
    assert [p.side for p in charts["Edema"]] == ["above"] * 3
    assert [(a.label, a.side, a.first, a.last, a.periods) for a in alerts] == [
        ("Edema", "above", D0 + timedelta(days=10), D0 + timedelta(days=12), 3)
    ]
    _, none = drift_alerts(totals, {"Edema": counts}, baseline=baseline, monitored=monitored, run=4)
    assert none == []


def test_a_failure_burst_is_a_period_above_the_baseline_beyond_chance() -> None:
    baseline = [PeriodCount(D0 + timedelta(days=d), 1, 100) for d in range(30)]  # 30 of 3000 = 1 %
    # z = 3.2905 (99.9 %). Baseline 30/3000: centre (0.01 + 0.0018046) / 1.0036092 = 0.011762, half-width
    # 3.27867 * sqrt(3.3e-6 + 3.0077e-7) = 0.006222: upper 0.017984. A day's 6/100: centre 0.102988, half
    # 2.96903 * sqrt(0.000564 + 0.00027069) = 0.085779, lower 0.017209 (not above); 7/100: centre 0.112010,
    # half 0.090139, lower 0.021871 (above: a burst).
    periods = [PeriodCount(D0 + timedelta(days=30), 6, 100), PeriodCount(D0 + timedelta(days=31), 7, 100)]
    [burst] = failure_bursts(periods, baseline)
    assert burst.start == D0 + timedelta(days=31)
    assert burst.baseline.high == pytest.approx(0.017984, abs=1e-6)
    assert burst.failures.low == pytest.approx(0.021871, abs=1e-6)
    assert burst.baseline.count == 30
    assert failure_bursts([PeriodCount(D0, 0, 0)], baseline) == []


def _assessed(seq: int, study: str, label: str, decision: str, supersedes: int | None = None) -> object:
    payload = {"revision": 1, "finding": label, "model_status": "present", "decision": decision,
               "status": "absent" if decision == "modify" else None, "supersedes": supersedes}  # fmt: skip
    return assessment_from_event(seq, study, payload)


def test_agreement_per_label_counts_each_finding_once_as_last_decided() -> None:
    events = [_assessed(n, f"1.2.{n}", "Pleural Effusion", "accept") for n in range(1, 9)]  # 8 accepted
    events += [
        _assessed(20, "1.2.20", "Pleural Effusion", "accept"),
        _assessed(21, "1.2.20", "Pleural Effusion", "reject", supersedes=20),  # changed their mind: 1 rejected
        _assessed(22, "1.2.22", "Pleural Effusion", "modify"),  # 1 modified
        _assessed(30, "1.2.30", "Pneumothorax", "reject"),
    ]
    assert assessment_from_event(40, "1.2.40", {"decision": "shrug", "finding": "x", "revision": 1}) is None
    result = agreement_by_label(e for e in events if e is not None)  # type: ignore[misc]
    assert list(result) == ["Pleural Effusion", "Pneumothorax"]
    effusion = result["Pleural Effusion"]
    assert effusion.total == 10
    assert (effusion.accepted.count, effusion.rejected.count, effusion.modified.count) == (8, 1, 1)
    assert (effusion.accepted.low, effusion.accepted.high) == (
        pytest.approx(0.49016, abs=1e-5),
        pytest.approx(0.94332, abs=1e-5),
    )
    assert effusion.studies["reject"] == ("1.2.20",)
    assert effusion.studies["modify"] == ("1.2.22",)
    assert result["Pneumothorax"].rejected.rate == 1.0


def test_outcome_rates_per_day_with_reasons() -> None:
    day = datetime(2026, 3, 2, 8, tzinfo=UTC)
    outcomes = (
        [StudyOutcome(day, "reported") for _ in range(7)]
        + [StudyOutcome(day, "reported", refused=True), StudyOutcome(day, "reported", sanitised=True)]
        + [StudyOutcome(day, "failed", reason="model timeout"), StudyOutcome(day, "skipped", reason="no frontal")]
        + [StudyOutcome(day + timedelta(days=1), "failed", reason=None)]
    )
    first, second = outcome_rates(outcomes)
    assert first.ended == 11
    assert (first.failed.count, first.failed.total) == (1, 10)  # of the 9 read and 1 failed
    assert (first.refused.count, first.refused.total) == (1, 9)
    assert (first.sanitised.count, first.skipped.count, first.skipped.total) == (1, 1, 11)
    assert first.failure_reasons == {"model timeout": 1}
    assert first.skip_reasons == {"no frontal": 1}
    assert (second.start, second.failed.rate, second.failure_reasons) == (date(2026, 3, 3), 1.0, {"unknown": 1})


def _record(seq: int, kind: EventType, at: datetime) -> AuditRecord:
    return AuditRecord(
        seq=seq, recorded_at=at, event_type=kind.value, dicom_event_id="", outcome="success", actor_ae=None,
        actor_host=None, actor_user=None, actor_process="test", study_uid="1.2.3", accession=None, patient_id=None,
        model_name=None, model_version=None, labels=(), payload={}, prev_hash="", hash="",
    )  # fmt: skip


def test_stage_latencies_from_audit_timelines_with_a_target() -> None:
    timelines = []
    for n in range(10):  # inference takes 1 … 10 s, dispatch 0.5 s
        t0 = datetime(2026, 3, 2, tzinfo=UTC)
        events = [
            (EventType.INSTANCE_RECEIVED, 0.0),
            (EventType.STUDY_QUEUED, 2.0),
            (EventType.INFERENCE_STARTED, 3.0),
            (EventType.INFERENCE_COMPLETED, 3.0 + n + 1),
            (EventType.REPORT_CREATED, 4.0 + n + 1),
            (EventType.DISPATCH_DELIVERED, 4.5 + n + 1),
        ]
        records = [_record(i, kind, t0 + timedelta(seconds=s)) for i, (kind, s) in enumerate(events)]
        timelines.append(build_timeline("1.2.3", records))
    summary = {s.stage: s for s in stage_latencies(stage_durations(timelines), targets={"total": 12.0})}
    assert list(summary) == ["receive_to_queue", "queue_wait", "inference", "report", "dispatch", "total"]
    assert (summary["inference"].count, summary["inference"].p50, summary["inference"].p95) == (
        10,
        5.5,
        pytest.approx(9.55),
    )
    assert summary["dispatch"].p95 == pytest.approx(0.5)
    total = summary["total"]  # 5.5 … 14.5 s: p50 10.0; over 12 s: 13.5, 14.5 and 12.5 -> 3 of 10
    assert total.p50 == pytest.approx(10.0)
    assert total.over_target is not None
    assert (total.over_target.count, total.over_target.total) == (3, 10)


def test_input_mix_counts_values_per_period() -> None:
    day = datetime(2026, 3, 2, 9, tzinfo=UTC)
    images = [
        (day, {"manufacturer": "ACME", "transfer_syntax": "1.2.840.10008.1.2.4.90", "photometric": "MONOCHROME1"}),
        (day, {"manufacturer": "ACME", "transfer_syntax": "1.2.840.10008.1.2.1", "photometric": None}),
        (day + timedelta(days=7), {"manufacturer": "Other", "transfer_syntax": "", "photometric": "MONOCHROME2"}),
    ]
    mix = input_mix(images, period="week")
    assert mix == {
        D0: {
            "manufacturer": {"ACME": 2},
            "photometric": {"(none)": 1, "MONOCHROME1": 1},
            "transfer_syntax": {"1.2.840.10008.1.2.1": 1, "1.2.840.10008.1.2.4.90": 1},
        },
        D0 + timedelta(days=7): {
            "manufacturer": {"Other": 1},
            "photometric": {"MONOCHROME2": 1},
            "transfer_syntax": {"(none)": 1},
        },
    }
    assert pytest.approx(1.96, abs=1e-4) == Z_95
