"""A planted drift in one label and a planted failure burst, in seeded synthetic data (90 days, ~9,000 studies),
are flagged, and nothing else is: through the dashboard's functions and through the Prometheus rules."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from qa_support import DRIFT_LABEL, START, synthetic_history
from radtrace.config import QaSettings
from radtrace.qa.drift import drift_alerts, failure_bursts, label_prevalence
from radtrace.qa.metrics import evaluate_rules
from radtrace.qa.operations import failure_counts, outcome_rates

pytestmark = pytest.mark.unit

HISTORY = synthetic_history()
BASELINE = (START, START + timedelta(days=59))
MONITORED = (START + timedelta(days=60), START + timedelta(days=89))


def test_the_history_is_several_thousand_studies_over_90_days() -> None:
    assert 8_000 < len(HISTORY.outcomes) < 10_000
    days = {when.date() for when, _ in HISTORY.readings}
    assert min(days) == START
    assert len(days) == 90


def test_the_planted_drift_is_flagged_for_that_label_only_and_not_before_it_began() -> None:
    totals, present = label_prevalence(HISTORY.readings)
    charts, alerts = drift_alerts(totals, present, baseline=BASELINE, monitored=MONITORED, run=7)
    assert {(alert.label, alert.side) for alert in alerts} == {(DRIFT_LABEL, "above")}
    # flagged from the drift's first days to the end; a day of binomial noise inside the limits may split the
    # run in two (with this seed: 12 days, one day inside, 7 days), each run a full week or more
    assert HISTORY.drift_from <= alerts[0].first <= HISTORY.drift_from + timedelta(days=2)
    assert alerts[-1].last == MONITORED[1]
    assert sum(alert.periods for alert in alerts) >= 18
    # before the drift the label sits inside its limits (a stray day outside is allowed, a 7-day run is not)
    before = [p for p in charts[DRIFT_LABEL] if p.start < HISTORY.drift_from]
    assert sum(p.side is not None for p in before) <= 2
    assert set(charts) == {"Atelectasis", "Cardiomegaly", "Lung Opacity", "Pleural Effusion", "Pneumothorax",
                           "Support Devices"}  # fmt: skip


def test_the_planted_failure_burst_is_flagged_on_its_day_only() -> None:
    rates = outcome_rates(HISTORY.outcomes)
    counts = failure_counts(rates)
    baseline = [c for c in counts if BASELINE[0] <= c.start <= BASELINE[1]]
    monitored = [c for c in counts if MONITORED[0] <= c.start <= MONITORED[1]]
    bursts = failure_bursts(monitored, baseline)
    assert [burst.start for burst in bursts] == [HISTORY.burst_day]
    [burst] = bursts
    assert burst.failures.rate is not None
    assert burst.failures.rate > 0.2
    assert burst.baseline.rate == pytest.approx(0.01, abs=0.004)


def _rules_at(now: datetime) -> tuple[dict[str, bool], bool, float]:
    endings = [(o.when, o.ending == "failed") for o in HISTORY.outcomes if o.when <= now]  # type: ignore[operator]
    readings = [(when, labels) for when, labels in HISTORY.readings if when <= now]
    state = evaluate_rules(readings, endings, now, QaSettings(baseline_days=28, monitored_days=14, drift_run_days=7))
    return {rule.label: rule.alert for rule in state.labels}, state.failure_burst, state.failure_rate


def test_the_prometheus_rules_raise_the_drift_once_it_lasted_a_week_and_the_burst_on_its_day() -> None:
    def at(day: int, hour: int = 23) -> datetime:
        return datetime.combine(START + timedelta(days=day), time(hour), tzinfo=UTC)

    drift, burst, _ = _rules_at(at(65))  # before the drift
    assert not any(drift.values())
    assert not burst
    drift, _, _ = _rules_at(at(73))  # the drift is 4 days old: not yet a week
    assert not any(drift.values())
    drift, _, _ = _rules_at(at(79))  # 10 days: flagged, and only that label
    assert [label for label, alert in drift.items() if alert] == [DRIFT_LABEL]
    _, burst, rate = _rules_at(at(80))  # the burst day's last 24 h
    assert burst
    assert rate > 0.2
    _, burst, rate = _rules_at(at(82))
    assert not burst
    assert rate < 0.05
