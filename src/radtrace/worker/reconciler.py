"""The reconciler: find rows whose doorbell was lost and ring it again. A Redis flush loses nothing.

Overdue means (:func:`revision_overdue`, :func:`outbox_overdue`, pure):

* a ``queued`` revision due for ``broker.overdue_after_s`` (since it was queued, its retry fell due,
  or the reconciler last rang it) with no worker on it;
* a ``processing`` revision whose claim expired (its worker died): ringing lets a worker take it over;
* a ``pending`` outbox row due for ``broker.overdue_after_s`` (a claimed row is pushed a lease ahead,
  so a dispatcher that died mid-send is found too); of the unclaimed ones, at most
  ``dispatch.max_sends_per_destination`` per destination and pass, oldest first: the others would only be deferred
  over the destination's cap (a backlog of 100 to a dead RIS was 100 tasks a pass), and each send that ends wakes the
  next (:func:`radtrace.reporting.dispatch.destination_cap.to_wake`);

A claim's expiry (``claim_expires_at``) and a claimed row's lease (``next_attempt_at`` while ``claimed_by`` is set) are
written on the database's clock (:func:`radtrace.reporting.dispatch.claims.database_now`), so they are judged on it,
never on this node's: a reconciler whose clock is behind would leave a dead worker's study (or a dead dispatcher's
delivery) unrung for as long as it is behind, and one ahead would ring live claims. Retries (``next_attempt_at`` of
an unclaimed row or a queued revision) are their writer's schedule, judged on ``clock``, as the claims judge them.
* a ``reported`` revision with outbox rows none of which is pending, for ``overdue_after_s``: the
  dispatcher died between delivering and settling; a ``dispatch`` ring for one row settles it.

Each pass also withdraws the drafts of revisions marked ``reassigned_at`` or ``rejected_at`` (an image they read was
moved to another patient or study, or rejected, by the PACS): their deliveries still pending are cancelled and each
peer that got the draft is sent its withdrawal (:func:`radtrace.reporting.dispatch.withdrawals.sweep`, from the
stored rows alone, once: a peer that refused the draft on every attempt, its recorded outcome, gets none); the
withdrawals it queued are rung at once. A revision whose draft reached no peer is not selected again, pass after pass.

Before looking, each pass releases the live claims of processes of this host that provably ended
(:mod:`radtrace.worker.dead_claims`: a dispatcher or worker killed -9) and rings them at once, so a process killed
and started again resumes in seconds instead of after its lease. Ringing twice is harmless (the pipeline claims). The
start-up pass rings everything due at once
(``overdue_after`` 0); later passes run every ``broker.reconcile_interval_s``. With the embedded broker
the reconciler also deletes messages delivered long ago (kombu's SQL transport never does).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

import sqlalchemy as sa

from radtrace.audit.events import Actor
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import Settings
from radtrace.errors import RadtraceError
from radtrace.reporting.dispatch.claims import database_now
from radtrace.reporting.dispatch.outbox import NOT_DRAFT_KINDS, Outbox
from radtrace.reporting.dispatch.withdrawals import sweep as sweep_withdrawals
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, OutboxState, Priority, Revision, RevisionState, Study
from radtrace.worker import broker_space, doorbell
from radtrace.worker.dead_claims import release_dead_claims

__all__ = ["Reconciler", "Reconciliation", "outbox_overdue", "revision_overdue"]

log = logging.getLogger(__name__)

#: A revision with a draft row in one of these states is not rung to settle: pending, it settles once that row is
#: recorded; cancelled (its draft withdrawn before it was sent), it is settled already (it stays ``reported``).
_NOT_SETTLING: Final = (OutboxState.PENDING, OutboxState.CANCELLED)

BROKER_KEEP = timedelta(hours=1)
BROKER_PURGE_EVERY_S = 600.0


def revision_overdue(
    state: RevisionState,
    *,
    now: datetime,
    after: timedelta,
    queued_at: datetime | None = None,
    next_attempt_at: datetime | None = None,
    claim_expires_at: datetime | None = None,
    rung_at: datetime | None = None,
    lease_now: datetime | None = None,
) -> bool:
    """Whether a revision's doorbell must be rung again (pure; see the module docstring). ``lease_now``: the
    database's clock, which ``claim_expires_at`` is written on (``now`` when not given)."""
    if state is RevisionState.QUEUED:
        since = max((t for t in (queued_at, next_attempt_at, rung_at) if t is not None), default=None)
        return since is None or since + after <= now
    if state is RevisionState.PROCESSING:
        if claim_expires_at is None:
            return rung_at is None or rung_at + after <= now
        expired = claim_expires_at <= (now if lease_now is None else lease_now)
        return expired and (rung_at is None or rung_at + after <= now or rung_at < claim_expires_at)
    return False


