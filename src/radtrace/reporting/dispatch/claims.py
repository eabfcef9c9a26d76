"""Who is sending an outbox row now, and the heartbeat that says it still is.

A claim (:meth:`radtrace.reporting.dispatch.outbox.Outbox.deliver`) pushes ``next_attempt_at`` a lease ahead (the
longest send plus a margin: the backstop that works across hosts), writes ``claimed_by`` (:func:`new_claim`) and
``heartbeat_at``; while the send is in flight a thread renews ``heartbeat_at`` every :data:`HEARTBEAT_S`
(:func:`kept_alive`), and recording the attempt clears both.

``claimed_by`` names the process so that a process in another PID namespace under the same host name (a container on
the host's network: ``docker --network host``, Kubernetes ``hostNetwork``) is not mistaken for one of ours:
``radtrace@pacs1:4242 pidns=4026531836 boot=9f733a94-... start=123456 claim=9f2c41d07a3e`` (the PID namespace's
inode from ``/proc/self/ns/pid``, the kernel's boot id, the process's start time in clock ticks since boot from
``/proc/self/stat``, and a token of that claim alone, :func:`new_claim`: recording an attempt checks it, so a holder
whose claim was released and taken again never records over the new one). :meth:`ClaimHolder.ended` says whether
such a holder provably ended: only when it shares this process's host name, boot and PID namespace, and its pid is
gone, a zombie, or now belongs to a process started at another time. The dead-claim release
(:mod:`radtrace.worker.dead_claims`) releases such a claim at once; a claim whose holder cannot be looked at here
(another PID namespace or boot under this host name) once its heartbeat is :data:`RENEWAL_SLACK_S` overdue; one of
another host once the same beat has been seen unchanged for :data:`HEARTBEAT_S` + :data:`RENEWAL_SLACK_S` by the
releasing process's own (monotonic) clock: ``heartbeat_at`` is written from the holder's clock, never compared with
another machine's (a holder of another boot under this host name may be another machine: sightings alone, too). A live
holder renews, so a send slower than the heartbeat is never released and sent twice.

The lease itself (``next_attempt_at`` while ``claimed_by`` is set) is written and judged on the database's clock
(:func:`database_now`: PostgreSQL's ``clock_timestamp()``, the one clock every node of a multi-node site shares; the
embedded SQLite database is on this machine), never on a node's wall clock: a node whose clock is minutes ahead does
not take a live send over, and one behind does not hold a dead one up.

*Fencing*: a dispatcher cut off from the database cannot renew its claim, and after :data:`HEARTBEAT_S` +
:data:`RENEWAL_SLACK_S` without a beat another node may release it and send again. So a send is begun only while this
claim was last known held (the claim's own transaction, or a beat that landed, measured from the moment it was sent
on this process's monotonic clock) less than :data:`SEND_FENCE_S` ago; past that, the claim is renewed first, and a
claim that cannot be renewed is not sent (:class:`Fence`). A send already begun runs to its end (its timeouts bound
it, shorter than the lease): a node cut off in the middle of a send may still send a copy that another node repeats.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Final

import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.errors import RadtraceError
from radtrace.store.base import utc_now
from radtrace.store.engine import Store, is_postgresql
from radtrace.store.models import OutboxMessage, OutboxState

__all__ = [
    "BEAT_RETRY_S",
    "CONFIRM_OVERDUE_S",
    "HEARTBEAT_S",
    "RENEWAL_SLACK_S",
    "SEND_FENCE_S",
    "ClaimHolder",
    "Fence",
    "claim_text",
    "database_now",
    "due_now",
    "kept_alive",
    "namespace",
    "new_claim",
    "overdue_before",
    "start_ticks",
    "this_process",
]

log = logging.getLogger("radtrace.reporting.dispatch.outbox")

#: How often a dispatcher renews ``heartbeat_at`` while a send is in flight.
HEARTBEAT_S: Final = 5.0
#: A claim whose heartbeat is this much overdue (a beat missed by more than a loaded machine or a slow commit delays
#: one) may be released; the same slack as a revision's (:data:`radtrace.worker.dead_claims.RENEWAL_SLACK_S`).
RENEWAL_SLACK_S: Final = 10.0
#: A beat that failed (the database away) is tried again this soon, not at the next :data:`HEARTBEAT_S` tick: once the
#: database is back, the claim is renewed within a second.
BEAT_RETRY_S: Final = 1.0
#: A claim of another PID namespace seen overdue is released only when a pass at least this much later still finds the
#: same beat overdue (:mod:`radtrace.worker.dead_claims`): a database that was away longer than the slack stopped the
#: holder's beats and the releaser's passes alike, and the holder's retried beat (:data:`BEAT_RETRY_S`) lands well
#: within this once it is back.
CONFIRM_OVERDUE_S: Final = 3.0

#: A send is begun only while this claim was last known held (its claim, or a beat that landed) less than this ago, by
#: this process's monotonic clock; past it, the claim is renewed first (:class:`Fence`). Another node may release the
#: claim :data:`HEARTBEAT_S` + :data:`RENEWAL_SLACK_S` (15 s) after the last beat it saw: the 5 s left are the margin
#: for the time between the check and the first bytes on the wire, and for the releaser's passes.
SEND_FENCE_S: Final = HEARTBEAT_S + RENEWAL_SLACK_S - 5.0

_CLAIMED_BY: Final = re.compile(
    r"^(?P<process>\S+@(?P<host>[^\s@]*):(?P<pid>\d{1,7})) pidns=(?P<ns>\d+|\?) boot=(?P<boot>[0-9a-f-]+|\?) "
    r"start=(?P<start>\d+|\?)(?: claim=[0-9a-f]{1,32})?$"
)


def database_now(session: Session) -> datetime:
    """The database's clock, the one every node of a site shares, for leases and claims: PostgreSQL's
    ``clock_timestamp()`` (the time now, not the transaction's start); the embedded SQLite database is on this
    machine, so this machine's clock. Leases written and judged on it do not depend on any node's wall clock."""
    if is_postgresql(session.get_bind()):
        found = session.execute(sa.text("SELECT clock_timestamp()")).scalar_one()
        assert isinstance(found, datetime)
        return found
    return utc_now()


def due_now(session: Session, now: datetime) -> datetime:
    """When to make a row due "now" so that every node finds it due at once: the earlier of this node's clock (``now``)
    and the database's (:func:`database_now`). An unclaimed row's ``next_attempt_at`` is judged on each dispatcher's
    own clock and a claimed one's on the database's: a node whose clock is ahead writing its own "now" would leave
    the row waiting, for as long as it is ahead, for every dispatcher whose clock is right."""
    return min(now, database_now(session))


def overdue_before(now: datetime, interval_s: float = HEARTBEAT_S) -> datetime:
    """A heartbeat older than this is overdue at ``now``."""
    return now - timedelta(seconds=interval_s + RENEWAL_SLACK_S)


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


@cache
def _boot_id() -> str | None:
    found = _read("/proc/sys/kernel/random/boot_id")
    return found if found and re.fullmatch(r"[0-9a-f-]{1,64}", found) else None


@cache
def _pid_namespace() -> int | None:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def start_ticks(pid: int | str) -> int | None:
    """When process ``pid`` of this PID namespace started, in clock ticks since boot (``/proc/<pid>/stat`` field 22);
    None when it cannot be read (no such process)."""
    stat = _read(f"/proc/{pid}/stat")
    try:
        return int(stat.rpartition(")")[2].split()[19]) if stat else None  # fields 1-2 end at the ')'
    except (ValueError, IndexError):
        return None


def namespace() -> tuple[int | None, str | None]:
    """This process's PID namespace (the inode of ``/proc/self/ns/pid``) and the kernel's boot id; None where they
    cannot be read."""
    return _pid_namespace(), _boot_id()


def claim_text(process: str, pid_ns: int | None, boot_id: str | None, start: int | None) -> str:
    """How ``claimed_by`` names a holder: ``program@host:pid pidns=N boot=ID start=TICKS`` ('?' for what is not
    known)."""
    return (f"{process} pidns={pid_ns if pid_ns is not None else '?'} boot={boot_id or '?'} "
            f"start={start if start is not None else '?'}")  # fmt: skip


def this_process() -> str:
    """This process as a claim names it (see the module docstring)."""
    return claim_text(f"radtrace@{socket.gethostname()}:{os.getpid()}", *namespace(), start_ticks("self"))


def new_claim() -> str:
    """What one claim writes in ``claimed_by``: :func:`this_process` and a token of this claim alone
    (``... claim=9f2c41d07a3e``), so that a holder whose claim was released and taken again by the same process (another
    thread, or after a hold's lift reset the row's attempts) is never mistaken for the new claim's holder."""
    return f"{this_process()} claim={secrets.token_hex(6)}"


@dataclass(frozen=True)
class ClaimHolder:
    """The process a claim names, read back from ``claimed_by``."""

    process: str  # program@host:pid
    host: str
    pid: int
    pid_ns: int | None
    boot_id: str | None
    start: int | None

    @classmethod
    def parse(cls, claimed_by: str) -> ClaimHolder | None:
        """The holder ``claimed_by`` names; None for anything :func:`this_process` does not write."""
        found = _CLAIMED_BY.match(claimed_by)
        if found is None:
            return None
        ns, boot, start = (found[name] if found[name] != "?" else None for name in ("ns", "boot", "start"))
        return cls(found["process"], found["host"], int(found["pid"]), int(ns) if ns else None, boot,
                   int(start) if start else None)  # fmt: skip

    @property
    def on_this_host(self) -> bool:
        """Its host name is this process's (which may still be another PID namespace: see :attr:`beside_us`)."""
        return self.host == socket.gethostname()

    @property
    def on_this_machine(self) -> bool:
        """Its host name and the kernel's boot id are this process's: the same machine, so the same wall clock (a
        container on the host's network shares them). Another boot under this host name may be another machine."""
        return self.on_this_host and self.boot_id is not None and self.boot_id == _boot_id()

    @property
    def beside_us(self) -> bool:
        """It ran on this host name, in this boot and this PID namespace: its pid can be looked at here."""
        return (self.on_this_host and self.pid_ns is not None and self.pid_ns == _pid_namespace()
                and self.boot_id is not None and self.boot_id == _boot_id())  # fmt: skip

    def ended(self) -> str | None:
        """Why this holder provably ended ('which is not running', or its pid now belongs to another process); None
        when it may be running or cannot be looked at here (:attr:`beside_us` is False)."""
        if not self.beside_us:
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return "which is not running"
        except PermissionError:  # alive, another user's: the start time still tells
            pass
        except OSError:
            return None
        started = start_ticks(self.pid)
        if started is None or self.start is None:  # unreadable, or nothing to compare: it may be the holder
            return None
        if started != self.start:
            return f"which is not running (pid {self.pid} is now another process)"
        stat = _read(f"/proc/{self.pid}/stat") or ""
        return "which is not running (a zombie, killed)" if stat.rpartition(")")[2].split()[:1] == ["Z"] else None


class Fence:
    """When this process last knew its claim held, on its monotonic clock: the moment the claim's transaction, or the
    latest beat that landed, was sent (the row could not show that beat to another node before). :meth:`refusal` says
    whether a send may begin now (see the module docstring)."""

    def __init__(self, renew: Callable[[], bool], held_since: float, monotonic: Callable[[], float]) -> None:
        self._renew, self._monotonic = renew, monotonic
        self.held_since = held_since
        self._lock = threading.Lock()

    def renew(self) -> bool:
        """Renew the claim now; True when it landed (the fence moves to when it was sent), False when the claim is no
        longer this one's. Raises RadtraceError when the database is away."""
        sent_at = self._monotonic()
        if not self._renew():
            return False
        with self._lock:
            self.held_since = max(self.held_since, sent_at)
        return True

    def age(self) -> float:
        """Seconds since the claim was last known held."""
        with self._lock:
            return self._monotonic() - self.held_since

    def refusal(self) -> str | None:
        """None when a send may begin now: the claim was known held less than :data:`SEND_FENCE_S` ago, or a renewal
        now lands. Otherwise why not (the claim is not renewed for so long that another node may have taken it over,
        or it is another's already)."""
        age = self.age()
        if age < SEND_FENCE_S:
            return None
        try:
            if self.renew():
                return None
        except RadtraceError as exc:
            return (f"not sent: this dispatcher's claim was last renewed {age:.0f} s ago and cannot be renewed now "
                    f"({exc.reason}); after {HEARTBEAT_S + RENEWAL_SLACK_S:.0f} s without a beat another dispatcher "
                    "may send it")  # fmt: skip
        return "not sent: this dispatcher's claim was released meanwhile (another dispatcher may be sending it)"


@contextlib.contextmanager
def kept_alive(
    store: Store,
    outbox_id: int,
    claimed_by: str,
    attempts: int,
    clock: Callable[[], datetime],
    interval_s: float = HEARTBEAT_S,
    *,
    held_since: float | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> Iterator[Fence]:
    """Renew the claim's ``heartbeat_at`` every ``interval_s`` on one thread while the body (the send) runs; the
    yielded :class:`Fence` says whether the send may begin (``held_since``: when the claim's transaction was sent, on
    ``monotonic``; now if not given).

    Renewed only while the row is still this claim (same holder and attempt, pending): a claim found released is not
    renewed again. A database that is away is logged (once, and when a beat lands again) and the beat is tried again
    every :data:`BEAT_RETRY_S`, so the claim is renewed within a second of the database's return; the heartbeat may
    lapse meanwhile, and recording will tell (:meth:`radtrace.reporting.dispatch.outbox.Outbox._record`).
    """
    stop = threading.Event()

    def renew() -> bool:
        with store.session("renewing a delivery's claim", immediate=True) as session:
            done = session.execute(
                sa.update(OutboxMessage)
                .where(OutboxMessage.id == outbox_id, OutboxMessage.claimed_by == claimed_by,
                       OutboxMessage.attempts == attempts, OutboxMessage.state == OutboxState.PENDING)
                .values(heartbeat_at=clock())
                .execution_options(synchronize_session=False)
            )  # fmt: skip
            return bool(done.rowcount)  # type: ignore[attr-defined]

    fence = Fence(renew, monotonic() if held_since is None else held_since, monotonic)

    def beat() -> None:
        wait, failing_since = interval_s, None
        while not stop.wait(wait):
            try:
                if not fence.renew():
                    log.warning("outbox %s: claim lost while sending (released or recorded by another)", outbox_id)
                    return
            except RadtraceError as exc:
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning("outbox %s: claim not renewed (trying again every %.0f s): %s", outbox_id,
                                BEAT_RETRY_S, exc.reason)  # fmt: skip
                wait = min(BEAT_RETRY_S, interval_s)
                continue
            if failing_since is not None:
                log.warning("outbox %s: claim renewed again after %.1f s without", outbox_id,
                            time.monotonic() - failing_since)  # fmt: skip
            wait, failing_since = interval_s, None

    thread = threading.Thread(target=beat, name=f"radtrace-outbox-{outbox_id}", daemon=True)
    thread.start()
    try:
        yield fence
    finally:
        stop.set()
        thread.join()
