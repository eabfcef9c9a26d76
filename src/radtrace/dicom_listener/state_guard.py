"""The listener DUL's state machine, guarded: an event it has no transition for closes the connection, not the thread.

Used by :class:`radtrace.dicom_listener.fast_path.DatasetFastPathDUL`.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
from typing import Any, Final

from pynetdicom.fsm import InvalidEventError

__all__ = ["guard_state_machine"]

log = logging.getLogger(__name__)

#: Events made from a primitive the local user queued to send (PS3.8 9.2, Table 9-6).
_LOCAL_PRIMITIVE_EVENTS: Final = frozenset({"Evt1", "Evt7", "Evt8", "Evt9", "Evt11", "Evt14", "Evt15"})


def guard_state_machine(dul: Any) -> None:
    """Survive an event the state machine has no transition for (or whose action fails), keeping the DUL thread.

    pynetdicom raises from its reactor loop, outside any handler, when for instance the local
    A-ASSOCIATE-AC comes after a peer's invalid PDU already moved the machine to Sta13: the DUL
    thread dies and the association, its socket and its buffers stay behind for good. Here the
    event is dropped and the connection shut, so the machine closes it the usual way (Evt17).
    """
    machine = dul.state_machine
    do_action = machine.do_action

    def guarded(event: str) -> None:
        if event == "Evt18" and machine.current_state == "Sta2":  # ARTIM expired: no A-ASSOCIATE-RQ in time
            dul.acse_timed_out()
        try:
            do_action(event)
            if machine.current_state == "Sta6" and not dul.negotiation_charged:
                dul.charge_negotiation()  # the A-ASSOCIATE-AC is sent: what follows is DIMSE work
        except Exception as exc:  # any failure: the connection goes, the thread stays
            if isinstance(exc, InvalidEventError) and event in _LOCAL_PRIMITIVE_EVENTS:
                with contextlib.suppress(queue.Empty):  # its primitive waits in the queue: drop it, or it recurs
                    dul.to_provider_queue.get_nowait()
            what = "dropped" if isinstance(exc, InvalidEventError) else f"failed ({type(exc).__name__}) at"
            log.info("%s %s in %s and closed the connection with %s", what, event, machine.current_state, dul._peer())
            sock = getattr(dul.socket, "socket", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    machine.do_action = guarded
