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
from radtrace.errors import ConfigError
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

    def connect(self) -> None:
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


def test_a_restart_resends_only_what_follows_the_cursor(store: Store, tmp_path: Path) -> None:
    cursor = CursorFile(tmp_path / "cursor.json")
    cursor.write(Cursor(100, "whatever"))
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
