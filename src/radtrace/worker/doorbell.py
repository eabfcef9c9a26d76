"""The doorbell: tell a worker that a row is ready. Ringing is best effort; the row is the truth.

``ring_process`` is what the listener calls after it committed a revision as ``queued``;
``ring_dispatch`` is rung for each outbox row. A broker that is down makes a ring return ``False``
(logged), never an error for the caller: the reconciler finds the overdue row and rings again. The embedded
broker on a full disk is said in one line a minute (:mod:`radtrace.worker.broker_space`), not one per study.
Messages carry IDs only. Ringing twice is harmless: the pipeline claims rows, so a duplicate is a
no-op. A STAT revision is rung on ``broker.stat_queue``, which GPU workers take first (see
:mod:`radtrace.worker.app`).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any

from radtrace.config import Settings
from radtrace.logging import study_key
from radtrace.store.models import Priority
from radtrace.worker.app import DISPATCH_TASK, PROCESS_TASK, create_app
from radtrace.worker.broker_space import is_disk_full, ring_failed_on_full_disk

__all__ = ["ring_dispatch", "ring_process"]

log = logging.getLogger(__name__)

_apps: dict[tuple[str, str, str, str, str, float], Any] = {}
_apps_lock = threading.Lock()


def _sender(settings: Settings) -> Any:
    broker = settings.broker
    key = (settings.broker_url, broker.key_prefix, broker.stat_queue, broker.gpu_queue, broker.dispatch_queue,
           broker.embedded_polling_interval_s)  # fmt: skip
    with _apps_lock:
        app = _apps.get(key)
        if app is None:
            app = _apps[key] = create_app(settings, with_tasks=False)
        return app


def _ring(settings: Settings, task: str, args: list[Any], queue: str, at: datetime | None, *, subject: str) -> bool:
    """Send ``task(*args)``; ``subject`` names it in a log line (a study by its key only, never its UID)."""
    try:
        _sender(settings).send_task(task, args=args, queue=queue, eta=at)
    except Exception as exc:  # kombu/redis raise many types; none may reach the caller
        if is_disk_full(exc, settings.broker_url):  # one line a minute, not one per study
            ring_failed_on_full_disk(settings.broker_url)
            return False
        said = f"{type(exc).__name__}: {exc}"
        log.warning("doorbell %s for %s not rung (%s); the reconciler rings again", task, subject, said)
        return False
    return True


def ring_process(
    settings: Settings,
    study_uid: str,
    revision: int,
    *,
    at: datetime | None = None,
    priority: Priority = Priority.ROUTINE,
) -> bool:
    """Ask a GPU worker to process revision number ``revision`` of ``study_uid`` (at ``at``, or now).

    Returns whether the broker took the message.
    """
    queue = settings.broker.stat_queue if priority is Priority.STAT else settings.broker.gpu_queue
    subject = f"study {study_key(study_uid)} revision {revision}"
    return _ring(settings, PROCESS_TASK, [study_uid, revision], queue, at, subject=subject)


def ring_dispatch(settings: Settings, outbox_id: int, *, at: datetime | None = None) -> bool:
    """Ask a dispatcher to attempt delivery of outbox row ``outbox_id`` (at ``at``, or now)."""
    queue = settings.broker.dispatch_queue
    return _ring(settings, DISPATCH_TASK, [outbox_id], queue, at, subject=f"outbox row {outbox_id}")
