"""Room for drafts before reading (radtrace.worker.disk_space) and which recorded reading a retry drafts again
from (radtrace.worker.kept_readings._kept): pure, with a statvfs the test controls."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from radtrace.audit.events import EventType
from radtrace.errors import DispatchError
from radtrace.model.reading import ModelIdentity, Reading, SourceImage, Timings, TokenCounts
from radtrace.reporting.draft_store import DraftsDiskFullError, DraftsNotStoredError, failure_event_type
from radtrace.store.engine import Store
from radtrace.worker.attempts import stored_details
from radtrace.worker.claims import Claim
from radtrace.worker.disk_space import FLOOR_BYTES, DraftSpace, NoRoomForDraftsError, free_bytes
from radtrace.worker.kept_readings import _kept, kept_readings

pytestmark = pytest.mark.unit

MB = 1 << 20


class Statvfs:
    """A file system with ``free`` bytes available, in 4 KiB blocks."""

    def __init__(self, free: int) -> None:
        self.free, self.asked = free, []

    def __call__(self, path: str) -> Any:
        self.asked.append(path)
        return SimpleNamespace(f_bavail=self.free // 4096, f_frsize=4096)


def test_a_batch_is_read_as_far_as_the_free_space_holds_its_drafts(tmp_path: Path) -> None:
    disk = Statvfs(3 * FLOOR_BYTES + 100)
    space = DraftSpace(tmp_path / "drafts", statvfs=disk)

    assert space.room_for(3) == (3, None)
    room, error = space.room_for(5)
    assert room == 3
    assert isinstance(error, NoRoomForDraftsError)
    assert isinstance(error, DraftsDiskFullError)  # waits, uncounted, as a full disk at write does
    assert error.reason == (f"disk full: {tmp_path}/drafts, 3 MB free (a revision's drafts need about 1 MB or more); "
                            "not read until there is space")  # fmt: skip
    assert disk.asked == [str(tmp_path)] * 2  # the nearest existing folder: drafts/ is made by the first write


def test_the_room_a_revision_needs_grows_with_the_largest_drafts_stored(tmp_path: Path) -> None:
    disk = Statvfs(20 * MB)
    space = DraftSpace(tmp_path, statvfs=disk)
    space.noted(60_000)
    assert space.per_revision == FLOOR_BYTES  # a chest X-ray's drafts: the floor
    space.noted(4 * MB)  # a large GSPS
    space.noted(1 * MB)
    assert space.per_revision == 8 * MB  # the drafts and the outbox's copy of them
    assert space.room_for(3)[0] == 2


def test_the_first_full_batch_and_the_space_coming_back_are_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    disk = Statvfs(0)
    space = DraftSpace(tmp_path, statvfs=disk)
    for _ in range(3):
        assert space.room_for(2)[0] == 0
    disk.free = 10 * MB
    assert space.room_for(2) == (2, None)
    space.room_for(2)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"disk full: {tmp_path}, 0 MB free")
    assert "2 of 2 revisions wait, not read" in lines[0]
    assert lines[1] == f"disk space again: {tmp_path}, 10 MB free; reading again"


def test_a_file_system_that_cannot_be_asked_does_not_hold_reading(tmp_path: Path) -> None:
    def broken(path: str) -> Any:
        raise OSError(5, "Input/output error")

    assert DraftSpace(tmp_path, statvfs=broken).room_for(4) == (4, None)


def test_free_bytes_is_what_an_unprivileged_writer_may_use(tmp_path: Path) -> None:
    found = os.statvfs(tmp_path)
    assert free_bytes(tmp_path / "not" / "yet") == pytest.approx(found.f_bavail * found.f_frsize, rel=0.01)


# --- which reading a retry drafts again from ---------------------------------------------------------


def _reading(text: str) -> dict[str, Any]:
    reading = Reading(
        raw_text=text,
        images=(SourceImage(sop_instance_uid="1.2.3", sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1", sha256="ab" * 32,
                            view="PA", rows=10, columns=10, model_rows=10, model_columns=10),),
        identity=ModelIdentity(profile="p", profile_version="1", backend="demo", model_name="m", source="s",
                               dtype="float32", device="cpu", prompt="read"),
        tokens=TokenCounts(prompt=1, image=1, generated=1),
        timings=Timings(prepare_s=0, generate_s=0, parse_s=0),
    )  # fmt: skip
    return {"reading": json.loads(reading.to_json())}


def _payload_wait_error() -> DispatchError:
    error = DispatchError("cannot store a payload under /d/outbox: No space left on device")
    error.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    return error


def _payload_wait() -> dict[str, Any]:
    """What the wait of a reading whose outbox payloads found the disk full records (as attempts.put_back does)."""
    error = _payload_wait_error()
    return {"error": error.reason, **stored_details(error)}


KEPT = {**stored_details(DraftsDiskFullError("drafts could not be stored: No space left on device"))}
NOT_READ = {**stored_details(NoRoomForDraftsError("disk full: /d, 0 MB free"))}


@pytest.mark.parametrize(
    ("events", "drafted_from"),
    [
        pytest.param([("inference_completed", _reading("A")), ("report_failed", KEPT)], "A", id="disk-full-at-write"),
        pytest.param([("inference_completed", _reading("A")), ("report_failed", KEPT), ("report_failed", NOT_READ),
                      ("report_failed", NOT_READ), ("report_failed", KEPT)], "A", id="waited-then-full-again"),
        pytest.param([("inference_completed", _reading("A")), ("report_failed", KEPT),
                      ("inference_completed", _reading("B")), ("report_failed", KEPT)], "B", id="the-newest-reading"),
        pytest.param([("inference_completed", _reading("A")),
                      ("report_failed", stored_details(DraftsNotStoredError("Input/output error")))], "A", id="eio"),
        pytest.param([("report_failed", NOT_READ)], None, id="never-read"),
        pytest.param([("inference_completed", _reading("A")), ("report_failed", {"error": "cannot build"})], None,
                     id="drafts-not-built"),
        pytest.param([("inference_completed", _reading("A")), ("report_failed", KEPT), ("study_failed", {}),
                      ("study_retried", {})], None, id="retried-by-hand"),
        pytest.param([("inference_completed", _reading("A")), ("inference_failed", {"error": "oom"})], None,
                      id="read-failed"),
        pytest.param([("inference_completed", _reading("A")), ("report_failed", _payload_wait())], "A",
                     id="outbox-payload-disk-full"),
        pytest.param([("inference_completed", _reading("A")), ("inference_failed", KEPT)], "A",
                     id="outbox-payload-disk-full-as-6262050-recorded-it"),
        pytest.param([("inference_completed", {"reading": {"raw_text": "old form"}}), ("report_failed", KEPT)], None,
                     id="recorded-by-another-version"),
    ],
)  # fmt: skip
def test_a_retry_drafts_again_only_from_a_reading_whose_drafts_could_not_be_stored(
    events: list[tuple[str, dict[str, Any]]], drafted_from: str | None
) -> None:
    reading = _kept(events)
    assert (reading.raw_text if reading is not None else None) == drafted_from


def test_a_quota_or_a_full_outbox_keeps_the_reading_a_wait_before_reading_does_not_claim_one() -> None:
    assert KEPT == {"reading_kept": True}
    assert NOT_READ == {"read": False}
    assert stored_details(RuntimeError("other")) == {}
    # the outbox payloads' wait: the reading is kept, and it is audited report_failed (before: inference_failed)
    assert stored_details(_payload_wait_error()) == {"reading_kept": True}
    assert failure_event_type(_payload_wait_error()) is EventType.REPORT_FAILED


def test_the_kept_readings_lookup_goes_by_the_study_index_for_a_whole_batch(sqlite_store: Store) -> None:
    """With the event kinds in the query, SQLite searched the event type's index for several studies: a cost that grew
    with the whole audit log (16 studies among 2,000 read: 10 ms, bench/kept_readings.py), 0.5 ms by the study's."""
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if "audit_events" in statement:
            statements.append((statement, parameters))

    sa.event.listen(sqlite_store.engine, "before_cursor_execute", capture)
    try:
        claims = [Claim(i, f"1.2.3.{i}", None, 1, 1, 0, 0) for i in range(16)]
        assert kept_readings(sqlite_store, claims) == {}
    finally:
        sa.event.remove(sqlite_store.engine, "before_cursor_execute", capture)
    [(statement, parameters)] = statements
    with sqlite_store.engine.connect() as connection:
        plan = " ".join(str(row[-1]) for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}",
                                                                           parameters))  # fmt: skip
    assert "ix_audit_events_study_uid" in plan, plan
