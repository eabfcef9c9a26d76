"""What a worker's open circuit breaker (:mod:`radtrace.worker.breaker`) leaves for an operator to see.

* an audit entry when it opens (``application_stopped``, serious failure) and when it closes (``application_started``,
  with how long the server was down), payload ``component: "model reading"``;
* the waiting reason, "waiting: model server unavailable since …; no attempt counted", on the batch held under its
  claims and on every queued revision, refreshed at each probe (studies that arrive during the outage too), where
  ``radtrace study show``, ``radtrace status --json`` and the console show a revision's reason; cleared on close;
* each queued revision counted as rung at each probe, so the reconciler does not ring it again every
  ``broker.overdue_after_s`` of the outage (its first doorbell is still in the broker);
* the worker's ``radtrace_model_server_unavailable`` gauge (:class:`radtrace.worker.metrics.WorkerMetrics`).

A database that is down as well is logged, never raised: the hold goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa

from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
from radtrace.audit.recorder import AuditRecorder
from radtrace.errors import RadtraceError
from radtrace.store.engine import Store
from radtrace.store.models import Revision, RevisionState
from radtrace.worker.breaker import ModelServerBreaker

__all__ = ["WAITING_FOR_SERVER", "OutageNotice"]

log = logging.getLogger(__name__)

WAITING_FOR_SERVER: Final = "waiting: model server unavailable"  # how the waiting revisions' reasons begin


class OutageNotice:
    """The breaker's ``on_open``, ``on_close`` and ``on_still_down`` for one worker (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        recorder: AuditRecorder,
        actor: Actor,
        worker: str,
        observer: object,
        clock: Callable[[], datetime],
    ) -> None:
        self.store, self.recorder, self.actor, self.worker = store, recorder, actor, worker
        self.observer, self.clock = observer, clock
        self.held: Sequence[int] = []  # revision IDs of the batch a hold keeps under this worker's claims

    def opened(self, breaker: ModelServerBreaker) -> None:
        self._tell_observer(breaker)
        self._record(EventType.APPLICATION_STOPPED, Outcome.SERIOUS_FAILURE, reason=breaker.reason)

    def closed(self, breaker: ModelServerBreaker, down_s: float) -> None:
        self._tell_observer(breaker)
        self._record(EventType.APPLICATION_STARTED, Outcome.SUCCESS, down_s=round(down_s, 1),
                     down_since=breaker.since.isoformat() if breaker.since else None)  # fmt: skip
        try:
            with self.store.session("clearing waiting reasons", immediate=True) as session:
                session.execute(
                    sa.update(Revision)
                    .where(Revision.state.in_([RevisionState.QUEUED, RevisionState.PROCESSING]),
                           Revision.reason.like(f"{WAITING_FOR_SERVER}%"))
                    .values(reason=None)
                    .execution_options(synchronize_session=False)
                )  # fmt: skip
        except RadtraceError as exc:
            log.warning("waiting reasons not cleared: %s", exc.reason)

    def still_down(self, breaker: ModelServerBreaker) -> None:
        """The waiting reason on the held batch and on every queued revision (a queued revision's own retry reason
        is kept), and the queued ones counted as rung now."""
        reason = f"waiting: {breaker.reason}; no attempt counted"
        now = self.clock()
        try:
            with self.store.session("marking waiting revisions", immediate=True) as session:
                session.execute(
                    sa.update(Revision)
                    .where(Revision.id.in_(list(self.held)), Revision.claimed_by == self.worker)
                    .values(reason=reason)
                    .execution_options(synchronize_session=False)
                )
                session.execute(
                    sa.update(Revision)
                    .where(Revision.state == RevisionState.QUEUED)
                    .values(rung_at=now, reason=sa.case(
                        (sa.or_(Revision.reason.is_(None), Revision.reason.like(f"{WAITING_FOR_SERVER}%")), reason),
                        else_=Revision.reason,
                    ))
                    .execution_options(synchronize_session=False)
                )  # fmt: skip
        except RadtraceError as exc:
            log.warning("waiting reasons not recorded: %s", exc.reason)

    def _tell_observer(self, breaker: ModelServerBreaker) -> None:
        told = getattr(self.observer, "model_server_unavailable", None)  # WorkerMetrics' gauge
        if callable(told):
            told(breaker.since if breaker.is_open else None)

    def _record(self, kind: EventType, outcome: Outcome, **details: Any) -> None:
        payload = {"component": "model reading", "worker": self.worker,
                   **{key: value for key, value in details.items() if value is not None}}  # fmt: skip
        try:
            self.recorder.record(AuditEvent(kind, self.actor, outcome, payload=payload))
        except RadtraceError as exc:
            log.error("could not record %s: %s", kind.value, exc.reason)
