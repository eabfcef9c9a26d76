"""pydicom's warnings about what a peer sent reach radtrace's log once each, escaped, with no patient value.

pydicom words most of them through ``pydicom.misc.warn_and_log``, which logs the message through the ``pydicom``
logger and then raises it as a warning, which radtrace's capture of warnings logged a second time (as
``py.warnings``). Each case reads or builds an element as radtrace does, with pydicom's default WARN validation.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterator

import pytest
from pydicom import config as pydicom_config
from pydicom import dcmread
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.tag import Tag

from radtrace.testing.studies import ImageSpec, StudySpec, make_image

pytestmark = pytest.mark.unit

PATIENT_NAME = "Canary^Pydicom"
PATIENT_ID = "CANARY-PID-4411"


@contextlib.contextmanager
def _warnings_logged() -> Iterator[None]:
    """Every warning shown, through the capture configure_logging installed (pytest replaces the hook per test)."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        logging.captureWarnings(False)
        logging.captureWarnings(True)
        try:
            yield
        finally:
            logging.captureWarnings(False)


def _messages(output: str) -> list[str]:
    lines = output.splitlines()
    assert lines, "nothing was logged: the test would prove nothing"
    if lines[0].startswith("{"):
        return [json.loads(line)["message"] for line in lines]
    return lines


def _received_file() -> bytes:
    """A film as a peer might send it: a Specific Character Set pydicom does not know, a Patient ID past LO's 64
    characters, an Instance Number that is not a number (with an ANSI escape in it)."""
    dataset = make_image(
        StudySpec(patient_name=PATIENT_NAME, patient_id=PATIENT_ID, seed=3), ImageSpec(rows=32, columns=32)
    )
    raw = {
        0x00080005: ("CS", b"ISO_IR 999\x1b[2J"),
        0x00100020: ("LO", (PATIENT_ID + "-" + "9" * 70).encode()),
        0x00200013: ("IS", b"12\x1b[2J\n "),
    }
    for tag, (vr, value) in raw.items():
        dataset._dict[Tag(tag)] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_a_pydicom_warning_about_a_received_file_is_logged_once(captured_log: io.StringIO) -> None:
    with _warnings_logged():
        dataset = dcmread(io.BytesIO(_received_file()))
        for element in dataset:
            _ = element.value  # as the header reader and the image preparation read them
    messages = _messages(captured_log.getvalue())
    for words in (
        "Unknown encoding 'ISO_IR 999\\x1b[2J' - using default encoding instead",
        "exceeds the maximum length of 64 allowed for VR LO.",
        "Invalid value for VR IS",
    ):
        logged = [message for message in messages if words in message]
        assert logged, f"{words!r} not logged: {messages}"
        # pydicom reports each decoded element, so a warning may come several times, but never a second time as
        # py.warnings: pydicom's own logger already said it
        assert not [message for message in logged if "py.warnings" in message or "UserWarning" in message], logged
    output = captured_log.getvalue()
    assert "\x1b" not in output
    assert "\\x1b[2J" in output  # the peer's escape, written as text
    for value in (PATIENT_NAME, PATIENT_ID, "Canary", "Pydicom"):
        assert value not in output, f"{value!r} leaked into: {output}"


def test_other_warnings_are_still_logged(captured_log: io.StringIO) -> None:
    with _warnings_logged():
        warnings.warn("a library's own warning", UserWarning, stacklevel=1)
    messages = _messages(captured_log.getvalue())
    assert len([message for message in messages if "a library's own warning" in message]) == 1, messages


def test_a_patient_value_pydicom_finds_invalid_is_not_quoted(captured_log: io.StringIO) -> None:
    """Values pydicom quotes when a built element (an SR copying the film's patient module) is invalid."""
    with _warnings_logged():
        DataElement(0x00100040, "CS", "canary-sex", validation_mode=pydicom_config.WARN)  # Patient's Sex
        DataElement(0x00101010, "AS", "CANARY-AGE", validation_mode=pydicom_config.WARN)  # Patient's Age
        DataElement(0x00100030, "DA", "CANARY-DOB", validation_mode=pydicom_config.WARN)  # Patient's Birth Date
        # a Study Instance UID that is not one (the listener refuses it, reading it twice): logs name a study by its
        # study_key only
        DataElement(0x0020000D, "UI", "1.2.826.0.1.3680043.8.498.4CANARY", validation_mode=pydicom_config.WARN)
    output = captured_log.getvalue()
    assert output.count("Invalid value for VR") == 4, output  # each said once
    for value in ("canary-sex", "CANARY-AGE", "CANARY-DOB", "4CANARY"):
        assert value not in output, f"{value!r} leaked into: {output}"
