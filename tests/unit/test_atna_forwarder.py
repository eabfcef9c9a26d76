"""The forwarder's delivery rules with a scripted repository: backoff through a long outage, resend from the
cursor only, and a cursor that does not belong to the log is refused rather than skipped."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from radtrace.audit.atna.forwarder import AtnaForwarder, Cursor, CursorFile
from radtrace.audit.atna.message import AuditSource
from radtrace.audit.atna.syslog import SyslogUnavailableError
from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import AtnaSettings
from radtrace.errors import ConfigError, RetryableError
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade

pytestmark = pytest.mark.unit


class ScriptedRepository:
    """Refuses the first ``down_for`` connection attempts (an outage), then takes everything."""

    acknowledged = True

    def __init__(self, down_for: int) -> None:
        self.down_for = down_for
        self.attempts = 0
        self.received: list[bytes] = []
        self.connected = False
        self.timeouts: list[float | None] = []

    def connect(self, timeout_s: float | None = None) -> None:
        self.timeouts.append(timeout_s)
        self.attempts += 1
        if self.attempts <= self.down_for:
            raise SyslogUnavailableError("connection refused")
        self.connected = True

    def send(self, messages: Sequence[bytes]) -> None:
        self.received.extend(messages)

    def alive(self) -> bool:
        return self.connected

    def close(self) -> None:
        self.connected = False


class RecordingStop(threading.Event):
    """A stop event whose waits return at once and are recorded (the backoff delays)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        return self.is_set()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    migrated = Store.from_url(f"sqlite:///{tmp_path / 'radtrace.db'}")
    upgrade(migrated)
    AuditRecorder(migrated).record_many(
        [AuditEvent(EventType.STUDY_QUEUED, Actor(process="p"), study_uid=f"1.2.{n}") for n in range(120)]
    )
    yield migrated
    migrated.dispose()


def settings(**overrides: object) -> AtnaSettings:
    values: dict[str, object] = {"host": "arr", "batch_size": 50, "settle_s": 0.0, "backoff_max_s": 60.0}
    return AtnaSettings(**(values | overrides))  # type: ignore[arg-type]


def seqs(received: list[bytes]) -> list[int]:
    return [int(message.split(b'seq="', 1)[1].split(b'"', 1)[0]) for message in received]


def test_a_long_outage_backs_off_to_the_cap_then_delivers_everything_in_order(store: Store, tmp_path: Path) -> None:
    # An hour down at a 60 s cap is ~60 refused attempts; 70 here.
    repository = ScriptedRepository(down_for=70)
    cursor = CursorFile(tmp_path / "cursor.json")
    forwarder = AtnaForwarder(store, settings(), cursor, repository, AuditSource("s"))
    stop = RecordingStop()
    forwarder.run(stop, until_caught_up=True)
    backoffs = stop.waits[:70]
    assert backoffs[:7] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0]
    assert set(backoffs[7:]) == {60.0}
    assert seqs(repository.received) == list(range(1, 121))
    assert cursor.read().seq == 120
    assert forwarder.metrics.failures._value.get() == 70
    assert forwarder.metrics.backlog._value.get() == 0


