"""The checks each DIMSE fragment passes before pynetdicom takes it (PS3.8 Annex E)."""

from __future__ import annotations

from io import BytesIO
from types import SimpleNamespace

import pytest
from pydicom.dataset import Dataset
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ, DIMSEMessage

from radtrace.dicom_listener.dimse_guard import (
    MAX_COMMAND_BYTES,
    MAX_IN_MEMORY_DATA_SET_BYTES,
    command_problem,
    fragment_problem,
)

pytestmark = pytest.mark.unit

ACCEPTED = {1, 3}
COMMAND, LAST = 0x01, 0x02


def _decoded(cls: type, context_id: int, data_file: object = None) -> DIMSEMessage:
    message = DIMSEMessage()
    message.__class__ = cls  # as pynetdicom does once the command set is complete
    message.context_id = context_id
    message._data_set_file = data_file  # type: ignore[assignment]
    return message


def test_a_well_formed_message_passes_fragment_by_fragment() -> None:
    assert fragment_problem(None, ACCEPTED, 3, COMMAND, 200) is None
    partial = DIMSEMessage()
    partial.encoded_command_set.write(b"x" * 100)
    assert fragment_problem(partial, ACCEPTED, 3, COMMAND | LAST, 100) is None
    streamed = _decoded(C_STORE_RQ, 3, SimpleNamespace(tell=lambda: 10_000))
    assert fragment_problem(streamed, ACCEPTED, 3, 0x00, 16_000, max_data_set_bytes=1 << 20) is None
    assert fragment_problem(streamed, ACCEPTED, 3, LAST, 16_000) is None


@pytest.mark.parametrize(
    ("message", "context_id", "control", "length", "problem"),
    [
        (None, 5, COMMAND, 10, "P-DATA-TF on presentation context 5, which was not accepted"),
        (None, 1, 0x00, 10, "a data set fragment came before its command set"),
        (DIMSEMessage(), 1, LAST, 10, "a data set fragment came before its command set"),
        (
            _decoded(C_STORE_RQ, 3, SimpleNamespace(tell=lambda: 0)),
            1,
            COMMAND | LAST,
            10,
            "a command set began before the data set of the C-STORE-RQ ended",
        ),
        (_decoded(C_STORE_RQ, 3, SimpleNamespace(tell=lambda: 0)), 1, 0x00, 10, "a data set on presentation context 1"),
        (None, 1, COMMAND, MAX_COMMAND_BYTES + 1, f"a command set longer than {MAX_COMMAND_BYTES} bytes"),
        (
            _decoded(C_ECHO_RQ, 1),
            1,
            0x00,
            MAX_IN_MEMORY_DATA_SET_BYTES + 1,
            f"a data set for a C-ECHO-RQ longer than {MAX_IN_MEMORY_DATA_SET_BYTES} bytes",
        ),
    ],
)
def test_a_fragment_that_breaks_the_rules_is_named(
    message: DIMSEMessage | None, context_id: int, control: int, length: int, problem: str
) -> None:
    found = fragment_problem(message, ACCEPTED, context_id, control, length)
    assert found is not None
    assert found.startswith(problem)


def test_a_command_set_that_grows_past_the_bound_is_refused_at_the_fragment_that_crosses_it() -> None:
    message = DIMSEMessage()
    message.encoded_command_set = BytesIO(b"x" * (MAX_COMMAND_BYTES - 10))
    message.encoded_command_set.seek(0, 2)
    assert fragment_problem(message, ACCEPTED, 1, COMMAND, 10) is None
    assert fragment_problem(message, ACCEPTED, 1, COMMAND, 11) == f"a command set longer than {MAX_COMMAND_BYTES} bytes"


def test_a_streamed_data_set_is_bounded_by_the_image_limit() -> None:
    message = _decoded(C_STORE_RQ, 3, SimpleNamespace(tell=lambda: 1000))
    assert fragment_problem(message, ACCEPTED, 3, 0x00, 24, max_data_set_bytes=1024) is None
    assert fragment_problem(message, ACCEPTED, 3, 0x00, 25, max_data_set_bytes=1024) == (
        "a data set longer than 1024 bytes (listener.max_image_pixels)"
    )


@pytest.mark.parametrize(
    ("elements", "problem"),
    [
        ({"CommandField": 0x0001, "MessageID": 1, "AffectedSOPClassUID": "1.2", "Priority": 0,
          "CommandDataSetType": 0}, "a C-STORE-RQ without Affected SOP Instance UID (0000,1000)"),
        ({"CommandField": 0x0001, "MessageID": 1, "AffectedSOPClassUID": "1.2", "Priority": 0,
          "AffectedSOPInstanceUID": "2.25.1"}, "a C-STORE-RQ without Command Data Set Type (0000,0800)"),
        ({"CommandField": 0x0030, "CommandDataSetType": 0x0101},
         "a C-ECHO-RQ without Message ID (0000,0110), Affected SOP Class UID (0000,0002)"),
        ({"MessageID": 1}, "a command set without Command Field (0000,0100)"),
        ({"CommandField": 0x0030, "MessageID": 1, "AffectedSOPClassUID": "1.2", "CommandDataSetType": 0x0101}, None),
    ],
)  # fmt: skip
def test_a_command_pynetdicom_cannot_decode_is_named_by_the_element_it_lacks(
    elements: dict[str, object], problem: str | None
) -> None:
    """Before, the log and the audit said 'undecodable DIMSE message (AttributeError)' (found fuzzing radtrace listen
    with a C-STORE-RQ without its Affected SOP Instance UID)."""
    command = Dataset()
    for keyword, value in elements.items():
        setattr(command, keyword, value)
    assert command_problem(command) == problem
