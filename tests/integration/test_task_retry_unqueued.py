"""A task whose database is unavailable and whose retry cannot be queued ends in one log line, not a traceback.

Found on a full disk (the data directory on a small tmpfs, filled while a study was queued): the worker's claim
failed ("database or disk is full"), the task asked Celery for a retry, and the retry's message could not be
published either (the embedded broker lives on the same disk). Celery answered ``Reject`` and logged it as a
warning with about 100 lines of chained tracebacks; the same for a task whose retries were spent (an error with
its traceback). Nothing was lost either way: the row stays queued (or pending) and the reconciler rings it again
once overdue. Now each says so in one line, and the task ends (its message acknowledged) instead of raising.

Here the real ``process_study`` and ``dispatch`` tasks run against a Redis broker URL on a port nothing listens
on, with a pipeline whose store is unavailable.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from radtrace.config import load_settings
from radtrace.errors import StoreUnavailableError
from radtrace.logging import study_key
from radtrace.testing.services import free_port
from radtrace.worker import tasks
from radtrace.worker.app import DISPATCH_TASK, PROCESS_TASK

pytestmark = pytest.mark.integration

STUDY_UID = "1.2.826.0.1.3680043.8.498.12345"
FULL = "database unavailable while claiming a revision: database or disk is full"


class _FullDiskPipeline:
    """What the tasks use of a worker's pipeline; every call finds the database unavailable."""

    def waiting_stat(self, besides: tuple[str, int]) -> None:
        return None

    def process_batch(self, *_: Any, **__: Any) -> Any:
        raise StoreUnavailableError(FULL)

    def dispatch(self, _outbox_id: int) -> Any:
        raise StoreUnavailableError(FULL)


class _Runtime:
    pipeline = _FullDiskPipeline()


def _run(tmp_path: Path, name: str, args: tuple[Any, ...], retries: int) -> Any:
    settings = load_settings(data_dir=tmp_path)
    app = Celery("retry-unqueued-test", set_as_current=False, broker=f"redis://127.0.0.1:{free_port()}/0")
    app.conf.task_publish_retry = False  # one try to publish, as on a broker that refuses at once
    app.conf.broker_connection_timeout = 2
    tasks.register_tasks(app, settings, _Runtime())  # type: ignore[arg-type]
    task = app.tasks[name]
    task.push_request(id=f"{name}-1", retries=retries, called_directly=False, args=args, kwargs={})
    try:
        return task.run(*args)
    finally:
        task.pop_request()


@pytest.mark.parametrize("name", [PROCESS_TASK, DISPATCH_TASK])
def test_retry_not_queued_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str) -> None:
    args: tuple[Any, ...] = (STUDY_UID, 1) if name == PROCESS_TASK else (7,)
    with caplog.at_level(logging.INFO):
        outcome = _run(tmp_path, name, args, retries=0)
    assert outcome == "left to the reconciler"
    lines = [r for r in caplog.records if r.name == "radtrace.worker.tasks"]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    message = lines[0].getMessage()
    assert "database or disk is full" in message
    assert "its retry could not be queued" in message
    assert "reconciler" in message
    assert lines[0].exc_info is None
    if name == PROCESS_TASK:
        assert f"study {study_key(STUDY_UID)} revision 1" in message
        assert STUDY_UID not in message
    else:
        assert "dispatch 7" in message


def test_retries_spent_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(data_dir=tmp_path)
    with caplog.at_level(logging.INFO):
        outcome = _run(tmp_path, PROCESS_TASK, (STUDY_UID, 2), retries=settings.broker.max_attempts)
    assert outcome == "left to the reconciler"
    lines = [r.getMessage() for r in caplog.records if r.name == "radtrace.worker.tasks"]
    assert len(lines) == 1, lines
    assert "retries spent" in lines[0]
    assert "reconciler" in lines[0]
