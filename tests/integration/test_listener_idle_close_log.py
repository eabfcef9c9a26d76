"""A PACS that keeps its association open and goes quiet is ended at ``listener.network_timeout_s`` with one INFO
line naming it, not pynetdicom's ``ERROR Network timeout reached`` (no peer named) for each one.

Before, on a quiet night every idle PACS connection put an ERROR in the log. The close is still audited in
aggregate as every timeout is (test_listener_timeouts_audited.py); pynetdicom's other ERROR records are kept
(tests/unit/test_listener_idle_close.py).
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.association import Association

from listener_support import listener_env, start_listener

pytestmark = pytest.mark.integration

VERIFICATION = "1.2.840.10008.1.1"


def _idle_peer(port: int, source: str) -> Association:
    """pynetdicom as a PACS from ``source``: associates, C-ECHOes once, then keeps the association and says nothing
    (its own network timeout far beyond the listener's)."""
    peer = AE(ae_title="PACS")
    peer.add_requested_context(VERIFICATION)
    peer.acse_timeout = peer.network_timeout = 30
    assoc = peer.associate("127.0.0.1", port, ae_title="RADTRACE", bind_address=(source, 0))
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    return assoc


def test_an_idle_pacs_association_is_ended_with_one_info_line_naming_it_not_an_error(
    tmp_path: Path, listener_port: int
) -> None:
    env = listener_env(tmp_path, listener_port, f"sqlite:///{tmp_path / 'radtrace.db'}")
    process = start_listener(env | {"RADTRACE_LISTENER__NETWORK_TIMEOUT_S": "1"}, listener_port)
    try:
        peers = {source: _idle_peer(listener_port, source) for source in ("127.0.0.2", "127.0.0.3")}
        deadline = time.monotonic() + 8
        while not all(a.is_aborted for a in peers.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [a.is_aborted for a in peers.values()] == [True, True]  # the listener's A-ABORT reached each peer
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
    assert process.returncode == 0, output
    lines = output.splitlines()
    assert [line for line in lines if " ERROR " in line or "Network timeout reached" in line] == [], output
    for source in peers:
        said = [line for line in lines if f" at {source} " in line]
        assert len(said) == 1, output
        assert re.search(
            rf" INFO +radtrace\.dicom_listener\.idle_close: ended the idle association from 'PACS' at {source} "
            rf"on port {listener_port} with an A-ABORT: nothing received for 1 s \(listener\.network_timeout_s\)$",
            said[0],
        ), said[0]
