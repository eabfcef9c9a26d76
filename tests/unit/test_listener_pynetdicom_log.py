"""pynetdicom's log of a peer's bad bytes is one line of the listener's log, not a traceback.

pynetdicom logs ``LOGGER.exception`` for input that is only a peer's mistake: an AE title or UID not
in ASCII (``utils.decode_bytes``, before it raises), an A-ASSOCIATE-RQ its state machine
cannot take. Each came out as a dozen-line traceback per hostile connection (found by
test_listener_upper_layer_fuzz.py): noise that reads as a crash at night.
"""

from __future__ import annotations

import io
import logging

import pytest
from pynetdicom.utils import decode_bytes

from radtrace.dicom_listener.ae import quiet_pynetdicom

pytestmark = pytest.mark.unit


def test_a_peer_title_not_in_ascii_is_one_log_line(captured_log: io.StringIO) -> None:
    quiet_pynetdicom()
    with pytest.raises(ValueError, match="Unable to decode"):  # refused (the listener aborts it: one more line)
        decode_bytes(b"PACS\x82")
    lines = captured_log.getvalue().splitlines()
    assert lines, "pynetdicom logged nothing"
    assert "Traceback" not in captured_log.getvalue()
    assert all("UnicodeDecodeError" in line for line in lines)


def test_an_exception_logged_by_any_pynetdicom_module_is_one_line(captured_log: io.StringIO) -> None:
    quiet_pynetdicom()
    try:
        raise ValueError("Invalid 'Calling AE Title' value 'X\n2026-01-01 00:00:00,000 ERROR forged: x'")
    except ValueError as exc:
        logging.getLogger("pynetdicom.fsm").exception(exc)
    [line] = captured_log.getvalue().splitlines()
    assert "ValueError: Invalid 'Calling AE Title'" in line
    assert "\\x0a2026-01-01" in line  # the peer's newline, escaped: no second line
