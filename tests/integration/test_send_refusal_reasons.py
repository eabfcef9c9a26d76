"""``radtrace send`` says why a peer refused the association from the A-ASSOCIATE-RJ itself, not from pynetdicom's
log text: with every log record switched off the codes are still read, and each is put in PS3.8 table 9-21's words.

Before, the CLI kept pynetdicom's log records and parsed "Result: ..., Source: ..." and "Reason: ..." from them: a
pynetdicom release rewording those lines would have lost the reason silently. A reason the table reserves (a peer
sending 1/1/5, say) killed pynetdicom's reader thread with a ValueError traceback and left ``send`` waiting for the
ACSE timeout (60 s) before "aborted"; it is now said at once as the peer sent it.

Peers: radtrace's own listener (calling AE not admitted: 1/1/3), dcmtk's storescp --refuse (1/1/1), dcmtk's dcmqrscp
refusing a calling AE its configuration does not name (it answers 1/1/7, called AE not recognised), and a raw
acceptor that answers any request with the RJ codes a test gives.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicom_peer_support import rejecting_peer
from radtrace.dicom_listener.scu import NoAssociationError, Rejection, send_files
from radtrace.testing.abuse import ListenerProcess
from radtrace.testing.services import free_port
from tests_support import one_line_of, radtrace

pytestmark = pytest.mark.integration

FILM = Path(__file__).resolve().parents[1] / "data" / "real-cxr" / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"


@contextlib.contextmanager
def no_log_records() -> Iterator[None]:
    """No logger emits anything (pynetdicom's included): whatever is read must come from the association."""
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _rejection_from(port: int, *, called_ae: str, calling_ae: str = "PACS") -> tuple[Rejection | None, float]:
    started = time.monotonic()
    with no_log_records(), pytest.raises(NoAssociationError) as raised:
        send_files([FILM], "127.0.0.1", port, called_ae=called_ae, calling_ae=calling_ae, timeout_s=20)
    return raised.value.rejection, time.monotonic() - started


WORDS = {
    (1, 1, 1): "rejected permanent by the service user: no reason given",
    (1, 1, 2): "rejected permanent by the service user: application context name not supported",
    (1, 2, 2): "rejected permanent by the service provider (ACSE related function): protocol version not supported",
    (2, 3, 1): "rejected transient by the service provider (presentation related function): temporary congestion",
    (2, 3, 2): "rejected transient by the service provider (presentation related function): local limit exceeded",
    (1, 1, 5): "rejected permanent by the service user: reason 5 (reserved)",
    (2, 3, 0): "rejected transient by the service provider (presentation related function): reason 0 (reserved)",
    (1, 4, 1): "rejected permanent by the source 4 (not defined): reason 1 (reserved)",
}


def test_each_rejection_is_read_from_the_pdu_with_no_log_record_and_said_in_table_9_21_words() -> None:
    for codes, words in WORDS.items():
        with rejecting_peer(*codes) as port:
            rejection, seconds = _rejection_from(port, called_ae="ANY")
        assert rejection is not None, codes
        assert (rejection.result, rejection.source, rejection.reason) == codes
        assert rejection.words() == words
        assert seconds < 5, f"{codes}: {seconds:.1f} s (a reserved reason waited for the ACSE timeout before)"


def test_radtraces_own_listener_refusing_the_calling_ae_is_read_without_logs(tmp_path: Path) -> None:
    with ListenerProcess(tmp_path / "var", free_port(), allowed_callers='[{"ae_title": "PACS"}]') as listener:
        rejection, _ = _rejection_from(listener.port, called_ae="RADTRACE", calling_ae="NIGHTSHIFT")
        assert rejection is not None
        assert (rejection.codes, rejection.permanent) == ("1/1/3", True)
        assert rejection.reason_words == "calling AE title not recognised"


@contextlib.contextmanager
def dcmtk_peer(command: list[str], port: int, cwd: Path) -> Iterator[None]:
    program = shutil.which(command[0])
    assert program is not None, f"{command[0]} (dcmtk) not found on PATH"
    process = subprocess.Popen([program, *command[1:]], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.05)
        yield
    finally:
        process.kill()
        process.wait(timeout=10)


def test_send_says_dcmtk_storescps_refusal_in_words_with_its_codes(tmp_path: Path) -> None:
    port = free_port()
    with dcmtk_peer(["storescp", "--refuse", str(port)], port, tmp_path):
        result = radtrace("send", "--port", str(port), "--called-ae", "STORESCP", str(FILM))
    assert result.returncode == 2, result.stderr
    line = one_line_of(result.stderr)
    assert f"STORESCP at 127.0.0.1:{port} refused the association (A-ASSOCIATE-RJ 1/1/1: " in line
    assert "rejected permanent by the service user: no reason given)" in line
    assert "check --called-ae and that the peer admits calling AE 'RADTRACE-SEND'" in line


def test_send_to_dcmqrscp_that_does_not_admit_the_calling_ae_points_at_the_calling_ae_too(tmp_path: Path) -> None:
    """dcmqrscp answers a calling AE its configuration does not name with 1/1/7 (called AE not recognised)."""
    port = free_port()
    (tmp_path / "db").mkdir()
    (tmp_path / "dcmqrscp.cfg").write_text(
        f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 4\n"
        "HostTable BEGIN\npacs = (PACS, localhost, 11197)\nHostTable END\n"
        "VendorTable BEGIN\nVendorTable END\n"
        f"AETable BEGIN\nARCHIVE {tmp_path / 'db'} RW (20, 1024mb) pacs\nAETable END\n",
        encoding="utf-8",
    )
    with dcmtk_peer(["dcmqrscp", "-c", "dcmqrscp.cfg"], port, tmp_path):
        refused = radtrace(
            "send", "--port", str(port), "--called-ae", "ARCHIVE", "--calling-ae", "NIGHTSHIFT", str(FILM)
        )
    assert refused.returncode == 2, refused.stderr
    line = one_line_of(refused.stderr)
    assert "(A-ASSOCIATE-RJ 1/1/7: rejected permanent by the service user: called AE title 'ARCHIVE' not" in line
    assert "the peer may not admit calling AE 'NIGHTSHIFT'" in line