class ClockedStop(RecordingStop):
    """A stop event whose waits move a fake clock on (and return at once)."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 100.0

    def clock(self) -> float:
        return self.now

    def wait(self, timeout: float | None = None) -> bool:
        self.now += timeout or 0.0
        return super().wait(timeout)


def test_giving_up_after_a_time_bounds_an_outage_and_says_what_waits(store: Store, tmp_path: Path) -> None:
    """``radtrace audit forward --once``: before, it retried a repository that was down for ever."""
    repository = ScriptedRepository(down_for=10**6)
    stop = ClockedStop()
    forwarder = AtnaForwarder(store, settings(), CursorFile(tmp_path / "c.json"), repository, AuditSource("s"),
                              clock=stop.clock)  # fmt: skip
    with pytest.raises(RetryableError) as raised:
        forwarder.run(stop, until_caught_up=True, give_up_after_s=15.0)
    assert stop.waits == [1.0, 2.0, 4.0, 7.0]  # tries at 0, 1, 3, 7 and 14 s: the last one has 1 s left
    assert repository.timeouts == [15.0, 14.0, 12.0, 8.0, 1.0]  # each try bounded by what is left
    assert raised.value.reason == (
        "connection refused; gave up after 5 tries in 14 s (at most 15 s); 120 audit events wait (from seq 1): the "
        "cursor is kept, run it again once the repository answers"
    )


def test_a_restart_resends_only_what_follows_the_cursor(store: Store, tmp_path: Path) -> None:
    cursor = CursorFile(tmp_path / "cursor.json")
    cursor.write(Cursor(100, row_hashes(store)[100]))
    repository = ScriptedRepository(down_for=0)
    AtnaForwarder(store, settings(), cursor, repository, AuditSource("s")).run(RecordingStop(), until_caught_up=True)
    assert seqs(repository.received) == list(range(101, 121))


def test_a_cursor_ahead_of_the_log_is_refused_not_skipped(store: Store, tmp_path: Path) -> None:
    cursor = CursorFile(tmp_path / "cursor.json")
    cursor.write(Cursor(500, "from another database"))
    repository = ScriptedRepository(down_for=0)
    forwarder = AtnaForwarder(store, settings(), cursor, repository, AuditSource("s"))
    with pytest.raises(ConfigError, match="ends at 120"):
        forwarder.run(RecordingStop(), until_caught_up=True)
    assert repository.received == []


def row_hashes(store: Store) -> dict[int, str]:
    with store.engine.connect() as connection:
        return dict(connection.exec_driver_sql("SELECT seq, hash FROM audit_events").all())  # type: ignore[arg-type]


def truncate_and_refill(store: Store, *, after: int, new_rows: int) -> None:
    """A database superuser deletes the tail, then radtrace appends new events onto the shorter chain."""
    with store.engine.connect() as connection:
        connection.exec_driver_sql("DROP TRIGGER audit_events_no_delete")
        connection.exec_driver_sql(f"DELETE FROM audit_events WHERE seq > {int(after)}")  # noqa: S608
        connection.commit()
    AuditRecorder(store).record_many(
        [AuditEvent(EventType.STUDY_QUEUED, Actor(process="p"), study_uid=f"9.9.{n}") for n in range(new_rows)]
    )


@pytest.mark.parametrize("new_rows", [10, 15])
def test_a_forwarded_tail_deleted_and_refilled_is_refused_at_start(store: Store, tmp_path: Path, new_rows: int) -> None:
    """The repository holds rows 111-120; the log now has other rows under those numbers: the cursor's hash shows it."""
    cursor = CursorFile(tmp_path / "cursor.json")
    AtnaForwarder(store, settings(), cursor, ScriptedRepository(0), AuditSource("s")).run(
        RecordingStop(), until_caught_up=True
    )
    assert cursor.read() == Cursor(120, row_hashes(store)[120])
    truncate_and_refill(store, after=110, new_rows=new_rows)
    repository = ScriptedRepository(down_for=0)
    forwarder = AtnaForwarder(store, settings(), cursor, repository, AuditSource("s"))
    with pytest.raises(ConfigError, match="seq 120"):
        forwarder.run(RecordingStop(), until_caught_up=True)
    assert repository.received == []


def test_a_tail_rewritten_while_forwarding_is_refused_not_sent(store: Store, tmp_path: Path) -> None:
    repository = ScriptedRepository(down_for=0)
    forwarder = AtnaForwarder(
        store, settings(batch_size=200), CursorFile(tmp_path / "cursor.json"), repository, AuditSource("s")
    )
    assert forwarder.step() == 120
    truncate_and_refill(store, after=110, new_rows=15)  # rows 111-125 now: 121-125 chain onto a new row 120
    with pytest.raises(ConfigError, match="seq 121"):
        forwarder.step()
    *rows, alert = repository.received
    assert seqs(rows) == list(range(1, 121))  # none of the rewritten rows
    assert b"tamper_detected" in alert  # but the repository is told why forwarding stopped
    assert b"forwarding stopped at seq 121" in alert


def _structured_data(message: bytes) -> bytes:
    """The STRUCTURED-DATA of an RFC 5424 message: what follows the six header fields, up to the BOM."""
    return message.split(b" ", 6)[6].split(b" \xef\xbb\xbf", 1)[0]


