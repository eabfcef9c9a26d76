"""`radtrace db` and `radtrace audit verify/checkpoint` as an operator runs them, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.store.engine import Store, is_postgresql
from radtrace.store.migrate import head_revision
from tests_support import radtrace

pytestmark = pytest.mark.integration


def test_upgrade_verify_checkpoint_and_detect_tampering(database_url: str, tmp_path: Path) -> None:
    env = {
        "RADTRACE_DATA_DIR": str(tmp_path / "var"),
        "RADTRACE_STORE__URL": database_url,
        "RADTRACE_AUDIT__CHECKPOINT_KEY": "night-shift-key",
    }
    assert radtrace("db", "current", env=env).returncode == 1  # empty database: not at the newest revision
    upgraded = radtrace("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"revision {head_revision()}" in upgraded.stdout
    assert radtrace("db", "current", env=env).returncode == 0

    store = Store.from_url(database_url)
    AuditRecorder(store).record_many(
        [AuditEvent(EventType.INSTANCE_RECEIVED, Actor(ae_title="PACS1"), study_uid=f"1.2.3.{n}") for n in range(20)]
    )
    verified = radtrace("audit", "verify", env=env)
    assert verified.returncode == 0, verified.stderr
    assert "audit chain valid" in verified.stdout

    checkpoint = tmp_path / "cp.json"
    taken = radtrace("audit", "checkpoint", "--output", str(checkpoint), env=env)
    assert taken.returncode == 0, taken.stderr
    assert json.loads(checkpoint.read_text(encoding="utf-8"))["seq"] == 21  # 20 events + the verification

    with store.engine.connect() as connection:  # a superuser edits row 12 behind radtrace's back
        if is_postgresql(store.engine):
            connection.exec_driver_sql("ALTER TABLE audit_events DISABLE TRIGGER ALL")
        else:
            connection.exec_driver_sql("DROP TRIGGER audit_events_no_update")
        connection.exec_driver_sql("UPDATE audit_events SET study_uid = '9.9.9' WHERE seq = 12")
        connection.commit()
    broken = radtrace("audit", "verify", "--checkpoint", str(checkpoint), env=env)
    assert broken.returncode == 1
    assert "broken at seq 12" in broken.stderr

    # both verifications and the checkpoint were themselves audited, the failure as a security alert
    with store.engine.connect() as connection:
        kinds = connection.execute(sa.text("SELECT event_type, outcome FROM audit_events WHERE seq > 20 ORDER BY seq"))
        assert [tuple(row) for row in kinds] == [
            ("audit_verified", "success"),
            ("audit_checkpointed", "success"),
            ("audit_verified", "serious_failure"),
            ("tamper_detected", "major_failure"),
        ]
    store.dispose()


def test_checkpoint_without_a_key_is_a_clear_usage_error(tmp_path: Path) -> None:
    result = radtrace("audit", "checkpoint", env={"RADTRACE_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert "RADTRACE_AUDIT__CHECKPOINT_KEY" in result.stderr


def test_a_database_that_is_down_is_a_clear_error_and_non_zero_exit(tmp_path: Path) -> None:
    env = {"RADTRACE_DATA_DIR": str(tmp_path), "RADTRACE_STORE__URL": "postgresql://postgres@127.0.0.1:1/radtrace"}
    for command in (("db", "upgrade"), ("audit", "verify")):
        result = radtrace(*command, env=env)
        assert result.returncode == 1
        assert "database unavailable" in result.stderr
        assert "Traceback" not in result.stderr


def test_an_output_that_cannot_be_written_is_a_clear_error_and_records_no_export(tmp_path: Path) -> None:
    env = {
        "RADTRACE_DATA_DIR": str(tmp_path / "var"),
        "RADTRACE_STORE__URL": f"sqlite:///{tmp_path / 'radtrace.db'}",
        "RADTRACE_AUDIT__CHECKPOINT_KEY": "night-shift-key",
    }
    assert radtrace("db", "upgrade", env=env).returncode == 0
    store = Store.from_url(env["RADTRACE_STORE__URL"])
    AuditRecorder(store).record(AuditEvent(EventType.INSTANCE_RECEIVED, Actor(ae_title="PACS1"), study_uid="1.2.3"))
    for unwritable in (tmp_path / "no" / "such" / "dir" / "x.jsonl", tmp_path):  # a missing folder, a folder
        exported = radtrace("audit", "export", "--format", "jsonl", "--output", str(unwritable), env=env)
        assert exported.returncode == 2, exported.stderr
        assert "Traceback" not in exported.stderr
        assert f"cannot write {unwritable}" in exported.stderr
    blocked = tmp_path / "a-file"
    blocked.write_text("", encoding="utf-8")
    taken = radtrace("audit", "checkpoint", "--output", str(blocked / "cp.json"), env=env)  # parent is a file
    assert taken.returncode == 1, taken.stderr
    assert "Traceback" not in taken.stderr
    assert "cannot write checkpoint" in taken.stderr
    with store.engine.connect() as connection:
        kinds = connection.execute(sa.text("SELECT event_type FROM audit_events ORDER BY seq")).scalars().all()
    assert kinds == ["instance_received"]  # nothing was exported or checkpointed, and nothing claims it was
    store.dispose()


def test_an_empty_range_exports_nothing_and_says_so(tmp_path: Path) -> None:
    env = {"RADTRACE_DATA_DIR": str(tmp_path / "var"), "RADTRACE_STORE__URL": f"sqlite:///{tmp_path / 'r.db'}"}
    assert radtrace("db", "upgrade", env=env).returncode == 0
    output = tmp_path / "export.jsonl"
    exported = radtrace(
        "audit", "export", "--format", "jsonl", "--since", "2999-01-01T00:00:00Z", "--output", str(output), env=env
    )
    assert exported.returncode == 0, exported.stderr
    assert output.read_bytes() == b""
    assert "exported 0 audit events" in exported.stderr
