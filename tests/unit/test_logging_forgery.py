"""What a peer sends cannot forge, hide or flood a log line, nor carry a patient value into one (text and JSON).

Each case logs as radtrace's code does (a peer's value as an argument, in an exception's message, in an
``extra``) and checks the captured_log output: one record is one line (a traceback's own lines aside, none of which
can look like a record), no raw control character, no patient value.
"""

from __future__ import annotations

import io
import json
import logging
import re

import pytest
from pydicom.valuerep import PersonName

pytestmark = pytest.mark.unit

FORGED = "2026-12-04 12:00:00,000 INFO    radtrace.dicom_listener: association accepted from TRUSTED"
RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")
# Every character that str.splitlines() (and so most log viewers) treats as a line end, plus ANSI and NUL.
LINE_BREAKERS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
HIDDEN = "\x00\x1b\x7f\u202e\u2066"  # NUL, ESC (ANSI), DEL, right-to-left override, isolate


def _records(output: str) -> list[str]:
    """The output as records: JSON lines parsed, text lines as they are."""
    lines = output.splitlines()
    assert lines, "nothing was logged: the test would prove nothing"
    if lines[0].startswith("{"):
        return [json.dumps(json.loads(line), ensure_ascii=False) for line in lines]
    return lines


def _assert_no_hidden_characters(output: str) -> None:
    for char in LINE_BREAKERS.replace("\n", "") + HIDDEN:
        assert char not in output, f"raw {char!r} in: {output!r}"


def test_an_exception_message_from_a_peer_cannot_forge_a_record(captured_log: io.StringIO) -> None:
    log = logging.getLogger("radtrace.reporting.dispatch.mllp")
    nak = f"AE|application error\r{FORGED}\n{FORGED}\u2028{FORGED}\x1b[2J"
    try:
        try:
            raise ValueError(f"RIS answered {nak}")  # as a library echoes the text it could not take
        except ValueError as inner:
            inner.add_note(f"segment: {nak}")
            raise RuntimeError(f"delivery failed: {nak}") from inner
    except RuntimeError:
        log.exception("HL7 message not accepted")
    output = captured_log.getvalue()
    _assert_no_hidden_characters(output)
    if output.startswith("{"):
        assert len(output.splitlines()) == 1
        exception = json.loads(output)["exception"]
        assert not [line for line in exception.splitlines() if RECORD_START.match(line)], exception
    else:
        lines = output.splitlines()
        assert RECORD_START.match(lines[0])
        assert not [line for line in lines[1:] if RECORD_START.match(line)], output
    assert "ValueError" in output
    assert "RuntimeError" in output
    assert "\\x0d2026-12-04 12:00:00,000 INFO" in output  # shown, escaped, on the line it belongs to


def test_every_line_breaker_and_hidden_character_in_an_argument_is_escaped(captured_log: io.StringIO) -> None:
    log = logging.getLogger("radtrace.dicom_listener.handlers")
    for char in LINE_BREAKERS + HIDDEN:
        log.warning("rejected association from %s", f"PACS{char}{FORGED}")
    output = captured_log.getvalue()
    assert len(output.splitlines()) == len(LINE_BREAKERS + HIDDEN)
    _assert_no_hidden_characters(output)
    assert "\\u202e" in output
    assert "\\x85" in output


def test_a_huge_peer_value_is_cut_to_a_bounded_line(captured_log: io.StringIO) -> None:
    log = logging.getLogger("radtrace.dicom_listener.handlers")
    log.warning("undecodable PDU from %s", "A" * 1_000_000)
    try:
        raise ValueError("B" * 1_000_000)
    except ValueError:
        log.exception("could not parse")
    records = _records(captured_log.getvalue())
    assert all(len(line) < 20_000 for line in records), [len(line) for line in records]
    assert "more characters" in records[0]


def test_patient_values_in_extras_and_mapping_reprs_are_redacted(captured_log: io.StringIO) -> None:
    log = logging.getLogger("radtrace.worker")
    log.info(
        "received %s",
        {"PatientName": "Doe^Jane", "PatientID": "PID-31337", "Modality": "DX"},
        extra={"patient_id": "PID-424242", "peer": {"PatientID": "PID-777"}, "ae": "PACS\nX"},
    )
    log.info("name %s", PersonName("Roe^Richard"))  # a pydicom element value passed on its own
    output = captured_log.getvalue()
    for value in ("Doe^Jane", "PID-31337", "PID-424242", "PID-777", "Roe^Richard", "Richard"):
        assert value not in output, f"{value!r} leaked into: {output}"
    assert "DX" in output  # what identifies no one is kept
    assert len(output.splitlines()) == 2


def test_values_quoted_by_pydicom_and_highdicom_warnings_are_redacted(captured_log: io.StringIO) -> None:
    """pydicom and highdicom warn (and pydicom also logs) quoting the value they find invalid: a birth date, a name."""
    import warnings

    from highdicom.valuerep import check_person_name
    from pydicom import config as pydicom_config
    from pydicom.dataelem import DataElement

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        logging.captureWarnings(False)  # pytest replaced the hook configure_logging installed: install it again
        logging.captureWarnings(True)
        try:
            # pydicom in its WARN mode (its default for reading) logs and warns with the value it found invalid
            DataElement(0x00100030, "DA", "19561303x", validation_mode=pydicom_config.WARN)
            single_component_name = "Mueller"
            check_person_name(single_component_name)  # as highdicom checks a name while building an SR
        finally:
            logging.captureWarnings(False)
    output = captured_log.getvalue()
    assert "VR DA" in output  # the warning was logged, so its value would have shown
    assert "unlikely to represent the intended person name" in output
    for value in ("19561303x", "Mueller"):
        assert value not in output, f"{value!r} leaked into: {output}"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_lone_surrogate_is_written_escaped_to_a_strict_utf8_stream(
    log_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file name or peer bytes decoded with surrogateescape hold lone surrogates. Before: they reached the handler
    raw, a strict UTF-8 stream (a log file, stdout) could not encode them, and logging's handleError printed the
    record's raw arguments to stderr ("--- Logging error ---", "Arguments: ('a\\udcffb DOE^JANE',)")."""
    from radtrace.logging import configure_logging

    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", write_through=True)
    handler = configure_logging(log_format, "DEBUG", stream=stream)
    logging.getLogger().removeHandler(handler)
    # Only radtrace's handler sees the record: pytest's own capture would carry the raw surrogates into the test
    # report, which pytest-xdist cannot send between processes.
    logger = logging.getLogger("radtrace.dicom_listener.surrogate_test")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("file %s not read", "a\udcffb\udc80")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    output = raw.getvalue().decode("utf-8")  # strict: nothing undecodable was written
    assert "a\\udcffb\\udc80" in (json.loads(output)["message"] if log_format == "json" else output), output
    assert "Logging error" not in capsys.readouterr().err
