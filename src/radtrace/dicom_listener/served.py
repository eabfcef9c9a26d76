"""Which DIMSE requests the listener serves, judged before pynetdicom's service classes see them.

The listener serves C-ECHO on the Verification context and C-STORE, with its data set, on a storage context. pynetdicom
picks the service class by the request's Affected (or Requested) SOP Class UID, not by the presentation context it came
on, and hands over what it cannot serve in ways a peer can use: a C-FIND, C-MOVE or C-GET on a storage context raised
inside the association (aborted, an error in the log, nothing audited); an N-CREATE on one reached the C-STORE handler
(a traceback, 0110H); an N-ACTION or C-FIND on the Verification context was answered 0000H as if it were a C-ECHO; a
C-STORE naming another SOP class than its context's was stored; a C-STORE without a data set raised in the handler;
and one without a Message ID was dropped unanswered with its data set left in the spool's ``.incoming`` until the next
start. Here (:func:`request_problem`, a pure decision) each request is answered or aborted:

* a request of a service not served: its own response, status 0211H (unrecognized operation, PS3.7 C.4);
* a C-ECHO or C-STORE whose Affected SOP Class UID (0000,0002) is not its context's abstract syntax, a C-ECHO on
  another context than Verification's, a C-STORE on Verification's: 0122H (SOP class not supported);
* a C-STORE without a data set (Command Data Set Type (0000,0800) 0101H) or without a required element: C210H;
* a request without a Message ID (0000,0110), which no response could name: the association is aborted;
* a response (the listener asks nothing): dropped.

Each is logged in one line, audited (aggregated: ``radtrace.dicom_listener.refusals``), and the data set file a
refused C-STORE brought is removed. C-CANCEL is no request (PS3.7 9.3.2.3): pynetdicom keeps it aside, and what it
passes on is dropped here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pynetdicom.dimse_primitives import C_CANCEL, C_ECHO, C_STORE

from radtrace.dicom_listener.contexts import VERIFICATION
from radtrace.dicom_listener.fast_path import take_received
from radtrace.dicom_listener.policy import STATUS_CANNOT_UNDERSTAND
from radtrace.logging import escape

__all__ = [
    "STATUS_SOP_CLASS_NOT_SUPPORTED",
    "STATUS_UNRECOGNIZED_OPERATION",
    "RequestProblem",
    "request_problem",
    "serve_only_what_is_served",
]

log = logging.getLogger(__name__)

#: PS3.7 C.4: the operation is not one of those agreed.
STATUS_UNRECOGNIZED_OPERATION: Final = 0x0211
#: PS3.7 9.1.1.1.9, 9.1.5.1.4: refused, SOP class not supported.
STATUS_SOP_CLASS_NOT_SUPPORTED: Final = 0x0122

#: The audit reason of every refused request (the problem goes in the event's ``requests``).
REFUSED_REASON: Final = "DIMSE request refused"

#: The data elements a request's keywords are, for the messages.
_TAGS: Final = {
    "MessageID": "(0000,0110)",
    "AffectedSOPClassUID": "(0000,0002)",
    "AffectedSOPInstanceUID": "(0000,1000)",
    "Priority": "(0000,0700)",
    "DataSet": "(0000,0800)",
}


@dataclass(frozen=True)
class RequestProblem:
    """Why a request is not served, and its answer (``status`` ``None``: none can be sent, the association is aborted;
    ``dropped``: a response nothing asked for, dropped)."""

    command: str
    problem: str
    status: int | None
    dropped: bool = False

    def describe(self) -> str:
        """``command: problem``, as the log and the response's Error Comment say it."""
        return f"{self.command}: {self.problem}"


def _name(message: Any, suffix: str) -> str:
    return f"{getattr(message, 'msg_type', type(message).__name__.replace('_', '-'))}-{suffix}"


