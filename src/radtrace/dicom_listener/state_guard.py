"""The listener DUL's state machine, guarded: an event it has no transition for closes the connection, not the thread.

And a PDU the peer may not send in the association's state (PS3.8 Table 9-10: an A-ASSOCIATE-RQ or -AC inside an
association, a P-DATA-TF before the A-ASSOCIATE-AC or after an A-RELEASE-RQ, a second A-RELEASE-RQ, an A-RELEASE-RP
nothing asked for), which the state machine answers with an A-ABORT (AA-8), is logged in one line and audited like
the protocol violations the fast path finds; before, only pynetdicom's debug log said so. A connection refused before
any association (its first PDU not an A-ASSOCIATE-RQ: the fast path's reader logs it) is shut once the A-ABORT is
sent, not after the abort's grace or the ARTIM timer. A local primitive the
machine has no transition for (the A-ASSOCIATE-AC after such an abort) is dropped without pynetdicom's ERROR line.

Used by :class:`radtrace.dicom_listener.fast_path.DatasetFastPathDUL`.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
from typing import Any, Final

from pynetdicom.fsm import TRANSITION_TABLE, InvalidEventError

__all__ = ["PROTOCOL_VIOLATION", "guard_state_machine"]

log = logging.getLogger(__name__)

#: The audit reason of every protocol violation the listener aborts or judges (here, the fast path, a failed
#: negotiation).
PROTOCOL_VIOLATION: Final = "association aborted: protocol violation"

#: Events made from a primitive the local user queued to send (PS3.8 9.2, Table 9-6).
_LOCAL_PRIMITIVE_EVENTS: Final = frozenset({"Evt1", "Evt7", "Evt8", "Evt9", "Evt11", "Evt14", "Evt15"})

#: Events made from a PDU the peer sent, by the PDU (PS3.8 Table 9-6); an invalid PDU (Evt19) is the fast path's.
_PEER_PDUS: Final = {
    "Evt3": "A-ASSOCIATE-AC",
    "Evt4": "A-ASSOCIATE-RJ",
    "Evt6": "A-ASSOCIATE-RQ",
    "Evt10": "P-DATA-TF",
    "Evt12": "A-RELEASE-RQ",
    "Evt13": "A-RELEASE-RP",
}

#: What the states a peer's PDU may come in are, for the log and the audit (PS3.8 Table 9-10).
_STATES: Final = {
    "Sta3": "before the A-ASSOCIATE-AC",
    "Sta5": "before the A-ASSOCIATE-AC",
    "Sta6": "inside the association",
    "Sta7": "after an A-RELEASE-RQ",
    "Sta8": "after its A-RELEASE-RQ",
    "Sta9": "in a release collision",
    "Sta10": "in a release collision",
    "Sta11": "in a release collision",
    "Sta12": "in a release collision",
}


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
        state = machine.current_state
        if event == "Evt18" and state == "Sta2":  # ARTIM expired: no A-ASSOCIATE-RQ in time
            dul.acse_timed_out()
        if TRANSITION_TABLE.get((event, state)) == "AA-8" and event in _PEER_PDUS and not dul.refused:
            _violation(dul, f"{_PEER_PDUS[event]} {_STATES.get(state, f'in {state}')}")
        try:
            if (event, state) not in TRANSITION_TABLE and event in _LOCAL_PRIMITIVE_EVENTS:
                raise InvalidEventError(event)  # as do_action would, less its ERROR line: handled below
            do_action(event)
            if machine.current_state == "Sta6" and not dul.negotiation_charged:
                dul.charge_negotiation()  # the A-ASSOCIATE-AC is sent: what follows is DIMSE work
            if state == "Sta2" and event == "Evt19":  # refused before any association: AA-1 has sent the A-ABORT,
                _shut(dul)  # the socket is shut now, not after the abort's grace or the ARTIM timer (30 s)
        except Exception as exc:  # any failure: the connection goes, the thread stays
            if isinstance(exc, InvalidEventError) and event in _LOCAL_PRIMITIVE_EVENTS:
                with contextlib.suppress(queue.Empty):  # its primitive waits in the queue: drop it, or it recurs
                    dul.to_provider_queue.get_nowait()
            what = "dropped" if isinstance(exc, InvalidEventError) else f"failed ({type(exc).__name__}) at"
            log.info("%s %s in %s and closed the connection with %s", what, event, machine.current_state, dul._peer())
            _shut(dul)

    machine.do_action = guarded


def _shut(dul: Any) -> None:
    """Shut the connection's socket both ways: the DUL's read ends, and the machine closes it the usual way."""
    sock = getattr(dul.socket, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _violation(dul: Any, what: str) -> None:
    """The peer sent a PDU its association's state does not allow: the machine aborts (AA-8); logged and audited
    once (what the peer sends after is read and dropped)."""
    dul.refused = True
    log.warning("aborted the association with %s: %s", dul._peer(), what)
    if dul.connection is not None and dul.admission is not None:
        dul.admission.abort(dul.connection, what)
    if dul.on_refused is not None:
        with contextlib.suppress(Exception):  # the abort stands; the audit logs its own failures
            dul.on_refused(dul._host(), PROTOCOL_VIOLATION, detail=what)
