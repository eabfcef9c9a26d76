"""An attacker with database rights edits the audit log; `radtrace audit verify` names the first bad row.

Each case switches the append-only triggers off (as a superuser can), tampers, and checks both the chain walk
and the command QA staff run: a non-zero exit and a message naming the first bad sequence number.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from audit_support import as_superuser
from radtrace.audit.chain import row_hash, verify_chain
from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from tests_support import radtrace

pytestmark = pytest.mark.integration

ROWS = 10


def _fill(store: Store) -> None:
    AuditRecorder(store).record_many(
        [AuditEvent(EventType.INSTANCE_RECEIVED, Actor(ae_title="PACS1"), study_uid=f"1.2.3.{n}") for n in range(ROWS)]
    )


def _rows(store: Store) -> list[dict[str, object]]:
    table = AuditEventRow.__table__
    with store.engine.connect() as connection:
        return [dict(row) for row in connection.execute(sa.select(table).order_by(table.c.seq)).mappings()]


def _insert_forged(store: Store, seq: int, prev_hash: str, **changes: object) -> None:
    """A row made up by the attacker, with a hash computed exactly as radtrace computes one."""
    template = _rows(store)[0] | {"seq": seq, "prev_hash": prev_hash, "actor_ae": "FORGER"} | changes
    template["hash"] = row_hash(template)
    with store.engine.connect() as connection:
        connection.execute(sa.insert(AuditEventRow).values(**template))
        connection.commit()


def _cli_verify(store: Store, tmp_path: Path) -> tuple[int, str]:
    env = {
        "RADTRACE_DATA_DIR": str(tmp_path / "var"),
        "RADTRACE_STORE__URL": store.engine.url.render_as_string(hide_password=False),
    }
    result = radtrace("audit", "verify", env=env)
    return result.returncode, result.stdout + result.stderr


# Rows 5 onwards moved up by one, in two steps so that no intermediate seq collides with a primary key.
MAKE_ROOM_AT_5 = (
    "UPDATE audit_events SET seq = seq + 1000000 WHERE seq >= 5",
    "UPDATE audit_events SET seq = seq - 1000000 + 1 WHERE seq >= 1000000",
)


def test_a_changed_timestamp_is_named(store: Store, tmp_path: Path) -> None:
    _fill(store)
    moved = _rows(store)[4]["recorded_at"]
    assert isinstance(moved, datetime)
    as_superuser(store)
    with store.engine.connect() as connection:
        connection.execute(
            sa.update(AuditEventRow).where(AuditEventRow.seq == 5).values(recorded_at=moved - timedelta(days=365))
        )
        connection.commit()
    result = verify_chain(store)
    assert result.first_break is not None
    assert result.first_break.seq == 5
    code, output = _cli_verify(store, tmp_path)
    assert code == 1
    assert "broken at seq 5" in output


def test_two_rows_swapped_are_named_at_the_first_of_them(store: Store, tmp_path: Path) -> None:
    _fill(store)
    as_superuser(
        store,
        "UPDATE audit_events SET seq = -4 WHERE seq = 4",
        "UPDATE audit_events SET seq = 4 WHERE seq = 6",
        "UPDATE audit_events SET seq = 6 WHERE seq = -4",
    )
    result = verify_chain(store)
    assert result.first_break is not None
    assert result.first_break.seq == 4, result
    code, output = _cli_verify(store, tmp_path)
    assert code == 1
    assert "broken at seq 4" in output


def test_a_forged_row_slipped_into_the_middle_is_the_row_named(store: Store, tmp_path: Path) -> None:
    _fill(store)
    as_superuser(store, *MAKE_ROOM_AT_5)
    _insert_forged(store, 5, prev_hash=str(_rows(store)[3]["hash"]))  # chained onto row 4, hash recomputed
    result = verify_chain(store)
    assert result.first_break is not None
    assert result.first_break.seq == 5, result  # the forged row, not the genuine row after it
    assert "inserted" in result.first_break.problem
    code, output = _cli_verify(store, tmp_path)
    assert code == 1
    assert "broken at seq 5" in output


def test_a_forged_row_before_the_first_is_named_plainly(store: Store, tmp_path: Path) -> None:
    _fill(store)
    as_superuser(store)
    _insert_forged(store, 0, prev_hash="0" * 64)
    result = verify_chain(store)
    assert result.first_break is not None
    assert result.first_break.seq == 0, result
    assert "to -1" not in result.first_break.problem
    code, output = _cli_verify(store, tmp_path)
    assert code == 1
    assert "broken at seq 0" in output


def test_deleting_the_head_rows_is_named(store: Store, tmp_path: Path) -> None:
    _fill(store)
    as_superuser(store, "DELETE FROM audit_events WHERE seq <= 3")
    result = verify_chain(store)
    assert result.first_break is not None
    assert result.first_break.seq == 1
    assert "rows 1 to 3 are missing" in result.first_break.problem
    code, output = _cli_verify(store, tmp_path)
    assert code == 1
    assert "broken at seq 1" in output


def test_verify_does_not_claim_a_truncated_tail_is_intact(store: Store, tmp_path: Path) -> None:
    """Rows deleted from the end leave a valid, shorter chain: only an anchor kept elsewhere shows it.

    Without one, the command must say what it could not check rather than call the log intact.
    """
    _fill(store)
    as_superuser(store, "DELETE FROM audit_events WHERE seq > 7")
    assert verify_chain(store).first_break is None  # the in-database chain alone cannot tell
    code, output = _cli_verify(store, tmp_path)
    assert code == 0
    assert "rows removed from the end" in output
    assert "--checkpoint" in output


def test_a_row_whose_payload_is_no_longer_json_does_not_stop_query_or_export(store: Store, tmp_path: Path) -> None:
    """QA must still read and export a tampered log, to investigate it: the bad row is shown, raw, not a crash."""
    _fill(store)
    as_superuser(
        store,
        "UPDATE audit_events SET payload = 'not json {' WHERE seq = 3",
        "UPDATE audit_events SET payload = '[1, 2]' WHERE seq = 4",
    )
    env = {
        "RADTRACE_DATA_DIR": str(tmp_path / "var"),
        "RADTRACE_STORE__URL": store.engine.url.render_as_string(hide_password=False),
    }
    queried = radtrace("audit", "query", "--format", "json", env=env)
    assert queried.returncode == 0, queried.stderr
    events = json.loads(queried.stdout)["events"]
    assert [event["seq"] for event in events] == list(range(1, ROWS + 1))
    assert events[2]["payload"] == {"unreadable_payload": "not json {"}
    assert events[3]["payload"] == {"unreadable_payload": "[1, 2]"}
    for earlier_uses, output_format in enumerate(("jsonl", "atna-xml"), start=1):  # the query, then an export
        exported = radtrace("audit", "export", "--format", output_format, env=env)
        assert exported.returncode == 0, exported.stderr
        assert len(exported.stdout.splitlines()) == ROWS + earlier_uses
    code, output = _cli_verify(store, tmp_path)
    assert code == 1
    assert "broken at seq 3" in output


@pytest.mark.parametrize(
    ("statement", "first_bad"),
    [
        ("UPDATE audit_events SET payload = x'00ff' WHERE seq = 2", 2),
        ("UPDATE audit_events SET seq = '7a' WHERE seq = 7", 7),
    ],
)
def test_values_of_the_wrong_type_are_named_not_a_crash_on_sqlite(
    tmp_path: Path, statement: str, first_bad: int
) -> None:
    """SQLite keeps whatever type it is given: a text seq or a binary payload must be reported, not crash verify."""
    store = Store.from_url(f"sqlite:///{tmp_path / 'radtrace.db'}")
    upgrade(store)
    _fill(store)
    as_superuser(store, statement)
    result = verify_chain(store)
    assert result.first_break is not None
    assert result.first_break.seq == first_bad, result
    store.dispose()


@pytest.mark.parametrize("stored", ["'yesterday'", "42"])
def test_a_time_edited_into_a_non_time_is_named_and_query_export_timeline_and_api_still_work(
    sqlite_store: Store, tmp_path: Path, stored: str
) -> None:
    """SQLite keeps any text in recorded_at: the driver's date parsing made one such row crash every query,
    export, timeline, the QA API and the ATNA forwarder. Verify names it; the rest show it as unreadable."""
    from fastapi.testclient import TestClient

    from radtrace.audit.api import create_api
    from radtrace.audit.atna.message import AuditSource, audit_message_xml
    from radtrace.audit.queries import AuditQuery, run_query
    from radtrace.audit.tokens import create_token

    store = sqlite_store
    AuditRecorder(store).record_many(
        [AuditEvent(EventType.INSTANCE_RECEIVED, Actor(ae_title="PACS1"), study_uid="1.2.3.9") for _ in range(ROWS)]
    )
    as_superuser(store, f"UPDATE audit_events SET recorded_at = {stored} WHERE seq = 3")  # noqa: S608 (a literal)
    shown = stored.strip("'")
    marker = f"unreadable: {shown!r}"

    result = verify_chain(store)
    assert result.first_break is not None
    assert result.first_break.seq == 3
    assert f"recorded_at {shown!r} is not a time" in result.first_break.problem

    env = {"RADTRACE_DATA_DIR": str(tmp_path / "var"),
           "RADTRACE_STORE__URL": store.engine.url.render_as_string(hide_password=False)}  # fmt: skip
    queried = radtrace("audit", "query", "--format", "json", env=env)
    assert queried.returncode == 0, queried.stderr
    events = json.loads(queried.stdout)["events"]
    assert [event["seq"] for event in events] == list(range(1, ROWS + 1))
    assert events[2]["recorded_at"] is None
    assert events[2]["recorded_at_unreadable"] == shown
    assert events[3]["recorded_at"] is not None
    table = radtrace("audit", "query", env=env)
    assert table.returncode == 0, table.stderr
    assert marker in table.stdout
    timeline = radtrace("audit", "timeline", "1.2.3.9", "--format", "json", env=env)
    assert timeline.returncode == 0, timeline.stderr
    entries = json.loads(timeline.stdout)["entries"]
    assert entries[2]["seconds_since_first"] is None
    assert entries[3]["seconds_since_previous"] is not None  # measured from the last readable time
    for output_format in ("jsonl", "atna-xml"):
        exported = radtrace("audit", "export", "--format", output_format, env=env)
        assert exported.returncode == 0, exported.stderr
        assert len(exported.stdout.splitlines()) >= ROWS
    xml = audit_message_xml(run_query(store, AuditQuery(), Actor(user="qa")).events[2], AuditSource("radtrace"))
    assert b"row edited in the database" in xml

    admin = create_token(store, "audit.lead", "admin", Actor(user="root"))
    with TestClient(create_api(store)) as client:
        headers = {"Authorization": f"Bearer {admin.secret}"}
        page = client.get("/v1/events", headers=headers)
        assert page.status_code == 200, page.text
        assert page.json()["events"][2]["recorded_at_unreadable"] == shown
        export = client.get("/v1/export.csv", headers=headers)
        assert export.status_code == 200
        assert marker in export.text
        verified = client.get("/v1/verify", headers=headers)
        assert verified.json()["first_break_seq"] == 3


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET seq = '7a' WHERE seq = 7",
        "UPDATE audit_events SET seq = 6.5 WHERE seq = 7",
        "UPDATE audit_events SET payload = x'00ff' WHERE seq = 7",
        "UPDATE audit_events SET labels = x'00ff' WHERE seq = 7",
        "UPDATE audit_events SET actor_ae = x'41ff', accession = 12 WHERE seq = 7",
    ],
)
def test_values_of_the_wrong_type_do_not_stop_query_export_timeline_or_recording_on_sqlite(
    sqlite_store: Store, statement: str
) -> None:
    """SQLite keeps a blob, a number or text in any column: one such edit made JSON, CSV and XML writers raise
    (query, export, API), and a text seq, sorted after every number, was taken as the head, so that every later
    audit event failed to record (seq + 1) and everything that audits stopped. The chain goes on; verify names
    the row; query and export show the value as text, or leave out a row whose seq is not a number."""
    import io

    from radtrace.audit.atna.export import write_export
    from radtrace.audit.atna.message import AuditSource
    from radtrace.audit.presentation import csv_chunks, page_json
    from radtrace.audit.queries import AuditFilter, AuditQuery, export_records, run_query, study_timeline

    store, reader = sqlite_store, Actor(user="qa")
    AuditRecorder(store).record_many(
        [AuditEvent(EventType.INSTANCE_RECEIVED, Actor(ae_title="PACS1"), study_uid="1.2.3.9", labels=("A",))
         for _ in range(ROWS)]
    )  # fmt: skip
    as_superuser(store, statement)
    recorded = AuditRecorder(store).record(AuditEvent(EventType.APPLICATION_STARTED, Actor(process="p")))
    assert recorded.seq == ROWS + 1
    result = verify_chain(store)
    assert result.first_break is not None
    assert result.first_break.seq == 7
    page = json.loads(page_json(run_query(store, AuditQuery(), reader)))
    seqs = [event["seq"] for event in page["events"]]
    assert seqs[:6] == [1, 2, 3, 4, 5, 6]
    assert all(isinstance(seq, int) for seq in seqs)
    assert "".join(csv_chunks(export_records(store, AuditFilter(), reader))).count("\n") >= ROWS
    for output_format in ("jsonl", "atna-xml"):
        out = io.BytesIO()
        assert write_export(export_records(store, AuditFilter(), reader), output_format, AuditSource("s"), out) >= ROWS
    assert study_timeline(store, "1.2.3.9", reader).entries
