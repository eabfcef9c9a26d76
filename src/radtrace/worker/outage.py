"""What a worker's open circuit breaker (:mod:`radtrace.worker.breaker`) leaves for an operator to see.

* one audit entry per outage of a model server *per deployment*, however many GPU workers read through it: an
  ``application_stopped`` (serious failure) when the first worker finds it down, an ``application_started`` (with how
  long it was down) when a worker finds it answering again; payload ``component: "model reading"``, ``server`` (its
  URL without credentials; a loopback URL names the host too: each node's loopback is another server), ``worker``
  (who told it). See *One outage, told once* below;
* the waiting reason, "waiting: model server unavailable since …; server <its key>; no attempt counted", on the
  batch held under its claims and on every queued revision, refreshed at each probe (studies that arrive during the
  outage too), where ``radtrace study show``, ``radtrace status --json`` and the console show a revision's reason,
  followed by the failed attempt a revision waits after (:mod:`radtrace.worker.revision_reasons`); back to that
  failure, or to none, when *that server's* outage ends (its worker's probe, another worker's read, ``radtrace model
  resume`` for a stop): a wait written for another server that is still down stays (:func:`waits_for`);
* each queued revision counted as rung at each probe, so the reconciler does not ring it again every
  ``broker.overdue_after_s`` of the outage (its first doorbell is still in the broker);
* per worker, as before: its breaker's warning lines and its ``radtrace_model_server_unavailable`` gauge
  (:class:`radtrace.worker.metrics.WorkerMetrics`).

A database that is down as well is logged, never raised: the hold goes on.

One outage, told once
---------------------
A server's outage is *open* while it has a ``model_outages`` row (:mod:`radtrace.worker.outage_table`), inserted in
the transaction that appends its ``application_stopped`` entry and deleted in the one that appends its
``application_started``: the audit log is the record, the row the state looked up (a primary-key lookup; before
migration 0016 a scan of the audit log's ``application_*`` entries, 1.4 s a look at 1,000,000 events with another
server's 5,000 outage entries). Each worker decides under the audit log's own append lock (PostgreSQL's advisory
lock, SQLite's write lock), in that transaction, so two workers finding the server down at the same moment write one
``application_stopped``, and two finding it back write one ``application_started``; a transaction cut short (kill
-9) leaves the row and the log as they were.

Crash-safe: an open outage is closed by *any* worker that finds the server answering, not only by the one that
opened it: a worker whose breaker closes, and a worker whose read goes through (looked at after its first
successful read and then at most every :data:`OUTAGE_RECHECK_S`). So a worker killed mid-outage (kill -9, its node
lost) leaves it open only until the next successful read anywhere in the deployment; a worker started again during
the outage finds it open and joins it (no second ``application_stopped``). What is left: with no read and no hold at
all after the server came back (no studies), the outage stays open in the log until the next read, and its
``application_started`` then says when the server was *seen* answering (``seen: "read"``), not when it came back.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
from radtrace.audit.recorder import AUDIT_LOCK_KEY, AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.config import ModelSettings
from radtrace.errors import PermanentError, RadtraceError
from radtrace.store.engine import Store, is_postgresql
from radtrace.store.models import Revision, RevisionState
from radtrace.worker.breaker import ModelServerBreaker
from radtrace.worker.outage_table import ModelOutageRow
from radtrace.worker.output_guard import STOPPED_MARK
from radtrace.worker.revision_reasons import rewrite, wait_of

__all__ = [
    "COMPONENT",
    "OUTAGE_RECHECK_S",
    "WAITING_FOR_SERVER",
    "Lifted",
    "NothingToLiftError",
    "OpenOutage",
    "OutageNotice",
    "lift_stop",
    "model_server_key",
    "open_outages",
    "waits_for",
]

log = logging.getLogger(__name__)

WAITING_FOR_SERVER: Final = "waiting: model server unavailable"  # how the waiting revisions' reasons begin
#: The audit payload's component of an outage's entries.
COMPONENT: Final = "model reading"
#: How often, at most, a worker whose reads go through looks whether an outage is still open in the audit log (one
#: indexed query): the first time after its first successful read, so a worker started again closes it at once.
OUTAGE_RECHECK_S: Final = 60.0


def model_server_key(model: ModelSettings) -> str:
    """The model server an outage is of, as the audit names it: a vLLM URL without credentials, query or trailing
    ``/v1``; a loopback URL (each node's own server) or an in-process model with this host's name."""
    host = socket.gethostname()
    if model.backend != "vllm" or not model.vllm_url:
        return f"{model.backend} on {host}"
    parts = urlsplit(model.vllm_url.strip())
    name = (parts.hostname or "").lower()
    netloc = f"[{name}]" if ":" in name else name
    if parts.port is not None:
        netloc += f":{parts.port}"
    path = parts.path.rstrip("/").removesuffix("/v1")
    key = f"{parts.scheme.lower()}://{netloc}{path}"
    try:
        loopback = name == "localhost" or ipaddress.ip_address(name).is_loopback
    except ValueError:
        loopback = False
    return f"{key} on {host}" if loopback else key


def _wait_end(server: str) -> str:
    """How a wait for ``server`` ends (its own words after the breaker's reason, the peer's text inside it)."""
    return f"; server {server}; no attempt counted"


def waits_for(server: str) -> Callable[[str | None], bool]:
    """Whether a revision's reason is a wait written for ``server``'s outage or stop: its wait
    (:func:`radtrace.worker.revision_reasons.wait_of`, which no peer text reaches past) ends with the server's key,
    written by us after the breaker's reason (which ends with its ")"). A wait written for another server is not this
    one's to end; one that names none (a held batch given back as its worker stopped, a reason older code wrote) is
    any server's, as before."""
    end = _wait_end(server)

    def for_it(reason: str | None) -> bool:
        wait = wait_of(reason)
        if wait is None:
            return False
        return wait.endswith(end) or not wait[wait.rfind(")") + 1 :].startswith("; server ")

    return for_it


def _stop_reason(reason: str) -> str:
    """The stop's own reason, out of the entry's "model server unavailable since T (<the stop's reason>)"."""
    return reason[reason.index(STOPPED_MARK) :].removesuffix(")") if STOPPED_MARK in reason else reason


class OutageNotice:
    """The breaker's ``on_open``, ``on_close`` and ``on_still_down`` for one worker, and :meth:`answered` after its
    reads (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        recorder: AuditRecorder,
        actor: Actor,
        worker: str,
        observer: object,
        clock: Callable[[], datetime],
        server: str = "",
    ) -> None:
        self.store, self.recorder, self.actor, self.worker = store, recorder, actor, worker
        self.observer, self.clock = observer, clock
        self.server = server or f"model server of {worker}"
        self.held: Sequence[int] = []  # revision IDs of the batch a hold keeps under this worker's claims
        self._next_check = float("-inf")  # time.monotonic() of the next look after a read that went through
        self._last_stop: str | None = None  # what open_reason found the last time the database answered
        self._next_away_warning = float("-inf")  # time.monotonic() before which a database away is not said again
        self._seen_open = False  # ended_elsewhere found this server's outage row during the hold in hand

    def opened(self, breaker: ModelServerBreaker) -> None:
        self._seen_open = False
        self._tell_observer(breaker)
        since = breaker.since.isoformat() if breaker.since else None
        self._tell(opening=True, reason=breaker.reason, since=since)

    def closed(self, breaker: ModelServerBreaker, down_s: float) -> None:
        self._seen_open = False
        self._tell_observer(breaker)
        self._tell(opening=False, seen="probe", worker_down_s=round(down_s, 1))
        self._next_check = time.monotonic() + OUTAGE_RECHECK_S
        self._waits_over()

    def _waits_over(self) -> None:
        """The server answers: the waiting revisions' reasons go back to the failed attempt each waited after, or to
        none (:func:`radtrace.worker.revision_reasons.after_wait`)."""
        try:
            with self.store.session("clearing waiting reasons", immediate=True) as session:
                rewrite(session, Revision.state.in_([RevisionState.QUEUED, RevisionState.PROCESSING]),
                        Revision.reason.like(f"{WAITING_FOR_SERVER}%"), only=waits_for(self.server))  # fmt: skip
        except RadtraceError as exc:
            log.warning("waiting reasons not cleared: %s", exc.reason)

    def answered(self) -> None:
        """A read through the server went through: close its outage if the audit log still has it open (another
        worker told it and did not see it end: killed, stopped, or still waiting for its next probe). Looks at most
        every :data:`OUTAGE_RECHECK_S`; a database that is away is only logged."""
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + OUTAGE_RECHECK_S
        try:
            with self.store.session("looking for an open model server outage") as session:
                row = session.get(ModelOutageRow, self.server)
                told = row is not None and not row.stop  # a stop ends by a probe reading that parses
        except RadtraceError as exc:
            log.warning("open model server outage not looked for: %s", exc.reason)
            return
        if told and self._tell(opening=False, seen="read"):
            self._waits_over()  # the worker that held them saw no probe answer: their reasons say it here

    def ended_elsewhere(self) -> bool:
        """The breaker's recheck while it holds for a server that is down: whether the server's outage, seen open
        during this hold, is closed now (another worker's probe or read found the server answering); its probe then
        runs at once instead of after its backoff. One primary-key lookup; False when the database is away, and
        when the row was never seen (told nowhere: the backoff as before)."""
        try:
            with self.store.session("looking whether a model server outage ended") as session:
                row = session.get(ModelOutageRow, self.server)
                outage = row is not None and not row.stop
        except RadtraceError:
            return False  # said by the hold's other looks; the probes go on as before
        if outage:
            self._seen_open = True
            return False
        seen, self._seen_open = self._seen_open, False
        if seen:
            log.info("model server %s: its outage, open during this hold, was closed by another worker; probing it "
                     "now", self.server)  # fmt: skip
        return seen

    def open_reason(self) -> str | None:
        """The reason of a stop for unparseable output (:mod:`radtrace.worker.output_guard`) the audit log has open
        for this server, or None (never told, ended by a probe reading that parsed, or lifted by ``radtrace model
        resume``). A database that is away is only logged, and the answer is what it said the last time: a worker
        that saw the stop open keeps holding, one that saw none keeps reading (its own count still stops)."""
        try:
            with self.store.session("looking for a stop of the model's output") as session:
                row = session.get(ModelOutageRow, self.server)
                self._last_stop = _stop_reason(row.reason) if row is not None and row.stop else None
        except RadtraceError as exc:
            now = time.monotonic()
            if now >= self._next_away_warning:  # asked about once a second while held: said once a minute
                self._next_away_warning = now + OUTAGE_RECHECK_S
                log.warning("stop of the model's output not looked for: %s", exc.reason)
            return self._last_stop
        self._next_away_warning = float("-inf")
        return self._last_stop

    def _tell(self, *, opening: bool, **details: Any) -> bool:
        """Append the outage's entry unless the audit log already says so (decided under its append lock); whether
        this worker appended it."""
        try:
            with self.store.session("telling a model server outage", immediate=True) as session:
                if is_postgresql(session.get_bind()):  # the recorder takes it again below: one transaction, held once
                    session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK_KEY})
                told = session.get(ModelOutageRow, self.server)
                if opening and told is None:
                    event = self._event(EventType.APPLICATION_STOPPED, Outcome.SERIOUS_FAILURE, **details)
                    _opened(session, self.recorder.record(event, session=session).seq, event)
                elif not opening and told is not None:
                    down_s = round(max((self.clock() - told.recorded_at).total_seconds(), 0.0), 1)
                    event = self._event(EventType.APPLICATION_STARTED, Outcome.SUCCESS, down_s=down_s,
                                        down_since=told.down_since, opened_by=told.worker, **details)  # fmt: skip
                    self.recorder.record(event, session=session)
                    session.delete(told)
                else:  # another worker told it already: this worker's own log lines and gauge say the rest
                    told_by = told.worker if told is not None else None
                    log.info("model server %s: the audit log has its outage's %s already%s", self.server,
                             "start" if opening else "end", f" (told by {told_by})" if told_by else "")  # fmt: skip
                    return False
        except RadtraceError as exc:
            log.error("could not record the model server outage's %s: %s", "start" if opening else "end", exc.reason)
            return False
        return True

    def still_down(self, breaker: ModelServerBreaker) -> None:
        """The waiting reason on the held batch and on every queued revision, each keeping the failed attempt it
        waits after (:func:`radtrace.worker.revision_reasons.waiting`: a retry's "tried again at" is not what happens
        next while the server is down), and the queued ones counted as rung now."""
        reason = f"waiting: {breaker.reason}{_wait_end(self.server)}"
        now = self.clock()
        try:
            with self.store.session("marking waiting revisions", immediate=True) as session:
                held = sa.and_(Revision.id.in_(list(self.held)), Revision.claimed_by == self.worker)
                rewrite(session, sa.or_(held, Revision.state == RevisionState.QUEUED), why=reason)
                session.execute(
                    sa.update(Revision)
                    .where(Revision.state == RevisionState.QUEUED)
                    .values(rung_at=now)
                    .execution_options(synchronize_session=False)
                )
        except RadtraceError as exc:
            log.warning("waiting reasons not recorded: %s", exc.reason)

    def _tell_observer(self, breaker: ModelServerBreaker) -> None:
        told = getattr(self.observer, "model_server_unavailable", None)  # WorkerMetrics' gauge
        if callable(told):
            told(breaker.since if breaker.is_open else None)

    def _event(self, kind: EventType, outcome: Outcome, **details: Any) -> AuditEvent:
        payload = {"component": COMPONENT, "server": self.server, "worker": self.worker,
                   **{key: value for key, value in details.items() if value is not None}}  # fmt: skip
        return AuditEvent(kind, self.actor, outcome, payload=payload)


def _opened(session: Session, seq: int, event: AuditEvent) -> None:
    """The ``model_outages`` row of the outage ``event`` (appended at ``seq``, in this transaction) opens."""
    payload = event.payload
    recorded_at = session.scalar(sa.select(AuditEventRow.recorded_at).where(AuditEventRow.seq == seq))
    reason = str(payload.get("reason", ""))
    session.add(
        ModelOutageRow(server=str(payload["server"]), opened_seq=seq, recorded_at=recorded_at, reason=reason,
                       stop=STOPPED_MARK in reason, worker=payload.get("worker"), down_since=payload.get("since"))
    )  # fmt: skip
    session.flush()


@dataclass(frozen=True)
class OpenOutage:
    """A model server whose latest outage entry is open: down, or stopped for unparseable output."""

    server: str
    since: datetime  # when the entry was recorded
    reason: str  # the stop's own reason, or the server's "model server unavailable since ... (...)"
    worker: str | None  # who told it
    stop: bool  # a stop for unparseable output (radtrace model resume lifts it), not a server that does not answer

    def as_json(self) -> dict[str, object]:
        """Plain JSON data."""
        return {"server": self.server, "since": self.since.isoformat(), "reason": self.reason,
                "worker": self.worker, "stop": self.stop}  # fmt: skip


def open_outages(session: Session) -> list[OpenOutage]:
    """Every model server whose outage is open, oldest first."""
    rows = session.scalars(sa.select(ModelOutageRow).order_by(ModelOutageRow.recorded_at, ModelOutageRow.server))
    return [
        OpenOutage(row.server, row.recorded_at, _stop_reason(row.reason) if row.stop else row.reason, row.worker,
                   row.stop)
        for row in rows
    ]  # fmt: skip


class NothingToLiftError(PermanentError):
    """``radtrace model resume`` found no stop for unparseable output to lift (or several, and none was named)."""


@dataclass(frozen=True)
class Lifted:
    """A stop lifted by an operator."""

    server: str
    since: datetime
    reason: str
    down_s: float


def lift_stop(store: Store, actor: Actor, clock: Callable[[], datetime], server: str | None = None) -> Lifted:
    """Close the open stop for unparseable output of ``server`` (the only one open when None) after a person checked
    the model: one ``application_started`` (``requested_by: operator``, ``user``, ``lifted``: the stop's reason),
    decided under the audit log's append lock like a worker's entries, and the waiting reasons the stop put on
    revisions cleared, the stop's ``model_outages`` row deleted, in one transaction. Every worker sees it closed at
    its next look (:class:`OutputGuard`: before its next batch, or held, within about a second) and reads again, its
    count from zero. Raises :class:`NothingToLiftError`
    saying what is open instead: nothing, or a model server outage, which a person cannot lift here (reads would
    only fail: it ends when the server answers)."""
    recorder = AuditRecorder(store)
    with store.session("lifting a stop of the model's output", immediate=True) as session:
        if is_postgresql(session.get_bind()):  # the recorder takes it again below: one transaction, held once
            session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK_KEY})
        opened = [outage for outage in open_outages(session) if server is None or outage.server == server]
        stops = [outage for outage in opened if outage.stop]
        if not stops:
            raise NothingToLiftError(_nothing_to_lift(server, opened))
        if len(stops) > 1:
            raise NothingToLiftError(
                f"reading is stopped for unparseable output on {len(stops)} model servers: name the one you checked "
                f"with --server ({', '.join(stop.server for stop in stops)})"
            )
        stop = stops[0]
        down_s = round(max((clock() - stop.since).total_seconds(), 0.0), 1)
        payload = {"component": COMPONENT, "server": stop.server, "requested_by": "operator", "user": actor.user,
                   "seen": "operator", "lifted": stop.reason, "down_s": down_s, "opened_by": stop.worker}  # fmt: skip
        event = AuditEvent(EventType.APPLICATION_STARTED, actor, Outcome.SUCCESS,
                           payload={key: value for key, value in payload.items() if value is not None})  # fmt: skip
        recorder.record(event, session=session)
        session.execute(sa.delete(ModelOutageRow).where(ModelOutageRow.server == stop.server))
        rewrite(session, Revision.state.in_([RevisionState.QUEUED, RevisionState.PROCESSING]),
                Revision.reason.like(f"{WAITING_FOR_SERVER}%{STOPPED_MARK}%"), only=waits_for(stop.server))  # fmt: skip
    return Lifted(stop.server, stop.since, stop.reason, down_s)


def _nothing_to_lift(server: str | None, opened: Sequence[OpenOutage]) -> str:
    where = f" for {server}" if server else ""
    if not opened:
        return f"no stop of the model's output is open{where}: reading is not stopped, nothing to lift"
    down = "; ".join(
        f"{outage.server} since {outage.since:%Y-%m-%d %H:%M:%S} UTC ({outage.reason})" for outage in opened
    )
    return (f"no stop of the model's output is open{where}, but a model server outage is: {down}. This command does "
            "not lift it: the server itself must answer (the workers' health-check probe ends it once it does); "
            "reading without it would only fail the held studies. Fix or restart the model server")  # fmt: skip
