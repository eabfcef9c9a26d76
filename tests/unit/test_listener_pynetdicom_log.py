"""pynetdicom's log of a peer's bad bytes is one line of the listener's log, not a traceback.

pynetdicom logs ``LOGGER.exception`` for input that is only a peer's mistake: an AE title or UID not
in ASCII (``utils.decode_bytes``, before it raises), an A-ASSOCIATE-RQ its state machine
cannot take. Each came out as a dozen-line traceback per hostile connection (found by
test_listener_upper_layer_fuzz.py): noise that reads as a crash at night.
"""

from __future__ import annotations

import inspect
import io
import json
import logging
import threading
from types import SimpleNamespace

import pytest
from pynetdicom.association import Association
from pynetdicom.utils import decode_bytes

from radtrace.dicom_listener.admission import Connection
from radtrace.dicom_listener.ae import quiet_pynetdicom
from radtrace.dicom_listener.idle_close import IDLE_TIMEOUT_MESSAGE, log_idle_close

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


class _AssociationThread(threading.Thread):
    """Where pynetdicom logs from: its association's own thread (what the filter reads of it)."""

    def __init__(self, *, acceptor: bool) -> None:
        super().__init__()
        self.is_acceptor = acceptor
        self.radtrace_connection = Connection("127.0.0.2", 0.0, port=11112)

    def run(self) -> None:
        association_log = logging.getLogger("pynetdicom.association")
        association_log.error(IDLE_TIMEOUT_MESSAGE)
        association_log.error("Association request failed: unable to connect to remote")


def test_only_the_listener_s_own_idle_close_is_left_to_its_line(captured_log: io.StringIO) -> None:
    """pynetdicom's ``Network timeout reached`` (ERROR) is dropped in an association the listener accepted, whose
    handlers log the close at INFO; an SCU's own timeout and every other pynetdicom ERROR stay ERROR."""
    quiet_pynetdicom()
    for acceptor in (True, False):
        thread = _AssociationThread(acceptor=acceptor)
        thread.start()
        thread.join()
    logging.getLogger("pynetdicom.association").error(IDLE_TIMEOUT_MESSAGE)  # not an association's thread
    lines = captured_log.getvalue().splitlines()
    assert [IDLE_TIMEOUT_MESSAGE in line for line in lines] == [False, True, False, True]  # acceptor, SCU, other
    assert all("ERROR" in line and "pynetdicom.association" in line for line in lines)


def test_pynetdicom_still_says_its_idle_timeout_as_the_filter_expects() -> None:
    """The filter matches pynetdicom 3's record and attribute by name: an upgrade that changes them fails here."""
    reactor = inspect.getsource(Association._run_reactor)
    assert f'LOGGER.error("{IDLE_TIMEOUT_MESSAGE}")' in reactor
    assert isinstance(inspect.getattr_static(Association, "is_acceptor"), property)


def test_the_idle_close_line_escapes_the_peer_and_names_a_tls_port(captured_log: io.StringIO) -> None:
    """What the listener says instead: one line, the calling AE and address escaped (a peer's bytes cannot start a
    forged line), the port and whether it is the TLS one."""
    assoc = SimpleNamespace(requestor=SimpleNamespace(ae_title="PACS\n2026 ERROR x"))
    log_idle_close(assoc, Connection("fe80::1%eth0\r", 0.0, port=2762, tls=True), 60.0)
    [line] = captured_log.getvalue().splitlines()
    assert "INFO" in line
    message = json.loads(line)["message"] if line.startswith("{") else line.split(": ", 1)[1]
    assert message == (
        "ended the idle association from 'PACS\\n2026 ERROR x' at fe80::1%eth0\\x0d on port 2762 (TLS) with an "
        "A-ABORT: nothing received for 60 s (listener.network_timeout_s)"
    )