def request_problem(request: Any, abstract_syntax: str | None) -> RequestProblem | None:
    """Why ``request`` (a pynetdicom DIMSE primitive) on a context of ``abstract_syntax`` is not served, or ``None``."""
    if getattr(request, "Status", None) is not None:  # a response: the listener asks nothing
        return RequestProblem(_name(request, "RSP"), "a response to no request", None, dropped=True)
    command = _name(request, "RQ")
    if getattr(request, "MessageID", None) is None:
        return RequestProblem(command, "no Message ID (0000,0110)", None)
    if not isinstance(request, C_ECHO | C_STORE):
        return RequestProblem(command, "not served (C-STORE and C-ECHO only)", STATUS_UNRECOGNIZED_OPERATION)
    if isinstance(request, C_STORE):
        if getattr(request, "_dataset_path", None) is None:
            return RequestProblem(command, "no data set (0000,0800)", STATUS_CANNOT_UNDERSTAND)
        missing = [k for k in request.REQUEST_KEYWORDS if k != "DataSet" and getattr(request, k, None) is None]
        if missing:
            named = ", ".join(f"{keyword} {_TAGS.get(keyword, '')}".strip() for keyword in missing)
            return RequestProblem(command, f"no {named}", STATUS_CANNOT_UNDERSTAND)
    on_verification = abstract_syntax == VERIFICATION
    affected = str(getattr(request, "AffectedSOPClassUID", None) or "")
    if isinstance(request, C_ECHO) != on_verification or affected != abstract_syntax:
        return RequestProblem(
            command, "Affected SOP Class UID (0000,0002) not the context's", STATUS_SOP_CLASS_NOT_SUPPORTED
        )
    return None


def _answer(assoc: Any, request: Any, context_id: int, problem: RequestProblem) -> None:
    """Send ``request``'s own response with the problem's status and comment."""
    response = type(request)()
    response.MessageIDBeingRespondedTo = request.MessageID
    affected = getattr(request, "AffectedSOPClassUID", None) or getattr(request, "RequestedSOPClassUID", None)
    if affected is not None:
        with contextlib.suppress(ValueError, TypeError):  # not a UID: the response goes without it
            response.AffectedSOPClassUID = affected
    response.Status = problem.status
    response.ErrorComment = problem.describe()[:64]  # LO
    assoc.dimse.send_msg(response, context_id)


def _discard_data_set(assoc: Any, request: Any) -> None:
    """Remove the file a refused C-STORE's data set was streamed to (nothing of it was taken)."""
    stream = getattr(request, "_dataset_file", None)
    path = getattr(request, "_dataset_path", None)
    if path is None:
        return
    with contextlib.suppress(Exception):
        take_received(assoc, Path(path))  # the fast path's record of it
    try:
        if stream is not None:
            stream.close()
        Path(path).unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not remove a refused request's data set: %s", exc.strerror)


def serve_only_what_is_served(assoc: Any, on_refused: Callable[..., None] | None) -> None:
    """Put :func:`request_problem` in front of ``assoc``'s service classes.

    ``on_refused(assoc, problem)`` hears of each refused request (the audit), after its log line and answer.
    """
    serve = assoc._serve_request

    def judged(request: Any, context_id: int) -> None:
        if isinstance(request, C_CANCEL):
            return  # more than pynetdicom keeps aside: nothing to cancel, nothing to answer
        context = assoc._accepted_cx.get(context_id)
        problem = request_problem(request, None if context is None else str(context.abstract_syntax))
        if context is None or problem is None:
            serve(request, context_id)  # an unaccepted context: pynetdicom aborts (the DUL refuses it first)
            return
        _discard_data_set(assoc, request)
        peer = escape(str(assoc.requestor.address))
        if problem.dropped:
            log.warning("dropped a message from %s: %s", peer, problem.describe())
        elif problem.status is None:
            log.warning("aborted the association with %s: %s", peer, problem.describe())
            assoc.abort()
        else:
            log.warning("answered 0x%04X to %s: %s", problem.status, peer, problem.describe())
            try:
                _answer(assoc, request, context_id, problem)
            except Exception as exc:  # the answer could not be encoded: nothing else can be said
                log.warning("could not answer a refused request (%s); aborting", type(exc).__name__)
                assoc.abort()
        if on_refused is not None:
            with contextlib.suppress(Exception):  # the answer stands; the audit logs its own failures
                on_refused(assoc, problem)

    setattr(assoc, "_serve_request", judged)  # noqa: B010 - an instance attribute before pynetdicom's method
