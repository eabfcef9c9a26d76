"""Slow and silent peers inside an association: each is ended with an A-ABORT, never just dropped.

The half-open ones (no A-ASSOCIATE-RQ yet) are closed without a PDU, as ARTIM expiry in Sta2 does
(PS3.8 9.2.3, AA-2); see test_listener_hostile.py. Once the association is established the peer is
owed an A-ABORT (source: service provider) before the connection goes, whoever ends it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dicom_peer_support import (
    VERIFICATION,
    RawPeer,
    associate_rq,
    echo_rq,
    p_data,
    pdu_types,
    pdv,
    presentation_context,
)
from listener_support import listener_settings, running
from radtrace.dicom_listener.dcmtk import echoscu
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration

A_ASSOCIATE_AC, A_ABORT = 0x02, 0x07


def test_a_pdu_header_dripped_a_byte_at_a_time_is_aborted_not_just_dropped(
    tmp_path: Path, sqlite_store: Store, listener_port: int
) -> None:
    settings = listener_settings(tmp_path, listener_port, pdu_grace_s=1.0, max_associations=1)
    with running(settings, sqlite_store) as listener, RawPeer(listener_port) as peer:
        peer.send(associate_rq([presentation_context(1, VERIFICATION)]))
        assert pdu_types(peer.read(2, until_types=1)) == [A_ASSOCIATE_AC]
        started = time.monotonic()
        for byte in p_data(pdv(1, 0x03, echo_rq()))[:6]:  # the header, one byte every 0.4 s
            peer.send(bytes((byte,)))
            peer.read(0.4)
            if peer.closed:
                break
        assert peer.wait_closed(3)
        assert time.monotonic() - started < 4
        assert pdu_types(peer.received) == [A_ASSOCIATE_AC, A_ABORT]
        assert peer.received[-4:] == b"\x00\x00\x02\x00"  # source 2: the service provider (PS3.8 9.3.8)
        assert listener.admission.slots_taken() == 0
        assert echoscu(listener_port).returncode == 0  # the only slot is free again


def test_an_association_past_its_wall_clock_limit_is_aborted(
    tmp_path: Path, sqlite_store: Store, listener_port: int
) -> None:
    settings = listener_settings(tmp_path, listener_port, max_association_s=1.5)
    with running(settings, sqlite_store), RawPeer(listener_port) as peer:
        peer.send(associate_rq([presentation_context(1, VERIFICATION)]))
        assert pdu_types(peer.read(2, until_types=1)) == [A_ASSOCIATE_AC]
        for message_id in range(1, 30):  # busy, never idle: C-ECHO after C-ECHO
            peer.send(p_data(pdv(1, 0x03, echo_rq(message_id))))
            peer.read(0.1)
            if peer.closed:
                break
        assert peer.wait_closed(3)
        assert pdu_types(peer.received)[-1] == A_ABORT


def test_an_association_that_goes_silent_is_aborted_at_the_network_timeout(
    tmp_path: Path, sqlite_store: Store, listener_port: int
) -> None:
    settings = listener_settings(tmp_path, listener_port, network_timeout_s=1.5)
    with running(settings, sqlite_store) as listener, RawPeer(listener_port) as peer:
        peer.send(associate_rq([presentation_context(1, VERIFICATION)]))
        assert pdu_types(peer.read(2, until_types=1)) == [A_ASSOCIATE_AC]
        started = time.monotonic()
        assert peer.wait_closed(5)
        assert 1.4 < time.monotonic() - started < 4
        assert pdu_types(peer.received) == [A_ASSOCIATE_AC, A_ABORT]
        assert listener.admission.slots_taken() == 0


def test_a_peer_stuck_in_a_pdu_header_when_the_association_times_out_is_not_left_holding_a_thread(
    tmp_path: Path, sqlite_store: Store, listener_port: int
) -> None:
    """Found by the upper-layer fuzzer: one byte of a PDU after the A-ASSOCIATE-AC, then silence. pynetdicom's
    network timeout aborted the association, freeing its slot, but the A-ABORT waited for the DUL thread, which
    waited for the rest of the header: nothing was sent, nothing shut, and the socket and two threads stayed
    until the peer left. One peer could pile them up without limit."""
    settings = listener_settings(tmp_path, listener_port, network_timeout_s=1.0, pdu_grace_s=30.0)
    with running(settings, sqlite_store) as listener, RawPeer(listener_port) as peer:
        peer.send(associate_rq([presentation_context(1, VERIFICATION)]))
        assert pdu_types(peer.read(2, until_types=1)) == [A_ASSOCIATE_AC]
        peer.send(b"\x04")  # the first byte of a P-DATA-TF, and nothing more
        assert peer.wait_closed(4)
        assert listener.admission.slots_taken() == 0
        deadline = time.monotonic() + 3
        while listener.admission.connections and time.monotonic() < deadline:
            time.sleep(0.05)
        assert listener.admission.connections == []
