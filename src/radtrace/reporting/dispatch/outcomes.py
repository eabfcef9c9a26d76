"""How a delivery attempt ended, as the outbox records it: delivered, refused by the peer, or failed.

A peer that *answered* that it did not take the payload stored nothing: a C-STORE failure status, an HL7 ``AE``,
``AR``, ``CE`` or ``CR``, an association it rejected, our SOP class or a PDU size it refused (:mod:`.cstore`,
:mod:`.mllp`). The senders raise :class:`PeerRefusedError` (for good) or :class:`PeerRefusedForNowError` (a retry
may pass: ``A7xx`` out of resources, ``AE``) for it, saying which peer, its code (the status, the ACK code, the
A-ASSOCIATE-RJ's codes) and what it refused. Anything else (no answer, a timeout, a connection dropped or reset, an
answer we cannot read) may have left the payload stored at the peer: it is ``failed``. The file drop has no peer to
answer: its errors are ``failed``.

The outbox writes the outcome on the row (``outbox.last_outcome``) and keeps ``outbox.reached``: whether the peer
has, or may have, the payload. Each claim sets it (a send in flight, or one cut off by a crash and never recorded,
may reach the peer); an attempt the peer refused puts back what it was before that claim; a delivered one or a
failed one leaves it set. So a delivery is "never reached" exactly when every attempt it ever made, across a retry
or a hold lifted (which count attempts from 0 again), was refused by the peer: the draft withdrawal sends nothing to
a peer that never stored the draft (:mod:`.withdrawals`), from this field, never from the wording of ``last_error``.
"""

from __future__ import annotations

from radtrace.errors import DispatchError, DispatchRejectedError, PeerUnavailableError, RadtraceError
from radtrace.store.models import DeliveryOutcome

__all__ = [
    "DeliveryOutcome",
    "PeerBusyError",
    "PeerRefusalError",
    "PeerRefusedError",
    "PeerRefusedForNowError",
    "outcome_of",
]


class PeerRefusalError(RadtraceError):
    """The peer answered that it did not take the payload: it stored nothing. ``destination``: the peer as the
    outbox names it; ``code``: what it answered (``0xA900``, ``AR``, ``1/1/7``, ``context``, ``pdu``); ``refused``:
    what it refused (the SR, the message, SOP class …, an association)."""

    def __init__(self, reason: str, *, destination: str, code: str, refused: str) -> None:
        super().__init__(reason)
        self.destination = destination
        self.code = code
        self.refused = refused

    def __reduce__(self) -> tuple[object, ...]:
        return _rebuilt, (type(self), self.reason, self.destination, self.code, self.refused)


def _rebuilt(cls: type[PeerRefusalError], reason: str, destination: str, code: str, refused: str) -> PeerRefusalError:
    error = cls.__new__(cls)
    RadtraceError.__init__(error, reason)
    error.destination, error.code, error.refused = destination, code, refused
    return error


class PeerRefusedError(PeerRefusalError, DispatchRejectedError):
    """The peer refused the payload for good (a C-STORE ``A9xx``/``Cxxx``/``0122``/``0124``, an HL7 ``AR``/``CR``,
    a SOP class or PDU size it does not take): not retried."""


class PeerRefusedForNowError(PeerRefusalError, DispatchError):
    """The peer refused the payload this time (a C-STORE ``A7xx`` or another failure status, an HL7 ``AE``/``CE``):
    retried; it stored nothing this time."""


class PeerBusyError(PeerRefusalError, PeerUnavailableError):
    """The PACS rejected the association for now (A-ASSOCIATE-RJ result 2, transient: busy, too many associations):
    nothing was sent; retried, as a peer not available."""


def outcome_of(error: BaseException | None) -> DeliveryOutcome:
    """The outcome an attempt that ended with ``error`` (None: delivered) is recorded as."""
    if error is None:
        return DeliveryOutcome.DELIVERED
    if isinstance(error, PeerRefusalError):
        return DeliveryOutcome.REFUSED
    return DeliveryOutcome.FAILED
