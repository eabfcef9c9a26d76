"""Which DIMSE requests the listener serves (radtrace.dicom_listener.served.request_problem), as a table.

Live, against ``radtrace listen``: test_listener_upper_layer_fuzz's DIMSE cases.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_STORE, N_ACTION, N_CREATE

from radtrace.dicom_listener.served import (
    STATUS_SOP_CLASS_NOT_SUPPORTED,
    STATUS_UNRECOGNIZED_OPERATION,
    request_problem,
)

pytestmark = pytest.mark.unit

VERIFICATION = "1.2.840.10008.1.1"
DX = "1.2.840.10008.5.1.4.1.1.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"


def _store(sop_class: str | None = DX, *, message_id: int | None = 1, data: bool = True) -> C_STORE:
    request = C_STORE()
    if message_id is not None:
        request.MessageID = message_id
    if sop_class is not None:
        request.AffectedSOPClassUID = sop_class
    request.AffectedSOPInstanceUID = "2.25.1"
    request.Priority = 0
    request._dataset_path = Path("/nonexistent/received.dcm") if data else None  # as pynetdicom streams it
    return request


def _echo(sop_class: str = VERIFICATION) -> C_ECHO:
    request = C_ECHO()
    request.MessageID, request.AffectedSOPClassUID = 1, sop_class
    return request


def _other(kind: type) -> object:
    request = kind()
    request.MessageID = 9
    return request


@pytest.mark.parametrize(
    ("request_", "context", "expected"),
    [
        (_echo(), VERIFICATION, None),
        (_store(), DX, None),
        (_other(C_FIND), DX, ("C-FIND-RQ", STATUS_UNRECOGNIZED_OPERATION)),
        (_other(C_FIND), VERIFICATION, ("C-FIND-RQ", STATUS_UNRECOGNIZED_OPERATION)),
        (_other(N_CREATE), DX, ("N-CREATE-RQ", STATUS_UNRECOGNIZED_OPERATION)),
        (_other(N_ACTION), VERIFICATION, ("N-ACTION-RQ", STATUS_UNRECOGNIZED_OPERATION)),
        (_echo(DX), DX, ("C-ECHO-RQ", STATUS_SOP_CLASS_NOT_SUPPORTED)),
        (_echo(), DX, ("C-ECHO-RQ", STATUS_SOP_CLASS_NOT_SUPPORTED)),
        (_store(CT), DX, ("C-STORE-RQ", STATUS_SOP_CLASS_NOT_SUPPORTED)),
        (_store(VERIFICATION), VERIFICATION, ("C-STORE-RQ", STATUS_SOP_CLASS_NOT_SUPPORTED)),
        (_store(data=False), DX, ("C-STORE-RQ", 0xC210)),
        (_store(None), DX, ("C-STORE-RQ", 0xC210)),
        (_store(message_id=None), DX, ("C-STORE-RQ", None)),
    ],
    ids=lambda value: getattr(value, "msg_type", None) or str(value),
)
def test_each_request_is_served_or_answered_with_the_status_for_its_problem(
    request_: object, context: str, expected: tuple[str, int | None] | None
) -> None:
    problem = request_problem(request_, context)
    assert (problem and (problem.command, problem.status)) == expected, problem
    if problem is not None:
        assert len(problem.describe()) <= 64 or problem.status is None  # whole in the response's Error Comment
        assert problem.dropped is False


def test_the_element_missing_is_named() -> None:
    problem = request_problem(_store(None), DX)
    assert problem is not None
    assert problem.problem == "no AffectedSOPClassUID (0000,0002)"
    assert request_problem(_store(message_id=None), DX).problem == "no Message ID (0000,0110)"  # type: ignore[union-attr]


def test_a_response_is_dropped_not_answered() -> None:
    response = C_STORE()
    response.MessageIDBeingRespondedTo, response.Status = 1, 0
    problem = request_problem(response, DX)
    assert problem is not None
    assert (problem.command, problem.status, problem.dropped) == ("C-STORE-RSP", None, True)
