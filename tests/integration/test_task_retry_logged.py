"""A study (or delivery) whose database went away mid-task says so in the worker's log when its retry is queued.

Found stopping the site's PostgreSQL for 25 s while a worker drafted three studies (serve on PostgreSQL + Redis,
demo model): the worker's tasks met the unavailable database, asked Celery for a retry, and the retry was queued;
Celery says that at DEBUG only, so the worker wrote nothing for the whole outage (the listener and the reconciler
each wrote a line) and the studies sat in ``processing`` unexplained until they were read again after the restart.
Only a retry that could not be queued, or one past the last, was logged (tests/integration/test_task_retry_unqueued.py).
Now a queued retry is one warning naming the study by its key (never its UID), the reason, when it is tried again
and which retry it is.

Here the real ``process_study`` and ``dispatch`` tasks run on Celery's in-memory broker (the retry is published),
with a pipeline whose store is unavailable.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.exceptions import Retry

from radtrace.config import load_settings
from radtrace.errors import StoreUnavailableError
from radtrace.logging import study_key
from radtrace.worker import tasks
from radtrace.worker.app import DISPATCH_TASK, PROCESS_TASK

pytestmark = pytest.mark.integration

STUDY_UID = "1.2.826.0.1.3680043.8.498.67890"
DOWN = "database unavailable while recording the reading: connection refused"


class _DownPipeline:
    """What the tasks use of a worker's pipeline; every call finds the database unavailable."""

    def waiting_stat(self, besides: tuple[str, int]) -> None:
        return None

    def process_batch(self, *_: Any, **__: Any) -> Any:
        raise StoreUnavailableError(DOWN)

    def dispatch(self, _outbox_id: int) -> Any:
        raise StoreUnavailableError(DOWN)


class _Runtime:
    pipeline = _DownPipeline()


@pytest.mark.parametrize("name", [PROCESS_TASK, DISPATCH_TASK])
def test_a_queued_retry_is_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str) -> None:
    settings = load_settings(data_dir=tmp_path)
    app = Celery("retry-logged-test", set_as_current=False, broker="memory://")
    tasks.register_tasks(app, settings, _Runtime())  # type: ignore[arg-type]
    task = app.tasks[name]
    args: tuple[Any, ...] = (STUDY_UID, 1) if name == PROCESS_TASK else (7,)
    task.push_request(id=f"{name}-1", retries=0, called_directly=False, args=args, kwargs={})
    try:
        with caplog.at_level(logging.INFO), pytest.raises(Retry):
            task.run(*args)
    finally:
        task.pop_request()
    lines = [r for r in caplog.records if r.name == "radtrace.worker.tasks"]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].levelno == logging.WARNING
    assert lines[0].exc_info is None
    message = lines[0].getMessage()
    assert "connection refused" in message
    assert f"retry 1 of {settings.broker.max_attempts}" in message
    assert "tried again in" in message
    if name == PROCESS_TASK:
        assert f"study {study_key(STUDY_UID)} revision 1" in message
        assert STUDY_UID not in message
    else:
        assert "dispatch 7" in message
