"""An A-ASSOCIATE-RQ that pynetdicom decodes but cannot negotiate is aborted, logged once and audited.

Found by fuzzing every length field of an A-ASSOCIATE-RQ at its boundaries: a presentation context item whose length
leaves out its abstract syntax sub-item (the item's length 4: its context ID and reserved bytes alone) is decoded, the
association policy accepts the caller, and pynetdicom's ``negotiate_as_acceptor`` raised ``TypeError: 'abstract_syntax'
must be str, bytes or UID, not 'NoneType'`` in the association's thread. Before: a 20-line traceback on stderr for each
such request (past the log's format and filters), no answer to the peer (it waited until the listener's network
timeout closed it), no audit event. Now: an A-ABORT at once, one line per source and interval, an
``association_rejected`` audit event (aggregated per source as every refusal is).
"""

from __future__ import annotations

import io
import json
import struct
import threading
from pathlib import Path
from typing import Any

import pytest

from dicom_peer_support import RawPeer, pdu_types
from listener_support import audit_payloads, listener_settings, running
from radtrace.dicom_listener.dcmtk import echoscu
from radtrace.store.engine import Store
from upper_layer_fuzz_support import RQ

pytestmark = pytest.mark.integration

#: The A-ASSOCIATE-RQ's first presentation context item (after the 74-byte header and the 26-byte application
#: context item), its 16-bit length made 4: no abstract syntax sub-item; the rest is read as further items.
NO_ABSTRACT_SYNTAX = RQ[:102] + struct.pack(">H", 4) + RQ[104:]
REQUESTS = 4


def test_a_presentation_context_without_its_abstract_syntax_is_aborted_logged_once_and_audited(
    tmp_path: Path, sqlite_store: Store, listener_port: int, captured_log: io.StringIO, monkeypatch: Any
) -> None:
    assert RQ[100] == 0x20  # the presentation context item
    uncaught: list[str] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: uncaught.append(args.exc_type.__name__))
    settings = listener_settings(tmp_path, listener_port, max_associations=2, network_timeout_s=30)
    with running(settings, sqlite_store):
        for _ in range(REQUESTS):  # more than max_associations: none of them keeps a slot
            with RawPeer(listener_port) as peer:
                peer.send(NO_ABSTRACT_SYNTAX)
                assert peer.wait_closed(5), "the listener neither answered nor closed"  # before: open until 30 s
                assert pdu_types(peer.received) == [0x07]  # A-ABORT
                assert peer.received[8:10] == b"\x02\x00"  # source: service provider
        assert echoscu(listener_port, timeout=20).returncode == 0
    assert uncaught == []  # before: TypeError, once per request
    output = captured_log.getvalue()
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if "could not be negotiated" in line]
    assert len(lines) == 1, output  # one per source and interval (60 s)
    assert "aborted the association with 127.0.0.1: A-ASSOCIATE-RQ that could not be negotiated (TypeError" in lines[0]
    events = [json.loads(p) for p in audit_payloads(sqlite_store, "association_rejected")]
    assert [(e["reason"], e["aggregated"], e["count"]) for e in events] == [
        ("association aborted: protocol violation", False, 1),
        ("association aborted: protocol violation", True, REQUESTS - 1),
    ], events
    assert events[0]["detail"].startswith("A-ASSOCIATE-RQ that could not be negotiated (TypeError in ")
