"""Patient names, IDs and birth dates never reach a log line, whatever form they arrive in."""

from __future__ import annotations

import io
import json
import logging

import pytest
from pydicom.dataset import Dataset

from radtrace.logging import configure_logging, redacting, study_key

pytestmark = pytest.mark.unit

NAME = "Müller^Hans^Peter"
PATIENT_ID = "PID-8812734"
BIRTH_DATE = "19561103"
PHI = (NAME, "Müller", "Hans", PATIENT_ID, BIRTH_DATE)


def _patient_dataset() -> Dataset:
    ds = Dataset()
    ds.PatientName = NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = BIRTH_DATE
    ds.PatientSex = "M"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.Modality = "DX"
    return ds


def _assert_clean(output: str) -> None:
    assert output.strip(), "nothing was logged: the test would prove nothing"
    for value in PHI:
        assert value not in output, f"{value!r} leaked into: {output}"


def test_dataset_passed_as_argument_is_scrubbed(captured_log: io.StringIO) -> None:
    logging.getLogger("radtrace.test").info("received instance %s", _patient_dataset())
    output = captured_log.getvalue()
    _assert_clean(output)
    assert "1.2.826.0.1.3680043.8.498.2" in output  # the non-identifying content is still there


def test_keyword_value_forms_are_scrubbed(captured_log: io.StringIO) -> None:
    log = logging.getLogger("radtrace.test")
    log.warning(f"PatientName={NAME} PatientID={PATIENT_ID} PatientBirthDate={BIRTH_DATE}")  # noqa: G004
    log.warning("payload %s", json.dumps({"patient_name": NAME, "patient_id": PATIENT_ID, "birth_date": BIRTH_DATE}))
    log.warning("Patient's Name: '%s', Patient ID: %s", NAME, PATIENT_ID)
    _assert_clean(captured_log.getvalue())


def test_dcmdump_style_lines_are_scrubbed(captured_log: io.StringIO) -> None:
    dump = (
        f"(0010,0010) PN [{NAME}]                       #  18, 1 PatientName\n"
        f"(0010,0020) LO [{PATIENT_ID}]                 #  12, 1 PatientID\n"
        f"(0010,0030) DA [{BIRTH_DATE}]                 #   8, 1 PatientBirthDate\n"
        "(0008,0060) CS [DX]                            #   2, 1 Modality"
    )
    logging.getLogger("pynetdicom.dsutils").error("dataset:\n%s", dump)
    output = captured_log.getvalue()
    _assert_clean(output)
    assert "[DX]" in output


def test_hl7_pid_segment_is_scrubbed(captured_log: io.StringIO) -> None:
    msh = "MSH|^~\\&|RADTRACE|X|RIS|Y|20261123||ORU^R01|1|P|2.5.1"
    pid = f"PID|1||{PATIENT_ID}^^^HOSP||{NAME}||{BIRTH_DATE}|M"
    message = f"{msh}\r{pid}"
    logging.getLogger("radtrace.reporting").info("sending %s", message)
    output = captured_log.getvalue()
    _assert_clean(output)
    assert "ORU^R01" in output


def test_exception_text_is_scrubbed_for_registered_values(captured_log: io.StringIO) -> None:
    ds = _patient_dataset()
    with redacting(ds.PatientName, ds.PatientID, ds.PatientBirthDate):
        try:
            raise ValueError(f"cannot parse name {NAME} for {PATIENT_ID} born {BIRTH_DATE}")
        except ValueError:
            logging.getLogger("radtrace.test").exception("instance rejected")
    output = captured_log.getvalue()
    _assert_clean(output)
    assert "ValueError" in output  # the traceback itself is kept


def test_study_key_is_stable_and_not_the_uid() -> None:
    uid = "1.2.826.0.1.3680043.8.498.1"
    assert study_key(uid) == study_key(uid)
    assert study_key(uid) != study_key(uid + "1")
    assert uid not in study_key(uid)
    assert len(study_key(uid)) == 16


def test_json_lines_are_valid_and_carry_extras() -> None:
    stream = io.StringIO()
    handler = configure_logging("json", "INFO", stream=stream)
    try:
        logging.getLogger("radtrace.test").info("queued %s", "revision 2", extra={"study": study_key("1.2.3")})
    finally:
        logging.getLogger().removeHandler(handler)
    entry = json.loads(stream.getvalue().strip())
    assert entry["message"] == "queued revision 2"
    assert entry["level"] == "INFO"
    assert entry["study"] == study_key("1.2.3")
    assert entry["time"].endswith("+00:00")


def test_pynetdicom_identifier_logging_is_turned_off() -> None:
    from pynetdicom import _config

    handler = configure_logging("text", "INFO", stream=io.StringIO())
    logging.getLogger().removeHandler(handler)
    assert _config.LOG_REQUEST_IDENTIFIERS is False
    assert _config.LOG_RESPONSE_IDENTIFIERS is False


def test_a_peer_string_with_control_characters_cannot_forge_a_log_line(captured_log: io.StringIO) -> None:
    import warnings

    forged = "PACS\n2026-12-04 12:00:00,000 INFO    radtrace: admitted\x00\x1b[2J"
    logging.getLogger("pynetdicom.acse").warning("Calling AE title %s not recognised", forged)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        logging.captureWarnings(False)  # pytest replaced the hook configure_logging installed: install it again
        logging.captureWarnings(True)
        warnings.warn("Unknown encoding 'ISO_IR\r\n3' - using default encoding instead", UserWarning, stacklevel=1)
        logging.captureWarnings(False)
    lines = captured_log.getvalue().splitlines()
    assert len(lines) == 2, lines  # one line per record, whatever the peer sent
    if lines[0].startswith("{"):
        lines = [json.loads(line)["message"] for line in lines]
    assert "PACS\\x0a2026-12-04" in lines[0]
    assert "\\x00\\x1b[2J" in lines[0]
    assert "ISO_IR\\x0d\\x0a3" in lines[1]  # as pydicom words a Specific Character Set it does not know
    assert "\x00" not in captured_log.getvalue()
