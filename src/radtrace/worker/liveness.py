"""Whether the processes a waiting study depends on are running, from what they leave behind: for ``radtrace status``
and ``radtrace study show``, which otherwise show a wait that nothing will end as if it were progress.

* The listener holds ``<data_dir>/listener.lock`` (``flock``) for its life (:mod:`radtrace.listener_lock`); the kernel
  lists held locks in ``/proc/locks``, so :func:`listener_holder` tells, without taking the lock (a probe that took it
  could make a listener starting at that moment refuse to start), whether a listener on this host holds it. A
  ``receiving`` study settles only while a listener runs (it settles the studies a dead one left when it starts).
* An outbox row being sent is claimed by pushing ``next_attempt_at`` a lease ahead, and ``dispatch_attempted`` is
  audited with the dispatcher's process (``program@host:pid``) in the same transaction. A row whose latest
  dispatch event is ``dispatch_attempted`` is in flight (:func:`in_flight`), held by the process its ``claimed_by``
  names (migration 0014). When that process is gone (kill -9, a crash), a dispatcher's reconciler releases the claim
  (:mod:`radtrace.worker.dead_claims`): within about 10 s when it ran in this PID namespace, once its heartbeat is
  10 s overdue when it ran in another of this machine (same boot), once its heartbeat has been seen unchanged for 15 s
  when it ran on another host (or another boot under this host name), at the lease's end before 0014
  (:meth:`InFlight.describe` says which).
* :func:`claimer_gone` says whether the holder of a claim (an outbox row's dispatcher, a revision's worker) has
  provably ended, for :mod:`radtrace.worker.dead_claims`, which releases its claims at once: it ran on this host
  (the host part exactly as :func:`socket.gethostname` writes it) and either no process has its pid now, or the
  process that has it started after the claim was taken (``/proc/<pid>/stat``: the pid was reused). A process on
  another host, or one that may be the holder, is never called gone: its lease decides.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.audit.events import EventType
from radtrace.audit.schema import AuditEventRow
from radtrace.reporting.dispatch.claims import HEARTBEAT_S, RENEWAL_SLACK_S, ClaimHolder, database_now
from radtrace.store.models import OutboxMessage

__all__ = ["InFlight", "claimer_gone", "in_flight", "listener_holder", "process_gone", "process_started_at"]

#: A process whose start is later than a claim by more than this did not take it (``/proc/stat``'s boot time is
#: in whole seconds, and the wall clock may have been stepped since boot).
REUSE_MARGIN = timedelta(seconds=5)

_DISPATCH_EVENTS = (
    EventType.DISPATCH_ATTEMPTED.value,
    EventType.DISPATCH_DELIVERED.value,
    EventType.DISPATCH_RETRY_SCHEDULED.value,
    EventType.DISPATCH_FAILED.value,
)


def listener_holder(lock_file: Path, locks: Path = Path("/proc/locks")) -> int | bool | None:
    """The pid of the process on this host holding ``lock_file``'s ``flock`` (0 when the kernel shows none, e.g.
    another pid namespace); False when nobody holds it; None when this cannot be told (no such file, no
    ``/proc/locks``)."""
    try:
        found = lock_file.stat()
        table = locks.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    wanted = f"{os.major(found.st_dev):02x}:{os.minor(found.st_dev):02x}:{found.st_ino}"
    for line in table.splitlines():
        fields = line.split()
        if "->" in fields:  # a waiter, not a holder
            continue
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
            return int(fields[4]) if fields[4].isdigit() else 0
    return False


def process_gone(process: str) -> bool:
    """Whether the radtrace process an audit event names (``program@host:pid``) is known to have ended: it ran on
    this host and no process has its pid now. False where this cannot be told (another host)."""
    _, _, where = process.rpartition("@")
    host, _, pid = where.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _host_pid(process: str) -> tuple[str, int] | None:
    """(host, pid) of ``program@host:pid`` or of a worker's ``host:pid``; None when it names no pid."""
    _, _, where = process.rpartition("@")
    host, _, pid = where.rpartition(":")
    return (host, int(pid)) if pid.isdigit() and 0 < int(pid) <= 1 << 22 else None  # 1 << 22: the largest pid_max


