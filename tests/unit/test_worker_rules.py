"""The worker's pure rules: who may claim a revision, when a retry is due, what is overdue, how Celery is set."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from radtrace.config import BrokerSettings, load_settings
from radtrace.errors import ConfigError
from radtrace.store.models import OutboxState, RevisionState
from radtrace.worker.app import DISPATCH_TASK, PROCESS_TASK, create_app, is_embedded_broker
from radtrace.worker.pipeline import claim_decision, retry_delay
from radtrace.worker.reconciler import outbox_overdue, revision_overdue
from radtrace.worker.service import queue_names
from tests_support import radtrace

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("state", "claim_expires_at", "next_attempt_at", "decision"),
    [
        (RevisionState.QUEUED, None, None, "claim"),
        (RevisionState.QUEUED, None, NOW, "claim"),
        (RevisionState.QUEUED, None, NOW + S, "not-due"),  # backing off after a retryable error
        (RevisionState.PROCESSING, NOW + S, None, "busy"),  # a live claim is never taken
        (RevisionState.PROCESSING, NOW, None, "take-over"),  # expired: its worker is gone
        (RevisionState.PROCESSING, None, None, "take-over"),
        (RevisionState.RECEIVING, None, None, "not-due"),
        (RevisionState.REPORTED, None, None, "done"),
        (RevisionState.DISPATCHED, None, None, "done"),
        (RevisionState.SKIPPED, None, None, "done"),
        (RevisionState.FAILED, None, None, "done"),
    ],
)
def test_claim_decision(
    state: RevisionState, claim_expires_at: datetime | None, next_attempt_at: datetime | None, decision: str
) -> None:
    assert claim_decision(state, claim_expires_at, next_attempt_at, NOW) == decision


def test_a_worker_that_finds_its_own_live_claim_takes_it_over_at_once() -> None:
    # its earlier attempt died without releasing the claim (the database went away mid-failure)
    assert claim_decision(RevisionState.PROCESSING, NOW + 900 * S, None, NOW, ours=True) == "take-over"
    assert claim_decision(RevisionState.REPORTED, None, None, NOW, ours=True) == "done"


def test_retry_delay_doubles_from_the_initial_and_is_capped() -> None:
    settings = BrokerSettings(retry_backoff_initial_s=10, retry_backoff_max_s=60)
    assert [retry_delay(settings, n).total_seconds() for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 60, 60]


AFTER = timedelta(seconds=60)


@pytest.mark.parametrize(
    ("state", "times", "overdue"),
    [
        (RevisionState.QUEUED, {"queued_at": NOW - 59 * S}, False),  # its doorbell may still be on its way
        (RevisionState.QUEUED, {"queued_at": NOW - 60 * S}, True),
        (RevisionState.QUEUED, {"queued_at": NOW - 600 * S, "next_attempt_at": NOW - 10 * S}, False),  # retry due
        (RevisionState.QUEUED, {"queued_at": NOW - 600 * S, "next_attempt_at": NOW + S}, False),  # backing off
        (RevisionState.QUEUED, {"queued_at": NOW - 600 * S, "rung_at": NOW - 30 * S}, False),  # rung lately
        (RevisionState.QUEUED, {"queued_at": NOW - 600 * S, "rung_at": NOW - 61 * S}, True),
        (RevisionState.QUEUED, {}, True),
        (RevisionState.PROCESSING, {"claim_expires_at": NOW + S}, False),  # a worker is on it
        (RevisionState.PROCESSING, {"claim_expires_at": NOW - S}, True),  # its worker died
        (RevisionState.PROCESSING, {"claim_expires_at": NOW - 10 * S, "rung_at": NOW - 5 * S}, False),  # rung
        (RevisionState.PROCESSING, {"claim_expires_at": NOW - 5 * S, "rung_at": NOW - 10 * S}, True),
        (RevisionState.RECEIVING, {"queued_at": NOW - 600 * S}, False),  # the listener's, not ours
        (RevisionState.REPORTED, {"queued_at": NOW - 600 * S}, False),
        (RevisionState.FAILED, {"queued_at": NOW - 600 * S}, False),
    ],
)
def test_revision_overdue(state: RevisionState, times: dict[str, datetime], overdue: bool) -> None:
    assert revision_overdue(state, now=NOW, after=AFTER, **times) is overdue


@pytest.mark.parametrize(
    ("state", "next_attempt_at", "overdue"),
    [
        (OutboxState.PENDING, NOW - 60 * S, True),
        (OutboxState.PENDING, NOW - 59 * S, False),
        (OutboxState.PENDING, NOW + 300 * S, False),  # claimed (lease) or backing off
        (OutboxState.DELIVERED, NOW - 600 * S, False),
        (OutboxState.FAILED, NOW - 600 * S, False),
    ],
)
def test_outbox_overdue(state: OutboxState, next_attempt_at: datetime, overdue: bool) -> None:
    assert outbox_overdue(state, next_attempt_at, now=NOW, after=AFTER) is overdue


def test_the_app_takes_json_only_acks_late_prefetches_one_and_routes_each_task_to_its_queue(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert is_embedded_broker(settings)
    app = create_app(settings)
    conf = app.conf
    assert conf.accept_content == ["json"]
    assert conf.task_serializer == "json"
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_url.startswith("sqlite:///")
    assert conf.broker_transport.polling_interval == settings.broker.embedded_polling_interval_s
    assert conf.task_routes[PROCESS_TASK] == {"queue": settings.broker.gpu_queue}
    assert conf.task_routes[DISPATCH_TASK] == {"queue": settings.broker.dispatch_queue}
    queues = {queue.name: (queue.exchange.name, queue.routing_key) for queue in conf.task_queues}
    names = (settings.broker.stat_queue, settings.broker.gpu_queue, settings.broker.dispatch_queue)
    assert queues == {name: (name, name) for name in names}
    assert {PROCESS_TASK, DISPATCH_TASK} <= set(app.tasks)
    assert app.tasks[PROCESS_TASK].acks_late is True


def test_redis_keys_live_under_the_configured_prefix(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, broker={"url": "redis://127.0.0.1:6379/0", "key_prefix": "site-a:"})
    conf = create_app(settings, with_tasks=False).conf
    assert conf.broker_transport_options["global_keyprefix"] == "site-a:"
    assert conf.broker_transport_options["visibility_timeout"] == settings.broker.visibility_timeout_s


def test_queue_roles() -> None:
    settings = load_settings()
    assert queue_names(settings, ["gpu"]) == ["radtrace.gpu.stat", "radtrace.gpu"]
    assert queue_names(settings, ["io", "dispatch"]) == ["radtrace.dispatch"]
    with pytest.raises(ConfigError, match="bogus"):
        queue_names(settings, ["gpu", "bogus"])


def test_worker_refuses_unknown_queue_roles_before_starting() -> None:
    result = radtrace("worker", "--queues", "gpu,bogus")
    assert result.returncode == 2
    assert "bogus" in result.stderr