def test_an_edited_row_can_neither_inject_structured_data_nor_stop_the_forwarder(store: Store, tmp_path: Path) -> None:
    """An attacker with database rights writes into the row's hash and event type what would close the syslog
    structured data and add an element of theirs, or what XML cannot hold (which raised and stopped forwarding
    for good: every later event stayed on the host)."""
    from audit_support import as_superuser

    as_superuser(
        store,
        "UPDATE audit_events SET hash = 'x\"] [evil@1 trusted=\"yes' WHERE seq = 120",
        "UPDATE audit_events SET event_type = 'study_queued' || char(1) WHERE seq = 3",
    )
    repository = ScriptedRepository(down_for=0)
    forwarder = AtnaForwarder(store, settings(), CursorFile(tmp_path / "cursor.json"), repository, AuditSource("s"))
    forwarder.run(RecordingStop(), until_caught_up=True)
    assert seqs(repository.received) == list(range(1, 121))
    last = _structured_data(repository.received[-1])
    assert last == b'[radtrace@32473 seq="120" hash="x\\"\\] [evil@1 trusted=\\"yes"]'
    assert b"study_queued\xef\xbf\xbd" in repository.received[2]  # the control character replaced, not raised


def test_a_row_no_message_can_carry_goes_as_a_tamper_alert_under_its_seq(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from radtrace.audit.atna import forwarder as forwarding
    from radtrace.audit.atna.message import AuditMessageInvalidError

    real = forwarding.audit_message_xml

    def refusing(record, source, **options):  # type: ignore[no-untyped-def]
        if record.seq == 7 and record.event_type != "tamper_detected":
            raise AuditMessageInvalidError("audit message fails the DICOM audit schema: as edited")
        return real(record, source, **options)

    monkeypatch.setattr(forwarding, "audit_message_xml", refusing)
    repository = ScriptedRepository(down_for=0)
    AtnaForwarder(store, settings(), CursorFile(tmp_path / "cursor.json"), repository, AuditSource("s")).run(
        RecordingStop(), until_caught_up=True
    )
    assert seqs(repository.received) == list(range(1, 121))
    alert = repository.received[6]
    assert b"tamper_detected" in alert
    assert b"audit row seq 7 cannot be sent as stored" in alert


def test_rows_deleted_after_forwarding_began_are_reported_to_the_repository_before_it_stops(
    store: Store, tmp_path: Path
) -> None:
    """Stopping is the contract (no second history); stopping in silence left the off-host copy unaware."""
    from audit_support import as_superuser

    repository = ScriptedRepository(down_for=0)
    forwarder = AtnaForwarder(store, settings(), CursorFile(tmp_path / "cursor.json"), repository, AuditSource("s"))
    assert forwarder.step() == 50
    as_superuser(store, "DELETE FROM audit_events WHERE seq BETWEEN 51 AND 60")
    with pytest.raises(ConfigError, match="audit seq 51 is missing"):
        forwarder.step()
    alert = repository.received[-1]
    assert b"tamper_detected" in alert
    assert b"forwarding stopped at seq 51" in alert
    assert b'seq="51"' in alert


def test_a_seq_edited_into_text_stops_forwarding_at_its_place_with_an_alert(store: Store, tmp_path: Path) -> None:
    """SQLite keeps a text seq and sorts it after every number: it was read as a row, then raised a TypeError."""
    from audit_support import as_superuser

    as_superuser(store, "UPDATE audit_events SET seq = '30a' WHERE seq = 30")
    repository = ScriptedRepository(down_for=0)
    forwarder = AtnaForwarder(store, settings(), CursorFile(tmp_path / "cursor.json"), repository, AuditSource("s"))
    with pytest.raises(ConfigError, match="audit seq 30 is missing"):
        forwarder.run(RecordingStop(), until_caught_up=True)
    *rows, alert = repository.received
    assert rows == []  # the batch holding the gap is refused whole (batch_size 50)
    assert b"forwarding stopped at seq 30" in alert


def test_a_row_edited_to_megabytes_still_fits_one_udp_datagram(store: Store, tmp_path: Path) -> None:
    """SQLite takes any length: a 300 kB actor or hash made a message no datagram holds, a PermanentError that
    stopped forwarding for good at that row."""
    import socket

    from audit_support import as_superuser
    from radtrace.audit.atna.syslog import UdpTransport

    as_superuser(
        store,
        "UPDATE audit_events SET actor_process = printf('%.*c', 300000, 'p'), hash = printf('%.*c', 300000, 'h') "
        "WHERE seq = 120",
        "UPDATE audit_events SET event_type = 'audit_queried', "
        "payload = '{\"filters\":{\"study_uid\":\"' || printf('%.*c', 300000, '1') || '\"}}' WHERE seq = 119",
    )
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    receiver.settimeout(5)
    transport = UdpTransport("127.0.0.1", receiver.getsockname()[1])
    forwarder = AtnaForwarder(store, settings(), CursorFile(tmp_path / "cursor.json"), transport, AuditSource("s"))
    forwarder.run(RecordingStop(), until_caught_up=True)
    got = [receiver.recv(65536) for _ in range(120)]
    receiver.close()
    assert seqs(got) == list(range(1, 121))
    assert max(len(message) for message in got) <= 8096  # rsyslog's default limit (imudp cuts there too)


class RefusesAlerts(ScriptedRepository):
    """Takes the rows but drops the connection when a tamper alert is sent."""

    def send(self, messages: Sequence[bytes]) -> None:
        if any(b"tamper_detected" in message for message in messages):
            raise SyslogUnavailableError("connection reset")
        super().send(messages)


def test_a_stopped_forwarder_restarted_by_the_supervisor_alerts_once_per_distinct_problem(
    store: Store, tmp_path: Path
) -> None:
    """Each restart met the same gap and sent the same tamper alert again: the repository filled with copies."""
    from audit_support import as_superuser

    cursor = CursorFile(tmp_path / "cursor.json")
    first = AtnaForwarder(store, settings(), cursor, RefusesAlerts(down_for=0), AuditSource("s"))
    assert first.step() == 50
    as_superuser(store, "DELETE FROM audit_events WHERE seq BETWEEN 51 AND 60")
    with pytest.raises(ConfigError, match="audit seq 51 is missing"):
        first.step()  # the alert could not be sent: not remembered, so a restart tries again

    repositories = [ScriptedRepository(down_for=0) for _ in range(3)]
    for repository in repositories:  # the supervisor restarts the stopped forwarder
        forwarder = AtnaForwarder(store, settings(), cursor, repository, AuditSource("s"))
        with pytest.raises(ConfigError, match="audit seq 51 is missing"):
            forwarder.run(RecordingStop(), until_caught_up=True)
    assert [len(repository.received) for repository in repositories] == [1, 0, 0]
    assert b"forwarding stopped at seq 51" in repositories[0].received[0]
    assert cursor.read().seq == 50


def test_a_repository_that_takes_longer_messages_gets_values_cut_only_past_its_limit(
    store: Store, tmp_path: Path
) -> None:
    """``atna.max_message_bytes``: a site whose repository takes 64 kB (rsyslog ``maxMessageSize="64k"``) gets a row
    with eight values of 1,000 characters whole; before, every message was cut to 8,096 bytes whatever the
    repository took."""
    import socket

    from audit_support import as_superuser
    from radtrace.audit.atna.syslog import UdpTransport

    columns = {"actor_process": "p", "actor_user": "u", "actor_host": "h", "actor_ae": "e", "accession": "a",
               "patient_id": "i", "model_name": "m", "model_version": "v"}  # fmt: skip
    values = ", ".join(f"{column} = printf('%.*c', 1000, '{letter}')" for column, letter in columns.items())
    as_superuser(store, f"UPDATE audit_events SET {values} WHERE seq = 120")  # noqa: S608
    received: dict[int, bytes] = {}
    for limit in (8096, 65507):
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.bind(("127.0.0.1", 0))
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        receiver.settimeout(5)
        transport = UdpTransport("127.0.0.1", receiver.getsockname()[1])
        cursor = CursorFile(tmp_path / f"cursor-{limit}.json")
        forwarder = AtnaForwarder(store, settings(max_message_bytes=limit), cursor, transport, AuditSource("s"))
        forwarder.run(RecordingStop(), until_caught_up=True)
        got = [receiver.recv(65536) for _ in range(120)]
        receiver.close()
        assert seqs(got) == list(range(1, 121))
        assert max(len(message) for message in got) <= limit
        received[limit] = got[-1]
    assert b"p" * 1000 not in received[8096]  # cut to fit rsyslog's default
    assert b"p" * 1000 in received[65507]  # whole, as the repository takes it
    assert len(received[65507]) > 8096
    with pytest.raises(ValueError, match="greater than or equal to 8096"):
        settings(max_message_bytes=2048)  # the cut values of the worst message need 7,520 bytes
