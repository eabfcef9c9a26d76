"""A connection that a timeout ends is in the audit log, not only in the log: source, calling AE, which timeout, bytes.

Before, the watchdog's cut-offs (negotiation deadline, PDU transfer rate, whole association) and pynetdicom's own
timers (ACSE, network) left one log line or none: a peer that opened connections and went silent did so unaudited,
while every refused association was. They now go through the same aggregated refusal audit (one event per source
and reason at once, the rest counted per interval), reason ``connection timed out (<setting>)``.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dicom_peer_support import VERIFICATION, RawPeer, associate_rq, pdu_types, presentation_context
from listener_support import audit_payloads, listener_env, listener_settings, running, start_listener
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration

A_ASSOCIATE_AC, A_ABORT = 0x02, 0x07


def _timeouts(store: Store) -> dict[str, dict[str, Any]]:
    """The first audit event of each timeout, by the setting it names."""
    events = [json.loads(p) for p in audit_payloads(store, "association_rejected")]
    return {e["timeout"]: e for e in events if e["reason"].startswith("connection timed out") and not e["aggregated"]}


def test_silent_peers_of_a_real_radtrace_listen_are_audited_with_their_timeout_and_bytes(
    tmp_path: Path, listener_port: int
) -> None:
    database = tmp_path / "radtrace.db"
    env = listener_env(tmp_path, listener_port, f"sqlite:///{database}") | {
        "RADTRACE_LISTENER__ACSE_TIMEOUT_S": "1.5",
        "RADTRACE_LISTENER__NETWORK_TIMEOUT_S": "1.5",
        "RADTRACE_LISTENER__PDU_GRACE_S": "0.7",
    }
    process = start_listener(env, listener_port)
    try:
        rq = associate_rq([presentation_context(1, VERIFICATION)])
        closed: dict[str, bool] = {}

        def silent(name: str, source: str, first: bytes, expect: list[int], then: bytes = b"") -> None:
            with RawPeer(listener_port, source) as peer:
                peer.send(first)
                if expect:
                    assert pdu_types(peer.read(2, until_types=1)) == expect
                peer.send(then)
                closed[name] = peer.wait_closed(5)  # then silence

        peers = [
            threading.Thread(target=silent, args=("nothing", "127.0.0.2", b"", [])),
            threading.Thread(target=silent, args=("half header", "127.0.0.3", rq[:3], [])),
            threading.Thread(target=silent, args=("established", "127.0.0.4", rq, [A_ASSOCIATE_AC])),
            threading.Thread(target=silent, args=("mid-PDU", "127.0.0.5", rq, [A_ASSOCIATE_AC], b"\x04\x00\x00")),
        ]
        for peer in peers:
            peer.start()
        for peer in peers:
            peer.join()
        assert closed == {"nothing": True, "half header": True, "established": True, "mid-PDU": True}
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
    assert process.returncode == 0, output
    store = Store.from_url(f"sqlite:///{database}")
    try:
        audited = _timeouts(store)
    finally:
        store.dispose()
    assert set(audited) == {
        "listener.acse_timeout_s",
        "listener.min_transfer_rate_bytes_s",
        "listener.network_timeout_s",
    }, output
    by_source = {host: json.loads(payload) for payload, _, host in _actors(database)}
    nothing = by_source["127.0.0.2"]  # no A-ASSOCIATE-RQ in time (pynetdicom's ARTIM)
    assert (nothing["timeout"], nothing["bytes_received"], nothing["established"]) == (
        "listener.acse_timeout_s",
        0,
        False,
    )
    assert nothing["limit"] == 1.5
    half = by_source["127.0.0.3"]  # 3 bytes of an RQ's header, then nothing: shut at the ACSE timeout, not 10 s
    assert (half["timeout"], half["bytes_received"], half["established"]) == ("listener.acse_timeout_s", 3, False)
    slow = audited["listener.min_transfer_rate_bytes_s"]  # associated, then 3 bytes of a P-DATA-TF (the watchdog)
    assert (slow["bytes_received"], slow["established"]) == (len(rq) + 3, True)
    assert "PDU slower than" in slow["detail"]
    idle = audited["listener.network_timeout_s"]  # associated, then idle (pynetdicom's network timeout)
    assert (idle["bytes_received"], idle["established"], idle["limit"]) == (len(rq), True, 1.5)
    actors = {json.loads(payload).get("timeout"): (ae, host) for payload, ae, host in _actors(database)}
    assert actors["listener.network_timeout_s"] == ("PACS", "127.0.0.4")  # the calling AE once the RQ was read
    assert actors["listener.min_transfer_rate_bytes_s"] == ("PACS", "127.0.0.5")


def _actors(database: Path) -> list[tuple[str, str | None, str | None]]:
    store = Store.from_url(f"sqlite:///{database}")
    try:
        with store.engine.connect() as connection:
            query = sa.text(
                "SELECT payload, actor_ae, actor_host FROM audit_events WHERE event_type = 'association_rejected'"
            )
            return [(row[0], row[1], row[2]) for row in connection.execute(query)]
    finally:
        store.dispose()


def test_a_half_open_connection_past_the_negotiation_deadline_is_audited_once(
    tmp_path: Path, sqlite_store: Store, listener_port: int
) -> None:
    settings = listener_settings(tmp_path, listener_port, negotiation_timeout_s=1.0)  # ACSE timeout 30 s
    with running(settings, sqlite_store), RawPeer(listener_port, "127.0.0.2") as peer:
        peer.send(b"\x01\x00")  # two bytes of an A-ASSOCIATE-RQ header
        started = time.monotonic()
        assert peer.wait_closed(4)
        assert time.monotonic() - started < 3
        time.sleep(0.3)
    audited = _timeouts(sqlite_store)
    assert list(audited) == ["listener.negotiation_timeout_s"]
    event = audited["listener.negotiation_timeout_s"]
    assert (event["bytes_received"], event["established"], event["limit"]) == (2, False, 1.0)
    assert event["detail"] == "association not established within 1 s"


def test_ending_an_association_whose_dul_waits_in_its_first_read_does_not_spin(
    tmp_path: Path, sqlite_store: Store, listener_port: int
) -> None:
    """pynetdicom's kill() waits for the DUL thread by sleeping the DUL's loop delay, 0 in the listener: with the DUL
    blocked in its first read (three bytes of a header, still Sta1), the thread that ended the association (here the
    test; in the listener the association thread at its ACSE timeout) spun until the read ended."""
    settings = listener_settings(tmp_path, listener_port, negotiation_timeout_s=1.0)
    with running(settings, sqlite_store) as listener, RawPeer(listener_port, "127.0.0.2") as peer:
        peer.send(b"\x01\x00\x00")
        time.sleep(0.2)
        (connection,) = listener.admission.connections
        spent: list[float] = []

        def kill() -> None:
            started = time.thread_time()
            connection.assoc.kill()  # returns once the watchdog's negotiation deadline has shut the connection
            spent.append(time.thread_time() - started)

        killer = threading.Thread(target=kill)
        killer.start()
        killer.join(5)
        assert peer.wait_closed(3)
    assert spent
    assert spent[0] < 0.02  # 0.14 s of CPU in its 0.8 s wait before (sleep(0) in a loop), 0.0001 s now
