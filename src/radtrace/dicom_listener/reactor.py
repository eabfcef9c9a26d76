"""Wake-ups for pynetdicom's two threads per association, instead of their 1 ms polling.

:class:`Wake` rings the DUL thread out of its wait for data when there is something to send;
:class:`ReactorGate` holds the association thread until a DIMSE message or an ACSE primitive has
arrived (through :class:`PokingQueue` and :class:`UserQueue`) or :data:`REACTOR_IDLE_S` has passed.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
import weakref
from typing import Any, Final

from pynetdicom.dul import DULServiceProvider

from radtrace.dicom_listener.pdu_socket import HALF_OPEN_WAIT_S

__all__ = ["REACTOR_IDLE_S", "PokingQueue", "ReactorGate", "UserQueue", "Wake"]


class Wake:
    """A socket pair that wakes the DUL thread from its wait for data when there is something to send."""

    def __init__(self) -> None:
        self.reader, self._writer = socket.socketpair()
        self.reader.setblocking(False)
        self._writer.setblocking(False)

    def ring(self) -> None:
        """Wake the DUL thread (a wake already pending is enough)."""
        with contextlib.suppress(OSError):  # full: a wake is pending; closed: the association is gone
            self._writer.send(b"\0")

    def drain(self) -> None:
        """Take the pending wakes."""
        with contextlib.suppress(OSError):
            while self.reader.recv(4096):
                pass

    def close(self) -> None:
        self.reader.close()
        self._writer.close()


#: Longest the association thread idles between checks of release, abort and timers.
REACTOR_IDLE_S: Final = 0.02


class ReactorGate(threading.Event):
    """The association reactor's pause checkpoint, which also holds the reactor until there is work.

    pynetdicom's acceptor loop sleeps 1 ms and then waits on this event (set unless the reactor is
    paused), a thousand turns a second. Here the wait also lasts until :meth:`poke` (a DIMSE message
    or an ACSE primitive has arrived) or :data:`REACTOR_IDLE_S`. It never returns while cleared:
    a thread that paused the reactor still has it paused.
    """

    def __init__(self) -> None:
        super().__init__()
        self.set()
        self._work = threading.Event()

    def poke(self) -> None:
        """Something arrived for the reactor."""
        self._work.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until set, then until poked (or the idle time passes) while still set."""
        while True:
            if not super().wait(timeout):
                return False
            self._work.wait(REACTOR_IDLE_S)
            self._work.clear()  # the reactor checks its queues after this: nothing put before is missed
            if self.is_set():
                return True


class PokingQueue(queue.Queue[Any]):
    """A queue that pokes the association reactor on each put."""

    def __init__(self, gate: ReactorGate) -> None:
        super().__init__()
        self._gate = gate

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._gate.poke()


class UserQueue(PokingQueue):
    """The DUL-to-association queue, whose blocking ``get`` gives up once the DUL thread has ended.

    pynetdicom's acceptor waits up to the ACSE timeout for an A-ASSOCIATE indication, even when the
    DUL has already aborted the connection (an invalid first PDU): for a flood of such connections
    that is a thread and its buffers per connection for 30 s. Here the wait ends with the DUL.
    """

    def __init__(self, gate: ReactorGate, dul: DULServiceProvider) -> None:
        super().__init__(gate)
        self._dul = weakref.ref(dul)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if not block:
            return super().get(False)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = HALF_OPEN_WAIT_S if deadline is None else min(HALF_OPEN_WAIT_S, deadline - time.monotonic())
            try:
                return super().get(True, max(left, 0.0))
            except queue.Empty:
                dul = self._dul()
                ended = dul is None or (dul.ident is not None and not dul.is_alive())  # started, and over
                if ended or (deadline is not None and time.monotonic() >= deadline):
                    timed_out = getattr(dul, "acse_timed_out", None)
                    if not ended and timed_out is not None:  # the acceptor's ACSE timeout: it closes the connection
                        timed_out()
                    raise