def process_started_at(pid: int, proc: Path = Path("/proc")) -> datetime | None:
    """When the process (or thread) ``pid`` of this host started, from ``/proc``; None when this cannot be read."""
    try:
        stat = (proc / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
        boot = next(
            line for line in (proc / "stat").read_text(encoding="ascii").splitlines() if line.startswith("btime ")
        )
        ticks = int(stat.rpartition(")")[2].split()[19])  # field 22, starttime; fields 1-2 end at the ')'
        return datetime.fromtimestamp(int(boot.split()[1]) + ticks / os.sysconf("SC_CLK_TCK"), UTC)
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def claimer_gone(process: str, claimed_at: datetime | None) -> str | None:
    """Why the process holding a claim taken at ``claimed_at`` (``program@host:pid``, or a worker's ``host:pid``)
    has provably ended: 'which is not running', or that its pid now belongs to a process started after the claim.
    None when it may be running: another host (its liveness cannot be known here), a live process that may be it,
    or nothing readable."""
    found = _host_pid(process)
    if found is None or found[0] != socket.gethostname():
        return None
    pid = found[1]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "which is not running"
    except PermissionError:  # alive, another user's: it may be the holder, unless it started after the claim
        pass
    except OSError:
        return None
    started = process_started_at(pid)
    if claimed_at is None or started is None or started <= claimed_at + REUSE_MARGIN:
        return None
    return f"which is not running (pid {pid} is now another process, started {started:%H:%M:%S} UTC, after the claim)"


#: Where the dispatcher of a delivery in flight runs, as its claim tells (:attr:`InFlight.holder_at`).
HERE, OTHER_NAMESPACE, OTHER_HOST, UNNAMED = "this namespace", "another namespace", "another host", "unnamed"


@dataclass(frozen=True)
class InFlight:
    """An outbox row claimed by a dispatcher that has not recorded its attempt: who, since when, until when."""

    outbox_id: int
    process: str
    since: datetime
    lease_until: datetime
    gone: bool  # the process ran on this host and is not running
    #: :data:`HERE` (this host, PID namespace and boot: its pid can be looked at), :data:`OTHER_NAMESPACE` (this host
    #: name, another PID namespace or boot), :data:`OTHER_HOST`, or :data:`UNNAMED` (a claim from before migration
    #: 0014: no holder, no heartbeat; its lease decides)
    holder_at: str = UNNAMED
    heartbeat_at: datetime | None = None
    #: seconds until the lease ends, by the database's clock (the clock it is written on), whatever this node's says
    lease_left_s: float | None = None

    def describe(self) -> str:
        """What holds the delivery and what will happen if that process is gone, as the dead-claim release
        (:mod:`radtrace.worker.dead_claims`) and the lease will act, e.g. 'in flight since 11:03:47 UTC
        (radtrace@pacs1:4242, not running: a running dispatcher releases its claim within about 10 s and sends it
        again; one starting, at its first pass)'."""
        since = f"in flight since {self.since:%H:%M:%S} UTC ({self.process}"
        expires = f"its claim expires at {self.lease_until:%H:%M:%S} UTC, then the next dispatcher pass sends it again"
        if self.holder_at == HERE:
            released = ("a running dispatcher releases its claim within about 10 s and sends it again; one starting, "
                        "at its first pass")  # fmt: skip
            return f"{since}, not running: {released})" if self.gone else f"{since}; if it dies, {released})"
        if self.holder_at == OTHER_NAMESPACE and self.heartbeat_at is not None:
            overdue = self.heartbeat_at + timedelta(seconds=HEARTBEAT_S + RENEWAL_SLACK_S)
            return (f"{since}, another PID namespace of this host, last heartbeat "
                    f"{self.heartbeat_at:%H:%M:%S} UTC; if it stopped, a dispatcher releases its claim once the "
                    f"heartbeat is 10 s overdue (from {overdue:%H:%M:%S} UTC, a few seconds more to confirm) and sends "
                    "it again)")  # fmt: skip
        if self.holder_at == OTHER_HOST and self.heartbeat_at is not None:
            watched = HEARTBEAT_S + RENEWAL_SLACK_S
            return (f"{since}, another host, last heartbeat {self.heartbeat_at:%H:%M:%S} UTC by its clock; if it "
                    "stopped, a running dispatcher releases its claim once it has seen the same beat for "
                    f"{watched:.0f} s and sends it again)")  # fmt: skip
        if self.holder_at == OTHER_HOST:
            return f"{since}, another host; if it died, {expires})"
        if self.gone:
            return f"{since}, not running: {expires})"
        return f"{since}; if it died, {expires})"


def in_flight(session: Session, rows: Iterable[tuple[int, str, datetime]]) -> dict[int, InFlight]:
    """Of the pending outbox rows given as (outbox id, study UID, next attempt at), those in flight: their lease not
    over by the database's clock (:func:`radtrace.reporting.dispatch.claims.database_now`, the clock a lease is written
    and judged on: a node whose clock is 10 minutes off shows the same) and their latest dispatch event
    ``dispatch_attempted``."""
    lease_now = database_now(session)
    claimed = {outbox_id: (study_uid, due) for outbox_id, study_uid, due in rows if due > lease_now}
    if not claimed:
        return {}
    latest: dict[int, tuple[str, str, datetime]] = {}  # outbox id -> (event type, process, recorded at)
    events = session.execute(
        sa.select(AuditEventRow.event_type, AuditEventRow.actor_process, AuditEventRow.recorded_at,
                  AuditEventRow.payload)
        .where(AuditEventRow.study_uid.in_({uid for uid, _ in claimed.values()}),
               AuditEventRow.event_type.in_(_DISPATCH_EVENTS))
        .order_by(AuditEventRow.seq)
    )  # fmt: skip
    for kind, process, recorded_at, payload in events:
        details = json.loads(payload)
        outbox_id = details.get("outbox_id")
        if outbox_id in claimed and "stale_claim" not in details:  # a released holder's late outcome: not the row's
            latest[outbox_id] = (kind, process, recorded_at)
    holders = {
        outbox_id: (claimed_by, heartbeat_at)
        for outbox_id, claimed_by, heartbeat_at in session.execute(
            sa.select(OutboxMessage.id, OutboxMessage.claimed_by, OutboxMessage.heartbeat_at).where(
                OutboxMessage.id.in_(sorted(claimed)), OutboxMessage.claimed_by.is_not(None)
            )
        ).all()
    }
    found: dict[int, InFlight] = {}
    for outbox_id, (kind, process, recorded_at) in latest.items():
        if kind != EventType.DISPATCH_ATTEMPTED.value:
            continue
        claimed_by, heartbeat_at = holders.get(outbox_id, (None, None))
        holder = ClaimHolder.parse(claimed_by) if claimed_by else None
        lease_until = claimed[outbox_id][1]
        found[outbox_id] = InFlight(outbox_id, process, recorded_at, lease_until, _gone(process, claimed_by),
                                    _holder_at(holder), heartbeat_at,
                                    round((lease_until - lease_now).total_seconds(), 1))  # fmt: skip
    return found


def _holder_at(holder: ClaimHolder | None) -> str:
    if holder is None:
        return UNNAMED
    if holder.beside_us:
        return HERE
    # another boot under this host name may be another machine: released by sightings, as another host's
    return OTHER_NAMESPACE if holder.on_this_machine else OTHER_HOST


def _gone(process: str, claimed_by: str | None) -> bool:
    """Whether the dispatcher of a delivery in flight is known to have ended: from its claim's holder when the row
    names one (its PID namespace known: one in another namespace under this host name is not called gone, its pid
    cannot be looked at here), else from the pid of its ``dispatch_attempted`` event's process."""
    holder = ClaimHolder.parse(claimed_by) if claimed_by else None
    return holder.ended() is not None if holder is not None else process_gone(process)
