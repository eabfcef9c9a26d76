"""A scrape while the broker does not answer: the queue gauges are absent and the metrics log says why, once per
scrape; the depths' reader itself says nothing (``radtrace status`` showed the same failure twice: its log line and
its broker row, found by this session's fault trial)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from radtrace.store.engine import Store
from radtrace.testing.services import free_port
from radtrace.worker.metrics import QueueDepthCollector, WorkerMetrics
from worker_support import worker_settings

pytestmark = pytest.mark.integration


def test_a_scrape_with_the_broker_down_logs_its_reason_once_and_has_no_queue_gauge(
    tmp_path: Path, sqlite_store: Store, tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there
    url = str(sqlite_store.engine.url.render_as_string(hide_password=False))
    settings = worker_settings(tmp_path, url, tiny_model_dir, broker={"url": f"redis://127.0.0.1:{port}/0"})
    metrics = WorkerMetrics()
    metrics.registry.register(QueueDepthCollector(settings, sqlite_store))

    with caplog.at_level(logging.WARNING):
        text = generate_latest(metrics.registry).decode()

    assert "radtrace_store_up 1.0" in text
    assert "radtrace_broker_queue_messages{" not in text  # unknown, not 0
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    said = [message for message in warnings if "queue depths" in message]
    assert len(said) == 1, warnings
    assert said[0].startswith(f"queue depths not collected: the broker at redis://127.0.0.1:{port}/0 did not answer")
