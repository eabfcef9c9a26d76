"""The drift and failure rules as Prometheus gauges, computed from a real audit log (SQLite and PostgreSQL) and read
back with prometheus_client's own parser, as Prometheus would scrape them from the worker's metrics endpoint."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import radtrace.audit.recorder
import radtrace.worker.metrics
from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import QaSettings, Settings
from radtrace.qa.metrics import QaRuleCollector
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration

DAYS = 35
PER_DAY = 30
NOW = datetime(2026, 3, 14, 20, 0, tzinfo=UTC)  # day 34 (the last) at 20:00
FIRST = datetime(2026, 3, 14, 12, 0, tzinfo=UTC) - timedelta(days=DAYS - 1)
RULES = QaSettings(baseline_days=21, monitored_days=14, drift_run_days=7)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _plant(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """35 days of 30 readings each: Atelectasis in 1 of 5 throughout; Pleural Effusion in 1 of 10, then in 1 of 2
    over the last 8 days; one failure every other day, then 10 failures in the last day."""
    recorder = AuditRecorder(store)
    actor = Actor(process="test")
    for day in range(DAYS):
        at = FIRST + timedelta(days=day)
        monkeypatch.setattr(radtrace.audit.recorder, "utc_now", lambda at=at: at)
        events = []
        for n in range(PER_DAY):
            study = f"1.2.826.0.1.3680043.8.498.{day}.{n}"
            effusion = n % 2 == 0 if day >= DAYS - 8 else n % 10 == 0
            labels = [
                label for label, present in (("Atelectasis", n % 5 == 0), ("Pleural Effusion", effusion)) if present
            ]
            events.append(AuditEvent(EventType.INFERENCE_COMPLETED, actor, study_uid=study, labels=labels))
            events.append(AuditEvent(EventType.REPORT_CREATED, actor, study_uid=study))
        failures = 10 if day == DAYS - 1 else day % 2
        events += [
            AuditEvent(EventType.STUDY_FAILED, actor, Outcome.SERIOUS_FAILURE, study_uid=f"1.2.9.{day}.{n}")
            for n in range(failures)
        ]
        recorder.record_many(events)


def _scrape(registry: CollectorRegistry) -> Samples:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_planted_drift_and_failure_burst_are_exported_as_gauges(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    _plant(store, monkeypatch)
    registry = CollectorRegistry()
    registry.register(QaRuleCollector(Settings(qa=RULES), store, clock=lambda: NOW))
    samples = _scrape(registry)

    effusion = (("label", "Pleural Effusion"),)
    atelectasis = (("label", "Atelectasis"),)
    assert samples[("radtrace_qa_rules_up", ())] == 1
    assert samples[("radtrace_label_prevalence_out_of_control", effusion)] == 1
    assert samples[("radtrace_label_prevalence_out_of_control_days", effusion)] == 8
    assert samples[("radtrace_label_prevalence", effusion)] == 0.5
    assert samples[("radtrace_label_prevalence_baseline", effusion)] == pytest.approx(0.1)
    assert samples[("radtrace_label_prevalence_out_of_control", atelectasis)] == 0
    assert samples[("radtrace_label_prevalence_out_of_control_days", atelectasis)] == 0
    assert samples[("radtrace_label_prevalence_baseline", atelectasis)] == pytest.approx(0.2)
    # last 24 h: day 34's 30 reported and 10 failed (day 33's events at 12:00 are 32 h old)
    assert samples[("radtrace_failure_rate", ())] == pytest.approx(10 / 40)
    assert samples[("radtrace_failure_burst", ())] == 1

    # a week earlier the drift had not begun and nothing had failed in bulk
    earlier = CollectorRegistry()
    earlier.register(QaRuleCollector(Settings(qa=RULES), store, clock=lambda: NOW - timedelta(days=8)))
    before = _scrape(earlier)
    assert before[("radtrace_label_prevalence_out_of_control", effusion)] == 0
    assert before[("radtrace_failure_burst", ())] == 0
    assert before[("radtrace_failure_rate", ())] < 0.05


def test_the_worker_metrics_endpoint_serves_the_rules(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    served: dict[str, Any] = {}

    def capture(port: int, addr: str, registry: CollectorRegistry) -> None:
        served.update(port=port, addr=addr, registry=registry)

    monkeypatch.setattr(radtrace.worker.metrics, "start_metrics_server", capture)
    radtrace.worker.metrics.serve_metrics(Settings(), store, radtrace.worker.metrics.WorkerMetrics(), 9102)
    samples = _scrape(served["registry"])
    assert served["port"] == 9102
    assert samples[("radtrace_qa_rules_up", ())] == 1
    assert samples[("radtrace_failure_burst", ())] == 0  # an empty log: nothing to alert on
    assert samples[("radtrace_failure_rate", ())] == 0
    assert ("radtrace_store_up", ()) in samples  # beside the queue depths
