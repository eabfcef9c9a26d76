"""A deadline on each read a C-STORE client's pynetdicom makes of a PDU from the peer it called.

pynetdicom reads a PDU until it has all of it (its 6-byte header, then all its body), on a socket with no timeout
before the association is established: a peer that sent one byte of its A-ASSOCIATE-AC, its header or half of it,
and then nothing, held the client for as long as it kept the connection open, whatever the timeouts (a 1 s timeout
took 90 s against a PACS holding on for 90 s, 120 s for ``radtrace send`` against one holding on for 120 s); one that
drips a PDU a byte at a time was not cut either. :class:`ReadDeadline` bounds each such read; ``radtrace send``
(:func:`radtrace.dicom_listener.scu.send_files`) and the dispatch C-STORE client
(:mod:`radtrace.reporting.dispatch.cstore`) both register it.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from pynetdicom import evt
from pynetdicom.events import EventHandlerType

__all__ = ["ReadDeadline"]


class ReadDeadline:
    """Each read pynetdicom makes of a PDU part (its 6-byte header, then all its body, one ``recv`` call each) ends
    within ``timeout_s``: a :class:`TimeoutError`, which pynetdicom takes as the connection lost (the association
    ends at once, as :class:`~radtrace.dicom_listener.scu.PduGuard`'s refusal does); :meth:`reason` says why. It
    replaces pynetdicom's read, so its handler must come first in ``evt_handlers``:
    :class:`~radtrace.dicom_listener.scu.PeerAnswer` and the guard wrap it (they look and count, then read through
    it); registered after them, it would cut them out."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.cut = False

    def handlers(self) -> list[EventHandlerType]:
        return [(evt.EVT_CONN_OPEN, self._opened)]

    def reason(self, where: str) -> str | None:
        """Why the association ended, once a read was cut off; else None."""
        if not self.cut:
            return None
        return f"{where} did not send the rest of a PDU within {self.timeout_s:g} s (it stalled or dripped it): cut off"

    def _opened(self, event: Any) -> None:
        transport = event.assoc.dul.socket

        def recv(nr_bytes: int) -> bytearray:
            sock = transport.socket
            deadline = time.monotonic() + self.timeout_s
            data = bytearray()
            try:
                while len(data) < nr_bytes:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self.cut = True
                        raise TimeoutError(f"a PDU not received in full within {self.timeout_s:g} s")
                    sock.settimeout(left)
                    try:
                        chunk = sock.recv(min(nr_bytes - len(data), 65536))
                    except TimeoutError:
                        self.cut = True
                        raise
                    if not chunk:  # closed: what was read, as pynetdicom's own read returns it
                        return data
                    data.extend(chunk)
            finally:
                with contextlib.suppress(OSError):
                    sock.settimeout(self.timeout_s)  # pynetdicom sends on it too, from this thread
            return data

        transport.recv = recv
