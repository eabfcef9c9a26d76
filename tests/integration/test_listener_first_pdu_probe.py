"""A connection whose first PDU is not an A-ASSOCIATE-RQ is logged in one line, audited, and closed at once.

A peer probing the port with a P-DATA-TF, an A-RELEASE-RQ or -RP, an A-ASSOCIATE-AC or -RJ, or an A-ABORT left no
trace before: the state machine answered with an A-ABORT (AA-1, or closed on an A-ABORT: AA-2) and nothing was
logged or audited, and the socket stayed open until the ARTIM timer (the ACSE timeout) or the peer closed it. Now
one line names the peer and what it sent (the PDU and its type code, never its bytes), the refusal is audited like
the other protocol violations, and the socket is shut as soon as the A-ABORT is sent. The watchdog is stopped and the
ACSE timeout is 60 s here, so the close can only be the guard's own.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from dicom_peer_support import ABORT, RELEASE_RQ, RawPeer, pdu
from listener_support import audit_payloads, listener_settings, running
from radtrace.dicom_listener.dcmtk import echoscu
from radtrace.store.engine import Store
from upper_layer_fuzz_support import ECHO, RQ

pytestmark = pytest.mark.integration

FIRST_PDUS = {
    "A-ASSOCIATE-AC": (pdu(0x02, RQ[6:]), 0x02),
    "A-ASSOCIATE-RJ": (pdu(0x03, b"\x00\x01\x01\x01"), 0x03),
    "P-DATA-TF": (ECHO, 0x04),
    "A-RELEASE-RQ": (RELEASE_RQ, 0x05),
    "A-RELEASE-RP": (pdu(0x06, bytes(4)), 0x06),
    "A-ABORT": (ABORT, 0x07),
}


@pytest.mark.parametrize("name", list(FIRST_PDUS))
def test_a_first_pdu_other_than_an_associate_rq_is_logged_audited_and_closed(
    name: str, tmp_path: Path, store: Store, listener_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    data, code = FIRST_PDUS[name]
    settings = listener_settings(tmp_path, listener_port, acse_timeout_s=60.0, min_free_bytes=0)
    with running(settings, store) as listener, caplog.at_level(logging.INFO, logger="radtrace"):
        assert listener.watchdog is not None
        listener.watchdog.stop()  # no shut after the abort's grace, no deadline: only the guard may close it
        caplog.clear()
        with RawPeer(listener_port) as peer:
            peer.send(data + b"\n2026-01-01 00:00:00,000 ERROR forged")  # what follows is never read as a line
            assert peer.wait_closed(20), f"the connection stayed open after a first {name}"
        lines = [
            r.getMessage()
            for r in caplog.records
            if r.name.startswith("radtrace.dicom_listener") and "127.0.0.1" in r.getMessage()
        ]
        assert echoscu(listener_port).returncode == 0
    assert len(lines) == 1, lines
    assert f"{name} (PDU type 0x{code:02X}) before any A-ASSOCIATE-RQ" in lines[0], lines
    assert "forged" not in caplog.text
    [audited] = [json.loads(p) for p in audit_payloads(store, "association_rejected")]
    assert audited["reason"] == "association aborted: protocol violation"
    assert audited["detail"] == f"{name} (PDU type 0x{code:02X}) before any A-ASSOCIATE-RQ"
