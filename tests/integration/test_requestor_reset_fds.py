"""The requestor's socket is closed when the peer resets the connection (a PACS killed, a firewall's or load
balancer's RST): pynetdicom skips its close() when shutdown() fails (ENOTCONN) and keeps the socket on the
Association, which its threads hold in reference cycles, so each store against such a peer left one descriptor open
until the cycle collector ran. Here the collector is off while the stores run: what is not closed stays open."""

from __future__ import annotations

import gc
import logging
import os
import socket
import struct
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dicom_peer_support import associate_ac, hand_made_peer, read_pdu
from radtrace.config import DicomDestination, ReportingSettings
from radtrace.dicom_listener.scu import send_files
from radtrace.errors import DispatchError, PeerUnavailableError
from radtrace.reporting.dispatch.cstore import store_instance
from radtrace.reporting.sr import build_sr, sr_bytes
from reporting_support import sr_cases

pytestmark = pytest.mark.integration

ATTEMPTS = 6
TIMEOUT_S = 1.0


def _payload() -> bytes:
    reading, sources = sr_cases()["normal"]
    return sr_bytes(build_sr(reading, sources, settings=ReportingSettings(), revision=1))


def _reset(connection: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a killed PACS or a firewall ends a connection."""
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


@contextmanager
def _resetting_peer(when: str) -> Iterator[int]:
    """A peer that reads the A-ASSOCIATE-RQ, answers it with an A-ASSOCIATE-AC and resets the connection: at once
    (``when="ac"``), or once the first P-DATA PDU came (``"p-data"``). Yields its port."""

    def accept_then_reset(connection: socket.socket) -> None:
        try:
            connection.sendall(associate_ac(read_pdu(connection)))
            if when == "p-data":
                read_pdu(connection)
        finally:
            _reset(connection)

    with hand_made_peer(accept_then_reset) as port:
        yield port


def _open_sockets() -> set[str]:
    """This process's socket descriptors, as ``fd -> socket:[inode]`` strings."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:"):
            found.add(f"{name} -> {target}")
    return found


def _left_open(attempt: Callable[[], None]) -> set[str]:
    """The sockets ``ATTEMPTS`` calls of ``attempt`` left open, the cycle collector off while they run."""
    before = _open_sockets()
    gc.disable()
    try:
        for _ in range(ATTEMPTS):
            attempt()
        return _open_sockets() - before
    finally:
        gc.enable()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)  # what was left open, collected: the assertion says it
            gc.collect()


@pytest.mark.parametrize("when", ["ac", "p-data"])
def test_a_store_to_a_pacs_that_resets_leaves_no_socket_open(when: str) -> None:
    payload = _payload()
    with _resetting_peer(when) as port:
        destination = DicomDestination(ae_title="RESETS", host="127.0.0.1", port=port)
        failures: list[Exception] = []

        def attempt() -> None:
            try:
                store_instance(payload, destination, calling_ae_title="RADTRACE", timeout_s=TIMEOUT_S)
            except (DispatchError, PeerUnavailableError) as exc:
                failures.append(exc)

        left = _left_open(attempt)
    assert len(failures) == ATTEMPTS  # each store failed: nothing was stored
    assert all(exc.retryable for exc in failures)
    assert not left, f"{len(left)} sockets left open: {sorted(left)}"


def test_a_pacs_that_resets_is_not_said_to_have_left_the_release_unanswered(caplog: pytest.LogCaptureFixture) -> None:
    """pynetdicom may see the reset only once the A-RELEASE-RQ is sent: its release then ends at once, aborted. That
    is no PACS that never answered in the timeout (the line said so after every such store)."""
    caplog.set_level(logging.WARNING)
    payload = _payload()
    with _resetting_peer("p-data") as port:
        destination = DicomDestination(ae_title="RESETS", host="127.0.0.1", port=port)
        for _ in range(ATTEMPTS):
            with pytest.raises(DispatchError):
                store_instance(payload, destination, calling_ae_title="RADTRACE", timeout_s=TIMEOUT_S)
    said = [r.getMessage() for r in caplog.records if r.name.startswith("radtrace")]
    assert not [line for line in said if "did not answer the A-RELEASE-RQ" in line]
    assert set(said) <= {
        f"RESETS@127.0.0.1:{port} closed or reset the connection instead of answering the A-RELEASE-RQ"
    }


def test_radtrace_send_to_a_peer_that_resets_mid_transfer_leaves_no_socket_open(tmp_path: Path) -> None:
    film = tmp_path / "sr.dcm"
    film.write_bytes(_payload())
    with _resetting_peer("p-data") as port:
        results = []

        def attempt() -> None:
            results.extend(send_files([film], "127.0.0.1", port, called_ae="RESETS", timeout_s=TIMEOUT_S))

        left = _left_open(attempt)
    assert [result.status for result in results] == [None] * ATTEMPTS  # not stored, said so
    assert not left, f"{len(left)} sockets left open: {sorted(left)}"
