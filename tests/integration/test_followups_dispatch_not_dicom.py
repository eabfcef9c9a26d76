"""A C-STORE pointed at a port that does not speak DICOM fails at once, saying what answered, in safe words.

Before, the dispatch client and ``radtrace send`` said only "no association ... (refused, aborted or timed out)" or
"aborted", and a peer that answered with fewer bytes than a PDU header (6) and then waited for more held the attempt
until the connection's timeout (the ACSE and network timeouts: 30 s for dispatch, 60 s for ``send``): pynetdicom's
reader blocks until it has all 6. Now the first bytes are looked at as they come (scu.PeerAnswer): a first byte that
is no PDU type (PS3.8 9.3.1) ends the attempt with the peer's first line, quoted with every byte outside printable
ASCII escaped, so nothing a peer sends can start a log line of its own.

Peers: dicom_peer_support.answering_peer answers the A-ASSOCIATE-RQ with given bytes, then holds the connection open
(or closes it) as a server waiting for the rest of a request does.
"""

from __future__ import annotations

import contextlib
import gc
import http.server
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicom_peer_support import answering_peer
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import DicomDestination, DispatchSettings, ReportingSettings
from radtrace.dicom_listener.scu import NoAssociationError, send_files
from radtrace.errors import PeerUnavailableError
from radtrace.reporting.dispatch.cstore import store_instance
from radtrace.reporting.dispatch.outbox import Outbox, ReportFiles, planned_deliveries
from radtrace.reporting.sr import build_sr, sr_bytes
from radtrace.store.engine import Store
from radtrace.store.models import OutboxState, Revision, RevisionState, Study
from radtrace.testing.services import free_port
from reporting_support import sr_cases
from tests_support import one_line_of, radtrace

pytestmark = pytest.mark.integration

FILM = Path(__file__).resolve().parents[1] / "data" / "real-cxr" / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"
HTTP_400 = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"
#: An answer that tries to forge a log line: a newline, then what a log line of ours looks like.
#: "At once": well under the 10 to 30 s timeouts these sends would otherwise wait out (they take about 0.1 s; a
#: bound of 3 s failed at 3.003 s on a loaded two-core machine, which says nothing about waiting for the timeout).
AT_ONCE_S = 6.0
FORGING = b"HTTP/1.1 400 x\r\n2026-12-05 09:00:00 INFO radtrace.reporting.dispatch.outbox outbox 1 sr delivered\n"


def _sr() -> bytes:
    reading, sources = sr_cases()["normal"]
    return sr_bytes(build_sr(reading, sources, settings=ReportingSettings(), revision=1))


