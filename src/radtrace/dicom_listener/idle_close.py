"""An idle association ended at ``listener.network_timeout_s``: one INFO line, said by the listener.

A PACS that keeps its association open between studies is normal; pynetdicom ends it when nothing has arrived for
the network timeout and logs ``Network timeout reached`` at ERROR, with no peer named, for each one: on a quiet night
every idle PACS connection read as an error. For the listener's own associations that record is dropped
(:class:`ListenerSaysIdleClose`) and the listener logs one line at INFO naming the calling AE, the address and the
port it came in by (:func:`log_idle_close`). The close itself is audited as every timeout is, in aggregate
(``connection timed out (listener.network_timeout_s)``, :meth:`ListenerHandlers.on_timed_out`). pynetdicom's other
ERROR records, and this one for an association the listener did not accept (an SCU in the same process, for which
the peer going silent is a failure), are left as they are.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Final

from radtrace.dicom_listener.admission import Connection
from radtrace.logging import escape

__all__ = ["IDLE_TIMEOUT_MESSAGE", "ListenerSaysIdleClose", "log_idle_close"]

log = logging.getLogger(__name__)

#: pynetdicom 3's record when an association's idle timer expires (``Association._run_reactor``).
IDLE_TIMEOUT_MESSAGE: Final = "Network timeout reached"


class ListenerSaysIdleClose(logging.Filter):
    """Drops pynetdicom's ``Network timeout reached`` where the association is one the listener accepted (it has a
    radtrace :class:`Connection`): the listener's handlers log that close themselves."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != IDLE_TIMEOUT_MESSAGE or record.args:
            return True
        assoc: Any = threading.current_thread()  # pynetdicom logs it from the association's own thread
        listened = bool(getattr(assoc, "is_acceptor", False))
        return not (listened and isinstance(getattr(assoc, "radtrace_connection", None), Connection))


def log_idle_close(assoc: Any, connection: Connection, timeout_s: float) -> None:
    """The one line for an association pynetdicom ended for being idle ``timeout_s`` (with an A-ABORT)."""
    calling = str(getattr(getattr(assoc, "requestor", None), "ae_title", "") or "").strip()
    door = f" on port {connection.port}{' (TLS)' if connection.tls else ''}" if connection.port else ""
    log.info(
        "ended the idle association from %s at %s%s with an A-ABORT: nothing received for %g s "
        "(listener.network_timeout_s)",
        escape(repr(calling)),
        escape(connection.host),
        door,
        timeout_s,
    )
