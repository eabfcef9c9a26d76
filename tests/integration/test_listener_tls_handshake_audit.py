"""A failed TLS handshake is audited: a node that failed authentication, a DICOM Security Alert (PS3.15 A.5.3.11) of
type Node Authentication (DCM 110113, 110126) in the ATNA forwarder's terms; bounded per source.

Before, a failed handshake was logged (one line, d973678) but not audited: the audit log had nothing of a modality
whose certificate the CA bundle does not sign, nor of a scan of the TLS port. Now each failure is a refusal
(``association_rejected``, reason ``TLS handshake failed``), aggregated per source and interval as every refusal is:
a peer failing handshakes in a loop writes one event at once, then one with the count of the others, never one
per connection into the hash-chained log.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
from pathlib import Path

import pytest
from lxml import etree

from listener_support import audit_payloads, listener_settings, running
from radtrace.audit.atna.message import AuditSource, audit_message_xml
from radtrace.audit.events import Actor
from radtrace.audit.queries import AuditFilter, export_records
from radtrace.store.engine import Store
from radtrace.testing.atna import Pki, make_pki

pytestmark = pytest.mark.integration


def _tls_client(port: int, pki: Pki, certificate_of: Pki | None) -> None:
    """A TLS client that trusts the listener, with the client certificate of ``certificate_of`` (``None``: none), and
    reads until the listener closes (TLS 1.3: a refused certificate is told after the client's handshake ended)."""
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.check_hostname = False
    if certificate_of is not None:
        context.load_cert_chain(certificate_of.client_cert, certificate_of.client_key)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with context.wrap_socket(raw) as sock:
                while sock.recv(4096):
                    pass
        except OSError:  # ssl.SSLError among them
            pass


def _plain(port: int) -> None:
    """Plain text to the TLS port."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        sock.settimeout(10)
        try:
            while sock.recv(4096):
                pass
        except OSError:
            pass


def test_failed_tls_handshakes_are_audited_as_node_authentication_alerts_bounded_per_source(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    pki, other = make_pki(tmp_path / "pki"), make_pki(tmp_path / "other")
    tls = {"enabled": True, "certificate": str(pki.server_cert), "private_key": str(pki.server_key),
           "ca_bundle": str(pki.ca), "require_client_certificate": True}  # fmt: skip
    settings = listener_settings(tmp_path, listener_port, tls=tls)  # one interval: 60 s
    failures = 9
    with running(settings, store):
        _tls_client(listener_port, pki, None)
        deadline = time.monotonic() + 20
        while not [p for p in audit_payloads(store, "association_rejected") if "TLS" in p]:
            assert time.monotonic() < deadline, "the failed handshake was not audited"
            time.sleep(0.05)
        for _ in range(2):
            _tls_client(listener_port, pki, None)
            _tls_client(listener_port, pki, other)
            _plain(listener_port)
        _tls_client(listener_port, pki, other)
        _plain(listener_port)
        time.sleep(0.5)  # the last handshakes' threads end; the stop writes the interval's count
    events = [json.loads(p) for p in audit_payloads(store, "association_rejected")]
    assert [e for e in events if e["reason"] != "TLS handshake failed"] == []
    first, *rest = events
    assert first == {
        "reason": "TLS handshake failed",
        "count": 1,
        "aggregated": False,
        "detail": "the peer sent no client certificate (listener.tls.require_client_certificate) "
        "(PEER_DID_NOT_RETURN_A_CERTIFICATE)",
        "tls_reason": "PEER_DID_NOT_RETURN_A_CERTIFICATE",
        "port": listener_port,
        "tls": True,
    }
    # the other eight, within the interval: one event with their count, not eight
    assert [(e["aggregated"], e["count"]) for e in rest] == [(True, failures - 1)], rest

    # The ATNA forwarder's message for each: valid against the DICOM audit schema (audit_message_xml validates)
    records = [
        r for r in export_records(store, AuditFilter(), Actor(user="auditor")) if r.event_type == "association_rejected"
    ]
    assert len(records) == 2
    for record, description in zip(
        records,
        [f"TLS handshake failed: {first['detail']}", f"TLS handshake failed ({failures - 1} more from this source)"],
        strict=True,
    ):
        message = etree.fromstring(audit_message_xml(record, AuditSource("radtrace-test"), max_bytes=8192))
        identification = message.find("EventIdentification")
        assert identification is not None
        assert identification.find("EventID").get("csd-code") == "110113"  # Security Alert
        codes = [c.get("csd-code") for c in identification.iterfind("EventTypeCode")]
        assert codes == ["110126", "association_rejected"]  # Node Authentication, then radtrace's own
        assert identification.get("EventOutcomeIndicator") == "4"  # minor failure
        assert identification.findtext("EventOutcomeDescription") == "TLS handshake failed"
        [peer] = [p for p in message.iterfind("ActiveParticipant") if p.get("UserIsRequestor") == "true"]
        assert (peer.get("NetworkAccessPointID"), peer.get("NetworkAccessPointTypeCode")) == ("127.0.0.1", "2")
        [subject] = [
            o
            for o in message.iterfind("ParticipantObjectIdentification")
            if o.find("ParticipantObjectIDTypeCode").get("csd-code") == "110182"  # Node ID: the alert subject
        ]
        assert subject.get("ParticipantObjectID") == "127.0.0.1"
        assert (subject.get("ParticipantObjectTypeCode"), subject.get("ParticipantObjectTypeCodeRole")) == ("2", "13")
        [detail] = subject.iterfind("ParticipantObjectDetail")
        assert detail.get("type") == "Alert Description"
        assert base64.b64decode(detail.get("value") or "").decode() == description
