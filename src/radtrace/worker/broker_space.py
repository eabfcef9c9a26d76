"""The embedded broker on a full disk: its messages wait, nothing is lost, one line says so.

The embedded broker (``sqla+sqlite:///<data_dir>/broker.db``, :mod:`radtrace.worker.app`) writes to its SQLite file
to take a message (marking it delivered) and to ring a doorbell (adding one). On a full disk both fail with
SQLITE_FULL ('database or disk is full'):

* a worker's channel (:func:`radtrace.worker.app._get_unless_full`) answers 'no message' and waits before trying
  again (:class:`BrokerSpace`: 1 s, doubling up to 30 s, sooner when ``statvfs`` shows space again), instead of
  Celery's reconnect loop that ended the worker; the message stays in the broker, not delivered;
* a doorbell that cannot be rung returns False as any broker failure does (:mod:`radtrace.worker.doorbell`): the
  revision or delivery is in the database, and the reconciler rings it again once there is space. One line a minute
  says so (:func:`ring_failed_on_full_disk`), not one per study; the reconciler's own line counts its pass's rings
  refused so (:func:`refused_rings`) and names the disk (:func:`broker_disk_line`), not "broker down?".
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Final

from radtrace.worker.disk_space import FLOOR_BYTES, disk_full_line, free_bytes, megabytes

__all__ = ["BrokerSpace", "broker_disk_line", "is_disk_full", "refused_rings", "ring_failed_on_full_disk"]

log = logging.getLogger(__name__)

FIRST_WAIT_S: Final = 1.0
LONGEST_WAIT_S: Final = 30.0
RING_LINE_EVERY_S: Final = 60.0


def _sqlite_file(url: str) -> Path | None:
    """The SQLite file of a broker URL (``sqla+`` stripped or not), or None for another database."""
    url = url.removeprefix("sqla+")
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def is_disk_full(error: BaseException, url: str) -> bool:
    """Whether ``error`` (SQLAlchemy's, or sqlite3's own) is the broker's SQLite file finding its disk full:
    SQLITE_FULL, or an I/O error while less than :data:`~radtrace.worker.disk_space.FLOOR_BYTES` is free there."""
    found: BaseException | None = error
    while found is not None and not isinstance(found, sqlite3.Error):
        found = getattr(found, "orig", None) or found.__cause__
    if found is None or (path := _sqlite_file(url)) is None:
        return False
    code = getattr(found, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL or "database or disk is full" in str(found):
        return True
    if code is not None and code & 0xFF == sqlite3.SQLITE_IOERR:
        try:
            return free_bytes(path.parent) < FLOOR_BYTES
        except OSError:
            return False
    return False


class BrokerSpace:
    """One embedded channel's wait for space: whether to leave the database alone for now, and the two lines."""

    def __init__(self, url: str, *, clock: object = time.monotonic) -> None:
        self.url = url
        self.path = _sqlite_file(url)
        self.clock = clock if callable(clock) else time.monotonic
        self.since: float | None = None  # monotonic time the disk was found full
        self.wait_s = 0.0
        self.until = 0.0
        self.tried = 0.0  # the last try (or look at the free space) while full

    def is_full(self, error: BaseException) -> bool:
        """Whether ``error`` is this broker's disk being full."""
        return is_disk_full(error, self.url)

    def waiting(self) -> bool:
        """Whether the channel should not touch the database yet: the disk was full a moment ago, and neither its
        wait is over nor (looked at once a second) has the file system space again."""
        if self.since is None:
            return False
        now = self.clock()
        if now >= self.until:
            return False
        if now - self.tried < FIRST_WAIT_S or self.path is None:
            return True
        self.tried = now  # space back: try now, not at the end of a 30 s wait (a quota: once a second at most)
        try:
            return free_bytes(self.path.parent) < FLOOR_BYTES
        except OSError:
            return True

    def full(self) -> None:
        """Taking a message failed on a full disk: wait before the next try (1 s, doubling up to 30 s)."""
        now = self.clock()
        if self.since is None:
            self.since, self.wait_s = now, FIRST_WAIT_S
            where = self.path.parent if self.path is not None else Path(self.url)
            log.warning("%s: the embedded broker's messages wait, not taken, until there is space (tried again "
                        "every %g s to %g s); nothing is lost, the database keeps every study", disk_full_line(where),
                        FIRST_WAIT_S, LONGEST_WAIT_S)  # fmt: skip
        else:
            self.wait_s = min(2 * self.wait_s, LONGEST_WAIT_S)
        self.until, self.tried = now + self.wait_s, now

    def taken(self) -> None:
        """Taking a message worked (or found none): the disk has space again, if it was full."""
        if self.since is None:
            return
        waited = self.clock() - self.since
        self.since = None
        where = self.path.parent if self.path is not None else Path(self.url)
        try:
            free = megabytes(free_bytes(where))
        except OSError:
            free = "? MB"
        log.warning("disk space again: %s, %s free; the embedded broker delivers again (waited %.0f s)", where, free,
                    waited)  # fmt: skip


_rings = threading.Lock()
_ring_state: dict[str, float | int] = {"said_at": float("-inf"), "since": 0}
_refused = threading.local()  # this thread's rings refused for a full disk (the reconciler counts its pass's)


def refused_rings() -> int:
    """How many doorbells this thread has had refused because the broker's disk is full, ever: the reconciler
    subtracts the count before its pass from the count after it. Per thread, so a listener's rings in the same
    process (``serve``) are not counted as the reconciler's."""
    return int(getattr(_refused, "count", 0))


def broker_disk_line(url: str) -> str:
    """'disk full: <the broker file's folder>, N MB free' for a broker URL (its free space as it is now)."""
    path = _sqlite_file(url)
    return disk_full_line(path.parent if path is not None else Path(url))


def ring_failed_on_full_disk(url: str, clock: object = time.monotonic) -> None:
    """A doorbell was not rung because the broker's disk is full: one line a minute at most, with how many since."""
    now = clock() if callable(clock) else time.monotonic()
    _refused.count = refused_rings() + 1
    with _rings:
        _ring_state["since"] = int(_ring_state["since"]) + 1
        if now - float(_ring_state["said_at"]) < RING_LINE_EVERY_S:
            return
        count, _ring_state["since"], _ring_state["said_at"] = int(_ring_state["since"]), 0, now
    path = _sqlite_file(url)
    log.warning("%s: %d doorbell(s) not rung (the embedded broker cannot write %s); each study and delivery is kept "
                "in the database and the reconciler rings it again once there is space", broker_disk_line(url), count,
                path.name if path is not None else url)  # fmt: skip