def outbox_overdue(
    state: OutboxState,
    next_attempt_at: datetime,
    *,
    now: datetime,
    after: timedelta,
    claimed: bool = False,
    lease_now: datetime | None = None,
) -> bool:
    """Whether an outbox row's doorbell must be rung again (pure). A ``claimed`` row's ``next_attempt_at`` is its
    lease, on the database's clock (``lease_now``; ``now`` when not given); an unclaimed row's is its retry."""
    reference = lease_now if claimed and lease_now is not None else now
    return state is OutboxState.PENDING and next_attempt_at + after <= reference


@dataclass
class Reconciliation:
    """What one pass rang."""

    processes: list[tuple[str, int]] = field(default_factory=list)
    dispatches: list[int] = field(default_factory=list)
    settles: list[int] = field(default_factory=list)
    not_rung: int = 0
    not_rung_disk_full: int = 0  # of ``not_rung``: refused because the embedded broker's disk is full
    released: int = 0  # claims of processes of this host that ended, released (and rung) this pass
    withdrawals: list[int] = field(default_factory=list)  # withdrawals of drafts queued (and rung) this pass


class Reconciler:
    """Finds overdue rows and rings their doorbells; one per worker process, or in ``serve``."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        ring_process: Callable[[str, int, Priority], bool] | None = None,
        ring_dispatch: Callable[[int], bool] | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.store = store
        self.ring_process = ring_process or (
            lambda uid, number, priority: doorbell.ring_process(settings, uid, number, priority=priority)
        )
        self.ring_dispatch = ring_dispatch or (lambda outbox_id: doorbell.ring_dispatch(settings, outbox_id))
        self.clock = clock
        self.recorder = AuditRecorder(store, Actor())
        self.look_again_at: datetime | None = None  # see _next_pass_in_s
        self._outbox: Outbox | None = None  # made at the first withdrawal sweep (see _withdraw_drafts)
        self._withdrawal_error: str | None = None  # the sweep's last fault, logged in full once (_withdrawal_fault)

    def run_once(self, *, overdue_after_s: float | None = None) -> Reconciliation:
        """One pass: ring every overdue row; ``overdue_after_s`` overrides the setting (0 at start-up)."""
        now = self.clock()
        after = timedelta(seconds=self.settings.broker.overdue_after_s if overdue_after_s is None else overdue_after_s)
        done = Reconciliation()
        refused_before = broker_space.refused_rings()
        released = release_dead_claims(
            self.store, self.recorder, now, claim_timeout_s=self.settings.broker.claim_timeout_s
        )
        done.released = len(released.deliveries) + len(released.revisions)
        self.look_again_at = released.look_again_at
        rung: list[int] = []
        for rev_id, study_uid, number, priority in released.revisions:
            if self.ring_process(study_uid, number, priority):
                rung.append(rev_id)
                done.processes.append((study_uid, number))
            else:
                done.not_rung += 1
        for outbox_id in released.deliveries:
            if self.ring_dispatch(outbox_id):
                done.dispatches.append(outbox_id)
            else:
                done.not_rung += 1
        try:
            self._withdraw_drafts(done)
        except Exception as exc:  # a withdrawal's fault must not stop the rings below, pass after pass
            self._withdrawal_fault(exc)
        else:
            self._withdrawal_error = None
        with self.store.session("finding overdue revisions") as session:
            lease_now = database_now(session)  # what claims and leases expire on (see the module docstring)
            revisions = session.execute(
                sa.select(
                    Revision.id,
                    Study.study_uid,
                    Revision.number,
                    Revision.state,
                    Revision.queued_at,
                    Revision.next_attempt_at,
                    Revision.claim_expires_at,
                    Revision.rung_at,
                    Revision.priority,
                )
                .join(Study, Revision.study_id == Study.id)
                .where(Revision.state.in_([RevisionState.QUEUED, RevisionState.PROCESSING]))
                .order_by(sa.case((Revision.priority == Priority.STAT, 0), else_=1), Revision.queued_at, Revision.id)
            ).all()
            pending = session.execute(
                sa.select(OutboxMessage.id, OutboxMessage.state, OutboxMessage.next_attempt_at,
                          OutboxMessage.claimed_by.is_not(None), OutboxMessage.destination)
                .where(OutboxMessage.state == OutboxState.PENDING,
                       OutboxMessage.next_attempt_at <= max(now, lease_now) - after)
                .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
            ).all()  # fmt: skip
            unsettled = session.execute(
                sa.select(sa.func.min(OutboxMessage.id))
                .join(Revision, OutboxMessage.revision_id == Revision.id)
                .where(
                    Revision.state == RevisionState.REPORTED,
                    Revision.reported_at <= now - after,
                    OutboxMessage.kind.not_in(NOT_DRAFT_KINDS),  # settlement counts the draft's rows only
                )
                .group_by(Revision.id)
                # a draft withdrawn before it was all sent (rows cancelled) stays reported: settled, not rung again
                .having(sa.func.sum(sa.case((OutboxMessage.state.in_(_NOT_SETTLING), 1), else_=0)) == 0)
            ).all()
        for (
            rev_id,
            study_uid,
            number,
            state,
            queued_at,
            next_attempt_at,
            claim_expires_at,
            rung_at,
            priority,
        ) in revisions:
            if rev_id not in rung and revision_overdue(
                state, now=now, after=after, queued_at=queued_at, next_attempt_at=next_attempt_at,
                claim_expires_at=claim_expires_at, rung_at=rung_at, lease_now=lease_now,
            ):  # fmt: skip
                if self.ring_process(study_uid, number, priority):
                    rung.append(rev_id)
                    done.processes.append((study_uid, number))
                else:
                    done.not_rung += 1
        waiting_rung: Counter[str] = Counter()  # unclaimed rows rung this pass, per destination
        cap = max(1, self.settings.dispatch.max_sends_per_destination)
        for outbox_id, outbox_state, next_attempt_at, claimed, destination in pending:
            if outbox_id not in released.deliveries and outbox_overdue(
                outbox_state, next_attempt_at, now=now, after=after, claimed=claimed, lease_now=lease_now
            ):
                if not claimed and waiting_rung[destination] >= cap:
                    continue  # over the destination's cap: deferred again at once; a send that ends wakes the next
                waiting_rung[destination] += not claimed
                if self.ring_dispatch(outbox_id):
                    done.dispatches.append(outbox_id)
                else:
                    done.not_rung += 1
        for (outbox_id,) in unsettled:
            if self.ring_dispatch(outbox_id):
                done.settles.append(outbox_id)
            else:
                done.not_rung += 1
        if rung:
            with self.store.session("noting rung doorbells") as session:
                session.execute(sa.update(Revision).where(Revision.id.in_(rung)).values(rung_at=now))
        done.not_rung_disk_full = min(done.not_rung, broker_space.refused_rings() - refused_before)
        if done.processes or done.dispatches or done.settles or done.withdrawals or done.not_rung:
            withdrawn = f", {len(done.withdrawals)} withdrawals" if done.withdrawals else ""
            log.info(
                "reconciler rang %d revisions, %d deliveries, %d settles%s (%s)",
                len(done.processes), len(done.dispatches), len(done.settles), withdrawn, self._why_not_rung(done),
            )  # fmt: skip
        return done

    def _withdrawal_fault(self, exc: Exception) -> None:
        """The withdrawal sweep failed (the database went away mid-sweep, or a bug): the pass goes on to ring what is
        overdue, and the next pass sweeps again. The fault is logged with its traceback when it first appears, then
        one line a pass while it lasts."""
        what = f"{type(exc).__name__}: {exc}"
        if what != self._withdrawal_error:
            log.error(
                "withdrawing drafts failed in this pass; overdue work is rung anyway, the next pass tries again",
                exc_info=exc,
            )
        else:
            log.warning("withdrawing drafts failed again (%s); the next pass tries again", type(exc).__name__)
        self._withdrawal_error = what

    def _withdraw_drafts(self, done: Reconciliation) -> None:
        """Withdraw the drafts of marked revisions (:func:`radtrace.reporting.dispatch.withdrawals.sweep`) and ring
        the withdrawals queued. One not rung now is rung as any overdue delivery, by a later pass."""
        if self._outbox is None:
            self._outbox = Outbox(
                self.store, self.recorder, self.settings.dispatch, self.settings.data_dir / "outbox", clock=self.clock
            )  # the folder of radtrace.worker.pipeline.payload_dir
        for withdrawn in sweep_withdrawals(self._outbox):
            for outbox_id in withdrawn.queued:
                if self.ring_dispatch(outbox_id):
                    done.withdrawals.append(outbox_id)
                else:
                    done.not_rung += 1

    def _why_not_rung(self, done: Reconciliation) -> str:
        """'N not rung: …': the broker's disk is full (the embedded broker could not write its file; the doorbell
        says which), or the broker is not reachable, or both."""
        reasons = []
        if done.not_rung_disk_full:
            reasons.append(
                f"{done.not_rung_disk_full} not rung: {broker_space.broker_disk_line(self.settings.broker_url)}"
            )
        if other := done.not_rung - done.not_rung_disk_full:
            reasons.append(f"{other} not rung: broker down?")
        return "; ".join(reasons) or "0 not rung"

    def purge_embedded_broker(self, *, older_than: timedelta = BROKER_KEEP) -> int:
        """Delete messages the embedded broker handed out more than ``older_than`` ago; returns how many.

        kombu's SQLAlchemy transport marks a message invisible when it delivers it and never deletes it, so
        ``broker.db`` would grow for ever. Redis deletes acknowledged messages itself: nothing to do there.
        """
        from radtrace.worker.app import is_embedded_broker

        if not is_embedded_broker(self.settings):
            return 0
        url = self.settings.broker_url.removeprefix("sqla+")
        engine = sa.create_engine(url)
        # kombu stamps the delivery time in local time, without a zone
        cutoff = datetime.now() - older_than
        try:
            with engine.begin() as connection:
                if not sa.inspect(connection).has_table("kombu_message"):
                    return 0
                deleted = connection.execute(
                    sa.text("DELETE FROM kombu_message WHERE visible = :no AND timestamp < :cutoff"),
                    {"no": False, "cutoff": cutoff},
                )
                return int(deleted.rowcount)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("embedded broker not purged: %s", exc)
            return 0
        finally:
            engine.dispose()

    def run_forever(self, stop: threading.Event) -> None:
        """A start-up pass, then one every ``broker.reconcile_interval_s`` until ``stop`` is set."""
        overdue_after: float | None = 0.0
        last_purge: float | None = None
        while not stop.is_set():
            try:
                self.run_once(overdue_after_s=overdue_after)
                if last_purge is None or time.monotonic() - last_purge > BROKER_PURGE_EVERY_S:
                    self.purge_embedded_broker()
                    last_purge = time.monotonic()
                overdue_after = None
            except RadtraceError as exc:  # the database is down: try again next interval
                log.warning("reconciler pass failed: %s", exc.reason)
            stop.wait(self._next_pass_in_s())

    def _next_pass_in_s(self) -> float:
        """``broker.reconcile_interval_s``, or less while deliveries of this host are in flight
        (:attr:`radtrace.worker.dead_claims.Released.look_again_at`): a dispatcher killed mid-send is taken over in
        about 10 s (this PID namespace) or 15 s after its last beat (another), not up to a whole interval later."""
        interval = self.settings.broker.reconcile_interval_s
        if self.look_again_at is None:
            return interval
        return min(interval, max(1.0, (self.look_again_at - self.clock()).total_seconds() + 0.5))

    def start(self) -> tuple[threading.Thread, threading.Event]:
        """Run :meth:`run_forever` in a daemon thread; set the event to stop it."""
        stop = threading.Event()
        thread = threading.Thread(target=self.run_forever, args=(stop,), name="radtrace-reconciler", daemon=True)
        thread.start()
        return thread, stop