@pytest.mark.parametrize(
    ("answer", "close", "said"),
    [
        (HTTP_400, False, "answered with something that is not DICOM: 'HTTP/1.1 400 Bad Request'"),
        (b"HT", False, "answered with something that is not DICOM: 'HT'"),  # fewer bytes than a PDU header
        (
            b"\x15\x03\x03\x00\x02\x02\x46",
            True,
            r"answered with something that is not DICOM: '\x15\x03\x03\x00\x02\x02F'",
        ),  # a TLS alert
        (FORGING, False, r"answered with something that is not DICOM: 'HTTP/1.1 400 x'"),  # the first line only
        (b"", True, "closed the connection without answering the A-ASSOCIATE-RQ"),
    ],
    ids=["http-400", "two-bytes-then-waits", "tls-alert", "forging", "closes"],
)
def test_a_store_to_a_port_that_is_not_dicom_fails_at_once_saying_what_answered(
    answer: bytes, close: bool, said: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with answering_peer(answer, close=close) as port:
        started = time.monotonic()
        with pytest.raises(PeerUnavailableError) as raised:
            store_instance(_sr(), DicomDestination(ae_title="PACS", host="127.0.0.1", port=port),
                           calling_ae_title="RADTRACE", timeout_s=10)  # fmt: skip
        elapsed = time.monotonic() - started
    reason = raised.value.reason
    assert f"PACS@127.0.0.1:{port} {said}" in reason
    assert elapsed < AT_ONCE_S, f"{elapsed:.1f} s"
    assert "\n" not in reason
    assert "\r" not in reason
    for record in caplog.records:  # ours and pynetdicom's: no peer byte begins a line of its own
        assert "INFO radtrace.reporting.dispatch.outbox" not in record.getMessage()


def test_send_to_a_peer_that_answers_two_bytes_and_waits_fails_at_once() -> None:
    with answering_peer(b"HT") as port:
        started = time.monotonic()
        with pytest.raises(NoAssociationError) as raised:
            send_files([FILM], "127.0.0.1", port, called_ae="RADTRACE", calling_ae="PACS", timeout_s=20)
        elapsed = time.monotonic() - started
    assert raised.value.not_dicom
    assert f"at 127.0.0.1:{port} answered with something that is not DICOM: 'HT'" in raised.value.reason
    assert elapsed < AT_ONCE_S, f"{elapsed:.1f} s"


def test_radtrace_send_to_an_http_port_quotes_its_status_line_in_one_line() -> None:
    with answering_peer(FORGING) as port:
        result = radtrace("send", "--port", str(port), str(FILM))
    assert result.returncode == 1, result.stderr
    line = one_line_of(result.stderr)
    assert "answered with something that is not DICOM: 'HTTP/1.1 400 x'" in line
    assert "answers HTTP, not DICOM" in line
    assert "INFO radtrace" not in result.stderr  # the time it takes: the in-process tests above


def test_the_outbox_records_a_not_dicom_answer_at_once_and_retries_it(sqlite_store: Store, tmp_path: Path) -> None:
    """Through the real sender with its default 30 s timeout; before, this delivery took 30 s."""
    reading, sources = sr_cases()["typical"]
    sr = build_sr(reading, sources, settings=ReportingSettings(), revision=1)
    reports = ReportFiles(str(sr.SOPInstanceUID), sr_bytes(sr), b"MSH|", json.dumps({}).encode())
    with sqlite_store.session() as session:
        study = Study(study_uid=str(sources[0].StudyInstanceUID), study_key="k" * 16, accession="RTACC000002")
        revision = Revision(study=study, number=1, state=RevisionState.REPORTED)
        session.add_all([study, revision])
        session.flush()
        revision_id = revision.id
    with answering_peer(b"HT") as port:
        settings = DispatchSettings(pacs=[DicomDestination(ae_title="PACS", host="127.0.0.1", port=port)])
        outbox = Outbox(sqlite_store, AuditRecorder(sqlite_store), settings, tmp_path / "payloads")
        [outbox_id] = outbox.enqueue(revision_id, planned_deliveries(settings, reports))
        started = time.monotonic()
        result = outbox.deliver(outbox_id)
        elapsed = time.monotonic() - started
    assert result.state is OutboxState.PENDING  # a port may answer otherwise later (a PACS restarting behind a proxy)
    assert result.error is not None
    assert "answered with something that is not DICOM: 'HT'" in result.error
    assert elapsed < AT_ONCE_S, f"{elapsed:.1f} s"


class _QuietHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # the stdlib's name
        pass


@contextlib.contextmanager
def python_http_server() -> Iterator[int]:
    """Python's own HTTP server: it reads a request line up to its LF, which an A-ASSOCIATE-RQ need not have, so it
    answers nothing (Apache and Go's net/http wait alike)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_a_port_that_accepts_and_never_answers_is_said_as_such_not_as_refused_or_aborted() -> None:
    """It still takes the ACSE timeout (a PACS may be slow to answer); what the reason says changed: before, 'no
    association with ... (refused, aborted or timed out)' for this and for a closed port alike."""
    with python_http_server() as port, pytest.raises(PeerUnavailableError) as raised:
        store_instance(_sr(), DicomDestination(ae_title="PACS", host="127.0.0.1", port=port),
                       calling_ae_title="RADTRACE", timeout_s=2)  # fmt: skip
    assert raised.value.reason == (
        f"PACS@127.0.0.1:{port} accepted the connection but did not answer the A-ASSOCIATE-RQ in 2 s (a DICOM peer "
        "answers at once: is this its DICOM port?)"
    )


# pynetdicom 3.0.4 shuts down but does not close its socket when the connection is refused (test_dispatch_cstore)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning", "ignore::ResourceWarning")
def test_a_closed_port_is_said_as_no_connection() -> None:
    port = free_port()
    with pytest.raises(PeerUnavailableError) as raised:
        store_instance(_sr(), DicomDestination(ae_title="PACS", host="127.0.0.1", port=port),
                       calling_ae_title="RADTRACE", timeout_s=2)  # fmt: skip
    assert raised.value.reason == (
        f"cannot connect to PACS@127.0.0.1:{port} (connection refused, or the host does not answer)"
    )
    with pytest.raises(NoAssociationError, match=f"cannot connect to RADTRACE at 127.0.0.1:{port}"):
        send_files([FILM], "127.0.0.1", port, called_ae="RADTRACE", calling_ae="PACS", timeout_s=2)
    gc.collect()
