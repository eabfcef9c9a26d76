"""The ATNA forwarder against a real rsyslog over mutual TLS: every event type arrives and validates; outages
of the receiver and of the forwarder leave no gap, and every duplicate is recognisable by its seq."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from radtrace.audit.atna.forwarder import AtnaForwarder, AtnaMetrics, CursorFile, transport_for
from radtrace.audit.atna.message import AuditSource, validate_audit_message
from radtrace.audit.atna.syslog import SyslogUnavailableError
from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import AtnaSettings
from radtrace.store.engine import Store
from radtrace.testing.atna import Pki, Rsyslog, free_port, make_pki

pytestmark = pytest.mark.integration

STUDY = "1.2.826.0.1.3680043.8.498.77"
PEER = Actor(ae_title="MODALITY1", host="127.0.0.1", process="radtrace@test:1")


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def rsyslog(tmp_path: Path, pki: Pki) -> Iterator[Rsyslog]:
    receiver = Rsyslog(tmp_path / "rsyslog", free_port(), pki)
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture(params=["gtls", "ossl"])
def any_rsyslog(request: pytest.FixtureRequest, tmp_path: Path, pki: Pki) -> Iterator[Rsyslog]:
    """rsyslog with its GnuTLS and its OpenSSL driver (OpenSSL sends TLS 1.3 session tickets after the handshake)."""
    receiver = Rsyslog(tmp_path / "rsyslog", free_port(), pki, driver=request.param)
    receiver.start()
    yield receiver
    receiver.stop()


def settings_for(receiver: Rsyslog, pki: Pki, *, client_certificate: bool = True, **overrides: object) -> AtnaSettings:
    values: dict[str, object] = {
        "enabled": True,
        "transport": "tls",
        "host": "127.0.0.1",
        "port": receiver.port,
        "ca_bundle": pki.ca,
        "server_name": "localhost",
        "certificate": pki.client_cert if client_certificate else None,
        "private_key": pki.client_key if client_certificate else None,
        "settle_s": 0.3,
        "poll_interval_s": 0.05,
        "backoff_initial_s": 0.1,
        "backoff_max_s": 0.4,
    }
    values.update(overrides)
    return AtnaSettings(**values)  # type: ignore[arg-type]


def record_events(store: Store, count: int) -> None:
    """``count`` events cycling through every event type, failures included, in batches."""
    kinds = list(EventType)
    recorder = AuditRecorder(store)
    events = [
        AuditEvent(
            kinds[i % len(kinds)],
            PEER,
            outcome=Outcome.MINOR_FAILURE if i % 7 == 3 else Outcome.SUCCESS,
            study_uid=STUDY,
            accession="ACC1",
            patient_id="PAT-1" if i % 2 else None,
            payload={"reason": "peer said no"} if i % 7 == 3 else {"n": i},
        )
        for i in range(count)
    ]
    for start in range(0, count, 500):
        recorder.record_many(events[start : start + 500])


class Running:
    """A forwarder in a thread, stoppable (a stop discards unsettled state: to delivery, the same as a crash)."""

    def __init__(self, store: Store, settings: AtnaSettings, cursor: CursorFile) -> None:
        self.metrics = AtnaMetrics()
        self.forwarder = AtnaForwarder(
            store, settings, cursor, transport_for(settings), AuditSource("radtrace-test"), metrics=self.metrics
        )
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.forwarder.run, args=(self.stop_event,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(10)
        assert not self.thread.is_alive()


def wait_for(condition: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_every_event_type_arrives_over_mutual_tls_and_validates(
    tmp_path: Path, store: Store, any_rsyslog: Rsyslog, pki: Pki
) -> None:
    rsyslog = any_rsyslog  # on SQLite and PostgreSQL (the store fixture), with both TLS drivers
    record_events(store, len(EventType))
    cursor = CursorFile(tmp_path / "atna" / "cursor.json")
    running = Running(store, settings_for(rsyslog, pki), cursor)
    try:
        wait_for(lambda: cursor.read().seq == len(EventType))
        time.sleep(0.5)  # idle polls on the open connection
    finally:
        running.stop()
    received = rsyslog.received()
    assert [message.seq for message in received] == list(range(1, len(EventType) + 1))
    seen = set()
    for message, kind in zip(received, EventType, strict=True):
        validate_audit_message(message.msg.encode("utf-8"))
        root = etree.fromstring(message.msg.encode("utf-8"))
        assert root.find("EventIdentification/EventID").get("csd-code") == kind.dicom.code
        local = {code.get("csd-code") for code in root.iterfind("EventIdentification/EventTypeCode")}
        seen |= local & {kind.value}
        assert (
            root.xpath(
                "string(ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='3']/@ParticipantObjectID)"
            )
            == STUDY
        )
    assert seen == {kind.value for kind in EventType}
    assert running.metrics.backlog._value.get() == 0
    # TLS records after the handshake (session tickets) are not a closed connection: one connection throughout.
    assert running.metrics.failures._value.get() == 0


def test_without_a_client_certificate_nothing_is_sent_and_the_cursor_stays(
    tmp_path: Path, sqlite_store: Store, rsyslog: Rsyslog, pki: Pki
) -> None:
    record_events(sqlite_store, 5)
    cursor = CursorFile(tmp_path / "atna" / "cursor.json")
    running = Running(sqlite_store, settings_for(rsyslog, pki, client_certificate=False), cursor)
    try:
        wait_for(lambda: running.metrics.failures._value.get() >= 2)
    finally:
        running.stop()
    assert rsyslog.received() == []
    assert cursor.read().seq == 0


def test_receiver_and_forwarder_killed_mid_stream_leave_no_gap_and_duplicates_are_recognisable(
    tmp_path: Path, sqlite_store: Store, rsyslog: Rsyslog, pki: Pki
) -> None:
    total = 3000
    record_events(sqlite_store, total)
    settings = settings_for(rsyslog, pki, batch_size=25)
    cursor = CursorFile(tmp_path / "atna" / "cursor.json")
    running = Running(sqlite_store, settings, cursor)
    try:  # a failure must not leave a forwarder retrying in this process (later tests would see its log lines)
        # 1. The repository crashes mid-stream (SIGKILL) and stays down while the log grows.
        wait_for(lambda: rsyslog.count_lines() > 400 and cursor.read().seq > 0)
        rsyslog.kill()
        first_cursor = cursor.read().seq
        record_events(sqlite_store, 200)
        time.sleep(1.0)
        assert running.metrics.backlog._value.get() > 0
        rsyslog.start()
        # 2. The forwarder is stopped mid-stream, losing its unsettled window, and a new one takes over.
        wait_for(lambda: len(rsyslog.received()) > 1500 and cursor.read().seq > first_cursor)
    finally:
        running.stop()
    second_cursor = cursor.read().seq  # what the stopped forwarder had settled
    running = Running(sqlite_store, settings, cursor)
    try:
        wait_for(lambda: cursor.read().seq == total + 200, timeout_s=40)
    finally:
        running.stop()

    received = rsyslog.received()
    seqs = [message.seq for message in received]
    assert set(seqs) == set(range(1, total + 201))  # no gap
    highest = 0
    for seq in seqs:  # at no point does a message skip ahead: in order, and no gap even transiently
        assert seq <= highest + 1
        highest = max(highest, seq)
    counts = Counter(seqs)
    duplicates = sorted(seq for seq, n in counts.items() if n > 1)
    by_seq: dict[int, set[str]] = {}
    for message in received:
        by_seq.setdefault(message.seq, set()).add(message.msg)
    assert all(len(by_seq[seq]) == 1 for seq in duplicates)  # a resend is the same message, same seq
    # Duplicates come only from resending the unsettled window after each of the two failures.
    runs = [seq for i, seq in enumerate(duplicates) if i == 0 or duplicates[i - 1] != seq - 1]
    assert len(runs) <= 2
    # Each window is what was sent after the cursor before a failure (its size is what this machine sent in the last
    # settle_s): never a replay from the start, and a row settled before a failure is never sent again after it.
    assert min(duplicates, default=total) > first_cursor
    if len(runs) == 2:  # the second window starts after what the stopped forwarder had settled
        assert runs[1] > second_cursor
    print(
        f"outage test: {len(received)} messages for {total + 200} events, "
        f"{len(duplicates)} duplicates in {len(runs)} runs"
    )


def test_udp_delivers_each_message_as_one_datagram(tmp_path: Path, sqlite_store: Store, pki: Pki) -> None:
    receiver = Rsyslog(tmp_path / "rsyslog-udp", free_port(), pki, udp_port=free_port())
    receiver.start()
    try:
        record_events(sqlite_store, 30)
        assert receiver.udp_port is not None
        settings = settings_for(receiver, pki, transport="udp", port=receiver.udp_port)
        cursor = CursorFile(tmp_path / "atna" / "cursor.json")
        running = Running(sqlite_store, settings, cursor)
        try:
            wait_for(lambda: cursor.read().seq == 30 and receiver.count_lines() == 30)
        finally:
            running.stop()
        received = receiver.received()
    finally:
        receiver.stop()
    # Loopback does not drop datagrams at this rate; on a real network UDP is best effort (docs/operations.md).
    assert [message.seq for message in received] == list(range(1, 31))
    for message in received:
        validate_audit_message(message.msg.encode("utf-8"))


def test_hostile_rows_arrive_whole_at_an_rsyslog_with_its_default_size_limit(
    tmp_path: Path, sqlite_store: Store, pki: Pki
) -> None:
    """rsyslog as shipped takes 8096 bytes a message. Before: a 15 kB message over TLS arrived cut (XML broken) and
    the rest of its frame as further messages with no seq; over UDP cut too. Now every row arrives once, whole."""
    receiver = Rsyslog(tmp_path / "rsyslog", free_port(), pki, udp_port=free_port())
    receiver.start()
    hostile = [
        ("&" * 1024, "MODALITY1"),  # model text full of what XML escapes, at the recorder's limit
        ("\U0001f600" * 5000, '"]\\' * 300),  # 4-byte characters; an AE title made of what RFC 5424 escapes
        ("x\x00\x1b\ufffe" * 250_000, "AE\nFORGED"),  # 1 MB with control characters and a non-character
    ]
    events = []
    for reason, ae in hostile:
        peer = Actor(ae_title=ae, host="127.0.0.1", process="p")
        events.append(AuditEvent(EventType.INFERENCE_FAILED, peer, outcome=Outcome.SERIOUS_FAILURE, study_uid=STUDY,
                                 payload={"reason": reason}))  # fmt: skip
        events.append(AuditEvent(EventType.INFERENCE_COMPLETED, PEER, study_uid=STUDY))
    AuditRecorder(sqlite_store).record_many(events)
    try:
        assert receiver.udp_port is not None
        for transport, port in (("tls", receiver.port), ("udp", receiver.udp_port)):
            settings = settings_for(receiver, pki, transport=transport, port=port)
            cursor = CursorFile(tmp_path / transport / "cursor.json")
            running = Running(sqlite_store, settings, cursor)
            try:
                wait_for(lambda: cursor.read().seq == len(events))  # noqa: B023 (waited for within the loop)
                time.sleep(0.5)  # anything rsyslog would make of a cut frame's rest is written by now
            finally:
                running.stop()
        received = receiver.received()
    finally:
        receiver.stop()
    assert [message.seq for message in received] == [*range(1, 7), *range(1, 7)]
    for message in received:
        validate_audit_message(message.msg.encode("utf-8"))
        root = etree.fromstring(message.msg.encode("utf-8"))
        kinds = {code.get("csd-code") for code in root.iterfind("EventIdentification/EventTypeCode")}
        assert kinds & {"inference_failed", "inference_completed"}


@pytest.mark.parametrize("wrong", ["server_name", "ca_bundle", "expired"])
def test_a_certificate_that_does_not_verify_names_the_setting_and_sends_nothing(
    tmp_path: Path, pki: Pki, wrong: str
) -> None:
    """A repository whose certificate was renewed by another CA, is presented for another name, or expired: the
    error says what to check, naming the settings (before: only the OpenSSL text), and nothing goes out in plain
    text instead."""
    served = make_pki(tmp_path / "expired", server_expired=True) if wrong == "expired" else pki
    receiver = Rsyslog(tmp_path / "rsyslog", free_port(), served)
    receiver.start()
    overrides: dict[str, object] = {"server_name": "atna.other.example"} if wrong == "server_name" else {}
    if wrong == "ca_bundle":
        overrides["ca_bundle"] = make_pki(tmp_path / "other").ca
    try:
        transport = transport_for(settings_for(receiver, served, **overrides))
        with pytest.raises(SyslogUnavailableError) as refused:
            transport.connect()
        received = receiver.received()
    finally:
        receiver.stop()
    reason = refused.value.reason
    assert "atna.ca_bundle" in reason
    assert "atna.server_name" in reason
    assert {
        "server_name": "Hostname mismatch, certificate is not valid for 'atna.other.example'",
        "ca_bundle": "certificate signature failure",
        "expired": "certificate has expired): the repository's certificate is outside its validity dates",
    }[wrong] in reason
    assert received == []
